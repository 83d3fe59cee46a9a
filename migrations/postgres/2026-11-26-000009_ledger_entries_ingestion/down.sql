DROP TRIGGER ledger_entries_no_truncate ON ledger_entries;
DROP TRIGGER ledger_transactions_no_truncate ON ledger_transactions;
DROP TRIGGER ledger_accounts_no_truncate ON ledger_accounts;
DROP TRIGGER ledger_accounts_append_only ON ledger_accounts;
DROP TRIGGER ledger_entries_have_parents ON ledger_entries;
DROP FUNCTION ledger_entries_have_parents();
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey, ADD PRIMARY KEY (id);
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_transaction_id_fkey
    FOREIGN KEY (transaction_id) REFERENCES ledger_transactions (id);
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES ledger_accounts (id);

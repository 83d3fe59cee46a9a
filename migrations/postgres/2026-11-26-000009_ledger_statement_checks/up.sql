-- Ledger entries check their transaction and account once per statement instead of once per row.
-- A foreign key runs a lookup and takes a KEY SHARE row lock per entry; for the usage writer's
-- batches (2,000 entries per COPY) those per-row checks were about a third of the database's time.
-- The statement-level trigger below checks every new entry in one set-based query over the
-- statement's transition table. Taking no lock is sound because the parents never change: ledger
-- transactions and accounts are append-only (row triggers refuse UPDATE and DELETE, statement
-- triggers refuse TRUNCATE), so a parent seen once stays. `taogate reconcile` also reports entries
-- whose transaction or account is missing.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_transaction_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;

CREATE FUNCTION ledger_entries_have_parents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_entries e
               WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = e.transaction_id)) THEN
        RAISE EXCEPTION 'a ledger entry names a transaction that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM new_entries e
               WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = e.account_id)) THEN
        RAISE EXCEPTION 'a ledger entry names an account that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER ledger_entries_have_parents AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_have_parents();

CREATE TRIGGER ledger_accounts_append_only BEFORE UPDATE OR DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_transactions_no_truncate BEFORE TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

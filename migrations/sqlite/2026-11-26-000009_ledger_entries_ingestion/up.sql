-- Kept in step with PostgreSQL's migration of the same name. SQLite keeps the entries' foreign keys
-- and indexes (its writer goes record by record; per-row checks cost little in process); what both
-- backends now share is that ledger accounts, like transactions and entries, are append-only.
CREATE TRIGGER ledger_accounts_no_update BEFORE UPDATE ON ledger_accounts
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER ledger_accounts_no_delete BEFORE DELETE ON ledger_accounts
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;

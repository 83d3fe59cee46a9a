-- Ledger entries, shaped for the usage writer (4 entries per usage event, thousands per COPY).
--
-- 1. They check their transaction and account once per statement instead of once per row. A
--    foreign key runs a lookup and takes a KEY SHARE row lock per entry: about a third of the
--    database's time in a usage batch. The statement-level trigger below looks up each distinct
--    parent of the statement's new entries once (nested-loop index probes, forced by the
--    function's settings so a plan cached while the tables were small cannot turn into a scan of
--    the whole ledger). Taking no lock is sound because the parents never change: ledger
--    transactions and accounts are append-only (row triggers refuse UPDATE and DELETE, statement
--    triggers refuse TRUNCATE), so a parent seen once stays. `taogate reconcile` also reports
--    entries whose transaction or account is missing.
-- 2. The primary key (transaction_id, id) also serves lookups by transaction, so the separate
--    index on transaction_id goes: one index fewer to maintain per entry.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_transaction_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_pkey, ADD PRIMARY KEY (transaction_id, id);
DROP INDEX ledger_entries_transaction;

CREATE FUNCTION ledger_entries_have_parents() RETURNS trigger LANGUAGE plpgsql
    SET enable_hashjoin = off SET enable_mergejoin = off AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT transaction_id FROM new_entries) e
               WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = e.transaction_id)) THEN
        RAISE EXCEPTION 'a ledger entry names a transaction that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT account_id FROM new_entries) e
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

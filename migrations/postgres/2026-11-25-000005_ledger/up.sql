-- The double-entry ledger: money moves only as transactions whose entries sum to zero, each with a
-- unique idempotency key. Append-only (triggers below); balances are projections of the entries
-- (`ledger_balances` is a cache, rebuilt and checked by `taogate reconcile`).
CREATE TABLE ledger_accounts (
    id TEXT PRIMARY KEY,
    -- NULL for the operator's own accounts.
    tenant_id TEXT,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('account', 'tenant', 'operator')),
    owner_id TEXT NOT NULL,
    purpose TEXT NOT NULL CHECK (purpose IN ('customer_balance', 'tenant_revenue', 'tenant_payable',
        'operator_revenue', 'payment_clearing', 'adjustments')),
    created_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX ledger_accounts_owner ON ledger_accounts (owner_kind, owner_id, purpose);

CREATE TABLE ledger_transactions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('usage', 'topup', 'adjustment')),
    -- usage event id, payment reference, or the actor of an adjustment
    reference TEXT,
    memo TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX ledger_transactions_tenant ON ledger_transactions (tenant_id, id);

CREATE TABLE ledger_entries (
    id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL REFERENCES ledger_transactions (id),
    account_id TEXT NOT NULL REFERENCES ledger_accounts (id),
    -- nano-units; positive credits the account, negative debits it
    amount_nano BIGINT NOT NULL CHECK (amount_nano <> 0),
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);

CREATE TABLE ledger_balances (
    account_id TEXT PRIMARY KEY REFERENCES ledger_accounts (id),
    balance_nano BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only';
END
$$;
CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- Payments: money coming in through a provider (Stripe first) and going back out (refunds,
-- disputes). Every provider notification is stored raw before it is processed; a payment moves
-- through a forward-only state machine; each movement of money is one ledger transaction whose
-- idempotency key is the provider's reference, recorded here for statements and reconciliation.

-- A tenant's settings for a provider. Secrets are sealed (AES-256-GCM, `payments.encryption_key`)
-- and never leave the process unsealed; `secret_key_hint` is what may be shown.
CREATE TABLE payment_providers (
    tenant_id TEXT NOT NULL,
    -- 'stripe', 'btcpay', 'tao', or 'custom:<name>' for a tenant's own payment system
    provider TEXT NOT NULL CHECK (provider IN ('stripe', 'btcpay', 'tao') OR provider LIKE 'custom:%'),
    secret_key_sealed TEXT NOT NULL,
    secret_key_hint TEXT NOT NULL,
    webhook_secrets_sealed TEXT NOT NULL,
    webhook_secret_count INTEGER NOT NULL,
    currency TEXT NOT NULL,
    nano_per_unit BIGINT NOT NULL CHECK (nano_per_unit > 0),
    min_topup_nano BIGINT NOT NULL CHECK (min_topup_nano > 0),
    max_topup_nano BIGINT NOT NULL CHECK (max_topup_nano >= min_topup_nano),
    dispute_policy TEXT NOT NULL CHECK (dispute_policy IN ('debit', 'debit_and_suspend')),
    -- postpaid usage is pushed to this Stripe Billing Meter (event name); NULL: not pushed
    meter_event_name TEXT,
    -- a self-hosted provider's server (BTCPay: its base URL) and the tenant's place in it (store id)
    server_url TEXT,
    store_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);

-- Every verified notification, raw, once per provider event id.
CREATE TABLE payment_notifications (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    processed_at TIMESTAMP,
    -- what processing did: credited, replayed, ignored, failed, foreign_account, …
    outcome TEXT,
    UNIQUE (provider, event_id)
);
CREATE INDEX payment_notifications_tenant ON payment_notifications (tenant_id, received_at);

CREATE TABLE payments (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('checkout', 'auto_topup', 'external')),
    -- the provider's payment reference (Stripe: the PaymentIntent id), once known
    reference TEXT,
    -- Stripe: the Checkout Session id
    session_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed', 'expired',
        'partially_refunded', 'refunded', 'disputed', 'dispute_won', 'dispute_lost')),
    currency TEXT NOT NULL,
    -- in the currency's minor units (cents)
    requested_minor BIGINT NOT NULL CHECK (requested_minor >= 0),
    paid_minor BIGINT NOT NULL DEFAULT 0 CHECK (paid_minor >= 0),
    refunded_minor BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    credited_nano BIGINT NOT NULL DEFAULT 0 CHECK (credited_nano >= 0),
    created_by TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX payments_reference ON payments (provider, reference);
CREATE UNIQUE INDEX payments_session ON payments (provider, session_id);
CREATE INDEX payments_account ON payments (tenant_id, account_id, id);
-- At most one automatic top-up in flight per account, whichever replica starts it.
CREATE UNIQUE INDEX payments_one_pending_auto_topup ON payments (account_id)
    WHERE kind = 'auto_topup' AND state = 'pending';

-- Each ledger transaction a payment caused, by kind.
CREATE TABLE payment_movements (
    id TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    kind TEXT NOT NULL CHECK (kind IN ('credit', 'refund', 'dispute', 'dispute_reversal')),
    transaction_id TEXT NOT NULL UNIQUE,
    -- the provider object that caused it (re_…, dp_…, pi_…)
    provider_ref TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    amount_nano BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX payment_movements_payment ON payment_movements (payment_id);

-- The provider's customer object for an account, created once and reused.
CREATE TABLE payment_customers (
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, provider)
);

-- Automatic top-ups: when an account's balance is below `threshold_nano`, its saved card is
-- charged `amount_nano` off-session (credited by the same webhook path). Failures back off.
CREATE TABLE auto_topups (
    account_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    threshold_nano BIGINT NOT NULL CHECK (threshold_nano >= 0),
    amount_nano BIGINT NOT NULL CHECK (amount_nano > 0),
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX auto_topups_enabled ON auto_topups (enabled, next_attempt_at);

-- Where a tenant hears of its payments and low balances: its endpoint and signing secret (sealed).
CREATE TABLE tenant_webhooks (
    tenant_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    secret_hint TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- The outbox: each notification is written in the transaction that caused it and delivered (signed,
-- retried with back-off) by whichever replica claims it.
CREATE TABLE tenant_notifications (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    -- set when it stops being retried (delivered or given up)
    done BOOLEAN NOT NULL DEFAULT FALSE,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX tenant_notifications_due ON tenant_notifications (done, next_attempt_at);

-- Per account: tell the tenant when the spendable balance falls below `threshold_nano` (once per
-- crossing: `below` is cleared when the balance is back above it).
CREATE TABLE balance_alerts (
    account_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    threshold_nano BIGINT NOT NULL CHECK (threshold_nano >= 0),
    below BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- Postpaid usage pushed to Stripe Billing Meters: one row per usage record sent (its id is the
-- meter event's identifier), and how far back each tenant's usage has been fully looked at.
CREATE TABLE meter_pushes (
    usage_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    value_nano BIGINT NOT NULL,
    pushed_at TIMESTAMP NOT NULL
);
CREATE TABLE meter_cursors (
    tenant_id TEXT PRIMARY KEY,
    scanned_before TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- TAO deposits. Each account's deposit address (derived from the operator's seed, never stored),
-- the finalized block each chain (by genesis hash) has been read up to, the free balance last seen
-- on each address, and every increase seen: credited once, keyed by (genesis, block hash, address).
CREATE TABLE tao_addresses (
    account_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    address TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    derivation_path TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE tao_cursors (
    genesis_hash TEXT PRIMARY KEY,
    block_number BIGINT NOT NULL,
    block_hash TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE tao_balances (
    genesis_hash TEXT NOT NULL,
    address TEXT NOT NULL,
    free_rao BIGINT NOT NULL CHECK (free_rao >= 0),
    block_number BIGINT NOT NULL,
    PRIMARY KEY (genesis_hash, address)
);
CREATE TABLE tao_deposits (
    id TEXT PRIMARY KEY,
    genesis_hash TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash TEXT NOT NULL,
    address TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    amount_rao BIGINT NOT NULL CHECK (amount_rao > 0),
    -- nano-units per TAO, and where that rate came from
    rate BIGINT NOT NULL,
    rate_source TEXT NOT NULL,
    credited_nano BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('credited', 'dust', 'unpriced')),
    created_at TIMESTAMP NOT NULL,
    UNIQUE (genesis_hash, block_hash, address)
);
CREATE INDEX tao_deposits_account ON tao_deposits (account_id, id);

DELETE FROM payment_providers WHERE provider = 'coinbase';
CREATE TABLE payment_providers_old (
    tenant_id TEXT NOT NULL,
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
    meter_event_name TEXT,
    server_url TEXT,
    store_id TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, provider)
);
INSERT INTO payment_providers_old (tenant_id, provider, secret_key_sealed, secret_key_hint, webhook_secrets_sealed, webhook_secret_count, currency, nano_per_unit, min_topup_nano, max_topup_nano, dispute_policy, meter_event_name, server_url, store_id, created_at, updated_at) SELECT tenant_id, provider, secret_key_sealed, secret_key_hint, webhook_secrets_sealed, webhook_secret_count, currency, nano_per_unit, min_topup_nano, max_topup_nano, dispute_policy, meter_event_name, server_url, store_id, created_at, updated_at FROM payment_providers;
DROP TABLE payment_providers;
ALTER TABLE payment_providers_old RENAME TO payment_providers;

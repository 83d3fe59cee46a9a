DELETE FROM payment_providers WHERE provider = 'coinbase';
ALTER TABLE payment_providers DROP COLUMN rate_source;
ALTER TABLE payment_providers DROP COLUMN api_kind;
ALTER TABLE payment_providers DROP COLUMN api_key_id;
ALTER TABLE payment_providers DROP CONSTRAINT payment_providers_provider_check;
ALTER TABLE payment_providers ADD CONSTRAINT payment_providers_provider_check
    CHECK (provider IN ('stripe', 'btcpay', 'tao') OR provider LIKE 'custom:%');

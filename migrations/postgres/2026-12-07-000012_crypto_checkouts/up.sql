-- Coinbase (Business Checkouts, or legacy Commerce charges) joins the providers. Its CDP API key
-- id is public (the JWT's `kid`), so it is kept in the clear beside the sealed secret; `api_kind`
-- says which Coinbase API the tenant is on. `rate_source` 'feed': a TAO tenant priced by the
-- operator's price endpoint (NULL: the stored nano_per_unit).
ALTER TABLE payment_providers DROP CONSTRAINT payment_providers_provider_check;
ALTER TABLE payment_providers ADD CONSTRAINT payment_providers_provider_check
    CHECK (provider IN ('stripe', 'btcpay', 'tao', 'coinbase') OR provider LIKE 'custom:%');
ALTER TABLE payment_providers ADD COLUMN api_key_id TEXT;
ALTER TABLE payment_providers ADD COLUMN api_kind TEXT CHECK (api_kind IN ('business', 'commerce'));
ALTER TABLE payment_providers ADD COLUMN rate_source TEXT CHECK (rate_source IN ('feed'));

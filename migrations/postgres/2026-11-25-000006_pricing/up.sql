-- Prices, as JSON price books {"<model>" | "*": {prompt_nano_per_mtok, completion_nano_per_mtok,
-- request_nano}}: a plan's are the tenant's retail prices to the accounts on it; a tenant's
-- `wholesale_prices` are what the operator charges the tenant. What each request was charged at
-- both levels is kept with its usage record (and posted to the ledger under `usage:<record id>`).
ALTER TABLE plans ADD COLUMN prices TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN wholesale_prices TEXT NOT NULL DEFAULT '{}';
ALTER TABLE usage_records ADD COLUMN charged_nano BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN tenant_charged_nano BIGINT NOT NULL DEFAULT 0;

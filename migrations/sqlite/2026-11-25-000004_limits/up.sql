-- Limits and quotas. A limit set is JSON text (identical on both backends):
-- {"rpm", "tpm", "concurrency", "requests_per_day", "tokens_per_day", "requests_per_month",
--  "tokens_per_month"}, each a positive integer or absent (= no limit).
-- Plans belong to a tenant: `key_limits` apply to each key of an account on the plan (a key's own
-- `limits` may only narrow them), `account_limits` to the account as a whole. An account without a
-- plan uses the tenant's default plan, if any. `tenants.limits` caps the whole tenant (operator).
CREATE TABLE plans (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    key_limits TEXT NOT NULL,
    account_limits TEXT NOT NULL,
    is_default BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX plans_tenant_name ON plans (tenant_id, name);
CREATE UNIQUE INDEX plans_tenant_default ON plans (tenant_id) WHERE is_default;

-- No REFERENCES here: SQLite cannot DROP a column that is part of a foreign key (the app checks it).
ALTER TABLE accounts ADD COLUMN plan_id TEXT;
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';

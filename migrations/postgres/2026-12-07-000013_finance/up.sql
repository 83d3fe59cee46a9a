-- Finance. Each usage record keeps the retail unit prices it was charged at (NULL for records
-- written before) and when it reached the database (`recorded_at`: exports of a closed month
-- include only what was recorded by its cutoff; later arrivals go to the next period).
ALTER TABLE usage_records ADD COLUMN prompt_nano_per_mtok BIGINT;
ALTER TABLE usage_records ADD COLUMN completion_nano_per_mtok BIGINT;
ALTER TABLE usage_records ADD COLUMN request_nano BIGINT;
ALTER TABLE usage_records ADD COLUMN recorded_at TIMESTAMP;
-- Exports walk a tenant's records in (started_at, id) order.
CREATE INDEX usage_records_tenant_time ON usage_records (tenant_id, started_at, id);

-- The cutoff of a closed month's export, per tenant: stored the first time it is exported after
-- the month closed; every later export of that month uses it (identical bytes).
CREATE TABLE export_cutoffs (
    tenant_id TEXT NOT NULL,
    month TEXT NOT NULL,
    cutoff_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, month)
);

-- A closed month's statement for an account, stored the first time it is made after the month
-- closed: later requests render this document (identical bytes in every format).
CREATE TABLE statements (
    account_id TEXT NOT NULL,
    month TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (account_id, month)
);

-- Where a usage record's billed token counts came from: upstream | counted | clamped.
ALTER TABLE usage_records ADD COLUMN usage_source TEXT NOT NULL DEFAULT 'upstream';
UPDATE usage_records SET usage_source = 'counted' WHERE estimated;

-- Usage records the batch writer could not post (a data error, not connectivity): set aside with
-- their error so that every other record keeps posting; listed by `taogate reconcile`.
CREATE TABLE usage_dead_letters (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    record TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

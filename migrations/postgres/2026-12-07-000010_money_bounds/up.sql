-- Where a usage record's billed token counts came from: upstream | counted | clamped.
ALTER TABLE usage_records ADD COLUMN usage_source TEXT NOT NULL DEFAULT 'upstream'
    CHECK (usage_source IN ('upstream', 'counted', 'clamped'));
UPDATE usage_records SET usage_source = 'counted' WHERE estimated;

-- How a request ended: also a non-stream client gone before its answer, and a shutdown.
ALTER TABLE usage_records DROP CONSTRAINT usage_records_status_check;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_status_check
    CHECK (status IN ('ok', 'client_disconnected', 'client_gone', 'upstream_error', 'shutdown'));

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

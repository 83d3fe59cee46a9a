-- SQLite cannot change a CHECK constraint in place: usage_records is rebuilt (nothing references
-- it) with the statuses a request can now end in and where its billed counts came from.
CREATE TABLE usage_records_new (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('ok', 'client_disconnected', 'client_gone', 'upstream_error', 'shutdown')),
    worker TEXT,
    upstream TEXT,
    miner_uid TEXT,
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP NOT NULL,
    ttft_ms BIGINT,
    latency_ms BIGINT NOT NULL,
    wholesale_cost_nano BIGINT,
    charged_nano BIGINT NOT NULL DEFAULT 0,
    tenant_charged_nano BIGINT NOT NULL DEFAULT 0,
    usage_source TEXT NOT NULL DEFAULT 'upstream'
        CHECK (usage_source IN ('upstream', 'counted', 'clamped'))
);
INSERT INTO usage_records_new
SELECT id, request_id, tenant_id, account_id, api_key_id, model, prompt_tokens, completion_tokens,
       estimated, status, worker, upstream, miner_uid, started_at, ended_at, ttft_ms, latency_ms,
       wholesale_cost_nano, charged_nano, tenant_charged_nano,
       CASE WHEN estimated THEN 'counted' ELSE 'upstream' END
FROM usage_records;
DROP TABLE usage_records;
ALTER TABLE usage_records_new RENAME TO usage_records;
CREATE INDEX usage_records_account ON usage_records (tenant_id, account_id, started_at);

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

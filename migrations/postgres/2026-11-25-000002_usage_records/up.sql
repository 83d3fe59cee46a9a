-- One row per data-plane request, written when it settles (completed, failed or cut off by the
-- client). The ledger issue turns these into charges; here they only record what was delivered.
CREATE TABLE usage_records (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'client_disconnected', 'upstream_error')),
    worker TEXT,
    upstream TEXT,
    miner_uid TEXT,
    started_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP NOT NULL,
    ttft_ms BIGINT,
    latency_ms BIGINT NOT NULL
);
CREATE INDEX usage_records_account ON usage_records (tenant_id, account_id, started_at);

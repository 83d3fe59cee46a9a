DROP TABLE usage_dead_letters;
CREATE TABLE usage_records_old (
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
    latency_ms BIGINT NOT NULL,
    wholesale_cost_nano BIGINT,
    charged_nano BIGINT NOT NULL DEFAULT 0,
    tenant_charged_nano BIGINT NOT NULL DEFAULT 0
);
INSERT INTO usage_records_old
SELECT id, request_id, tenant_id, account_id, api_key_id, model, prompt_tokens, completion_tokens,
       estimated, CASE WHEN status IN ('client_gone', 'shutdown') THEN 'client_disconnected' ELSE status END,
       worker, upstream, miner_uid, started_at, ended_at, ttft_ms, latency_ms,
       wholesale_cost_nano, charged_nano, tenant_charged_nano
FROM usage_records;
DROP TABLE usage_records;
ALTER TABLE usage_records_old RENAME TO usage_records;
CREATE INDEX usage_records_account ON usage_records (tenant_id, account_id, started_at);

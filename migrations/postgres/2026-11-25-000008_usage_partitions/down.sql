-- Back to one table with the primary key (id) (a record id is unique across months).
CREATE TABLE usage_records_plain (
    id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    api_key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    status TEXT NOT NULL,
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
    CONSTRAINT usage_records_status_check
        CHECK (status IN ('ok', 'client_disconnected', 'upstream_error'))
);

INSERT INTO usage_records_plain (id, request_id, tenant_id, account_id, api_key_id, model,
    prompt_tokens, completion_tokens, estimated, status, worker, upstream, miner_uid, started_at,
    ended_at, ttft_ms, latency_ms, wholesale_cost_nano, charged_nano, tenant_charged_nano)
SELECT id, request_id, tenant_id, account_id, api_key_id, model, prompt_tokens, completion_tokens,
    estimated, status, worker, upstream, miner_uid, started_at, ended_at, ttft_ms, latency_ms,
    wholesale_cost_nano, charged_nano, tenant_charged_nano
FROM usage_records;

DROP TABLE usage_records;
DROP FUNCTION usage_records_add_month(DATE);
ALTER TABLE usage_records_plain RENAME TO usage_records;
ALTER TABLE usage_records ADD PRIMARY KEY (id);
CREATE INDEX usage_records_account ON usage_records (tenant_id, account_id, started_at);

-- Usage records partitioned by the month of `started_at` (PostgreSQL only; SQLite keeps one table).
-- A month's partition is `usage_records_yYYYYmMM`, created by `usage_records_add_month` (here for
-- the months holding rows and the months around now; at run time by the usage writer, the current
-- month and two ahead: src/metering/bulk/partitions.rs). Rows of a month without a partition land
-- in `usage_records_default`, so an insert never fails. The primary key must include the partition
-- key: (id, started_at). A replayed record has the same started_at, so ON CONFLICT still finds it;
-- the ledger's unique `usage:<id>` idempotency key is the exactly-once guard for money.
ALTER TABLE usage_records RENAME TO usage_records_unpartitioned;
-- Frees the CHECK's name for the new table (a constraint name is chosen unique in the schema).
ALTER TABLE usage_records_unpartitioned
    RENAME CONSTRAINT usage_records_status_check TO usage_records_unpartitioned_status_check;

CREATE TABLE usage_records (
    id TEXT NOT NULL,
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
) PARTITION BY RANGE (started_at);

CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;

-- Creates the partition of the month holding `day` unless it exists; true if it created it. Fails
-- (check_violation) while rows of that month sit in the default partition.
CREATE FUNCTION usage_records_add_month(day DATE) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    first DATE := date_trunc('month', day)::date;
    name TEXT := 'usage_records_y' || to_char(first, 'YYYY') || 'm' || to_char(first, 'MM');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF usage_records FOR VALUES FROM (%L) TO (%L)',
        name, first, (first + interval '1 month')::date);
    RETURN true;
END
$$;

SELECT usage_records_add_month(CAST(m AS DATE)) FROM (
    SELECT DISTINCT date_trunc('month', started_at) AS m FROM usage_records_unpartitioned
    UNION
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => k)
    FROM generate_series(-1, 2) AS k
) AS months;

INSERT INTO usage_records (id, request_id, tenant_id, account_id, api_key_id, model, prompt_tokens,
    completion_tokens, estimated, status, worker, upstream, miner_uid, started_at, ended_at, ttft_ms,
    latency_ms, wholesale_cost_nano, charged_nano, tenant_charged_nano)
SELECT id, request_id, tenant_id, account_id, api_key_id, model, prompt_tokens, completion_tokens,
    estimated, status, worker, upstream, miner_uid, started_at, ended_at, ttft_ms, latency_ms,
    wholesale_cost_nano, charged_nano, tenant_charged_nano
FROM usage_records_unpartitioned;

DROP TABLE usage_records_unpartitioned;

ALTER TABLE usage_records ADD PRIMARY KEY (id, started_at);
CREATE INDEX usage_records_account ON usage_records (tenant_id, account_id, started_at);

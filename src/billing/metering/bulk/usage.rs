//! Usage records of a batch in one `INSERT … SELECT FROM unnest(…)`, stamped `recorded_at` now:
//! one array per column (so no
//! bind-parameter limit, whatever the batch size), records already written skipped (`ON CONFLICT
//! DO NOTHING` on the primary key (id, started_at); a replayed record has the same started_at).
//! Rows go in id order, so two writers replaying overlapping batches wait for each other instead
//! of deadlocking.

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamp};

use crate::models::usage::UsageRecord;

const INSERT: &str = "INSERT INTO usage_records (id, request_id, tenant_id, account_id, api_key_id, \
    model, prompt_tokens, completion_tokens, estimated, status, worker, upstream, miner_uid, \
    started_at, ended_at, ttft_ms, latency_ms, wholesale_cost_nano, charged_nano, \
    tenant_charged_nano, usage_source, prompt_nano_per_mtok, completion_nano_per_mtok, request_nano, \
    recorded_at) \
    SELECT u.*, $25 FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
    $16, $17, $18, $19, $20, $21, $22, $23, $24) AS u ORDER BY 1 \
    ON CONFLICT DO NOTHING";

/// One column of `records`.
fn col<'a, T>(records: &'a [UsageRecord], f: impl Fn(&'a UsageRecord) -> T) -> Vec<T> {
    records.iter().map(f).collect()
}

/// Inserts the records not yet written; returns how many were new.
pub fn insert(pg: &mut PgConnection, r: &[UsageRecord]) -> QueryResult<usize> {
    diesel::sql_query(INSERT)
        .bind::<Array<Text>, _>(col(r, |r| r.id.as_str()))
        .bind::<Array<Text>, _>(col(r, |r| r.request_id.as_str()))
        .bind::<Array<Text>, _>(col(r, |r| &r.tenant_id))
        .bind::<Array<Text>, _>(col(r, |r| &r.account_id))
        .bind::<Array<Text>, _>(col(r, |r| &r.api_key_id))
        .bind::<Array<Text>, _>(col(r, |r| r.model.as_str()))
        .bind::<Array<BigInt>, _>(col(r, |r| r.prompt_tokens))
        .bind::<Array<BigInt>, _>(col(r, |r| r.completion_tokens))
        .bind::<Array<Bool>, _>(col(r, |r| r.estimated))
        .bind::<Array<Text>, _>(col(r, |r| r.status.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |r| r.worker.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |r| r.upstream.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |r| r.miner_uid.as_deref()))
        .bind::<Array<Timestamp>, _>(col(r, |r| r.started_at))
        .bind::<Array<Timestamp>, _>(col(r, |r| r.ended_at))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |r| r.ttft_ms))
        .bind::<Array<BigInt>, _>(col(r, |r| r.latency_ms))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |r| r.wholesale_cost_nano))
        .bind::<Array<BigInt>, _>(col(r, |r| r.charged_nano))
        .bind::<Array<BigInt>, _>(col(r, |r| r.tenant_charged_nano))
        .bind::<Array<Text>, _>(col(r, |r| r.usage_source))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |r| r.prompt_nano_per_mtok))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |r| r.completion_nano_per_mtok))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |r| r.request_nano))
        .bind::<Timestamp, _>(crate::db::now())
        .execute(pg)
}

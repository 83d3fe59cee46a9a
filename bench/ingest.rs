//! Usage ingestion benchmark: PostgreSQL, the per-row writer path vs the set-based bulk path,
//! same run. `cargo run --release --example ingest -- [postgres_url] [events] [paths]`
//!
//! Creates a scratch database per path on the server of `postgres_url` (dropped at the end),
//! migrates it, and writes `events` synthetic usage records — 8 tenants × 25 accounts, each record
//! charged retail and wholesale, so four ledger entries each — in batches of `max_batch` (2,000 on PostgreSQL), one
//! transaction per batch as the writer does. `paths` (default `per-row,bulk,bulk2,writer`):
//! `per-row`, `bulk` (one writer, one connection: one gateway) and `bulkN` (N writers on N
//! connections taking batches in turn: N gateways on one database), each then replayed (every
//! record already written); `writer`: the gateway's own `UsageWriter` end to end — each record
//! journaled (`submit`, from another thread, as request handlers do), batched, fsynced, written
//! in its lanes (`INGEST_LANES`, default 2) and trimmed — timed until every record is committed. Prints a markdown table;
//! ratios are against the first path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::Connection;
use taogate::billing::metering::writer::{
    UsageWriter, max_batch, write_batch, write_batch_per_row,
};
use taogate::db::{Backend, Db, migrations};
use taogate::domain::{AccountId, ApiKeyId, Nano, TenantId};
use taogate::limits::Clock;
use taogate::limits::guard::{Guard, LimitsConfig};
use taogate::limits::memory::MemoryBackend;
use taogate::limits::shared::Shared;

/// The allocator the `taogate` binary uses, so the writer path costs here what it costs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use taogate::metrics::GatewayMetrics;
use taogate::models::usage::UsageRecord;

#[path = "scratch.rs"]
mod scratch;
use scratch::Scratch;

fn records(n: usize) -> Vec<UsageRecord> {
    let tenants: Vec<TenantId> = (0..8).map(|_| TenantId::generate()).collect();
    let accounts: Vec<AccountId> = (0..200).map(|_| AccountId::generate()).collect();
    let keys: Vec<ApiKeyId> = (0..200).map(|_| ApiKeyId::generate()).collect();
    let now = taogate::db::now();
    (0..n)
        .map(|i| {
            let (a, k) = (i % 200, i as i64);
            UsageRecord {
                id: uuid::Uuid::now_v7().to_string(),
                request_id: uuid::Uuid::new_v4().to_string(),
                tenant_id: tenants[a / 25].clone(),
                account_id: accounts[a].clone(),
                api_key_id: keys[a].clone(),
                model: "sn1-chat".into(),
                prompt_tokens: 100 + k % 50,
                completion_tokens: 200 + k % 70,
                estimated: false,
                status: "ok".into(),
                worker: Some("worker-1".into()),
                upstream: Some("http://127.0.0.1:9000".into()),
                miner_uid: Some((k % 256).to_string()),
                started_at: now,
                ended_at: now,
                ttft_ms: Some(40),
                latency_ms: 300,
                wholesale_cost_nano: Some(Nano(900)),
                charged_nano: Nano(3_000 + k % 1_000),
                tenant_charged_nano: Nano(1_000 + k % 300),
                usage_source: taogate::domain::UsageSource::Upstream,
                prompt_nano_per_mtok: None,
                completion_nano_per_mtok: None,
                request_nano: None,
            }
        })
        .collect()
}

/// Writes every record in batches (bulk or per-row), one transaction each, from `writers`
/// connections at once (writer `w` takes batches `w`, `w + writers`, …); returns the seconds.
fn run(db: &Db, records: &[UsageRecord], bulk: bool, writers: usize) -> f64 {
    let batches: Vec<&[UsageRecord]> = records.chunks(max_batch(Backend::Postgres)).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let mine = batches.iter().skip(w).step_by(writers);
            let mut conn = db.get().unwrap();
            s.spawn(move || {
                for batch in mine {
                    conn.transaction(|c| {
                        if bulk {
                            write_batch(c, batch)
                        } else {
                            write_batch_per_row(c, batch)
                        }
                    })
                    .unwrap();
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

/// Submits every record to a `UsageWriter` (journal in a scratch directory, in-process limiter)
/// and waits until all are committed; returns the seconds.
fn run_writer(db: &Db, records: &[UsageRecord]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let limits: LimitsConfig = taogate::config::Config::load(None, Default::default())
        .unwrap()
        .limits;
    let metrics = Arc::new(GatewayMetrics::new());
    let memory = Shared::Memory(MemoryBackend::new(Clock::System));
    let guard = Guard::new(memory, Clock::System, limits, metrics.clone());
    let lanes = std::env::var("INGEST_LANES").map_or(2, |l| l.parse().unwrap());
    let writer = UsageWriter::new(db.clone(), guard, dir.path(), lanes).unwrap();
    actix_web::rt::System::new().block_on(async {
        writer.spawn();
        let started = Instant::now();
        let submitter = writer.clone();
        let owned = records.to_vec();
        std::thread::spawn(move || owned.into_iter().for_each(|r| submitter.submit(r)));
        while metrics.usage_written.get() < records.len() as u64 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        started.elapsed().as_secs_f64()
    })
}

/// A path named on the command line: its label, whether it is bulk, and its writer count (0: the
/// gateway's `UsageWriter`).
fn path(name: &str) -> (String, bool, usize) {
    match name {
        "per-row" => ("per-row".into(), false, 1),
        "writer" => ("UsageWriter (journal, lanes)".into(), true, 0),
        "bulk" => ("bulk, 1 writer".into(), true, 1),
        n => {
            let writers: usize = n
                .strip_prefix("bulk")
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("unknown path {n}: per-row, bulk or bulkN"));
            (format!("bulk, {writers} writers"), true, writers)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let admin = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let events: usize = args.get(2).map_or(100_000, |n| n.parse().unwrap());
    let paths = args
        .get(3)
        .map_or("per-row,bulk,bulk2,writer", String::as_str);
    let records = records(events);
    let mut rows = Vec::new();
    for (label, bulk, writers) in paths.split(',').map(path) {
        let scratch = Scratch::create(&admin, "tg_ingest");
        let db = Db::connect(&scratch.url, writers as u32 + 3).unwrap();
        migrations::run_pending(&db).unwrap();
        if writers == 0 {
            rows.push((label, run_writer(&db, &records)));
            continue;
        }
        rows.push((label.clone(), run(&db, &records, bulk, writers)));
        if bulk {
            let replay = run(&db, &records, bulk, writers);
            rows.push((format!("{label}, replayed"), replay));
        }
    }
    let base = events as f64 / rows[0].1;
    println!("| path | events | seconds | events/s | ratio |");
    println!("|---|---|---|---|---|");
    for (label, secs) in rows {
        let rate = events as f64 / secs;
        println!(
            "| {label} | {events} | {secs:.2} | {rate:.0} | {:.1}x |",
            rate / base
        );
    }
}

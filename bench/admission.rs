//! Admission benchmark: the limiter alone, Redis (one Lua call) vs in process, same run.
//! `cargo run --release --example admission -- [redis_url] [requests] [concurrency]`
//!
//! Each request is admitted against 4 descriptors (key rpm, key requests/day, account tpm, tenant
//! concurrency) with a balance hold, then settled with a capture, as the data plane does. Prints admission latency percentiles, and
//! for Redis the commands the server counted (`INFO commandstats`) per admission and per settle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taogate::billing::holds::{Capture, Hold, LedgerSync};
use taogate::domain::{AccountId, Nano, TenantId};
use taogate::limits::memory::MemoryBackend;
use taogate::limits::redis::RedisBackend;
use taogate::limits::{Admission, Ask, Backend, Clock, Decision, Descriptor, Kind, Scope};
use taogate::redis_link::RedisLink;

fn account() -> AccountId {
    AccountId::parse("00000000-0000-7000-8000-000000000001").unwrap()
}

fn ask(tenant: &TenantId, n: usize) -> Ask {
    let d = |scope, id: &str, kind, limit| Descriptor {
        scope,
        id: id.into(),
        kind,
        limit,
    };
    Ask {
        tenant: tenant.clone(),
        admission_id: format!("req-{n}"),
        descriptors: vec![
            d(Scope::Key, "key-1", Kind::Rpm, 1_000_000_000),
            d(Scope::Key, "key-1", Kind::RequestsPerDay, 1_000_000_000),
            d(
                Scope::Account,
                account().as_str(),
                Kind::Tpm,
                1_000_000_000_000,
            ),
            d(Scope::Tenant, "tenant-1", Kind::Concurrency, 1_000_000),
        ],
        tokens: 20,
        hold: Some(Hold {
            account: account(),
            amount: Nano(1_000),
            floor: Nano(0),
        }),
    }
}

/// Runs `op(i)` for i in 0..n on `c` concurrent tasks; each call returns the latency to count.
async fn measure<F, Fut>(n: usize, c: usize, op: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Duration> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(n / c + 1);
                for i in (w..n).step_by(c) {
                    latencies.push(op(i).await);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    (all, elapsed)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn row(name: &str, c: usize, n: usize, (all, elapsed): (Vec<Duration>, Duration)) {
    println!(
        "| {name} | {c} | {:.0} | {:.3} | {:.3} | {:.3} |",
        n as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.9),
        percentile(&all, 0.99)
    );
}

/// The floor: a bare `PING` round trip on the same kind of connection, same concurrency.
async fn ping(link: RedisLink, n: usize, c: usize) {
    let link = Arc::new(link);
    let measured = measure(n, c, move |_| {
        let link = link.clone();
        async move {
            let t = Instant::now();
            link.run(|mut conn| async move {
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await
            .expect("PING");
            t.elapsed()
        }
    })
    .await;
    row("redis PING (floor)", c, n, measured);
}

/// Admits then settles `n` requests; counts the admission latency.
async fn run<B: Backend + 'static>(name: &str, backend: Arc<B>, n: usize, c: usize) {
    let tenant = Arc::new(TenantId::generate());
    let funded = LedgerSync {
        account: account(),
        balance: Nano(1_000_000_000_000_000),
        version: 1,
        committed: vec![],
    };
    backend.sync(&tenant, &funded).await.expect("synced");
    let measured = measure(n, c, move |i| {
        let (backend, tenant) = (backend.clone(), tenant.clone());
        async move {
            let a = ask(&tenant, i);
            let t = Instant::now();
            let decision = backend.admit(&a, 600_000).await.expect("backend answers");
            let latency = t.elapsed();
            let Decision::Admitted { at_ms, .. } = decision else {
                panic!("refused: {decision:?}")
            };
            let admission = Admission { ask: a, at_ms };
            let capture = Capture {
                event_id: format!("event-{i}"),
                amount: Nano(10),
            };
            backend
                .settle(&admission, 30, Some(&capture))
                .await
                .expect("settled");
            latency
        }
    })
    .await;
    row(name, c, n, measured);
}

fn commands_served(url: &str) -> (u64, u64) {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let calls = |l: &str| {
        l.split("calls=")
            .nth(1)?
            .split(',')
            .next()?
            .parse::<u64>()
            .ok()
    };
    let evalsha = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:"))
        .filter_map(calls)
        .sum();
    let all = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(calls)
        .sum();
    (evalsha, all)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or("redis://127.0.0.1:6379".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let c: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50);
    println!("| backend | concurrency | admissions+settles/s | admit p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    run(
        "in process",
        Arc::new(MemoryBackend::new(Clock::System)),
        n,
        c,
    )
    .await;
    let link = RedisLink::new(&url, Duration::from_secs(2)).unwrap();
    ping(link.clone(), n, c).await;
    let redis = RedisBackend::new(link, "tg-bench:", Clock::System);
    redis.load().await.unwrap();
    let before = commands_served(&url);
    run("redis", Arc::new(redis), n, c).await;
    let after = commands_served(&url);
    let (evalsha, all) = (after.0 - before.0, after.1 - before.1);
    println!(
        "\nRedis round trips (EVALSHA) for {n} admissions + {n} settles: {evalsha} = {:.3} per \
         request (admit and settle one each); commands executed by Redis incl. inside the \
         script: {:.1} per request",
        evalsha as f64 / n as f64,
        all as f64 / n as f64
    );
}

//! Open-loop load at a fixed rate, for latency below saturation (what wrk, closed-loop, cannot show:
//! at c=50 it keeps 50 requests queued, so its latency is queueing at whatever rate the slowest
//! part sustains).
//!
//! `cargo run --release --example openloop -- <url> <bearer> <rate/s> <seconds> [connections=50] [stream=false]`
//!
//! Request `i` is due at `start + i / rate`, whatever happened before (no coordinated omission):
//! its latency runs from when it was due, so time spent waiting for one of the `connections` (at
//! most that many in flight, each on a kept-alive connection) counts. Prints one JSON line:
//! `{"requests", "rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "errors", "late"}`;
//! `late` counts requests that started more than 1 ms after they were due (the generator or the
//! connections fell behind).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: openloop <url> <bearer> <rate/s> <seconds> [connections] [stream]";
    let [url, bearer, rate, secs] = [1, 2, 3, 4].map(|i| args.get(i).cloned());
    let (Some(url), Some(bearer), Some(rate), Some(secs)) = (url, bearer, rate, secs) else {
        anyhow::bail!(usage);
    };
    let rate: f64 = rate.parse()?;
    let secs: f64 = secs.parse()?;
    let conns: usize = args.get(5).map_or(Ok(50), |c| c.parse())?;
    let stream: bool = args.get(6).map_or(Ok(false), |s| s.parse())?;
    let body = format!(
        r#"{{"model":"taogate-owner","stream":{stream},"max_tokens":64,"messages":[{{"role":"user","content":"benchmark prompt"}}]}}"#
    );
    // Requests run on a one-thread runtime; this thread only paces them, with the OS timer
    // (tokio's timer wheel rounds sleeps up to whole milliseconds, which would read as latency).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _entered = rt.enter();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .tcp_nodelay(true)
        .build()?;
    let slots = Arc::new(Semaphore::new(conns));
    let total = (rate * secs) as usize;
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + every * i as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (client, slots) = (client.clone(), slots.clone());
        let (url, bearer, body) = (url.clone(), bearer.clone(), body.clone());
        tasks.push(rt.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("open semaphore");
            let late = due.elapsed() > Duration::from_millis(1);
            let ok = match client
                .post(&url)
                .bearer_auth(bearer)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
            {
                Ok(res) => res.status().is_success() && res.bytes().await.is_ok(),
                Err(_) => false,
            };
            (due.elapsed(), ok, late)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let (mut errors, mut late) = (0, 0);
    for t in tasks {
        let (latency, ok, was_late) = rt.block_on(t)?;
        latencies.push(latency.as_micros() as u64);
        errors += usize::from(!ok);
        late += usize::from(was_late);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        r#"{{"requests":{},"rps":{:.1},"p50_us":{},"p90_us":{},"p99_us":{},"p999_us":{},"max_us":{},"errors":{},"late":{}}}"#,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        latencies.last().copied().unwrap_or(0),
        errors,
        late
    );
    Ok(())
}

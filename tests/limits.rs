//! The limiter suite, run on both backends — in process, and Redis (the Lua script, on the test
//! Redis under a prefix of its own) — with an injected clock: window edges, token correction,
//! all-or-nothing, concurrency leases, quotas resetting exactly at UTC day and month boundaries, and
//! balance holds (first use, shortfall, capture, ledger syncs in and out of order, expiry). Also the
//! Redis link's connections: one per thread, reopened after a failure.

use std::time::Duration;

use taogate::billing::holds::{BalanceReading, Capture, Hold, LedgerSync};
use taogate::domain::{AccountId, Nano, TenantId};

fn tenant() -> TenantId {
    TenantId::parse("00000000-0000-7000-8000-0000000000aa").unwrap()
}
use taogate::limits::memory::MemoryBackend;
use taogate::limits::redis::RedisBackend;
use taogate::limits::{Admission, Ask, Backend, Clock, Decision, Descriptor, Kind, Reading, Scope};
use taogate::redis_link::RedisLink;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn d(scope: Scope, kind: Kind, limit: i64) -> Descriptor {
    Descriptor {
        scope,
        id: "id-1".into(),
        kind,
        limit,
    }
}

fn ask(descriptors: Vec<Descriptor>, tokens: i64, n: u32) -> Ask {
    Ask {
        tenant: tenant(),
        admission_id: format!("req-{n}"),
        descriptors,
        tokens,
        hold: None,
    }
}

const LEASE: i64 = 10_000;

/// Admits, seeding missing quota counters the way the gateway does from its usage records (here:
/// an empty history, zero).
async fn decide<B: Backend>(b: &B, a: &Ask) -> Decision {
    match b.admit(a, LEASE).await.unwrap() {
        Decision::Unseeded { at_ms, indexes } => {
            let seeds: Vec<(Descriptor, i64)> = indexes
                .iter()
                .map(|i| (a.descriptors[*i].clone(), 0))
                .collect();
            b.seed(&a.tenant, &seeds, at_ms).await.unwrap();
            b.admit(a, LEASE).await.unwrap()
        }
        decided => decided,
    }
}

async fn admitted<B: Backend>(b: &B, a: &Ask) -> Option<Admission> {
    match decide(b, a).await {
        Decision::Admitted { at_ms, .. } => Some(Admission {
            ask: a.clone(),
            at_ms,
        }),
        _ => None,
    }
}

async fn refused_after<B: Backend>(b: &B, a: &Ask) -> (usize, i64) {
    match decide(b, a).await {
        Decision::Refused {
            index,
            retry_after_ms,
            ..
        } => (index, retry_after_ms),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn rpm_window_edges<B: Backend>(b: &B, clock: &Clock) {
    let t0 = ms("2026-11-25T10:00:00.500Z");
    clock.set(t0);
    let limits = vec![d(Scope::Key, Kind::Rpm, 3)];
    for n in 0..3 {
        clock.set(t0 + n * 10_000);
        assert!(admitted(b, &ask(limits.clone(), 0, 0)).await.is_some());
    }
    clock.set(t0 + 30_000);
    // The first request (cell 10:00:00) leaves the window at 10:01:01.000.
    let (index, retry) = refused_after(b, &ask(limits.clone(), 0, 0)).await;
    assert_eq!(
        (index, retry),
        (0, ms("2026-11-25T10:01:01Z") - (t0 + 30_000))
    );
    clock.set(ms("2026-11-25T10:01:00.999Z"));
    assert!(
        admitted(b, &ask(limits.clone(), 0, 0)).await.is_none(),
        "still inside the window"
    );
    clock.set(ms("2026-11-25T10:01:01Z"));
    assert!(
        admitted(b, &ask(limits.clone(), 0, 0)).await.is_some(),
        "exactly at the edge"
    );
    assert!(admitted(b, &ask(limits.clone(), 0, 0)).await.is_none());
    let readings = b.peek(&tenant(), &limits).await.unwrap();
    assert_eq!(readings[0].used, 3);
}

async fn tokens_are_corrected_at_settle<B: Backend>(b: &B, clock: &Clock) {
    clock.set(ms("2026-11-25T11:00:00Z"));
    let limits = vec![
        d(Scope::Account, Kind::Tpm, 100),
        d(Scope::Account, Kind::TokensPerDay, 1_000),
    ];
    let first = admitted(b, &ask(limits.clone(), 40, 1)).await.unwrap();
    assert!(admitted(b, &ask(limits.clone(), 40, 2)).await.is_some());
    let (index, _) = refused_after(b, &ask(limits.clone(), 40, 3)).await;
    assert_eq!(index, 0, "tpm bites");
    // The first request really used 10 tokens: 30 come back.
    clock.set(ms("2026-11-25T11:00:05Z"));
    b.settle(&first, 10, None).await.unwrap();
    assert_eq!(b.peek(&tenant(), &limits).await.unwrap()[0].used, 50);
    assert!(admitted(b, &ask(limits.clone(), 40, 3)).await.is_some());
    // A request larger than the whole limit is refused outright.
    assert!(admitted(b, &ask(limits.clone(), 101, 4)).await.is_none());
    let readings = b.peek(&tenant(), &limits).await.unwrap();
    assert_eq!(
        readings.iter().map(|r| r.used).collect::<Vec<_>>(),
        vec![90, 90]
    );
}

async fn all_or_nothing<B: Backend>(b: &B, clock: &Clock) {
    clock.set(ms("2026-11-25T12:00:00Z"));
    let limits = vec![
        d(Scope::Key, Kind::Rpm, 10),
        d(Scope::Key, Kind::RequestsPerDay, 10),
        d(Scope::Tenant, Kind::Rpm, 1),
    ];
    assert!(admitted(b, &ask(limits.clone(), 0, 0)).await.is_some());
    let (index, _) = refused_after(b, &ask(limits.clone(), 0, 0)).await;
    assert_eq!(index, 2, "the tenant's limit bit");
    let used: Vec<i64> = b
        .peek(&tenant(), &limits)
        .await
        .unwrap()
        .iter()
        .map(|r| r.used)
        .collect();
    assert_eq!(used, vec![1, 1, 1], "the refused request counted nowhere");
}

async fn concurrency_slots_and_leases<B: Backend>(b: &B, clock: &Clock) {
    let t0 = ms("2026-11-25T13:00:00Z");
    clock.set(t0);
    let limits = vec![d(Scope::Key, Kind::Concurrency, 2)];
    let a = admitted(b, &ask(limits.clone(), 0, 1)).await.unwrap();
    let _leaked = admitted(b, &ask(limits.clone(), 0, 2)).await.unwrap();
    assert!(admitted(b, &ask(limits.clone(), 0, 3)).await.is_none());
    b.settle(&a, 0, None).await.unwrap();
    assert!(admitted(b, &ask(limits.clone(), 0, 3)).await.is_some());
    assert!(admitted(b, &ask(limits.clone(), 0, 4)).await.is_none());
    // Request 2 never settles (its replica crashed): its slot frees itself when the lease ends.
    clock.set(t0 + LEASE + 1);
    assert_eq!(b.peek(&tenant(), &limits).await.unwrap()[0].used, 0);
    assert!(admitted(b, &ask(limits.clone(), 0, 5)).await.is_some());
}

async fn day_quota_resets_at_utc_midnight<B: Backend>(b: &B, clock: &Clock) {
    let limits = vec![d(Scope::Account, Kind::RequestsPerDay, 2)];
    clock.set(ms("2026-11-25T23:59:58Z"));
    assert!(admitted(b, &ask(limits.clone(), 0, 0)).await.is_some());
    assert!(admitted(b, &ask(limits.clone(), 0, 0)).await.is_some());
    clock.set(ms("2026-11-25T23:59:59.999Z"));
    let (_, retry) = refused_after(b, &ask(limits.clone(), 0, 0)).await;
    assert_eq!(retry, 1, "one millisecond before midnight");
    let r = b.peek(&tenant(), &limits).await.unwrap()[0];
    assert_eq!(
        r,
        Reading {
            used: 2,
            reset_ms: 1
        }
    );
    clock.set(ms("2026-11-26T00:00:00Z"));
    assert!(admitted(b, &ask(limits.clone(), 0, 0)).await.is_some());
    assert_eq!(b.peek(&tenant(), &limits).await.unwrap()[0].used, 1);
}

async fn month_quota_resets_on_the_first<B: Backend>(b: &B, clock: &Clock) {
    let limits = vec![d(Scope::Tenant, Kind::TokensPerMonth, 100)];
    clock.set(ms("2028-02-29T23:59:59.999Z"));
    let first = admitted(b, &ask(limits.clone(), 60, 1)).await.unwrap();
    let (_, retry) = refused_after(b, &ask(limits.clone(), 60, 2)).await;
    assert_eq!(retry, 1, "leap-year February ends at March 1st, 00:00 UTC");
    clock.set(ms("2028-03-01T00:00:00Z"));
    // A correction for last month's request does not touch this month's counter.
    b.settle(&first, 90, None).await.unwrap();
    assert!(admitted(b, &ask(limits.clone(), 60, 3)).await.is_some());
    assert_eq!(b.peek(&tenant(), &limits).await.unwrap()[0].used, 60);
    clock.set(ms("2028-12-31T23:00:00Z"));
    let r = b.peek(&tenant(), &limits).await.unwrap()[0];
    assert_eq!(r.reset_ms, 3_600_000, "December ends at the new year");
}

async fn balance_holds<B: Backend>(b: &B, clock: &Clock) {
    let t0 = ms("2026-11-25T14:00:00Z");
    clock.set(t0);
    let limits = vec![d(Scope::Key, Kind::Concurrency, 5)];
    let account = AccountId::parse("00000000-0000-7000-8000-000000000001").unwrap();
    let held = |n: u32, amount: i64, floor: i64| Ask {
        hold: Some(Hold {
            account: account.clone(),
            amount: Nano(amount),
            floor: Nano(floor),
        }),
        ..ask(limits.clone(), 0, n)
    };
    let sync = |balance, version, committed: &[&str]| LedgerSync {
        account: account.clone(),
        balance: Nano(balance),
        version,
        committed: committed.iter().map(|s| s.to_string()).collect(),
    };
    let reading = || async { b.balance(&tenant(), &account).await.unwrap() };
    let in_flight = || async { b.peek(&tenant(), &limits).await.unwrap()[0].used };

    assert_eq!(
        b.admit(&held(1, 40, 0), LEASE).await.unwrap(),
        Decision::Unsynced
    );
    assert_eq!(reading().await, None);
    assert_eq!(in_flight().await, 0, "an unsynced balance counts nothing");
    b.sync(&tenant(), &sync(100, 1, &[])).await.unwrap();
    let r1 = admitted(b, &held(1, 40, 0)).await.unwrap();
    assert!(admitted(b, &held(2, 40, 0)).await.is_some());
    match b.admit(&held(3, 40, 0), LEASE).await.unwrap() {
        Decision::Insufficient { balance, .. } => assert_eq!(
            balance,
            BalanceReading {
                ledger: Nano(100),
                version: 1,
                pending: Nano(0),
                held: Nano(80)
            }
        ),
        other => panic!("expected a shortfall, got {other:?}"),
    }
    assert_eq!(in_flight().await, 2, "the short request took no slot");

    // r1 cost 25: its hold goes, 25 is pending until the ledger has it; a replay changes nothing.
    let capture = Capture {
        event_id: "e1".into(),
        amount: Nano(25),
    };
    b.settle(&r1, 0, Some(&capture)).await.unwrap();
    b.settle(&r1, 0, Some(&capture)).await.unwrap();
    let (r, pending) = reading().await.unwrap();
    assert_eq!(
        (r.held, r.pending, r.spendable()),
        (Nano(40), Nano(25), Nano(35))
    );
    assert_eq!(pending, vec!["e1".to_string()]);
    assert!(
        admitted(b, &held(3, 40, 0)).await.is_none(),
        "35 < 40 prepaid"
    );
    assert!(
        admitted(b, &held(3, 40, -10)).await.is_some(),
        "postpaid with a credit limit of 10"
    );

    // An older ledger reading never wins; the one that includes e1 retires its pending entry.
    b.sync(&tenant(), &sync(60, 0, &[])).await.unwrap();
    assert_eq!(reading().await.unwrap().0.ledger, Nano(100));
    b.sync(&tenant(), &sync(75, 2, &["e1", "e9"]))
        .await
        .unwrap();
    let (r, pending) = reading().await.unwrap();
    assert_eq!(
        (r.ledger, r.version, r.pending, r.held),
        (Nano(75), 2, Nano(0), Nano(80))
    );
    assert!(pending.is_empty());
    // r2's capture (event e9) arrives after the writer committed and retired e9: not pending again.
    let r2 = Admission {
        ask: held(2, 40, 0),
        at_ms: t0,
    };
    let late = Capture {
        event_id: "e9".into(),
        amount: Nano(30),
    };
    b.settle(&r2, 0, Some(&late)).await.unwrap();
    let (r, _) = reading().await.unwrap();
    assert_eq!(
        (r.pending, r.held),
        (Nano(0), Nano(40)),
        "r2's hold released, e9 not counted twice"
    );

    // r3 never settles (its replica crashed): its hold expires with the lease.
    clock.set(t0 + LEASE + 1);
    assert_eq!(reading().await.unwrap().0.held, Nano(0));
    assert_eq!(
        b.balance(
            &tenant(),
            &AccountId::parse("00000000-0000-7000-8000-000000000002").unwrap()
        )
        .await
        .unwrap(),
        None
    );
}

async fn lost_quota_counters_are_rebuilt<B: Backend>(b: &B, clock: &Clock) {
    clock.set(ms("2026-11-27T12:00:00Z"));
    let limits = vec![
        d(Scope::Key, Kind::RequestsPerDay, 3),
        d(Scope::Key, Kind::Rpm, 100),
    ];
    // A store without today's counter (Redis restarted empty, a new process): nothing is decided
    // or counted until it is rebuilt.
    let a = ask(limits.clone(), 0, 1);
    let at = match b.admit(&a, LEASE).await.unwrap() {
        Decision::Unseeded { at_ms, indexes } => {
            assert_eq!(indexes, vec![0], "only the quota counter is rebuilt");
            at_ms
        }
        other => panic!("expected Unseeded, got {other:?}"),
    };
    assert_eq!(b.peek(&tenant(), &limits).await.unwrap()[1].used, 0);
    // The usage records say three were served today: the quota stays spent.
    b.seed(&tenant(), &[(limits[0].clone(), 3)], at)
        .await
        .unwrap();
    let (index, _) = refused_after(b, &a).await;
    assert_eq!(index, 0);
    // A seed never lowers a counter (another replica may have counted on top of its own seed).
    b.seed(&tenant(), &[(limits[0].clone(), 1)], at)
        .await
        .unwrap();
    assert_eq!(b.peek(&tenant(), &limits).await.unwrap()[0].used, 3);
}

async fn suite<B: Backend>(make: impl Fn() -> B, clock: &Clock) {
    lost_quota_counters_are_rebuilt(&make(), clock).await;
    rpm_window_edges(&make(), clock).await;
    tokens_are_corrected_at_settle(&make(), clock).await;
    all_or_nothing(&make(), clock).await;
    concurrency_slots_and_leases(&make(), clock).await;
    day_quota_resets_at_utc_midnight(&make(), clock).await;
    month_quota_resets_on_the_first(&make(), clock).await;
    balance_holds(&make(), clock).await;
}

#[tokio::test]
async fn memory_backend() {
    let clock = Clock::manual(0);
    suite(|| MemoryBackend::new(clock.clone()), &clock).await;
}

#[tokio::test]
async fn redis_backend() {
    let url =
        std::env::var("TAOGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let clock = Clock::manual(0);
    let link = RedisLink::new(&url, Duration::from_secs(2)).unwrap();
    // A fresh prefix per sub-test: each starts from empty state, as a fresh MemoryBackend does.
    suite(
        || {
            let prefix = format!("tg-test-{}:", uuid::Uuid::new_v4().simple());
            RedisBackend::new(link.clone(), &prefix, clock.clone())
        },
        &clock,
    )
    .await;
}

/// Settles sent together (one pipelined round trip) apply exactly as one by one: every slot
/// released, every token correction once — also when the batch is sent again (a replay), and when
/// Redis lost the script (then each settle goes on its own).
#[tokio::test]
async fn batched_settles_apply_each_once() {
    let url =
        std::env::var("TAOGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let clock = Clock::manual(ms("2026-11-25T14:00:00Z"));
    let link = RedisLink::new(&url, Duration::from_secs(2)).unwrap();
    let prefix = format!("tg-test-{}:", uuid::Uuid::new_v4().simple());
    let b = RedisBackend::new(link, &prefix, clock.clone());
    let limits = vec![
        d(Scope::Key, Kind::Concurrency, 8),
        d(Scope::Key, Kind::Tpm, 10_000),
    ];
    for round in 0..2u32 {
        let mut batch = Vec::new();
        for n in 0..8 {
            let a = admitted(&b, &ask(limits.clone(), 40, round * 100 + n))
                .await
                .unwrap();
            batch.push((a, 10 + i64::from(n), None));
        }
        let readings = b.peek(&tenant(), &limits).await.unwrap();
        assert_eq!(readings[0].used, 8, "round {round}: every slot taken");
        assert!(
            admitted(&b, &ask(limits.clone(), 40, round * 100 + 50))
                .await
                .is_none()
        );
        if round == 1 {
            // Redis lost its scripts (a restart): the pipeline fails, each settle goes alone.
            let mut c = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        }
        for _ in 0..2 {
            let results = b.settle_many(&batch).await;
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }
        let readings = b.peek(&tenant(), &limits).await.unwrap();
        assert_eq!(readings[0].used, 0, "round {round}: every slot released");
        // 8 × 40 charged, corrected to 10..=17 each, once.
        let expected: i64 = (0..=round).map(|_| (10..18).sum::<i64>()).sum();
        assert_eq!(
            readings[1].used, expected,
            "round {round}: each correction once"
        );
    }
}

/// Random window traffic (rpm and tpm on two scopes, token corrections at settle, steps of a few
/// ms to a minute and a half) on both backends under one clock: every decision, reading, reset
/// and retry must be the same. The Redis side keeps a running sum per window and rebuilds it as
/// cells age out; the in-process side recounts every time.
#[tokio::test]
async fn backends_agree_on_random_window_traffic() {
    use rand::{Rng, SeedableRng};
    let url =
        std::env::var("TAOGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let clock = Clock::manual(ms("2026-11-25T13:00:00Z"));
    let link = RedisLink::new(&url, Duration::from_secs(2)).unwrap();
    let prefix = format!("tg-test-{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisBackend::new(link, &prefix, clock.clone());
    let memory = MemoryBackend::new(clock.clone());
    let limits = vec![
        d(Scope::Key, Kind::Rpm, 40),
        d(Scope::Key, Kind::Tpm, 900),
        d(Scope::Tenant, Kind::Rpm, 55),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut open: Vec<Admission> = Vec::new();
    let (mut admitted, mut refused) = (0, 0);
    for n in 0..1_500u32 {
        let step = match rng.random_range(0..100) {
            0 => rng.random_range(30_000..90_000),
            1..=30 => 0,
            _ => rng.random_range(1..2_500),
        };
        clock.set(clock.now_ms() + step);
        if !open.is_empty() && rng.random_bool(0.4) {
            let a = open.swap_remove(rng.random_range(0..open.len()));
            let actual = rng.random_range(0..60);
            redis.settle(&a, actual, None).await.unwrap();
            memory.settle(&a, actual, None).await.unwrap();
            continue;
        }
        let a = ask(limits.clone(), rng.random_range(0..60), n);
        let (r, m) = (
            redis.admit(&a, LEASE).await.unwrap(),
            memory.admit(&a, LEASE).await.unwrap(),
        );
        assert_eq!(r, m, "request {n} at {}", clock.now_ms());
        if let Decision::Admitted { at_ms, .. } = r {
            admitted += 1;
            open.push(Admission { ask: a, at_ms });
        } else {
            refused += 1;
        }
        let peeked = (
            redis.peek(&tenant(), &limits).await,
            memory.peek(&tenant(), &limits).await,
        );
        assert_eq!(
            peeked.0.unwrap(),
            peeked.1.unwrap(),
            "peek after request {n}"
        );
    }
    assert!(
        admitted > 300 && refused > 100,
        "{admitted} admitted, {refused} refused"
    );
    // Sums past 14 significant digits stay exact when a window is rebuilt.
    let big = vec![d(Scope::Account, Kind::Tpm, 4_000_000_000_000_000)];
    for n in 0..3 {
        clock.set(clock.now_ms() + 20_000);
        let a = ask(big.clone(), 123_456_789_012_345 + n, 10_000 + n as u32);
        let (r, m) = (
            redis.admit(&a, LEASE).await.unwrap(),
            memory.admit(&a, LEASE).await.unwrap(),
        );
        assert_eq!(r, m);
    }
    clock.set(clock.now_ms() + 25_000); // the first of the three ages out
    let (r, m) = (
        redis.peek(&tenant(), &big).await.unwrap(),
        memory.peek(&tenant(), &big).await.unwrap(),
    );
    assert_eq!((r[0].used, &r), (2 * 123_456_789_012_345 + 3, &m));
}

/// The Redis connection a thread uses: `CLIENT ID` on the link from `threads` threads, each on its
/// own single-threaded runtime (as the gateway's HTTP workers run), twice per thread.
fn client_ids(link: &RedisLink, threads: usize) -> Vec<(i64, i64)> {
    let id = || async {
        link.run(|mut c| async move { redis::cmd("CLIENT").arg("ID").query_async(&mut c).await })
            .await
            .unwrap()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async { (id().await, id().await) })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Each thread keeps one connection of its own (its driver runs on that thread's runtime, so a
/// round trip never waits for another thread); after a failed call the thread reconnects.
#[test]
fn redis_link_keeps_one_connection_per_thread() {
    let url =
        std::env::var("TAOGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let link = RedisLink::new(&url, Duration::from_secs(2)).unwrap();
    let ids = client_ids(&link, 3);
    for (first, second) in &ids {
        assert_eq!(first, second, "a thread reuses its connection: {ids:?}");
    }
    let distinct: std::collections::HashSet<i64> = ids.iter().map(|(a, _)| *a).collect();
    assert_eq!(distinct.len(), 3, "one connection per thread: {ids:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (before, failed, after) = rt.block_on(async {
        let id = || {
            link.run(|mut c| async move {
                redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async::<i64>(&mut c)
                    .await
            })
        };
        let before = id().await.unwrap();
        let failed = link
            .run(|mut c| async move {
                redis::cmd("NO-SUCH-COMMAND")
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        (before, failed, id().await.unwrap())
    });
    assert!(failed.is_err());
    assert_ne!(before, after, "after a failure the thread reconnects");
}

/// A rolling upgrade: holds and captures recorded by the previous version of the script (holds in
/// a sorted set, captured events in the balance hash; `tests/fixtures/limits-v1.lua`) are settled,
/// retired and expired by this one, each once.
#[tokio::test]
async fn holds_and_captures_of_the_previous_script_carry_over() {
    let url =
        std::env::var("TAOGATE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let t0 = ms("2026-11-25T14:00:00Z");
    let clock = Clock::manual(t0);
    let link = RedisLink::new(&url, Duration::from_secs(2)).unwrap();
    let prefix = format!("tg-test-{}:", uuid::Uuid::new_v4().simple());
    let b = RedisBackend::new(link, &prefix, clock.clone());
    let account = AccountId::parse("00000000-0000-7000-8000-000000000001").unwrap();
    let key = |name: &str| format!("{prefix}{{t:{}}}:a:{account}:{name}", tenant().as_str());
    let (bal, holds, retired) = (key("bal"), key("holds"), key("retired"));
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let v1 = redis::Script::new(include_str!("fixtures/limits-v1.lua"));
    // The previous version: a ledger reading, two holds of 40, a capture of 25 for event e0.
    let old = |keys: Vec<String>, args: Vec<String>| {
        let mut call = v1.prepare_invoke();
        call.key(keys).arg(args);
        let mut c = c.clone();
        async move { call.invoke_async::<Vec<i64>>(&mut c).await.unwrap() }
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let t = t0.to_string();
    old(
        s(&[&bal, &holds, &retired]),
        s(&["sync", &t, "", "100", "1", "0"]),
    )
    .await;
    for r in ["req-1", "req-2"] {
        let admitted = old(
            s(&[&bal, &holds, &retired]),
            s(&["admit", &t, r, "0", &LEASE.to_string(), "0", "40", "0"]),
        )
        .await;
        assert_eq!(admitted[0], 1, "{admitted:?}");
    }
    let marker = format!("{prefix}{{t:{}}}:settled:req-0", tenant().as_str());
    old(
        s(&[&bal, &holds, &retired, &marker]),
        s(&["settle", &t, "req-0", "0", &t, "0", "e0", "25"]),
    )
    .await;

    // This version settles req-1 (a capture of 30 for e1) and reads the balance.
    let hold = Hold {
        account: account.clone(),
        amount: Nano(40),
        floor: Nano(0),
    };
    let held = |n: u32| Ask {
        hold: Some(hold.clone()),
        ..ask(vec![], 0, n)
    };
    let r1 = Admission {
        ask: held(1),
        at_ms: t0,
    };
    let e1 = Capture {
        event_id: "e1".into(),
        amount: Nano(30),
    };
    b.settle(&r1, 0, Some(&e1)).await.unwrap();
    b.settle(&r1, 0, Some(&e1)).await.unwrap();
    let (r, mut pending) = b.balance(&tenant(), &account).await.unwrap().unwrap();
    pending.sort();
    assert_eq!(
        (r.held, r.pending, pending),
        (Nano(40), Nano(55), vec!["e0".to_string(), "e1".to_string()]),
        "req-1's hold released once, both captures pending once"
    );
    let in_zset: Vec<String> = redis::cmd("ZRANGE")
        .arg(&holds)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        in_zset,
        vec!["req-2".to_string()],
        "req-1 left the sorted set"
    );

    // The ledger commits both events: neither stays pending, wherever it was recorded.
    b.sync(
        &tenant(),
        &LedgerSync {
            account: account.clone(),
            balance: Nano(45),
            version: 2,
            committed: vec!["e0".into(), "e1".into()],
        },
    )
    .await
    .unwrap();
    let (r, pending) = b.balance(&tenant(), &account).await.unwrap().unwrap();
    assert_eq!((r.ledger, r.pending, r.held), (Nano(45), Nano(0), Nano(40)));
    assert!(pending.is_empty(), "{pending:?}");

    // req-2 never settles: once its lease ends, this version releases it (read with the
    // balance; an admission looks at the sorted set when it pushes the hash's expiry back, at
    // most an hour apart), once — and then the balance covers a hold of 45 exactly.
    assert!(admitted(&b, &held(3)).await.is_none(), "45 - 40 held < 40");
    clock.set(t0 + LEASE + 1);
    let (r, _) = b.balance(&tenant(), &account).await.unwrap().unwrap();
    assert_eq!(r.held, Nano(0), "req-2's hold expired");
    let mut big = held(4);
    big.hold.as_mut().unwrap().amount = Nano(45);
    let r4 = admitted(&b, &big).await.expect("45 available");
    assert!(admitted(&b, &held(5)).await.is_none(), "nothing left");
    let (r, _) = b.balance(&tenant(), &account).await.unwrap().unwrap();
    assert_eq!(r.held, Nano(45));
    b.settle(&r4, 0, None).await.unwrap();
    let (r, _) = b.balance(&tenant(), &account).await.unwrap().unwrap();
    assert_eq!(r.held, Nano(0));
}

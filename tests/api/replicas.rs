//! Three `taogate serve` processes on one PostgreSQL and one Redis, with a real worker process and
//! an owner-gateway stand-in behind them: limits hold exactly across replicas (rpm, tpm,
//! concurrency), revocations and limit changes reach every replica within a second, and a Redis
//! outage follows `fail_open` / `fail_closed`, then recovers with no concurrency slot left taken.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taogate::db::Db;

use crate::helpers::{Backend, Session, TestApp, TestDb, redis_url, short_id};
use crate::procs::{self, Proc};

const SECRET: &str = "replica-test-worker-secret-0123";
const KEY: &str = "owner-key-for-replicas";

pub(crate) struct Cluster {
    pub(crate) views: Vec<TestApp>,
    pub(crate) gateways: Vec<Proc>,
    _upstreams: (Proc, Proc),
    _dir: tempfile::TempDir,
    pub(crate) db: TestDb,
    pub(crate) prefix: String,
}

/// One gateway per entry of `modes` (`fail_open` / `fail_closed`), all on `redis`, each counting
/// Redis as unreachable after `redis_timeout_ms`.
fn cluster(redis: &str, modes: &[&str], owner_delay_ms: u64, redis_timeout_ms: u64) -> Cluster {
    cluster_with(redis, modes, owner_delay_ms, redis_timeout_ms, "")
}

/// As [`cluster`], with more `[limits]` lines.
fn cluster_with(
    redis: &str,
    modes: &[&str],
    owner_delay_ms: u64,
    redis_timeout_ms: u64,
    extra_limits: &str,
) -> Cluster {
    cluster_full(
        redis,
        modes,
        (owner_delay_ms, redis_timeout_ms),
        extra_limits,
        (false, &[]),
    )
}

/// As [`cluster_with`]; with `announced` the worker announces itself through `redis` and the
/// gateways have no configured workers (they find it in the registry); `env` goes to every gateway.
pub(crate) fn cluster_full(
    redis: &str,
    modes: &[&str],
    (owner_delay_ms, redis_timeout_ms): (u64, u64),
    extra_limits: &str,
    (announced, env): (bool, &[(&str, &str)]),
) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Postgres);
    let prefix = format!("tg-test-{}:", short_id());
    let owner = procs::owner_gateway(KEY, owner_delay_ms, "owner");
    let registry = announced.then_some((redis, prefix.as_str()));
    let worker = procs::worker(dir.path(), "w", SECRET, &owner.url, KEY, registry);
    let gateways: Vec<Proc> = modes
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            let limits = format!(
                "on_redis_down = \"{mode}\"\nredis_timeout_ms = {redis_timeout_ms}\nprobe_interval_ms = 100\n{extra_limits}"
            );
            let setup = procs::GatewaySetup {
                data_dir: &dir.path().join(format!("gateway{i}")),
                db: &db.url,
                redis: Some((redis, &prefix)),
                limits: &limits,
                worker: (if announced { "" } else { &worker.url }, SECRET),
            };
            let config = procs::gateway_config(&dir.path().join(format!("gateway{i}.toml")), &setup);
            Proc::start_env(&["serve"], Some(&config), env)
        })
        .collect();
    let views = gateways
        .iter()
        .map(|g| TestApp::remote(&g.url, Db::connect(&db.url, 2).unwrap()))
        .collect();
    Cluster {
        views,
        gateways,
        _upstreams: (owner, worker),
        _dir: dir,
        db,
        prefix,
    }
}

impl Cluster {
    /// A tenant owner and an account on the cluster (created through the first replica).
    pub(crate) fn owner_and_account(&self) -> (Session, String) {
        let (_, owner, account) = self.tenant_owner_and_account();
        (owner, account)
    }

    /// As [`Cluster::owner_and_account`], with the tenant's id first.
    pub(crate) fn tenant_owner_and_account(&self) -> (String, Session, String) {
        let app = &self.views[0];
        let op = app.operator();
        let (tenant, _, owner) = app.tenant(&op, false);
        let account = app.account(&owner, "Customer");
        (tenant, owner, account)
    }

    /// A key with `limits`: (id, secret).
    pub(crate) fn key(&self, owner: &Session, account: &str, limits: Value) -> (String, String) {
        let res = self.views[0]
            .post("/api/v1/keys")
            .bearer(&owner.token)
            .json(json!({"name": "k", "account_id": account, "limits": limits}))
            .expect(201, "")
            .ok();
        (
            res["id"].as_str().unwrap().to_owned(),
            res["secret"].as_str().unwrap().to_owned(),
        )
    }

    fn limit(&self, owner: &Session, key_id: &str, name: &str) -> Value {
        let res = self.views[0]
            .get(&format!("/api/v1/keys/{key_id}/limits"))
            .bearer(&owner.token)
            .send()
            .expect(200, "")
            .ok();
        res["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["scope"] == "key" && l["name"] == name)
            .cloned()
            .unwrap()
    }
}

pub(crate) fn chat_body(content: &str) -> Value {
    json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": content}]})
}

/// Fires `n` requests at once, spread round-robin over the replicas; returns the statuses (and
/// prints the body of any answer that is neither 200 nor 429, for the failure report).
pub(crate) fn burst(gateways: &[Proc], key: &str, body: &Value, n: usize) -> Vec<u16> {
    let urls: Vec<&str> = gateways.iter().map(|g| g.url.as_str()).collect();
    crate::helpers::burst(&urls, key, |_| body.clone(), n)
        .into_iter()
        .map(|(status, text)| {
            if status != 200 && status != 429 {
                eprintln!("burst: {status} {text}");
            }
            status
        })
        .collect()
}

pub(crate) fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn limits_hold_exactly_across_three_replicas() {
    // Each answer takes ~2 s (5 events, 400 ms apart): every admission decision of a burst is
    // made while the admitted requests are still in flight.
    // A generous Redis deadline: on a loaded CI box a slow answer must not count as an outage (a
    // degraded replica serves under its own limits, which breaks exactness).
    let c = cluster(
        &redis_url(),
        &["fail_open", "fail_open", "fail_open"],
        400,
        5000,
    );
    let (owner, account) = c.owner_and_account();

    let (_, rpm_key) = c.key(&owner, &account, json!({"rpm": 100}));
    let statuses = burst(&c.gateways, &rpm_key, &chat_body("hi"), 1000);
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 429)),
        (100, 900),
        "rpm=100 over 3 replicas: {statuses:?}"
    );

    let prompt = "x".repeat(400);
    let body = chat_body(&prompt);
    let parsed: taogate::openai::ChatRequest = serde_json::from_value(body.clone()).unwrap();
    let estimate = taogate::openai::estimate_tokens(&parsed.prompt_text());
    let (tpm_id, tpm_key) = c.key(
        &owner,
        &account,
        json!({"tpm": estimate * 10 + estimate / 2}),
    );
    let statuses = burst(&c.gateways, &tpm_key, &body, 1000);
    assert_eq!(
        (count(&statuses, 200), count(&statuses, 429)),
        (10, 990),
        "tpm = 10.5 requests' worth: {statuses:?}"
    );
    // Settled (just after each response): the window holds what was really used (the stand-in
    // reports prompt + 1 token).
    let used = || c.limit(&owner, &tpm_id, "tpm")["used"].as_i64().unwrap();
    let settled = std::time::Instant::now() + Duration::from_secs(3);
    while used() != 10 * (estimate + 1) && std::time::Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        used(),
        10 * (estimate + 1),
        "estimates corrected to actual usage at settle"
    );

    // A long answer (30 words, ~13 s): the whole burst is decided while the first ten are still
    // in flight, even on a loaded machine (1,000 requests to debug builds sharing two cores with
    // other tests take seconds; a slot freed before the burst ends would rightly admit another).
    let (conc_id, conc_key) = c.key(&owner, &account, json!({"concurrency": 10}));
    let words = ["word"; 30].join(" ");
    let long =
        json!({"model": "m", "max_tokens": 30, "messages": [{"role": "user", "content": words}]});
    let statuses = burst(&c.gateways, &conc_key, &long, 1000);
    // Every 200 overlaps every other (13 s answers, a burst decided in seconds), so at most ten;
    // and at least ten were admitted. An admitted request that failed fast (a rare 503 under CI
    // load, printed above) frees its slot for another, so failures are allowed, a few.
    let (ok, refused) = (count(&statuses, 200), count(&statuses, 429));
    let failed = statuses.len() - ok - refused;
    assert!(
        ok <= 10 && ok + failed >= 10 && failed <= 5,
        "concurrency=10: {ok} ok, {refused} refused, {failed} failed: {statuses:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.limit(&owner, &conc_id, "concurrency")["used"] != 0 {
        assert!(
            Instant::now() < deadline,
            "slots were not released at settle"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `probe` every 10 ms until it holds; returns how long that took.
pub(crate) fn time_until(limit: Duration, mut probe: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !probe() {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[test]
fn revocations_and_limit_changes_reach_every_replica_within_a_second() {
    let c = cluster(
        &redis_url(),
        &["fail_open", "fail_open", "fail_open"],
        0,
        5000,
    );
    let (owner, account) = c.owner_and_account();
    let (key_id, key) = c.key(&owner, &account, json!({}));
    for v in &c.views {
        v.get("/v1/models").bearer(&key).send().expect(200, "");
    }
    c.views[0]
        .delete(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    for v in &c.views[1..] {
        let took = time_until(Duration::from_secs(1), || {
            v.get("/v1/models").bearer(&key).send().status == 401
        });
        eprintln!("revocation reached {} after {took:?}", v.base);
    }
    c.views[2]
        .get("/v1/models")
        .bearer(&key)
        .send()
        .expect(401, "api_key_revoked");

    // The replicas really serve keys from their caches (no database read per request).
    caches_are_in_use_and_pushes_reach_every_replica(&c, &owner, &account);

    let (key_id, key) = c.key(&owner, &account, json!({}));
    let first = c.views[2]
        .post("/v1/chat/completions")
        .bearer(&key)
        .json(chat_body("hi"));
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("x-ratelimit-limit-requests"),
        None,
        "no limit yet"
    );
    c.views[0]
        .patch(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .json(json!({"limits": {"rpm": 5}}))
        .expect(200, "");
    let took = time_until(Duration::from_secs(1), || {
        let res = c.views[2]
            .post("/v1/chat/completions")
            .bearer(&key)
            .json(chat_body("hi"));
        res.header("x-ratelimit-limit-requests") == Some("5")
    });
    eprintln!("limit change reached the third replica after {took:?}");
}

/// Redis hangs (SIGSTOP: connections stay open, nothing answers) while a key is revoked on one
/// replica: the other two stop trusting their caches within `key_cache_trust_ms` and refuse the
/// key within a second; the revoke itself does not wait for Redis. When Redis answers again the
/// queued invalidation is delivered and the caches work again.
#[test]
fn a_revocation_never_waits_on_a_hung_redis() {
    let redis = PrivateRedis::start(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let c = cluster_with(
        &url,
        &["fail_open", "fail_open", "fail_open"],
        0,
        5000,
        "key_cache_trust_ms = 400",
    );
    let (owner, account) = c.owner_and_account();
    let (key_id, key) = c.key(&owner, &account, json!({}));
    let (_, other) = c.key(&owner, &account, json!({}));
    for v in &c.views {
        v.get("/v1/models").bearer(&key).send().expect(200, "");
    }
    redis.proc.signal("-STOP");
    let started = Instant::now();
    c.views[0]
        .delete(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    let revoke_took = started.elapsed();
    assert!(
        revoke_took < Duration::from_secs(2),
        "the revoke waited {revoke_took:?} for Redis"
    );
    for v in &c.views {
        let took = time_until(Duration::from_secs(1), || {
            v.get("/v1/models").bearer(&key).send().status == 401
        });
        eprintln!(
            "with Redis paused, the revocation reached {} after {took:?}",
            v.base
        );
        // Keys still work, read from the database.
        v.get("/v1/models").bearer(&other).send().expect(200, "");
    }
    redis.proc.signal("-CONT");
    // Redis answers again: the caches are back in use, and pushes reach every replica again.
    std::thread::sleep(Duration::from_millis(800));
    caches_are_in_use_and_pushes_reach_every_replica(&c, &owner, &account);
}

/// A change written behind the API's back is not seen (every replica answers from its cache) until
/// an invalidation names the key; then every replica refuses it within a second.
pub(crate) fn caches_are_in_use_and_pushes_reach_every_replica(
    c: &Cluster,
    owner: &Session,
    account: &str,
) {
    let (key_id, key) = c.key(owner, account, json!({}));
    for v in &c.views {
        v.get("/v1/models").bearer(&key).send().expect(200, "");
    }
    {
        use diesel::RunQueryDsl;
        let mut conn = c.views[0].db.get().unwrap();
        diesel::sql_query(format!(
            "UPDATE api_keys SET status = 'revoked' WHERE id = '{key_id}'"
        ))
        .execute(&mut *conn)
        .unwrap();
    }
    for v in &c.views {
        v.get("/v1/models").bearer(&key).send().expect(200, "");
    }
    c.views[0]
        .patch(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .json(json!({"name": "renamed"}))
        .expect(200, "");
    for v in &c.views {
        time_until(Duration::from_secs(1), || {
            v.get("/v1/models").bearer(&key).send().status == 401
        });
    }
}

/// `limits.redis_timeout_ms` is the deadline a Redis reply gets — not the client library's own
/// 500 ms default, which had made a loaded Redis degrade the limiter under a 30 s setting.
#[test]
fn the_configured_redis_deadline_is_the_one_that_applies() {
    let redis = PrivateRedis::start_with(free_port(), &["--enable-debug-command", "yes"]);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    actix_web::rt::System::new().block_on(async {
        let slow_reply = |link: taogate::redis_link::RedisLink| async move {
            link.run(|mut c| async move {
                redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg("0.8")
                    .query_async::<String>(&mut c)
                    .await
            })
            .await
        };
        let patient = taogate::redis_link::RedisLink::new(&url, Duration::from_secs(3)).unwrap();
        slow_reply(patient)
            .await
            .expect("an 800 ms reply within a 3 s deadline");
        let hasty = taogate::redis_link::RedisLink::new(&url, Duration::from_millis(300)).unwrap();
        assert!(
            slow_reply(hasty).await.is_err(),
            "an 800 ms reply past a 300 ms deadline"
        );
    });
}

/// A private redis-server on `port` (no persistence), killed when dropped.
struct PrivateRedis {
    proc: Proc,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Self {
        let port_arg = port.to_string();
        let mut args = vec![
            "--port",
            &port_arg,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start_quiet("redis-server", &args);
        let url = format!("redis://127.0.0.1:{port}");
        time_until(Duration::from_secs(5), || {
            redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .is_ok()
        });
        Self { proc, port }
    }
}

pub(crate) fn metric(app: &TestApp, line_start: &str) -> Option<String> {
    let text = app.get("/metrics").send().text;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l.rsplit(' ').next().unwrap().to_owned())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_recovered(apps: &[&TestApp]) {
    for app in apps {
        time_until(Duration::from_secs(5), || {
            metric(app, "taogate_limiter_degraded").as_deref() == Some("0")
        });
    }
}

#[test]
fn redis_outage_follows_fail_open_and_fail_closed_then_recovers() {
    let mut redis = PrivateRedis::start(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    // Answers take ~0.5 s (5 events, 100 ms apart).
    let c = cluster(&url, &["fail_open", "fail_closed"], 100, 200);
    let (open, closed) = (&c.views[0], &c.views[1]);
    let (owner, account) = c.owner_and_account();
    let (key_id, key) = c.key(&owner, &account, json!({"concurrency": 1}));
    let chat = |app: &TestApp| {
        app.post("/v1/chat/completions")
            .bearer(&key)
            .json(chat_body("hi"))
    };
    let slot_used = || {
        c.views[0]
            .get(&format!("/api/v1/keys/{key_id}/limits"))
            .bearer(&owner.token)
            .send()
            .ok()["limits"][0]["used"]
            .as_i64()
            .unwrap()
    };
    // Settles run just after the response: between two requests on this one-slot key, wait until
    // the slot is back.
    let settled = || time_until(Duration::from_secs(2), || slot_used() == 0);
    chat(open).expect(200, "");
    settled();
    chat(closed).expect(200, "");
    settled();
    // A loaded machine can make a replica miss the 200 ms timeout before the outage too (at start,
    // when it connects): counted from here, once every replica is on the shared limiter.
    wait_recovered(&[open, closed]);
    let transitions = |app: &TestApp, to: &str| -> i64 {
        metric(
            app,
            &format!(r#"taogate_limiter_transitions_total{{to="{to}"}}"#),
        )
        .map_or(0, |v| v.parse().unwrap())
    };
    let before: Vec<(i64, i64)> = [open, closed]
        .iter()
        .map(|app| (transitions(app, "degraded"), transitions(app, "recovered")))
        .collect();

    // Redis hangs while a request holds the key's only slot: its release cannot be delivered.
    std::thread::scope(|s| {
        let in_flight = s.spawn(|| chat(open).status);
        std::thread::sleep(Duration::from_millis(150));
        redis.proc.signal("-STOP");
        assert_eq!(in_flight.join().unwrap(), 200);
    });
    let refused = chat(closed).expect(503, "limiter_unavailable");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // fail_open serves under its own limits, which still bite: one slot, locally.
    std::thread::scope(|s| {
        let a = s.spawn(|| chat(open).status);
        std::thread::sleep(Duration::from_millis(150));
        let b = chat(open);
        assert_eq!(b.status, 429, "local concurrency limit: {}", b.text);
        assert_eq!(a.join().unwrap(), 200);
    });
    for (app, (degraded, _)) in [open, closed].into_iter().zip(&before) {
        assert_eq!(
            metric(app, "taogate_limiter_degraded").as_deref(),
            Some("1")
        );
        assert_eq!(
            transitions(app, "degraded"),
            degraded + 1,
            "one outage, one transition"
        );
    }

    // Redis answers again: both recover, the parked release is replayed, no slot stays taken.
    redis.proc.signal("-CONT");
    wait_recovered(&[open, closed]);
    assert_eq!(transitions(open, "recovered"), before[0].1 + 1);
    assert_eq!(slot_used(), 0, "the parked release was replayed");
    chat(closed).expect(200, "");

    // Redis dies and comes back empty (no persistence, script cache gone): same story.
    redis.proc.kill();
    chat(closed).expect(503, "limiter_unavailable");
    chat(open).expect(200, "");
    let port = redis.port;
    drop(redis);
    let _redis = PrivateRedis::start(port);
    wait_recovered(&[open, closed]);
    chat(closed).expect(200, "");
    settled();
    chat(open).expect(200, "");
}

/// Quotas survive Redis (issue 17): a daily quota spent before Redis restarts empty (no
/// persistence) is rebuilt from the usage records on first use, and stays spent.
#[test]
fn a_spent_daily_quota_survives_a_redis_restart() {
    let redis = PrivateRedis::start(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let c = cluster(&url, &["fail_open"], 0, 200);
    let app = &c.views[0];
    let (owner, account) = c.owner_and_account();
    let (_, key) = c.key(&owner, &account, json!({"requests_per_day": 3}));
    let chat = || {
        app.post("/v1/chat/completions")
            .bearer(&key)
            .json(chat_body("hi"))
    };
    for _ in 0..3 {
        chat().expect(200, "");
    }
    let spent = chat().expect(429, "quota_exceeded");
    assert_eq!(spent.body["error"]["limit"], "key requests_per_day");
    app.wait_for_rows("usage_records", 3);
    let port = redis.port;
    drop(redis);
    let _redis = PrivateRedis::start(port);
    wait_recovered(&[app]);
    let after = chat();
    assert_eq!(
        after.status, 429,
        "a spent quota stays spent: {}",
        after.text
    );
    assert_eq!(after.body["error"]["limit"], "key requests_per_day");
    // (That first call may have found the old connection dead and served it locally: again,
    // through the new Redis.)
    wait_recovered(&[app]);
    chat().expect(429, "quota_exceeded");
    assert_eq!(
        metric(app, "taogate_limiter_degraded").as_deref(),
        Some("0")
    );
}

/// With `fail_open`, every replica enforces the balance it last saw on its own while Redis is down;
/// `limits.outage_budget_nano` bounds what each may reserve per account meanwhile, so three
/// replicas spend at most 3 × the budget of a large balance (without it: up to 3 × the balance).
#[test]
fn fail_open_spends_at_most_the_outage_budget_per_replica() {
    const HOLD: i64 = 1_000_000;
    let mut redis = PrivateRedis::start(free_port());
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let budget = 2 * HOLD + HOLD / 2;
    let c = cluster_with(
        &url,
        &["fail_open", "fail_open", "fail_open"],
        0,
        200,
        &format!("outage_budget_nano = {budget}"),
    );
    let (owner, account) = c.owner_and_account();
    let app = &c.views[0];
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "per request", "is_default": true, "prices": {"*": {"request_nano": HOLD}}}))
        .expect(201, "");
    let funded = 100 * HOLD;
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": funded, "reason": "top-up"}))
        .expect(201, "");
    let (_, key) = c.key(&owner, &account, json!({}));
    for view in &c.views {
        view.post("/v1/chat/completions")
            .bearer(&key)
            .json(chat_body("before"))
            .expect(200, "");
    }
    app.wait_for_rows("usage_records", 3);
    redis.proc.kill();
    let mut served = Vec::new();
    for view in &c.views {
        let mut n = 0;
        for _ in 0..5 {
            let res = view
                .post("/v1/chat/completions")
                .bearer(&key)
                .json(chat_body("during"));
            match res.status {
                200 => n += 1,
                503 => assert_eq!(res.body["error"]["code"], "limiter_unavailable"),
                other => panic!("unexpected {other}: {}", res.text),
            }
        }
        served.push(n);
    }
    eprintln!("served per replica during the outage: {served:?} (budget {budget}, hold {HOLD})");
    assert_eq!(served, vec![2, 2, 2], "each replica stops at its budget");
    app.wait_for_rows("usage_records", 9);
    let balance = app
        .get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .ok();
    let spent_in_outage = funded - 3 * HOLD - balance["balance_nano"].as_i64().unwrap();
    assert!(
        spent_in_outage <= 3 * budget,
        "spent {spent_in_outage} during the outage, bound {}",
        3 * budget
    );
}

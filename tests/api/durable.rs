//! Usage survives crashes and outages: a real `taogate serve` killed with SIGKILL under load and
//! restarted on the same data directory loses no usage event of a request its client saw complete
//! and doubles none (both backends); with the database unreachable, requests keep being served and
//! their usage lands when it is back (PostgreSQL: the embedded SQLite has no server to lose).
//! Afterwards `taogate reconcile` reports zero drift.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use serde_json::json;
use taogate::db::Db;

use crate::both_backends;
use crate::helpers::{Backend, Session, TestApp, TestDb, redis_url, short_id};
use crate::ledger::reconcile_with_cache;
use crate::procs::{self, Proc};

const SECRET: &str = "durable-test-worker-secret-01234";
const KEY: &str = "owner-key-for-durable";
const UNIT: i64 = 1_000_000_000;

/// A tenant whose default plan is priced, one funded account and a key of it.
fn priced_key(app: &TestApp) -> (Session, String, String) {
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "metered", "is_default": true,
            "prices": {"*": {"prompt_nano_per_mtok": UNIT, "completion_nano_per_mtok": 2 * UNIT, "request_nano": 1000}}}))
        .expect(201, "");
    let account = app.account(&owner, "Customer");
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": 1000 * UNIT, "reason": "top-up"}))
        .expect(201, "");
    let (_, key) = app.key(&owner, Some(&account));
    (owner, account, key)
}

/// Sends request `id` (streamed when `stream`); true when the client saw it complete.
fn complete(base: &str, key: &str, id: &str, stream: bool, model: &str) -> bool {
    let body = json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": format!("{id} one two three")}]});
    let res = ureq::post(&format!("{base}/v1/chat/completions"))
        .set("Authorization", &format!("Bearer {key}"))
        .set("x-request-id", id)
        .timeout(Duration::from_secs(10))
        .send_json(body);
    match res {
        Ok(r) if r.status() == 200 => r.into_string().is_ok_and(|text| {
            if stream {
                text.trim_end().ends_with("data: [DONE]")
            } else {
                text.contains("\"usage\"")
            }
        }),
        _ => false,
    }
}

/// Drives `clients` threads of requests until `stop`; `done` collects the ids their clients saw
/// complete.
fn load(
    base: &Mutex<String>,
    (key, model): (&str, &str),
    clients: usize,
    stop: &AtomicBool,
    done: &Mutex<Vec<String>>,
) {
    std::thread::scope(|s| {
        for c in 0..clients {
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Acquire) {
                    let id = format!("req-{c}-{i}");
                    let url = base.lock().unwrap().clone();
                    if complete(&url, key, &id, i % 3 == 0, model) {
                        done.lock().unwrap().push(id);
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    i += 1;
                }
            });
        }
    });
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    request_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    records: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    postings: i64,
}

/// Per request id: its usage records and their ledger postings.
fn usage_by_request(db: &Db) -> Vec<Row> {
    let mut conn = db.get().unwrap();
    diesel::sql_query(
        "SELECT u.request_id, CAST(COUNT(*) AS BIGINT) AS records, CAST(SUM((SELECT COUNT(*) FROM ledger_transactions t \
         WHERE t.idempotency_key = 'usage:' || u.id)) AS BIGINT) AS postings FROM usage_records u GROUP BY u.request_id",
    )
    .load(&mut *conn)
    .unwrap()
}

/// Waits until every id in `completed` has its usage; then checks none is doubled or unposted.
fn assert_landed_once(db: &Db, completed: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = usage_by_request(db);
        let missing = completed
            .iter()
            .filter(|id| !rows.iter().any(|r| &r.request_id == *id))
            .count();
        if missing == 0 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} completed requests have no usage"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(300));
    for r in &rows {
        assert_eq!(
            r.records, 1,
            "request {} recorded {} times",
            r.request_id, r.records
        );
        assert_eq!(
            r.postings, 1,
            "request {} posted {} times",
            r.request_id, r.postings
        );
    }
}

/// Runs its closure when dropped, also while a panic unwinds (a panic inside a thread scope would
/// otherwise wait forever for the load threads).
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The value of an unlabelled metric in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn write_config(dir: &Path, db: &str, redis: Option<&str>, worker: &str) -> std::path::PathBuf {
    let url = redis_url();
    let setup = procs::GatewaySetup {
        data_dir: &dir.join("data"),
        db,
        redis: redis.map(|prefix| (url.as_str(), prefix)),
        limits: "redis_timeout_ms = 5000",
        worker: (worker, SECRET),
    };
    procs::gateway_config(&dir.join("gateway.toml"), &setup)
}

fn sigkill_under_load_loses_and_doubles_nothing(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(b);
    let owner = procs::owner_gateway(KEY, 1, "owner");
    let worker = procs::worker(dir.path(), "w", SECRET, &owner.url, KEY, None);
    let prefix = format!("tg-test-{}:", short_id());
    let redis = (b == Backend::Postgres).then_some(prefix.as_str());
    let config = write_config(dir.path(), &db.url, redis, &worker.url);
    let mut gateway = Proc::start(&["serve"], Some(&config));
    let view = TestApp::remote(&gateway.url, Db::connect(&db.url, 2).unwrap());
    let (_, _, key) = priced_key(&view);

    let (base, stop, done) = (
        Mutex::new(gateway.url.clone()),
        AtomicBool::new(false),
        Mutex::new(Vec::new()),
    );
    let _restarted = std::thread::scope(|s| {
        s.spawn(|| load(&base, (&key, "m"), 8, &stop, &done));
        let _stop = Finally(|| stop.store(true, Ordering::Release));
        std::thread::sleep(Duration::from_millis(1500));
        gateway.kill();
        std::thread::sleep(Duration::from_millis(200));
        let restarted = Proc::start(&["serve"], Some(&config));
        *base.lock().unwrap() = restarted.url.clone();
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Release);
        restarted
    });
    let completed = done.into_inner().unwrap();
    eprintln!("{} requests completed around a SIGKILL", completed.len());
    assert!(completed.len() > 50, "the load ran: {}", completed.len());
    assert_landed_once(&view.db, &completed);
    let redis = redis.map(|prefix| (redis_url(), prefix.to_owned()));
    let redis = redis.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let (clean, report) = reconcile_with_cache(&db.url, false, redis);
    assert!(clean, "{report}");
    if let Some((url, prefix)) = redis {
        // The balance cached in Redis matches the ledger (holds of the requests cut by the kill
        // stay until their lease expires); a corrupted copy is reported as drift.
        assert_eq!(report["cached_balances"]["checked"], 1, "{report}");
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*:bal"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(keys.len(), 1);
        redis::cmd("HINCRBY")
            .arg(&keys[0])
            .arg("ledger")
            .arg(1)
            .query::<i64>(&mut conn)
            .unwrap();
        let (clean, report) = reconcile_with_cache(&db.url, false, Some((url, prefix)));
        assert!(!clean, "{report}");
        assert_eq!(
            report["cached_balances"]["mismatched"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
    }
}

fn database_outage_under_load(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let (_, _, key) = priced_key(&app);
    let base = Mutex::new(app.base.clone());
    assert!(complete(&app.base, &key, "warm-up", false, "taogate-owner"));
    let name = app.db_url().rsplit('/').next().unwrap().to_owned();
    let admin = |sql: String| {
        use diesel::Connection;
        let mut conn = diesel::PgConnection::establish(&crate::helpers::pg_admin_url()).unwrap();
        diesel::sql_query(sql).execute(&mut conn).unwrap();
    };
    let (stop, done) = (AtomicBool::new(false), Mutex::new(Vec::new()));
    let served_during_outage = std::thread::scope(|s| {
        s.spawn(|| load(&base, (&key, "taogate-owner"), 4, &stop, &done));
        // Whatever happens in here, the clients stop and the database comes back.
        let _stop = Finally(|| stop.store(true, Ordering::Release));
        let _back = Finally(|| admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")));
        std::thread::sleep(Duration::from_millis(300));
        // The database goes away: no new connections, every open one terminated.
        admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
        admin(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ));
        let before = done.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(2000));
        let during = done.lock().unwrap().len() - before;
        let metrics = app.get("/metrics").send().text;
        admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Release);
        // (asserted outside the scope: a panic in here would wait forever for the clients)
        (during, metrics)
    });
    let (served_during_outage, metrics) = served_during_outage;
    assert!(
        metric(&metrics, "taogate_usage_backlog") > 0.0,
        "the usage waiting for the database shows: {metrics}"
    );
    let completed = done.into_inner().unwrap();
    eprintln!(
        "{} requests completed around a database outage, {served_during_outage} during it",
        completed.len()
    );
    assert!(
        served_during_outage > 20,
        "requests kept being served: {served_during_outage}"
    );
    assert_landed_once(&app.db, &completed);
    let metrics = app.get("/metrics").send().expect(200, "").text;
    assert_eq!(metric(&metrics, "taogate_usage_backlog"), 0.0, "{metrics}");
    assert!(metric(&metrics, "taogate_usage_written_total") >= completed.len() as f64);
    let (clean, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(clean, "{report}");
}

both_backends!(sigkill_under_load_loses_and_doubles_nothing);

#[test]
fn database_outage_under_load_postgres() {
    database_outage_under_load(Backend::Postgres);
}

//! Graceful shutdown settles what is still running (issue 17): a `taogate serve` gets SIGTERM while
//! a non-stream and a streamed request are mid-answer; after `billing.shutdown_grace_secs` both are
//! settled as `shutdown` (journaled, so the next start writes them), their clients get an answer
//! (503 / an SSE error event), and their concurrency slots are free at once for the next process —
//! in Redis too, not after the lease. Under streaming load, SIGTERM stops taking connections and
//! lets every stream that ends within the grace period end normally: none is cut, every one is
//! billed, and the process exits 0.

use std::time::{Duration, Instant};

use serde_json::json;
use taogate::db::Db;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, TestDb, redis_url, short_id};
use crate::procs::{self, Proc};

const SECRET: &str = "shutdown-test-worker-secret-01";
const KEY: &str = "owner-key-for-shutdown";

fn gateway(config: &std::path::Path) -> Proc {
    Proc::start(&["serve"], Some(config))
}

/// An owner-gateway stand-in (300 ms between words: an answer takes seconds), a worker, and a
/// gateway config on `b` (with Redis on PostgreSQL) whose shutdown grace is `grace_secs`.
struct Stack {
    db: TestDb,
    config: std::path::PathBuf,
    _upstreams: (Proc, Proc),
    _dir: tempfile::TempDir,
}

impl Stack {
    fn new(b: Backend, grace_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::new(b);
        let owner = procs::owner_gateway(KEY, 300, "owner");
        let worker = procs::worker(dir.path(), "w", SECRET, &owner.url, KEY, None);
        let prefix = format!("tg-test-{}:", short_id());
        let redis = redis_url();
        let setup = procs::GatewaySetup {
            data_dir: &dir.path().join("gateway"),
            db: &db.url,
            redis: (b == Backend::Postgres).then_some((redis.as_str(), prefix.as_str())),
            limits: "probe_interval_ms = 100",
            worker: (&worker.url, SECRET),
        };
        let config = procs::gateway_config(&dir.path().join("gateway.toml"), &setup);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!("[billing]\nshutdown_grace_secs = {grace_secs}\n"));
        std::fs::write(&config, text).unwrap();
        Self {
            db,
            config,
            _upstreams: (owner, worker),
            _dir: dir,
        }
    }
}

fn shutdown_settles_requests_still_running(b: Backend) {
    let stack = Stack::new(b, 1);
    let (db, config) = (&stack.db, &stack.config);

    let mut first = gateway(config);
    let view = TestApp::remote(&first.url, Db::connect(&db.url, 2).unwrap());
    let (owner_session, account, _, _) = view.api_key();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (_, secret) = view.concurrent_key(&owner_session, &account, 1);
        keys.push(secret);
    }
    let body = |stream: bool| {
        json!({"model": "m", "stream": stream,
            "messages": [{"role": "user", "content": "tell me a long story please"}]})
    };
    let base = first.url.clone();
    let (answered, signalled) = std::thread::scope(|s| {
        let calls: Vec<_> = [false, true]
            .into_iter()
            .zip(keys.iter())
            .map(|(stream, key)| {
                let base = base.clone();
                let body = body(stream);
                s.spawn(move || {
                    let res = ureq::post(&format!("{base}/v1/chat/completions"))
                        .set("Authorization", &format!("Bearer {key}"))
                        .set(
                            "x-request-id",
                            if stream { "shut-stream" } else { "shut-json" },
                        )
                        .timeout(Duration::from_secs(30))
                        .send_json(body);
                    let res = match res {
                        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                        Err(e) => panic!("{e}"),
                    };
                    (
                        res.status(),
                        res.into_string().unwrap_or_default(),
                        Instant::now(),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        first.signal("-TERM");
        let signalled = Instant::now();
        let answered: Vec<(u16, String, Instant)> =
            calls.into_iter().map(|c| c.join().unwrap()).collect();
        (answered, signalled)
    });
    let (json_status, json_body, json_at) = &answered[0];
    assert_eq!(*json_status, 503, "{json_body}");
    let (stream_status, stream_body, stream_at) = &answered[1];
    assert_eq!(*stream_status, 200);
    assert!(
        stream_body.contains("shutting down") && stream_body.contains("[DONE]"),
        "{stream_body}"
    );
    for at in [json_at, stream_at] {
        let waited = at.duration_since(signalled);
        assert!(
            waited < Duration::from_secs(4),
            "answered {waited:?} after SIGTERM"
        );
    }
    assert!(
        first.wait_exit(Duration::from_secs(10)),
        "the gateway exited"
    );

    // The next process writes what the first journaled; the slots are free at once.
    let second = gateway(config);
    let view = TestApp::remote(&second.url, Db::connect(&db.url, 2).unwrap());
    view.wait_for_rows("usage_records", 2);
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        request_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
    }
    let rows: Vec<Row> = {
        let mut c = view.db.get().unwrap();
        diesel::sql_query("SELECT request_id, status FROM usage_records ORDER BY request_id")
            .load(&mut *c)
            .unwrap()
    };
    let got: Vec<(String, String)> = rows.into_iter().map(|r| (r.request_id, r.status)).collect();
    assert_eq!(
        got,
        vec![
            ("shut-json".to_owned(), "shutdown".to_owned()),
            ("shut-stream".to_owned(), "shutdown".to_owned())
        ]
    );
    for key in &keys {
        let res = view.post("/v1/chat/completions").bearer(key).json(
            json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(res.status, 200, "the slot was released: {}", res.text);
    }
}

/// 24 streams (~1.5 s each) are mid-answer when SIGTERM arrives; the grace period (8 s) covers
/// them: every stream ends with its whole answer and `[DONE]` (none says "shutting down"), new
/// connections are refused, every request is in `usage_records` as `ok`, and the exit code is 0.
fn sigterm_under_streaming_load_cuts_no_stream(b: Backend) {
    const STREAMS: usize = 24;
    let stack = Stack::new(b, 8);
    let (db, config) = (&stack.db, &stack.config);

    let mut gw = gateway(config);
    let view = TestApp::remote(&gw.url, Db::connect(&db.url, 2).unwrap());
    let (_, _, _, key) = view.api_key();
    let base = gw.url.clone();
    let (answers, signalled, refused_after) = std::thread::scope(|s| {
        let calls: Vec<_> = (0..STREAMS)
            .map(|i| {
                let (base, key) = (base.clone(), key.clone());
                s.spawn(move || {
                    let res = ureq::post(&format!("{base}/v1/chat/completions"))
                        .set("Authorization", &format!("Bearer {key}"))
                        .set("x-request-id", &format!("load-{i:02}"))
                        .timeout(Duration::from_secs(30))
                        .send_json(json!({"model": "m", "stream": true,
                            "messages": [{"role": "user", "content": "tell me a story"}]}));
                    let res = match res {
                        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                        Err(e) => panic!("{e}"),
                    };
                    (res.status(), res.into_string().unwrap_or_default())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        gw.signal("-TERM");
        let signalled = Instant::now();
        // A new connection after the signal is refused (the listener is closed).
        std::thread::sleep(Duration::from_millis(200));
        let refused_after = ureq::get(&format!("{base}/healthz"))
            .timeout(Duration::from_secs(2))
            .call()
            .is_err();
        let answers: Vec<(u16, String)> = calls.into_iter().map(|c| c.join().unwrap()).collect();
        (answers, signalled, refused_after)
    });
    let done = signalled.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(
            body.contains("[DONE]") && !body.contains("shutting down"),
            "a stream was cut: {body}"
        );
    }
    assert!(refused_after, "new connections are refused after SIGTERM");
    let code = gw.exit_code(Duration::from_secs(15));
    assert_eq!(code, Some(Some(0)), "exit code after SIGTERM");
    eprintln!(
        "SIGTERM with {STREAMS} streams in flight: all ended whole within {done:?}; exited 0"
    );
    // Every request is billed once, as completed (the journal was flushed before exit).
    let after = gateway(config);
    let view = TestApp::remote(&after.url, Db::connect(&db.url, 2).unwrap());
    view.wait_for_rows("usage_records", STREAMS as i64);
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let rows: Vec<Row> = {
        let mut c = view.db.get().unwrap();
        diesel::sql_query(
            "SELECT COUNT(*) AS n FROM usage_records WHERE status = 'ok' AND request_id LIKE 'load-%'",
        )
        .load(&mut *c)
        .unwrap()
    };
    assert_eq!(rows[0].n, STREAMS as i64, "every stream billed as ok");
    assert_eq!(view.count("usage_records"), STREAMS as i64, "and once");
}

both_backends!(
    shutdown_settles_requests_still_running,
    sigterm_under_streaming_load_cuts_no_stream
);

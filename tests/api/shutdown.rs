//! Graceful shutdown settles what is still running (issue 17): a `taogate serve` gets SIGTERM while
//! a non-stream and a streamed request are mid-answer; after `billing.shutdown_grace_secs` both are
//! settled as `shutdown` (journaled, so the next start writes them), their clients get an answer
//! (503 / an SSE error event), and their concurrency slots are free at once for the next process —
//! in Redis too, not after the lease.

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

fn shutdown_settles_requests_still_running(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(b);
    // 300 ms between words: an answer takes seconds.
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
    text.push_str("[billing]\nshutdown_grace_secs = 1\n");
    std::fs::write(&config, text).unwrap();

    let mut first = gateway(&config);
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
    let second = gateway(&config);
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

both_backends!(shutdown_settles_requests_still_running);

//! The gateway's worker pool against real `taogate worker` processes: a worker killed under load,
//! a worker that hangs (SIGSTOP), every worker down; and failover between upstreams inside a worker.

use std::time::Duration;

use figment::Figment;
use figment::providers::Serialized;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};
use crate::procs::{self, Proc};

const SECRET: &str = "worker-secret-0123456789";
const KEY: &str = "owner-key-abc";

/// Where the gateway learns its workers: on PostgreSQL runs from Redis heartbeats (the production
/// pairing), on SQLite runs from static config (the embedded mode has no Redis).
pub fn registry_prefix(b: Backend) -> Option<String> {
    (b == Backend::Postgres).then(|| format!("taogate-test-{}:", crate::helpers::short_id()))
}

fn gateway(b: Backend, workers: &[Proc], prefix: Option<&str>) -> TestApp {
    let urls: Vec<String> = if prefix.is_some() {
        vec![]
    } else {
        workers.iter().map(|w| w.url.clone()).collect()
    };
    let mut overrides = Figment::new();
    if let Some(prefix) = prefix {
        overrides = overrides
            .merge(Serialized::default("redis_url", procs::REDIS_URL))
            .merge(Serialized::default("redis_prefix", prefix))
            .merge(Serialized::default("pool.heartbeat_secs", 1))
            .merge(Serialized::default("pool.heartbeat_ttl_secs", 3));
    }
    let overrides = overrides
        // Generous: on a loaded machine a healthy worker slower than this is ejected (after one
        // failure), and a request that finds every worker ejected gets 503.
        .merge(Serialized::default("pool.first_byte_timeout_ms", 3000))
        .merge(Serialized::default("pool.eject_after_failures", 1))
        .merge(Serialized::default("pool.eject_secs", 60))
        .merge(Serialized::default("pool.health_interval_secs", 1))
        .merge(Serialized::default("pool.worker_secret", SECRET));
    let app = TestApp::spawn_full(b, overrides, move |mut c, _| async move {
        c.pool.workers = urls;
        c.models.push(taogate::config::ModelConfig {
            id: "m".into(),
            owned_by: "test".into(),
            max_tokens: None,
        });
        for id in ["dead", "dropper", "mapped"] {
            c.models.push(taogate::config::ModelConfig {
                id: id.into(),
                owned_by: "test".into(),
                max_tokens: None,
            });
        }
        c
    });
    if prefix.is_some() {
        // Announced workers join at the next registry sync.
        std::thread::sleep(Duration::from_millis(1200));
    }
    app
}

/// Writes a fresh hotkey for wallet `wallet` under `dir/wallets`.
fn new_hotkey(dir: &std::path::Path, wallet: &str) {
    let keyfile = dir
        .join("wallets")
        .join(wallet)
        .join("hotkeys")
        .join("default");
    std::fs::create_dir_all(keyfile.parent().unwrap()).unwrap();
    std::fs::write(
        &keyfile,
        taogate::worker::hotkey::Hotkey::generate().keyfile_json(),
    )
    .unwrap();
}

fn ask(stream: bool) -> serde_json::Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "are you there"}]})
}

fn pool_survives_dead_and_hung_workers(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let owner = procs::owner_gateway(KEY, 5, "owner");
    let prefix = registry_prefix(b);
    let mut workers: Vec<Proc> = (0..3)
        .map(|i| {
            procs::worker(
                dir.path(),
                &format!("w{i}"),
                SECRET,
                &owner.url,
                KEY,
                prefix.as_deref().map(|p| (procs::REDIS_URL, p)),
            )
        })
        .collect();
    let app = gateway(b, &workers, prefix.as_deref());
    let (_, _, _, key) = app.api_key();
    if let Some(prefix) = &prefix {
        // The workers really announced themselves in Redis (the gateway has no static list).
        let mut redis = redis::Client::open(procs::REDIS_URL)
            .unwrap()
            .get_connection()
            .unwrap();
        let mut announced: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}{{registry}}:workers"))
            .arg(0)
            .arg(-1)
            .query(&mut redis)
            .unwrap();
        announced.sort();
        let mut urls: Vec<String> = workers.iter().map(|w| w.url.clone()).collect();
        urls.sort();
        assert_eq!(announced, urls);
    }

    // Load from 6 clients while worker 0 is killed: every request still gets 200.
    let statuses = std::thread::scope(|s| {
        let clients: Vec<_> = (0..6)
            .map(|c| {
                let (app, key) = (&app, &key);
                s.spawn(move || {
                    (0..12)
                        .map(|i| {
                            let res = app
                                .post("/v1/chat/completions")
                                .bearer(key)
                                .json(ask((c + i) % 2 == 0));
                            if res.status == 200
                                && !res.text.contains("[DONE]")
                                && res.body["object"] != "chat.completion"
                            {
                                panic!("incomplete answer: {}", res.text);
                            }
                            res.status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        workers[0].kill();
        clients
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<u16>>()
    });
    assert_eq!(statuses.len(), 72);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "client errors while a worker died: {statuses:?}"
    );

    // Worker 1 hangs: the deadline moves requests to worker 2.
    workers[1].signal("-STOP");
    for _ in 0..6 {
        let res = app
            .post("/v1/chat/completions")
            .bearer(&key)
            .json(ask(false))
            .expect(200, "");
        assert!(
            res.body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("Hello from owner")
        );
    }

    // Everyone down: 503 with Retry-After, quickly.
    workers[2].kill();
    let started = std::time::Instant::now();
    let res = app
        .post("/v1/chat/completions")
        .bearer(&key)
        .json(ask(true))
        .expect(503, "service_unavailable");
    assert!(res.header("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn worker_fails_over_to_the_next_upstream(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let backup = procs::owner_gateway(KEY, 0, "backup");
    for behaviour in ["error", "hang"] {
        let broken = procs::broken_gateway(KEY, behaviour);
        let config = dir.path().join(format!("{behaviour}.toml"));
        new_hotkey(dir.path(), behaviour);
        std::fs::write(
            &config,
            format!(
                r#"[worker]
listen = "127.0.0.1:0"
secret = "{SECRET}"
wallet_path = "{}"
wallet_name = "{behaviour}"
hotkey_name = "default"
first_byte_timeout_ms = 500
[[worker.routes]]
model = "m"
[[worker.routes.upstreams]]
kind = "openai"
name = "broken"
base_url = "{}/v1"
api_key = "{KEY}"
[[worker.routes.upstreams]]
kind = "openai"
name = "backup"
base_url = "{}/v1"
api_key = "{KEY}"
[[worker.routes]]
model = "dead"
[[worker.routes.upstreams]]
kind = "openai"
name = "broken"
base_url = "{}/v1"
api_key = "{KEY}"
"#,
                dir.path().join("wallets").display(),
                broken.url,
                backup.url,
                broken.url
            ),
        )
        .unwrap();
        let worker = Proc::start(&["worker"], Some(&config));
        let app = gateway(b, std::slice::from_ref(&worker), None);
        let (_, _, _, key) = app.api_key();
        for stream in [false, true] {
            let res = app
                .post("/v1/chat/completions")
                .bearer(&key)
                .json(ask(stream))
                .expect(200, "");
            let text: String = if stream {
                assert!(
                    !res.text.contains("\"error\""),
                    "{behaviour}: the client sees no error"
                );
                res.text
                    .split("\n\n")
                    .filter_map(|e| e.strip_prefix("data: "))
                    .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
                    .filter_map(|c| {
                        c["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_owned)
                    })
                    .collect()
            } else {
                res.body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert!(
                text.starts_with("Hello from backup."),
                "{behaviour}, stream {stream}: {text}"
            );
        }
        // A model whose every upstream fails: 502 upstream_error, after the first-byte deadline.
        let mut dead = ask(false);
        dead["model"] = json!("dead");
        app.post("/v1/chat/completions")
            .bearer(&key)
            .json(dead)
            .expect(502, "upstream_error");
        app.wait_for_rows("usage_records", 3);
    }
}

/// An upstream that drops its connection mid-answer: a non-stream request (nothing sent to the
/// client yet) is answered by the next upstream and the broken route is opened; a stream already
/// under way ends with the full error event and is recorded `upstream_error`. Every answer names
/// the model the client asked for, also from an upstream that maps names.
fn answers_that_break_midway_fail_over_or_are_recorded_as_errors(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let backup = procs::owner_gateway(KEY, 0, "backup");
    let dropping = procs::broken_gateway(KEY, "drop");
    new_hotkey(dir.path(), "w");
    let config = dir.path().join("worker.toml");
    let upstream = |name: &str, url: &str, model: &str| {
        format!(
            "[[worker.routes.upstreams]]\nkind = \"openai\"\nname = \"{name}\"\nbase_url = \"{url}/v1\"\napi_key = \"{KEY}\"\n{model}\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "[worker]\nlisten = \"127.0.0.1:0\"\nsecret = \"{SECRET}\"\nwallet_path = \"{}\"\nwallet_name = \"w\"\nhotkey_name = \"default\"\nroute_eject_secs = 60\n\
             [[worker.routes]]\nmodel = \"m\"\n{}{}\
             [[worker.routes]]\nmodel = \"dropper\"\n{}\
             [[worker.routes]]\nmodel = \"mapped\"\n{}",
            dir.path().join("wallets").display(),
            upstream("broken", &dropping.url, ""),
            upstream("backup", &backup.url, ""),
            upstream("broken", &dropping.url, ""),
            upstream("backup", &backup.url, "model = \"echo-1\""),
        ),
    )
    .unwrap();
    let worker = Proc::start(&["worker"], Some(&config));
    let app = gateway(b, std::slice::from_ref(&worker), None);
    let (_, _, _, key) = app.api_key();
    let chat = |model: &str, stream: bool| {
        let mut body = ask(stream);
        body["model"] = json!(model);
        app.post("/v1/chat/completions").bearer(&key).json(body)
    };

    // Non-stream: the first upstream breaks after its first events; the answer is the backup's.
    let res = chat("m", false).expect(200, "");
    let text = res.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(text.starts_with("Hello from backup."), "{text}");
    assert_eq!(res.body["model"], "m");
    // The broken route is open now: a stream goes straight to the backup.
    let res = chat("m", true).expect(200, "");
    assert!(!res.text.contains("\"error\""), "{}", res.text);

    // A stream whose only upstream breaks midway: the full error event, then [DONE].
    let res = chat("dropper", true).expect(200, "");
    let events: Vec<&str> = res
        .text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{}", res.text);
    let error: serde_json::Value = serde_json::from_str(events[events.len() - 2]).unwrap();
    let e = &error["error"];
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("api_error"), &json!("upstream_error")),
        "{error}"
    );
    assert!(
        e["message"].is_string() && e.get("param").is_some(),
        "{error}"
    );
    // Its route is open now: the non-stream retry finds no upstream.
    chat("dropper", false).expect(502, "upstream_error");

    // Mapped model names: the client sees the model it asked for.
    let res = chat("mapped", false).expect(200, "");
    assert_eq!(res.body["model"], "mapped");
    let res = chat("mapped", true).expect(200, "");
    for event in res
        .text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
    {
        if event != "[DONE]" {
            let chunk: serde_json::Value = serde_json::from_str(event).unwrap();
            assert_eq!(chunk["model"], "mapped", "{event}");
        }
    }

    // The usage: the broken stream is an upstream error, the rest are ok.
    app.wait_for_rows("usage_records", 6);
    let statuses: Vec<(String, String)> = {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            model: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            status: String,
        }
        let mut conn = app.db.get().unwrap();
        diesel::sql_query("SELECT model, status FROM usage_records ORDER BY id")
            .load::<Row>(&mut *conn)
            .unwrap()
            .into_iter()
            .map(|r| (r.model, r.status))
            .collect()
    };
    let of = |model: &str| -> Vec<&str> {
        statuses
            .iter()
            .filter(|(m, _)| m == model)
            .map(|(_, s)| s.as_str())
            .collect()
    };
    assert_eq!(of("m"), ["ok", "ok"], "{statuses:?}");
    assert_eq!(
        of("dropper"),
        ["upstream_error", "upstream_error"],
        "{statuses:?}"
    );
    assert_eq!(of("mapped"), ["ok", "ok"], "{statuses:?}");
}

fn workers_refuse_requests_without_the_secret(b: Backend) {
    let _ = b;
    let dir = tempfile::tempdir().unwrap();
    let owner = procs::owner_gateway(KEY, 0, "owner");
    let worker = procs::worker(dir.path(), "w", SECRET, &owner.url, KEY, None);
    let url = format!("{}/v1/chat/completions", worker.url);
    for auth in [
        "",
        "Bearer wrong-secret-wrong",
        "Bearer worker-secret-012345678",
    ] {
        let mut req = ureq::post(&url);
        if !auth.is_empty() {
            req = req.set("Authorization", auth);
        }
        let status = match req.send_json(ask(false)) {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(status, 401, "auth {auth:?}");
    }
    let ok = ureq::post(&url)
        .set("Authorization", &format!("Bearer {SECRET}"))
        .send_json(ask(false))
        .unwrap();
    assert_eq!(ok.header("x-taogate-upstream"), Some("owner"));
    let health: serde_json::Value = ureq::get(&format!("{}/healthz", worker.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(health["models"], json!(["m"]));
}

both_backends!(
    pool_survives_dead_and_hung_workers,
    worker_fails_over_to_the_next_upstream,
    answers_that_break_midway_fail_over_or_are_recorded_as_errors,
    workers_refuse_requests_without_the_secret
);

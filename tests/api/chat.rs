//! `POST /v1/chat/completions` through the pool to a real worker, real Epistula miners and an
//! owner gateway on loopback: OpenAI formats (JSON and SSE), validation, auth, metering,
//! client disconnects.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Resp, TestApp};

fn chat(app: &TestApp, key: &str, body: Value) -> Resp {
    app.post("/v1/chat/completions").bearer(key).json(body)
}

fn ask(content: &str) -> Value {
    json!({"model": "taogate-demo", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]})
}

/// Usage rows as JSON objects.
fn usage_rows(app: &TestApp) -> Vec<Value> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        completion_tokens: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        prompt_tokens: i64,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        estimated: bool,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        upstream: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        miner_uid: Option<String>,
    }
    let mut conn = app.db.get().unwrap();
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT status, completion_tokens, prompt_tokens, estimated, upstream, miner_uid FROM usage_records ORDER BY id",
    )
    .load(&mut *conn)
    .unwrap();
    rows.into_iter()
        .map(|r| json!({"status": r.status, "completion_tokens": r.completion_tokens, "prompt_tokens": r.prompt_tokens,
            "estimated": r.estimated, "upstream": r.upstream, "miner_uid": r.miner_uid}))
        .collect()
}

fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn non_stream_answers_with_usage_and_is_metered(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let (_, _, _, key) = app.api_key();
    let res = chat(&app, &key, ask("ping pong")).expect(200, "").ok();
    assert_eq!(res["object"], "chat.completion");
    let content = res["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("Hello from miner ") && content.ends_with("You said: ping pong"),
        "{content}"
    );
    assert_eq!(res["choices"][0]["message"]["role"], "assistant");
    assert_eq!(res["choices"][0]["finish_reason"], "stop");
    let words = content.split_inclusive(' ').count() as i64;
    assert_eq!(res["usage"]["completion_tokens"], words);
    assert_eq!(
        res["usage"]["total_tokens"].as_i64().unwrap(),
        res["usage"]["prompt_tokens"].as_i64().unwrap() + words
    );
    app.wait_for_rows("usage_records", 1);
    let row = &usage_rows(&app)[0];
    assert_eq!(row["status"], "ok");
    assert_eq!(
        row["estimated"], false,
        "the upstream's usage is used when present"
    );
    assert_eq!(row["completion_tokens"], words);
    assert_eq!(row["upstream"], "local-miners");
    let uid: u16 = row["miner_uid"].as_str().unwrap().parse().unwrap();
    assert!(
        content.contains(&format!("miner {uid}.")),
        "the recorded uid is the one that answered"
    );
}

fn streams_follow_the_openai_sse_format(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let (_, _, _, key) = app.api_key();
    for include_usage in [true, false] {
        let mut body = ask("stream me");
        body["stream"] = json!(true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let res = chat(&app, &key, body).expect(200, "");
        assert!(
            res.header("content-type")
                .unwrap()
                .starts_with("text/event-stream")
        );
        let events = sse_events(&res.text);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(text.ends_with("You said: stream me"), "{text}");
        let with_usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
        if include_usage {
            assert_eq!(with_usage.len(), 1, "exactly one usage chunk");
            let last = chunks.last().unwrap();
            assert_eq!(
                last["choices"],
                json!([]),
                "the usage chunk has empty choices"
            );
            assert_eq!(
                last["usage"]["completion_tokens"],
                text.split_inclusive(' ').count() as i64
            );
        } else {
            assert!(with_usage.is_empty(), "no usage chunk unless asked for");
        }
    }
    app.wait_for_rows("usage_records", 2);
    assert!(
        usage_rows(&app)
            .iter()
            .all(|r| r["status"] == "ok" && r["estimated"] == false)
    );
}

fn owner_gateway_route_and_unknown_models(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let (_, _, _, key) = app.api_key();
    // Every signing scheme's miners answer through the worker.
    for model in ["taogate-btauth", "taogate-verathos", "taogate-axon"] {
        let mut body = ask("signed");
        body["model"] = json!(model);
        let res = chat(&app, &key, body).expect(200, "").ok();
        let content = res["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            content.starts_with("Hello from miner ") && content.ends_with("You said: signed"),
            "{model}: {content}"
        );
    }
    let mut body = ask("via owner");
    body["model"] = json!("taogate-owner");
    let res = chat(&app, &key, body).expect(200, "").ok();
    assert!(
        res["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hello from the owner gateway")
    );
    let mut body = ask("x");
    body["model"] = json!("gpt-5-turbo-max");
    let err = chat(&app, &key, body).expect(404, "model_not_found");
    assert_eq!(err.body["error"]["param"], "model");
    assert_eq!(err.body["error"]["type"], "invalid_request_error");
    let models = app.get("/v1/models").bearer(&key).send().ok();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"taogate-demo") && ids.contains(&"taogate-owner"));
}

fn invalid_requests_are_refused_like_openai(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        figment::Figment::new().merge(figment::providers::Serialized::default(
            "http.max_body_bytes",
            4096,
        )),
    );
    let (_, _, _, key) = app.api_key();
    let cases = [
        (json!({"model": "taogate-demo", "messages": []}), "messages"),
        (
            json!({"model": "taogate-demo", "messages": [{"role": "robot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "taogate-demo", "messages": [{"role": "user", "content": 42}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "taogate-demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "taogate-demo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 40000}),
            "max_tokens",
        ),
        (
            json!({"model": "taogate-demo", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -5}),
            "max_completion_tokens",
        ),
    ];
    for (body, param) in cases {
        let res = chat(&app, &key, body).expect(400, "invalid_request");
        assert_eq!(res.body["error"]["param"], param);
    }
    chat(&app, &key, json!({"model": "taogate-demo"})).expect(400, "invalid_request");
    chat(&app, &key, json!({"model": "taogate-demo", "messages": [{"role": "user", "content": "x"}], "stream": "yes"})).expect(400, "invalid_request");
    app.post("/v1/chat/completions")
        .bearer(&key)
        .header("Content-Type", "application/json")
        .raw(Some(b"{nope"))
        .expect(400, "invalid_json");
    chat(&app, &key, json!({"model": "taogate-demo", "messages": [{"role": "user", "content": "x".repeat(5000)}]})).expect(413, "payload_too_large");
    chat(
        &app,
        &key,
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .expect(404, "model_not_found");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        app.count("usage_records"),
        0,
        "refused requests are not metered"
    );
}

fn scope_revocation_and_missing_workers(b: Backend) {
    let app = TestApp::spawn(b);
    let (owner, account, key_id, key) = app.api_key();
    let models_only = app
        .post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "ro", "account_id": account, "scopes": ["models:read"]}))
        .expect(201, "")
        .ok();
    chat(&app, models_only["secret"].as_str().unwrap(), ask("x")).expect(403, "insufficient_scope");
    // No worker configured: 503 `no_workers` saying so, with Retry-After, recorded as an
    // upstream error.
    let res = chat(&app, &key, ask("x")).expect(503, "no_workers");
    assert!(res.header("retry-after").is_some());
    assert!(res.text.contains("pool.workers"), "{}", res.text);
    app.wait_for_rows("usage_records", 1);
    assert_eq!(usage_rows(&app)[0]["status"], "upstream_error");
    app.delete(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    chat(&app, &key, ask("x")).expect(401, "api_key_revoked");
    chat(&app, "", ask("x")).expect(401, "missing_api_key");
}

/// A raw streamed chat request on its own connection, read until `events` events arrived (or
/// 20 s passed): the socket (to close when the test chooses) and what was read.
fn stream_until(
    app: &TestApp,
    key: &str,
    content: &str,
    events: usize,
) -> (std::net::TcpStream, String) {
    let body = json!({"model": "taogate-owner", "stream": true,
        "messages": [{"role": "user", "content": content}]})
    .to_string();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    write!(sock, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while seen.matches("data: ").count() < events && started.elapsed() < Duration::from_secs(20) {
        let n = sock.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    (sock, seen)
}

/// A stream's client that leaves while the upstream is idle (3 s between words) is noticed at
/// once — the stream ends, its upstream is cancelled, what was delivered is settled — not when a
/// write to the closed connection fails (the second word after the close, 6 s later).
fn a_stream_whose_client_leaves_between_words_ends_at_once(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 3_000);
    let (_, _, _, key) = app.api_key();
    let (sock, _) = stream_until(&app, &key, "one two three", 1);
    drop(sock);
    let left = Instant::now();
    // The next word is 3 s away: the record must not wait for it.
    while app.count("usage_records") == 0 && left.elapsed() < Duration::from_millis(2_500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        app.count("usage_records"),
        1,
        "settled before the upstream's next word"
    );
    let row = &usage_rows(&app)[0];
    assert_eq!(row["status"], "client_disconnected");
}

fn client_disconnect_settles_what_was_delivered(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 150);
    let (_, _, _, key) = app.api_key();
    let (sock, _) = stream_until(
        &app,
        &key,
        "one two three four five six seven eight nine ten",
        4,
    );
    drop(sock);
    app.wait_for_rows("usage_records", 1);
    let row = &usage_rows(&app)[0];
    assert_eq!(row["status"], "client_disconnected");
    assert_eq!(row["estimated"], true);
    let full =
        "Hello from the owner gateway. You said: one two three four five six seven eight nine ten"
            .split(' ')
            .count() as i64;
    let delivered = row["completion_tokens"].as_i64().unwrap();
    assert!(
        delivered >= 1 && delivered < full,
        "delivered {delivered} of {full} words"
    );
}

fn websocket_answers_several_requests_per_connection(b: Backend) {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest;
    let app = TestApp::spawn_with_subnet(b, 0);
    let (_, _, _, key) = app.api_key();
    let url = format!("{}/v1/chat/ws", app.base.replace("http://", "ws://"));
    let connect = |key: &str| {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        tungstenite::connect(req)
    };
    match connect("tg_not_a_real_key") {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!(
            "a bad key must be refused before the upgrade: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    let (mut ws, _) = connect(&key).unwrap();
    let mut ids = Vec::new();
    for (i, content) in [
        "first question",
        "second question",
        "bad model",
        "not json",
        "third question",
    ]
    .iter()
    .enumerate()
    {
        let body = match *content {
            "bad model" => {
                json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).to_string()
            }
            "not json" => "{{{".to_owned(),
            _ => ask(content).to_string(),
        };
        ws.send(Message::text(body)).unwrap();
        let mut text = String::new();
        let last = loop {
            let msg: Value = match ws.read().unwrap() {
                Message::Text(t) => serde_json::from_str(&t).unwrap(),
                _ => continue,
            };
            match msg["type"].as_str().unwrap() {
                "chunk" => {
                    assert_eq!(msg["data"]["object"], "chat.completion.chunk");
                    text.push_str(
                        msg["data"]["choices"][0]["delta"]["content"]
                            .as_str()
                            .unwrap_or(""),
                    );
                }
                _ => break msg,
            }
        };
        ids.push(last["request_id"].as_str().unwrap().to_owned());
        match *content {
            "bad model" => {
                assert_eq!(
                    (last["type"].as_str(), last["status"].as_u64()),
                    (Some("error"), Some(404)),
                    "{i}: {last}"
                );
                assert_eq!(last["error"]["code"], "model_not_found");
            }
            "not json" => {
                assert_eq!(last["type"], "error");
                assert_eq!(last["error"]["code"], "invalid_request");
            }
            _ => {
                assert_eq!(last["type"], "done", "{last}");
                assert!(text.ends_with(&format!("You said: {content}")), "{text}");
                assert_eq!(
                    last["usage"]["completion_tokens"],
                    text.split_inclusive(' ').count() as i64
                );
            }
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 5, "each request has its own id");
    ws.close(None).unwrap();
    app.wait_for_rows("usage_records", 3);
    assert!(usage_rows(&app).iter().all(|r| r["status"] == "ok"));
}

fn backpressure_answers_503_overloaded(b: Backend) {
    use figment::providers::Serialized;
    let overrides = figment::Figment::new()
        .merge(Serialized::default("pool.max_in_flight", 1))
        .merge(Serialized::default("pool.queue_wait_ms", 100));
    let app = TestApp::spawn_with_subnet_and(b, 100, overrides);
    let (_, _, _, key) = app.api_key();
    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let mut body = ask("hold the only slot for a while");
            body["model"] = json!("taogate-owner");
            chat(&app, &key, body).expect(200, "")
        });
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let res = chat(&app, &key, ask("x")).expect(503, "overloaded");
        assert_eq!(res.header("retry-after"), Some("1"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the wait is bounded"
        );
        slow.join().unwrap();
    });
    // The slot is free again.
    chat(&app, &key, ask("y")).expect(200, "");
}

both_backends!(
    backpressure_answers_503_overloaded,
    websocket_answers_several_requests_per_connection,
    non_stream_answers_with_usage_and_is_metered,
    streams_follow_the_openai_sse_format,
    owner_gateway_route_and_unknown_models,
    invalid_requests_are_refused_like_openai,
    scope_revocation_and_missing_workers,
    client_disconnect_settles_what_was_delivered,
    a_stream_whose_client_leaves_between_words_ends_at_once,
);

//! Bad input: each gets its documented status and code, and nothing is written.

use figment::Figment;
use figment::providers::Serialized;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

fn malformed_bodies_are_refused_without_writes(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        Figment::new().merge(Serialized::default("http.max_body_bytes", 4096)),
    );
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let before = (app.count("accounts"), app.count("audit_log"));
    let post = |body: &[u8], ctype: &str| {
        app.post("/api/v1/accounts")
            .bearer(&owner.token)
            .header("Content-Type", ctype)
            .raw(Some(body))
    };
    post(b"{\"name\": ", "application/json").expect(400, "invalid_json");
    post(b"not json at all", "application/json").expect(400, "invalid_json");
    post(b"", "application/json").expect(400, "invalid_json");
    post(br#"{"name": 42}"#, "application/json").expect(400, "invalid_request");
    post(
        br#"{"name": "x", "credit_limit_nano": "lots"}"#,
        "application/json",
    )
    .expect(400, "invalid_request");
    post(
        br#"{"name": "x", "credit_limit_nano": 1.5}"#,
        "application/json",
    )
    .expect(400, "invalid_request");
    post(
        br#"{"name": "x", "credit_limit_nano": 99999999999999999999}"#,
        "application/json",
    )
    .expect(400, "amount_out_of_range");
    post(br#"{"name": "x", "is_admin": true}"#, "application/json").expect(400, "invalid_request");
    post(
        br#"{"name": "x", "billing_mode": "free"}"#,
        "application/json",
    )
    .expect(400, "invalid_request");
    post(br#"{"name": "x"}"#, "text/plain").expect(415, "unsupported_media_type");
    let big = format!(r#"{{"name": "{}"}}"#, "a".repeat(5000));
    post(big.as_bytes(), "application/json").expect(413, "payload_too_large");
    let long = app
        .post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({"name": "n".repeat(201)}))
        .expect(400, "invalid_request");
    assert_eq!(long.body["error"]["param"], "name");
    app.post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({"name": "   "}))
        .expect(400, "invalid_request");
    app.post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({"name": "tab\there"}))
        .expect(400, "invalid_request");
    app.post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({"name": "x", "credit_limit_nano": -1}))
        .expect(400, "invalid_request");
    app.get("/api/v1/accounts?limit=abc")
        .bearer(&owner.token)
        .send()
        .expect(400, "invalid_request");
    app.get("/api/v1/accounts?bogus=1")
        .bearer(&owner.token)
        .send()
        .expect(400, "invalid_request");
    assert_eq!(
        (app.count("accounts"), app.count("audit_log")),
        before,
        "refused requests wrote something"
    );
    // Internal detail never leaks: no SQL, no Rust type names, no paths.
    let res = post(br#"{"name": 42}"#, "application/json");
    for leak in ["diesel", "sqlite", "postgres", "src/", "taogate::"] {
        assert!(
            !res.text.to_lowercase().contains(leak),
            "error body leaks `{leak}`: {}",
            res.text
        );
    }
}

fn unicode_and_sql_looking_strings_are_data(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    for name in [
        "Ünïcødé 客户 🚀",
        "x'); DROP TABLE accounts;--",
        "\" OR 1=1 --",
        "Robert'); DELETE FROM users; --",
    ] {
        let created = app
            .post("/api/v1/accounts")
            .bearer(&owner.token)
            .json(json!({"name": name}))
            .expect(201, "")
            .ok();
        let id = created["id"].as_str().unwrap();
        let got = app
            .get(&format!("/api/v1/accounts/{id}"))
            .bearer(&owner.token)
            .send()
            .ok();
        assert_eq!(got["name"], name, "stored verbatim");
    }
    assert_eq!(app.count("accounts"), 4);
    app.get("/api/v1/accounts/' OR '1'='1")
        .bearer(&owner.token)
        .send()
        .expect(404, "not_found");
    app.get("/api/v1/keys?account_id=' OR 1=1 --")
        .bearer(&owner.token)
        .send()
        .expect(400, "invalid_request");
    let res = app
        .post("/api/v1/auth/login")
        .json(json!({"email": "' OR 1=1 --", "password": "anything at all", "tenant": "x' OR '1'='1"}))
        .expect(401, "invalid_credentials");
    assert!(res.body["error"]["param"].is_null());
}

fn wrong_methods_and_routes(b: Backend) {
    let app = TestApp::spawn(b);
    app.get("/api/v1/nope").send().expect(404, "not_found");
    // A known path with another method: 405 naming the methods it answers.
    let res = app
        .put("/api/v1/keys")
        .send()
        .expect(405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("GET, POST"));
    let res = app
        .req(
            "OPTIONS",
            "/api/v1/keys/00000000-0000-0000-0000-000000000000",
        )
        .send()
        .expect(405, "method_not_allowed");
    assert_eq!(res.header("allow"), Some("GET, PATCH, DELETE"));
    // CORS is off by default: a preflight gets no CORS headers.
    let res = app
        .req("OPTIONS", "/api/v1/me")
        .header("Origin", "https://dash.example.com")
        .header("Access-Control-Request-Method", "GET")
        .send();
    assert_eq!(res.header("access-control-allow-origin"), None);
    app.get("/v1/chat/completions")
        .send()
        .expect(405, "method_not_allowed");
}

/// What a serde struct would also accept, and values that parse but mean nothing: each is a 400
/// naming the field, and nothing is written.
fn bodies_must_be_objects_and_values_in_range(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let (key_id, key) = app.key(&owner, Some(&account));
    let before = (app.count("accounts"), app.count("audit_log"));

    // Arrays where an object is specified (serde alone reads a struct from one).
    app.post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!(["x", null, null, null]))
        .expect(400, "invalid_request");
    app.post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!("x"))
        .expect(400, "invalid_request");
    // A wrong field is named in `param`, a missing one too.
    let res = app
        .post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({"name": 42}))
        .expect(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "name");
    let res = app
        .post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({}))
        .expect(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "name");
    // Names of nothing visible, or that reorder what is shown.
    for name in ["\u{200b}\u{200d}", "\u{2800}", "ab\u{202e}cd", " \u{feff} "] {
        let res = app
            .post("/api/v1/accounts")
            .bearer(&owner.token)
            .json(json!({"name": name}))
            .expect(400, "invalid_request");
        assert_eq!(res.body["error"]["param"], "name", "{name:?}");
    }
    // Page sizes out of range are refused, not clamped.
    for limit in ["-1", "0", "201", "x"] {
        let res = app
            .get(&format!("/api/v1/accounts?limit={limit}"))
            .bearer(&owner.token)
            .send()
            .expect(400, "invalid_request");
        if limit != "x" {
            assert_eq!(res.body["error"]["param"], "limit", "{limit}");
        }
    }
    app.get("/api/v1/accounts?limit=1")
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    // A negative grace period; an invalid rotate body is not ignored.
    for body in [
        json!({"grace_period_secs": -1}),
        json!({"grace_period_secs": "1"}),
        json!([1]),
    ] {
        app.post(&format!("/api/v1/keys/{key_id}/rotate"))
            .bearer(&owner.token)
            .json(body)
            .expect(400, "invalid_request");
    }
    assert_eq!((app.count("accounts"), app.count("audit_log")), before);
    // (The key still works: no rotation happened.)
    let chat = |body: serde_json::Value| app.post("/v1/chat/completions").bearer(&key).json(body);
    let msg = json!([{"role": "user", "content": "hi"}]);
    chat(json!({"model": "taogate-owner", "messages": msg, "max_tokens": 3})).expect(200, "");
    let res = chat(json!({"model": "", "messages": msg})).expect(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "model");
    let res = chat(json!({"model": "taogate-owner", "messages": msg, "n": 2}))
        .expect(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "n");
    chat(json!({"model": "taogate-owner", "messages": msg, "n": 1, "max_tokens": 3}))
        .expect(200, "");
    chat(json!([{"model": "taogate-owner"}])).expect(400, "invalid_request");
    let res =
        chat(json!({"model": "taogate-owner", "messages": [{"role": "user"}], "max_tokens": "3"}))
            .expect(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "max_tokens");
    // JSON Schema's integers include 5.0: an integral float is read as that integer; a fraction
    // (or a float beyond 2^53, where it would not be exact) is refused.
    let made = app
        .post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({"name": "Float", "billing_mode": "postpaid", "credit_limit_nano": 1000.0}))
        .expect(201, "")
        .ok();
    assert_eq!(made["credit_limit_nano"], 1000);
    for bad in [json!(1000.5), json!(1e17)] {
        let res = app
            .post("/api/v1/accounts")
            .bearer(&owner.token)
            .json(json!({"name": "Float", "credit_limit_nano": bad}))
            .expect(400, "invalid_request");
        assert_eq!(res.body["error"]["param"], "credit_limit_nano");
    }
    // NUL cannot be stored: refused in bodies and cursors (was a 500 from PostgreSQL).
    app.post("/api/v1/auth/login")
        .json(json!({"email": "a\u{0}@example.com", "password": "0123456789", "tenant": "x\u{0}"}))
        .expect(400, "invalid_request");
    app.post("/api/v1/accounts")
        .bearer(&owner.token)
        .json(json!({"name": "back\\u0000slash"}))
        .expect(201, "");
    let res = app
        .get("/api/v1/audit-log?after=%00%C2%85")
        .bearer(&owner.token)
        .send()
        .expect(400, "invalid_request");
    assert_eq!(res.body["error"]["param"], "after");
    // An empty rotate body is fine (grace 0).
    app.post(&format!("/api/v1/keys/{key_id}/rotate"))
        .bearer(&owner.token)
        .send()
        .expect(200, "");
}

/// The WebSocket endpoint asked without an upgrade answers the OpenAI error shape.
fn websocket_without_upgrade_is_an_openai_error(b: Backend) {
    let app = TestApp::spawn(b);
    let (_, _, _, key) = app.api_key();
    let res = app
        .get("/v1/chat/ws")
        .bearer(&key)
        .send()
        .expect(400, "websocket_upgrade_required");
    assert!(
        res.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket")
    );
}

/// CORS answers the configured origins only.
fn cors_answers_configured_origins(b: Backend) {
    let app = TestApp::spawn_with(
        b,
        Figment::new().merge(Serialized::default(
            "http.cors_allowed_origins",
            vec!["https://dash.example.com"],
        )),
    );
    let op = app.operator();
    let preflight = |origin: &str| {
        app.req("OPTIONS", "/api/v1/keys")
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("https://dash.example.com");
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://dash.example.com")
    );
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let other = preflight("https://evil.example.com");
    assert_eq!(other.header("access-control-allow-origin"), None);
    let me = app
        .get("/api/v1/me")
        .bearer(&op.token)
        .header("Origin", "https://dash.example.com")
        .send()
        .expect(200, "");
    assert_eq!(
        me.header("access-control-allow-origin"),
        Some("https://dash.example.com")
    );
    assert!(
        me.header("access-control-expose-headers")
            .unwrap()
            .contains("x-request-id")
    );
    // Another origin is served (bearer tokens, not cookies) without CORS headers.
    let other = app
        .get("/api/v1/me")
        .bearer(&op.token)
        .header("Origin", "https://evil.example.com")
        .send()
        .expect(200, "");
    assert_eq!(other.header("access-control-allow-origin"), None);
}

both_backends!(
    malformed_bodies_are_refused_without_writes,
    unicode_and_sql_looking_strings_are_data,
    wrong_methods_and_routes,
    bodies_must_be_objects_and_values_in_range,
    websocket_without_upgrade_is_an_openai_error,
    cors_answers_configured_origins
);

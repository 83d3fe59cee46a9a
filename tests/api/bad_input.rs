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
    app.put("/api/v1/keys").send().expect(404, "not_found");
}

both_backends!(
    malformed_bodies_are_refused_without_writes,
    unicode_and_sql_looking_strings_are_data,
    wrong_methods_and_routes
);

//! Ops endpoints, request ids, and the committed OpenAPI document against the served one.

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

fn health_ready_and_request_ids(b: Backend) {
    let app = TestApp::spawn(b);
    let ok = app.get("/healthz").send().expect(200, "");
    assert_eq!(ok.body["status"], "ok");
    let ready = app.get("/readyz").send().expect(200, "");
    assert_eq!(ready.body["database"], "ok");
    let a = ok
        .header("x-request-id")
        .expect("x-request-id on success")
        .to_owned();
    let err = app
        .get("/api/v1/me")
        .send()
        .expect(401, "missing_credentials");
    let e = err
        .header("x-request-id")
        .expect("x-request-id on errors")
        .to_owned();
    assert_ne!(a, e);
    let echoed = app
        .get("/healthz")
        .header("x-request-id", "client-trace-42")
        .send();
    assert_eq!(echoed.header("x-request-id"), Some("client-trace-42"));
    let unsafe_id = app
        .get("/healthz")
        .header("x-request-id", "bad id with spaces")
        .send();
    assert_ne!(unsafe_id.header("x-request-id"), Some("bad id with spaces"));
    app.get("/no/such/route").send().expect(404, "not_found");
}

fn served_openapi_matches_the_committed_file(b: Backend) {
    let app = TestApp::spawn(b);
    let served = app.get("/openapi.json").send().expect(200, "").body;
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json"),
    )
    .unwrap();
    assert!(
        served == committed,
        "openapi/openapi.json is stale: regenerate with `cargo run -- openapi > openapi/openapi.json`"
    );
    let paths = served["paths"].as_object().unwrap();
    for path in [
        "/api/v1/keys",
        "/api/v1/keys/{id}/rotate",
        "/api/v1/auth/login",
        "/v1/models",
        "/readyz",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert_eq!(served["info"]["title"], "taogate");
    let docs = app.get("/docs/").send();
    assert_eq!(docs.status, 200);
    assert!(
        docs.text.contains("swagger"),
        "Swagger UI served from vendored assets"
    );
}

both_backends!(
    health_ready_and_request_ids,
    served_openapi_matches_the_committed_file
);

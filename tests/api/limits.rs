//! Limits and quotas through the API, on one server (SQLite + in-process limiter, PostgreSQL +
//! Redis): plans, narrowing key limits, `GET /keys/{id}/limits`, the `x-ratelimit-*` headers, 429
//! bodies naming the limit, quotas, concurrency released at settle, and who may see what.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Resp, Session, TestApp};

fn chat(app: &TestApp, key: &str) -> Resp {
    app.post("/v1/chat/completions").bearer(key).json(
        json!({"model": "taogate-demo", "messages": [{"role": "user", "content": "count to three"}]}),
    )
}

fn plan(app: &TestApp, owner: &Session, body: Value) -> String {
    let res = app
        .post("/api/v1/plans")
        .bearer(&owner.token)
        .json(body)
        .expect(201, "")
        .ok();
    res["id"].as_str().unwrap().to_owned()
}

fn limits_of(app: &TestApp, who: &Session, key_id: &str) -> Vec<Value> {
    let res = app
        .get(&format!("/api/v1/keys/{key_id}/limits"))
        .bearer(&who.token)
        .send()
        .expect(200, "")
        .ok();
    res["limits"].as_array().unwrap().clone()
}

fn find<'a>(limits: &'a [Value], scope: &str, name: &str) -> &'a Value {
    limits
        .iter()
        .find(|l| l["scope"] == scope && l["name"] == name)
        .unwrap_or_else(|| panic!("no {scope} {name} in {limits:?}"))
}

fn plans_narrowing_and_the_limits_view(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let pro = plan(
        &app,
        &owner,
        json!({"name": "pro", "key_limits": {"rpm": 100, "tpm": 10000}, "account_limits": {"requests_per_day": 1000}, "is_default": true}),
    );
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "bad", "key_limits": {"rpm": 0}}))
        .expect(400, "invalid_request");
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "pro"}))
        .expect(409, "plan_exists");
    let account = app.account(&owner, "Customer");
    // A key may narrow its plan, never widen it.
    let res = app
        .post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "k", "account_id": account, "limits": {"rpm": 200}}))
        .expect(400, "limit_exceeds_plan");
    assert_eq!(res.body["error"]["param"], "limits.rpm");
    let res = app
        .post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "k", "account_id": account, "limits": {"rpm": 10}}))
        .expect(201, "")
        .ok();
    let key_id = res["id"].as_str().unwrap().to_owned();
    assert_eq!(res["limits"], json!({"rpm": 10}));
    app.patch(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .json(json!({"limits": {"tpm": 10001}}))
        .expect(400, "limit_exceeds_plan");
    app.patch(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .json(json!({"limits": {"rpm": 50, "concurrency": 2}}))
        .expect(200, "");
    let limits = limits_of(&app, &owner, &key_id);
    assert_eq!(find(&limits, "key", "rpm")["limit"], 50);
    assert_eq!(find(&limits, "key", "tpm")["limit"], 10000, "from the plan");
    assert_eq!(find(&limits, "key", "concurrency")["limit"], 2);
    let day = find(&limits, "account", "requests_per_day");
    assert_eq!(
        (day["limit"].as_i64(), day["used"].as_i64()),
        (Some(1000), Some(0))
    );
    assert!(
        day["resets_at"].as_str().unwrap().contains("T00:00:00"),
        "{day}"
    );
    // A plan change applies at once.
    app.patch(&format!("/api/v1/plans/{pro}"))
        .bearer(&owner.token)
        .json(json!({"key_limits": {"rpm": 100, "tpm": 500}}))
        .expect(200, "");
    assert_eq!(
        find(&limits_of(&app, &owner, &key_id), "key", "tpm")["limit"],
        500
    );
    // Who may look: the key's developer and the tenant's managers; not finance, not others.
    let dev = app.user(&owner, &slug, "developer", Some(&account));
    assert_eq!(limits_of(&app, &dev, &key_id).len(), limits.len());
    let finance = app.user(&owner, &slug, "finance", None);
    app.get(&format!("/api/v1/keys/{key_id}/limits"))
        .bearer(&finance.token)
        .send()
        .expect(403, "permission_denied");
    let other_account = app.account(&owner, "Other");
    let other_dev = app.user(&owner, &slug, "developer", Some(&other_account));
    app.get(&format!("/api/v1/keys/{key_id}/limits"))
        .bearer(&other_dev.token)
        .send()
        .expect(404, "not_found");
    let (_, _, stranger) = app.tenant(&op, false);
    app.get(&format!("/api/v1/keys/{key_id}/limits"))
        .bearer(&stranger.token)
        .send()
        .expect(404, "not_found");
    app.post("/api/v1/accounts")
        .bearer(&stranger.token)
        .json(json!({"name": "x", "plan_id": pro}))
        .expect(404, "not_found");
    app.get(&format!("/api/v1/plans/{pro}"))
        .bearer(&stranger.token)
        .send()
        .expect(404, "not_found");
}

fn rate_limits_answer_with_headers_and_429s(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let (owner, account, _, _) = app.api_key();
    plan(
        &app,
        &owner,
        json!({"name": "tiny", "account_limits": {"rpm": 2}, "is_default": true}),
    );
    let (key_id, key) = app.key(&owner, Some(&account));
    let first = chat(&app, &key).expect(200, "");
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("1"));
    let reset = first.header("x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s'), "{reset}");
    let second = chat(&app, &key).expect(200, "");
    assert_eq!(second.header("x-ratelimit-remaining-requests"), Some("0"));
    let third = chat(&app, &key).expect(429, "rate_limit_exceeded");
    assert_eq!(third.body["error"]["limit"], "account rpm");
    assert_eq!(third.body["error"]["type"], "rate_limit_error");
    let retry: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    assert_eq!(third.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(
        find(&limits_of(&app, &owner, &key_id), "account", "rpm")["used"],
        2,
        "the refused request was not counted"
    );
    app.wait_for_rows("usage_records", 2);
}

fn tenant_caps_bind_all_its_accounts_together(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let op = app.operator();
    let (tenant, _, owner) = app.tenant(&op, false);
    // Only the operator sets a tenant's caps.
    app.patch(&format!("/api/v1/tenants/{tenant}"))
        .bearer(&owner.token)
        .json(json!({"limits": {"rpm": 2}}))
        .expect(403, "permission_denied");
    let res = app
        .patch(&format!("/api/v1/tenants/{tenant}"))
        .bearer(&op.token)
        .json(json!({"limits": {"rpm": 2}}))
        .expect(200, "")
        .ok();
    assert_eq!(res["limits"], json!({"rpm": 2}));
    let (_, first) = app.key(&owner, Some(&app.account(&owner, "A")));
    let (_, second) = app.key(&owner, Some(&app.account(&owner, "B")));
    chat(&app, &first).expect(200, "");
    chat(&app, &second).expect(200, "");
    let refused = chat(&app, &first).expect(429, "rate_limit_exceeded");
    assert_eq!(refused.body["error"]["limit"], "tenant rpm");
    // Suspending the tenant stops its keys at once.
    app.patch(&format!("/api/v1/tenants/{tenant}"))
        .bearer(&op.token)
        .json(json!({"status": "suspended"}))
        .expect(200, "");
    chat(&app, &second).expect(403, "account_suspended");
}

fn quotas_refuse_until_the_period_ends(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let (owner, account, _, _) = app.api_key();
    plan(
        &app,
        &owner,
        json!({"name": "daily", "key_limits": {"requests_per_day": 1}, "is_default": true}),
    );
    let (_, key) = app.key(&owner, Some(&account));
    chat(&app, &key).expect(200, "");
    let refused = chat(&app, &key).expect(429, "quota_exceeded");
    let reset_at = refused.body["error"]["reset_at"].as_str().unwrap();
    let reset = chrono::DateTime::parse_from_rfc3339(reset_at).unwrap();
    let midnight = (chrono::Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(reset, midnight, "the next UTC midnight");
    assert_eq!(refused.body["error"]["limit"], "key requests_per_day");
    let retry: i64 = refused.header("retry-after").unwrap().parse().unwrap();
    let expected = (midnight - chrono::Utc::now()).num_seconds();
    assert!((retry - expected).abs() <= 2, "{retry} vs {expected}");
}

fn concurrency_slots_are_released_at_settle(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 150);
    let (owner, account, _, _) = app.api_key();
    let (key_id, key) = app.concurrent_key(&owner, &account, 1);
    std::thread::scope(|s| {
        let slow = s.spawn(|| chat(&app, &key).status);
        std::thread::sleep(Duration::from_millis(100));
        let refused = chat(&app, &key).expect(429, "rate_limit_exceeded");
        assert_eq!(refused.body["error"]["limit"], "key concurrency");
        assert_eq!(slow.join().unwrap(), 200);
    });
    // The slot came back when the first request settled.
    for _ in 0..50 {
        if find(&limits_of(&app, &owner, &key_id), "key", "concurrency")["used"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    chat(&app, &key).expect(200, "");
}

fn websocket_messages_carry_limits_and_refusals(b: Backend) {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest;
    let app = TestApp::spawn_with_subnet(b, 0);
    let (owner, account, _, _) = app.api_key();
    plan(
        &app,
        &owner,
        json!({"name": "ws", "account_limits": {"rpm": 1}, "is_default": true}),
    );
    let (_, key) = app.key(&owner, Some(&account));
    let mut req = format!("{}/v1/chat/ws", app.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    let body = json!({"model": "taogate-demo", "messages": [{"role": "user", "content": "hi"}]});
    ws.send(Message::text(body.to_string())).unwrap();
    let done = read_final(&mut ws);
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["ratelimit"]["requests"]["remaining"], 0, "{done}");
    ws.send(Message::text(body.to_string())).unwrap();
    let refused = read_final(&mut ws);
    assert_eq!(
        (refused["type"].as_str(), refused["status"].as_u64()),
        (Some("error"), Some(429))
    );
    assert_eq!(refused["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused["error"]["limit"], "account rpm");
}

fn read_final<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) -> Value {
    loop {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            let msg: Value = serde_json::from_str(&t).unwrap();
            if msg["type"] != "chunk" {
                return msg;
            }
        }
    }
}

fn first_line_brake_and_metrics(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let (owner, account, _, _) = app.api_key();
    let (key_id, key) = app.key(&owner, Some(&account));
    app.patch(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .json(json!({"limits": {"rpm": 1}}))
        .expect(200, "");
    chat(&app, &key).expect(200, "");
    let refused = chat(&app, &key).expect(429, "rate_limit_exceeded");
    assert_eq!(refused.body["error"]["limit"], "key rpm");
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("1"));
    let metrics = app.get("/metrics").send().expect(200, "").text;
    assert!(
        metrics.contains(
            r#"taogate_limiter_decisions_total{backend="first_line",outcome="refused"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("taogate_limiter_degraded 0"), "{metrics}");
}

both_backends!(
    plans_narrowing_and_the_limits_view,
    rate_limits_answer_with_headers_and_429s,
    tenant_caps_bind_all_its_accounts_together,
    quotas_refuse_until_the_period_ends,
    concurrency_slots_are_released_at_settle,
    websocket_messages_carry_limits_and_refusals,
    first_line_brake_and_metrics,
);

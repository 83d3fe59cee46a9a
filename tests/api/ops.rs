//! Ops endpoints, request ids, and the committed OpenAPI document against the served one.

use std::collections::HashMap;

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

/// The exposition's samples summed per family name (`name` with its labels dropped).
fn families(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').expect("`name value`");
        let family = name.split('{').next().unwrap().to_owned();
        *out.entry(family).or_insert(0.0) += value.parse::<f64>().expect("a number");
    }
    out
}

/// A small load — management calls, a 404, chat completions, a forged webhook — moves every family
/// an operator watches; labels name route patterns, never raw paths.
fn metrics_move_with_a_small_load(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    // Once its worker has announced itself the gateway is ready, and `taogate health` says so.
    let mut tries = 0;
    let ready = loop {
        let r = app.get("/readyz").send();
        if r.status == 200 || tries == 200 {
            break r.expect(200, "").ok();
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        (ready["status"].as_str(), ready["database"].as_str()),
        (Some("ready"), Some("ok"))
    );
    assert!(ready["workers"].as_i64().unwrap() >= 1);
    let health = std::process::Command::new(env!("CARGO_BIN_EXE_taogate"))
        .args(["health", "--url", &format!("{}/readyz", app.base)])
        .status()
        .unwrap();
    assert!(health.success());
    let scrape = || app.get("/metrics").send().expect(200, "").text;
    let before = families(&scrape());
    let (owner, account, key_id, key) = app.api_key();
    // A priced, funded account (holds, ledger postings) and a key with a limit that bites.
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "per request", "is_default": true, "prices": {"*": {"request_nano": 1000}}}))
        .expect(201, "");
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": 1_000_000, "reason": "top-up"}))
        .expect(201, "");
    app.patch(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .json(json!({"limits": {"rpm": 3}}))
        .expect(200, "");
    let chat = |i: i32| {
        app.post("/v1/chat/completions")
            .bearer(&key)
            .json(json!({"model": "taogate-demo", "messages": [{"role": "user", "content": format!("hi {i}")}]}))
    };
    for i in 0..3 {
        chat(i).expect(200, "");
    }
    chat(3).expect(429, "rate_limit_exceeded");
    app.get("/no/such/route").send().expect(404, "not_found");
    app.post("/webhooks/custom/nobody/nope")
        .raw(Some(b"{}"))
        .expect(404, "");
    app.wait_for_rows("usage_records", 3);
    let text = scrape();
    let after = families(&text);
    for family in [
        "taogate_http_requests_total",
        "taogate_http_request_duration_seconds_count",
        "taogate_http_request_duration_seconds_sum",
        "taogate_limiter_decisions_total",
        "taogate_limiter_admission_seconds_count",
        "taogate_usage_written_total",
        "taogate_pool_attempts_total",
        "taogate_usage_source_total",
        "taogate_limiter_refusals_total",
        "taogate_ledger_postings_total",
        "taogate_proxy_overhead_seconds_count",
        "taogate_upstream_first_byte_seconds_count",
        "taogate_key_lookups_total",
    ] {
        let (was, now) = (
            before.get(family).copied().unwrap_or(0.0),
            after.get(family).copied().unwrap_or(0.0),
        );
        assert!(now > was, "{family} did not move ({was} → {now})\n{text}");
    }
    assert!(
        text.contains(r#"route="/v1/chat/completions""#) && text.contains(r#"status="200""#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        text.contains(r#"taogate_limiter_refusals_total{kind="rpm",scope="key"} 1"#)
            && text.contains(r#"taogate_ledger_postings_total{kind="adjustment"} 1"#)
            && text.contains(r#"taogate_ledger_postings_total{kind="usage"} 3"#),
        "{text}"
    );
    // Present even when still (gauges, errors, payments before the first one).
    for family in [
        "taogate_holds_in_flight",
        "taogate_usage_backlog",
        "taogate_usage_dead_letters_total",
        "taogate_usage_write_failures_total",
        "taogate_payments_total",
        "taogate_backend_errors_total",
        "taogate_limiter_degraded",
        "taogate_limiter_degraded_tenants",
        "taogate_pool_worker_in_flight",
        "taogate_pool_worker_circuit",
    ] {
        assert!(after.contains_key(family), "{family} missing\n{text}");
    }
    assert_eq!(after["taogate_holds_in_flight"], 0.0, "every hold settled");
    assert!(
        !text.contains("taogate_tenant_requests_total"),
        "per-tenant labels are off by default"
    );
    // The worker counts each try of a route by model, upstream kind and outcome.
    let worker = text
        .lines()
        .find_map(|l| l.strip_prefix("taogate_pool_worker_circuit{"))
        .and_then(|l| l.split("worker=\"").nth(1))
        .and_then(|l| l.split('"').next())
        .expect("a pool member")
        .to_owned();
    assert!(
        text.contains(&format!(
            "taogate_pool_worker_circuit{{state=\"closed\",worker=\"{worker}\"}} 1"
        )),
        "{text}"
    );
    let worker_text = ureq::get(&format!("{worker}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let calls = families(&worker_text);
    assert!(
        calls
            .get("taogate_worker_upstream_calls_total")
            .is_some_and(|n| *n >= 3.0),
        "{worker_text}"
    );
    assert!(
        worker_text.contains(r#"outcome="answered",route="taogate-demo""#),
        "{worker_text}"
    );
    assert!(
        !text.contains("/no/such/route"),
        "raw paths never become labels"
    );
}

fn health_ready_and_request_ids(b: Backend) {
    let app = TestApp::spawn(b);
    let ok = app.get("/healthz").send().expect(200, "");
    assert_eq!(ok.body["status"], "ok");
    // No worker configured: alive, not ready — and the answer says why.
    let ready = app.get("/readyz").send();
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(
        (
            ready.body["database"].as_str(),
            ready.body["workers"].as_i64()
        ),
        (Some("ok"), Some(0))
    );
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
    // `taogate health` (the container health check) asks /readyz.
    let health = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_taogate"))
            .args(["health", "--url", url])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        !health(&format!("{}/readyz", app.base)),
        "no worker: not ready"
    );
    assert!(!health(&format!("{}/no/such/route", app.base)));
    assert!(!health("http://127.0.0.1:9/readyz"));
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

/// A gateway started with another API-key pepper than the one its database's keys were made with
/// refuses to start (every key would fail), saying why; the right pepper starts again.
fn a_gateway_refuses_a_pepper_its_keys_were_not_made_with(b: Backend) {
    use crate::procs::{self, BIN, Proc};
    let dir = tempfile::tempdir().unwrap();
    let db = crate::helpers::TestDb::new(b);
    let setup = procs::GatewaySetup {
        data_dir: &dir.path().join("data"),
        db: &db.url,
        redis: None,
        limits: "",
        worker: ("http://127.0.0.1:9", "0123456789abcdef0123456789"),
    };
    let config = procs::gateway_config(&dir.path().join("gateway.toml"), &setup);
    drop(Proc::start(&["serve"], Some(&config)));
    let mut child = std::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "TAOGATE_AUTH__API_KEY_PEPPER",
            "a-different-pepper-0123456789abcdef0123",
        )
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("a gateway with another pepper kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("api_key_pepper"), "{stderr}");
    // The pepper the keys were made with starts as before.
    drop(Proc::start(&["serve"], Some(&config)));
}

/// In production (`TAOGATE_LOG_FORMAT=json`) every line logged while serving a request carries its
/// request id, tenant and API key prefix — and never the key's secret or the prompt.
fn json_logs_name_request_tenant_and_key_but_no_secret(b: Backend) {
    use crate::helpers::TestDb;
    use crate::procs::{self, Proc};
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(b);
    let setup = procs::GatewaySetup {
        data_dir: &dir.path().join("gateway"),
        db: &db.url,
        redis: None,
        limits: "",
        // No worker: a chat is answered 503 and the gateway logs why.
        worker: ("", "unused-worker-secret-0123456789"),
    };
    let config = procs::gateway_config(&dir.path().join("gateway.toml"), &setup);
    let log = dir.path().join("gateway.log");
    let gw = Proc::start_logging(
        &["serve"],
        Some(&config),
        &[("TAOGATE_LOG_FORMAT", "json")],
        &log,
    );
    let app = TestApp::remote(&gw.url, taogate::db::Db::connect(&db.url, 2).unwrap());
    let op = app.operator();
    let (tenant, _, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let created = app
        .post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "k", "account_id": account}))
        .expect(201, "")
        .ok();
    let (secret, prefix) = (
        created["secret"].as_str().unwrap().to_owned(),
        created["prefix"].as_str().unwrap().to_owned(),
    );
    let prompt = "a very private prompt 7f3a";
    app.post("/v1/chat/completions")
        .bearer(&secret)
        .header("x-request-id", "log-check-1")
        .json(json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}))
        .expect(503, "no_workers");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"]["request_id"] == "log-check-1")
        .unwrap_or_else(|| panic!("no JSON line of the request in:\n{text}"));
    assert_eq!(line["span"]["tenant"], tenant.as_str(), "{line}");
    assert_eq!(line["span"]["key_prefix"], prefix.as_str(), "{line}");
    assert_eq!(line["span"]["route"], "/v1/chat/completions", "{line}");
    assert!(
        line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no validator worker")),
        "{line}"
    );
    assert!(!text.contains(&secret), "the key's secret is never logged");
    assert!(!text.contains(prompt), "prompts are not logged by default");

    // The tenant opts in: its prompts are logged, in the request's context.
    let settings = app
        .get("/api/v1/tenant/settings")
        .bearer(&owner.token)
        .send()
        .ok();
    assert_eq!(settings["log_prompts"], false);
    let settings = app
        .patch("/api/v1/tenant/settings")
        .bearer(&owner.token)
        .json(json!({"log_prompts": true}))
        .expect(200, "")
        .ok();
    assert_eq!(settings["log_prompts"], true);
    app.post("/v1/chat/completions")
        .bearer(&secret)
        .header("x-request-id", "log-check-2")
        .json(json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}))
        .expect(503, "no_workers");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).unwrap();
    let logged = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["span"]["request_id"] == "log-check-2" && l["fields"]["prompt"].is_string())
        .unwrap_or_else(|| panic!("no prompt line after opting in:\n{text}"));
    assert!(
        logged["fields"]["prompt"]
            .as_str()
            .unwrap()
            .contains(prompt),
        "{logged}"
    );
    assert_eq!(logged["span"]["tenant"], tenant.as_str());
    assert!(!text.contains(&secret), "the key's secret is never logged");
}

/// With `metrics.tenant_labels = true`, answers to a tenant's callers (API key or access token)
/// are counted per tenant; another tenant's are its own series.
fn per_tenant_counts_only_when_asked(b: Backend) {
    use figment::Figment;
    use figment::providers::Serialized;
    let app = TestApp::spawn_with(
        b,
        Figment::new().merge(Serialized::default("metrics.tenant_labels", true)),
    );
    let op = app.operator();
    let (tenant, _, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let (_, key) = app.key(&owner, Some(&account));
    let (other, _, other_owner) = app.tenant(&op, false);
    for _ in 0..3 {
        app.get("/v1/models").bearer(&key).send().expect(200, "");
    }
    app.get("/v1/models")
        .bearer("tg_not_a_key")
        .send()
        .expect(401, "");
    app.get("/api/v1/accounts")
        .bearer(&other_owner.token)
        .send()
        .expect(200, "");
    let text = app.get("/metrics").send().expect(200, "").text;
    let count = |tenant: &str, status: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "taogate_tenant_requests_total{{status=\"{status}\",tenant=\"{tenant}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    // The key's three calls (the account creation and key calls above count for it too).
    let ours: f64 = count(&tenant, "200").expect(&text).parse().unwrap();
    assert!(ours >= 3.0, "{text}");
    assert_eq!(count(&other, "200").as_deref(), Some("1"), "{text}");
    assert!(
        !text.contains("tg_not_a_key") && count("", "401").is_none(),
        "an unauthenticated answer has no tenant: {text}"
    );
}

both_backends!(
    a_gateway_refuses_a_pepper_its_keys_were_not_made_with,
    metrics_move_with_a_small_load,
    json_logs_name_request_tenant_and_key_but_no_secret,
    per_tenant_counts_only_when_asked,
    health_ready_and_request_ids,
    served_openapi_matches_the_committed_file
);

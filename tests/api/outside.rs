//! The outside suites, run as the project's own: schemathesis (PyPI, pinned in
//! tests/py/requirements.txt) over the served `/openapi.json` — as a tenant owner, as a developer
//! and with an API key on `/v1` — must find no server error and no response that breaks the
//! document; and a cross-tenant probe built from the route table.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{Backend, Session, TestApp};

/// Test cases per operation and phase; the longer run is `ST_MAX_EXAMPLES=100` (not a `TAOGATE_`
/// variable: those are configuration).
const EXAMPLES: &str = "12";

fn schemathesis_bin() -> String {
    let python = std::env::var("TAOGATE_TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let bin = std::path::Path::new(&python).with_file_name("schemathesis");
    assert!(bin.exists(), "{} missing: run scripts/test", bin.display());
    bin.display().to_string()
}

/// Runs schemathesis on the operations whose path matches `paths`, authenticated with `bearer`;
/// returns its summary line. Fails the test with schemathesis' report on any failure.
fn schemathesis(app: &TestApp, bearer: &str, paths: &str, who: &str) -> String {
    let examples = std::env::var("ST_MAX_EXAMPLES").unwrap_or(EXAMPLES.into());
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(schemathesis_bin())
        .current_dir(scratch.path())
        .args(["--config-file", config])
        .args(["run", &format!("{}/openapi.json", app.base)])
        .args(["--header", &format!("Authorization: Bearer {bearer}")])
        .args(["--include-path-regex", paths])
        .args(["--max-examples", &examples])
        .args([
            "--seed",
            "20261207",
            "--no-shrink",
            "--workers",
            "1",
            "--no-color",
        ])
        .args(["--generation-database", "none", "--request-timeout", "30"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(" generated")
                || l.starts_with('=') && l.contains(" in ")
        })
        .collect();
    eprintln!("schemathesis as {who}: {}", summary.join(" | "));
    assert!(
        out.status.success(),
        "schemathesis as {who} found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary.join(" | ")
}

fn schemathesis_finds_nothing(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    app.key(&owner, Some(&account));
    let developer: Session = app.user(&owner, &slug, "developer", Some(&account));
    let (_, key) = app.key(&developer, None);
    schemathesis(&app, &owner.token, "^/api/v1/", "a tenant owner");
    schemathesis(&app, &developer.token, "^/api/v1/", "a developer");
    schemathesis(&app, &key, "^/v1/", "an API key");
}

/// Tenant A's objects, by the resource a path names.
struct Objects {
    tenant: String,
    account: String,
    key: String,
    plan: String,
    user: String,
}

impl Objects {
    /// `path` with its `{id}` replaced by A's object of that resource.
    fn url(&self, path: &str) -> Option<String> {
        let id = match path.split('/').nth(3)? {
            "accounts" => &self.account,
            "keys" => &self.key,
            "plans" => &self.plan,
            "users" => &self.user,
            "tenants" => &self.tenant,
            _ => return None,
        };
        Some(path.replace("{id}", id))
    }

    fn all(&self) -> [&str; 5] {
        [
            &self.tenant,
            &self.account,
            &self.key,
            &self.plan,
            &self.user,
        ]
    }
}

/// What an attempt on `method path` sends (a body the route would accept from A's owner).
fn body_for(method: &str, path: &str, account: &str) -> Option<Value> {
    Some(match (method, path) {
        ("get" | "delete", _) => return None,
        (_, p) if p.ends_with("/adjustments") => json!({"amount_nano": 1000, "reason": "probe"}),
        (_, p) if p.ends_with("/rotate") => json!({}),
        (_, p) if p.ends_with("/auto-topup") => {
            json!({"enabled": true, "threshold_nano": 1000, "amount_nano": 1_000_000_000})
        }
        (_, p) if p.ends_with("/balance-alert") => json!({"threshold_nano": 1000}),
        (_, "/api/v1/billing/checkout") => {
            json!({"account_id": account, "amount_nano": 1_000_000_000,
            "success_url": "https://probe.example/s", "cancel_url": "https://probe.example/c"})
        }
        (_, "/api/v1/keys") => json!({"name": "probe", "account_id": account}),
        (_, p) if p.starts_with("/api/v1/users/") => json!({"status": "disabled"}),
        _ => json!({"name": "probe"}),
    })
}

/// A's objects as A's owner (and the operator) see them: must not change under the probe.
fn snapshot(app: &TestApp, op: &Session, owner: &Session, a: &Objects) -> Vec<Value> {
    let mut views: Vec<Value> = [
        format!("/api/v1/accounts/{}", a.account),
        format!("/api/v1/keys/{}", a.key),
        format!("/api/v1/plans/{}", a.plan),
        format!("/api/v1/users/{}", a.user),
        format!("/api/v1/balance?account_id={}", a.account),
        format!("/api/v1/ledger?account_id={}", a.account),
        "/api/v1/keys".to_owned(),
        "/api/v1/users".to_owned(),
    ]
    .iter()
    .map(|p| app.get(p).bearer(&owner.token).send().ok())
    .collect();
    views.push(
        app.get(&format!("/api/v1/tenants/{}", a.tenant))
            .bearer(&op.token)
            .send()
            .ok(),
    );
    for v in &mut views {
        strip(v, "last_used_at");
    }
    views
}

fn strip(v: &mut Value, field: &str) {
    match v {
        Value::Object(map) => {
            map.remove(field);
            map.values_mut().for_each(|v| strip(v, field));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, field)),
        _ => {}
    }
}

/// Every management route of the served document × every role of another tenant (and a
/// developer of a sibling account in the same tenant) aimed at tenant A's objects: refused with
/// 403 or 404, lists never show them, and A's objects are unchanged afterwards.
fn no_route_reaches_another_tenants_objects(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (tenant, slug_a, owner_a) = app.tenant(&op, false);
    let account = app.account(&owner_a, "A");
    let sibling = app.account(&owner_a, "A sibling");
    let (key, _) = app.key(&owner_a, Some(&account));
    let plan = app
        .post("/api/v1/plans")
        .bearer(&owner_a.token)
        .json(json!({"name": "A plan"}))
        .expect(201, "")
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = app.user(&owner_a, &slug_a, "finance", None).user_id;
    let a = Objects {
        tenant,
        account,
        key,
        plan,
        user,
    };
    let (_, slug_b, owner_b) = app.tenant(&op, false);
    let account_b = app.account(&owner_b, "B");
    let mut attackers: Vec<(String, Session)> = ["admin", "finance"]
        .iter()
        .map(|role| (format!("B {role}"), app.user(&owner_b, &slug_b, role, None)))
        .collect();
    attackers.push((
        "B developer".into(),
        app.user(&owner_b, &slug_b, "developer", Some(&account_b)),
    ));
    attackers.push(("B owner".into(), owner_b));
    let sibling_dev = app.user(&owner_a, &slug_a, "developer", Some(&sibling));
    attackers.push(("A developer of a sibling account".into(), sibling_dev));

    let before = snapshot(&app, &op, &owner_a, &a);
    let doc = app.get("/openapi.json").send().ok();
    let mut attempts = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") || path.starts_with("/api/v1/auth/") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let takes_account = operation["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "account_id"));
            let url = if path.contains("{id}") {
                a.url(path)
            } else if takes_account && method == "get" {
                Some(format!("{path}?account_id={}", a.account))
            } else if method == "get" || path == "/api/v1/keys" {
                Some(path.clone())
            } else {
                None // creates in the caller's own tenant: not aimed at A
            };
            let Some(mut url) = url else { continue };
            // Finance reads need their period too.
            let period = match path.as_str() {
                "/api/v1/statements" => "month=2026-11",
                "/api/v1/usage/export" | "/api/v1/reports/revenue" => {
                    "from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z&granularity=request"
                }
                _ => "",
            };
            if !period.is_empty() {
                let period = if path == "/api/v1/reports/revenue" {
                    period.trim_end_matches("&granularity=request")
                } else {
                    period
                };
                url = format!("{url}{}{period}", if url.contains('?') { '&' } else { '?' });
            }
            let verb: &'static str = match method.as_str() {
                "get" => "GET",
                "post" => "POST",
                "patch" => "PATCH",
                "put" => "PUT",
                _ => "DELETE",
            };
            let resource = path.split('/').nth(3).unwrap_or("");
            for (who, session) in &attackers {
                // A developer of tenant A may read A's plans and names its tenant: aimed at A's
                // account and keys only.
                let same_tenant = who.starts_with("A ");
                if same_tenant
                    && !matches!(
                        resource,
                        "accounts" | "keys" | "balance" | "ledger" | "usage"
                    )
                {
                    continue;
                }
                attempts += 1;
                let req = app.req(verb, &url).bearer(&session.token);
                let res = match body_for(method, path, &a.account) {
                    Some(body) => req.json(body),
                    None => req.send(),
                };
                let aimed = url.contains("account_id=") || path.contains("{id}") || verb != "GET";
                if aimed {
                    assert!(
                        res.status == 403 || res.status == 404,
                        "{who}: {verb} {url} answered {}: {}",
                        res.status,
                        res.text
                    );
                } else if res.status == 200 {
                    let secret = if same_tenant {
                        &a.all()[1..3]
                    } else {
                        &a.all()[..]
                    };
                    for id in secret {
                        assert!(!res.text.contains(id), "{who}: {verb} {url} shows {id}");
                    }
                }
            }
        }
    }
    assert!(attempts > 100, "only {attempts} attempts");
    assert_eq!(
        snapshot(&app, &op, &owner_a, &a),
        before,
        "A's objects changed"
    );
    eprintln!("cross-tenant probe: {attempts} attempts, 0 reached tenant A");
}

crate::both_backends!(
    schemathesis_finds_nothing,
    no_route_reaches_another_tenants_objects
);

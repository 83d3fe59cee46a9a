//! Tenant isolation: every role of tenant A tries every management endpoint on tenant B's
//! objects. Each answer must be exactly what a nonexistent id gets (nothing learned), and
//! afterwards B's objects must be untouched (nothing changed).

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, Resp, Session, TestApp};

const MISSING: &str = "00000000-0000-7000-8000-00000000dead";

struct Tenant {
    id: String,
    account: String,
    key_id: String,
    key_secret: String,
    dev_user: String,
    plan: String,
    roles: Vec<(&'static str, Session)>,
}

fn tenant(app: &TestApp, op: &Session) -> Tenant {
    let (id, slug, owner) = app.tenant(op, true);
    let account = app.account(&owner, "Customer");
    let admin = app.user(&owner, &slug, "admin", None);
    let finance = app.user(&owner, &slug, "finance", None);
    let dev = app.user(&owner, &slug, "developer", Some(&account));
    let (key_id, key_secret) = app.key(&dev, None);
    let plan = app
        .post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "pro", "key_limits": {"rpm": 1000}}))
        .expect(201, "")
        .ok()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Tenant {
        plan,
        id,
        account,
        key_id,
        key_secret,
        dev_user: dev.user_id.clone(),
        roles: vec![
            ("owner", owner),
            ("admin", admin),
            ("finance", finance),
            ("developer", dev),
        ],
    }
}

/// (method, path with `__ID__` for the id, body) of every endpoint that takes another tenant's id.
fn probes(b: &Tenant) -> Vec<(&'static str, String, String, Option<Value>)> {
    vec![
        ("GET", "/api/v1/tenants/__ID__".into(), b.id.clone(), None),
        (
            "PATCH",
            "/api/v1/tenants/__ID__".into(),
            b.id.clone(),
            Some(json!({"name": "pwned"})),
        ),
        (
            "GET",
            "/api/v1/accounts/__ID__".into(),
            b.account.clone(),
            None,
        ),
        (
            "PATCH",
            "/api/v1/accounts/__ID__".into(),
            b.account.clone(),
            Some(json!({"name": "pwned"})),
        ),
        (
            "GET",
            "/api/v1/users/__ID__".into(),
            b.dev_user.clone(),
            None,
        ),
        (
            "PATCH",
            "/api/v1/users/__ID__".into(),
            b.dev_user.clone(),
            Some(json!({"status": "disabled"})),
        ),
        ("GET", "/api/v1/keys/__ID__".into(), b.key_id.clone(), None),
        (
            "PATCH",
            "/api/v1/keys/__ID__".into(),
            b.key_id.clone(),
            Some(json!({"name": "pwned", "limits": {"rpm": 1}})),
        ),
        (
            "GET",
            "/api/v1/keys/__ID__/limits".into(),
            b.key_id.clone(),
            None,
        ),
        ("GET", "/api/v1/plans/__ID__".into(), b.plan.clone(), None),
        (
            "PATCH",
            "/api/v1/plans/__ID__".into(),
            b.plan.clone(),
            Some(json!({"name": "pwned"})),
        ),
        (
            "POST",
            "/api/v1/accounts".into(),
            b.plan.clone(),
            Some(json!({"name": "x", "plan_id": "__ID__"})),
        ),
        (
            "GET",
            "/api/v1/balance?account_id=__ID__".into(),
            b.account.clone(),
            None,
        ),
        (
            "GET",
            "/api/v1/ledger?account_id=__ID__".into(),
            b.account.clone(),
            None,
        ),
        (
            "GET",
            "/api/v1/usage?account_id=__ID__".into(),
            b.account.clone(),
            None,
        ),
        (
            "POST",
            "/api/v1/accounts/__ID__/adjustments".into(),
            b.account.clone(),
            Some(json!({"amount_nano": 1000, "reason": "steal"})),
        ),
        (
            "POST",
            "/api/v1/keys/__ID__/rotate".into(),
            b.key_id.clone(),
            Some(json!({})),
        ),
        (
            "DELETE",
            "/api/v1/keys/__ID__".into(),
            b.key_id.clone(),
            None,
        ),
        (
            "POST",
            "/api/v1/keys".into(),
            b.account.clone(),
            Some(json!({"name": "x", "account_id": "__ID__"})),
        ),
        (
            "POST",
            "/api/v1/users".into(),
            b.account.clone(),
            Some(
                json!({"email": "spy@example.com", "password": PASSWORD, "role": "developer", "account_id": "__ID__"}),
            ),
        ),
    ]
}

fn call(
    app: &TestApp,
    who: &Session,
    method: &'static str,
    path: &str,
    id: &str,
    body: &Option<Value>,
) -> Resp {
    let path = path.replace("__ID__", id);
    let req = app.req(method, &path).bearer(&who.token);
    match body {
        Some(b) => req.json(serde_json::from_str(&b.to_string().replace("__ID__", id)).unwrap()),
        None => req.send(),
    }
}

fn ids_in(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

fn no_role_of_one_tenant_reaches_another(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let ta = tenant(&app, &op);
    let tb = tenant(&app, &op);
    let audit_b_before = app
        .get("/api/v1/audit-log")
        .bearer(&tb.roles[0].1.token)
        .send()
        .ok();

    for (role, who) in &ta.roles {
        for (method, path, id, body) in probes(&tb) {
            let foreign = call(&app, who, method, &path, &id, &body);
            let missing = call(&app, who, method, &path, MISSING, &body);
            assert!(
                foreign.status == 404 || foreign.status == 403,
                "{role} {method} {path} on tenant B answered {}: {}",
                foreign.status,
                foreign.text
            );
            assert_eq!(
                (foreign.status, &foreign.body),
                (missing.status, &missing.body),
                "{role} {method} {path}: B's object must look exactly like a missing one"
            );
        }
        for list in [
            "/api/v1/accounts",
            "/api/v1/users",
            "/api/v1/keys",
            "/api/v1/plans",
            "/api/v1/audit-log",
        ] {
            let res = app.get(list).bearer(&who.token).send();
            if res.status != 200 {
                assert_eq!(res.status, 403, "{role} {list}");
                continue;
            }
            let ids = ids_in(&res.body);
            for foreign in [&tb.account, &tb.dev_user, &tb.key_id, &tb.plan] {
                assert!(
                    !ids.contains(foreign),
                    "{role} {list} shows tenant B's {foreign}"
                );
            }
            assert!(
                !res.text.contains(&tb.id),
                "{role} {list} mentions tenant B"
            );
        }
        let filtered = app
            .get(&format!("/api/v1/keys?account_id={}", tb.account))
            .bearer(&who.token)
            .send();
        if filtered.status == 200 {
            assert!(
                ids_in(&filtered.body).is_empty(),
                "{role} listed B's keys by account filter"
            );
        }
    }

    // Nothing of B changed.
    app.get("/v1/models")
        .bearer(&tb.key_secret)
        .send()
        .expect(200, "");
    let owner_b = &tb.roles[0].1;
    let acct = app
        .get(&format!("/api/v1/accounts/{}", tb.account))
        .bearer(&owner_b.token)
        .send()
        .ok();
    assert_eq!(acct["name"], "Customer");
    let dev = app
        .get(&format!("/api/v1/users/{}", tb.dev_user))
        .bearer(&owner_b.token)
        .send()
        .ok();
    assert_eq!(dev["status"], "active");
    let key = app
        .get(&format!("/api/v1/keys/{}", tb.key_id))
        .bearer(&owner_b.token)
        .send()
        .ok();
    assert_eq!(key["status"], "active");
    assert_eq!(key["name"], "test key");
    assert_eq!(key["limits"], json!({}));
    assert!(key["rotated_at"].is_null());
    let plan = app
        .get(&format!("/api/v1/plans/{}", tb.plan))
        .bearer(&owner_b.token)
        .send()
        .ok();
    assert_eq!(plan["name"], "pro");
    let money = app
        .get(&format!("/api/v1/balance?account_id={}", tb.account))
        .bearer(&owner_b.token)
        .send()
        .ok();
    assert_eq!(money["balance_nano"], 0, "no money moved in B");
    let keys_b = app.get("/api/v1/keys").bearer(&owner_b.token).send().ok();
    assert_eq!(
        ids_in(&keys_b),
        vec![tb.key_id.clone()],
        "no key was created in B"
    );
    let audit_b_after = app
        .get("/api/v1/audit-log")
        .bearer(&owner_b.token)
        .send()
        .ok();
    assert_eq!(audit_b_before, audit_b_after, "B's audit log is unchanged");
    // And A still works.
    app.get("/v1/models")
        .bearer(&ta.key_secret)
        .send()
        .expect(200, "");
}

both_backends!(no_role_of_one_tenant_reaches_another);

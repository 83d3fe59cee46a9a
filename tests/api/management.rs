//! Tenants (operator), accounts and users (owner/admin), role checks within one tenant, audit log.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, PASSWORD, TestApp};

fn operator_manages_tenants(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (id, slug, owner) = app.tenant(&op, false);
    let got = app
        .get(&format!("/api/v1/tenants/{id}"))
        .bearer(&op.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(got["slug"], slug.as_str());
    assert_eq!(got["allow_signup"], false);
    let list = app
        .get("/api/v1/tenants")
        .bearer(&op.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(list["object"], "list");
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str())
    );
    let patched = app
        .patch(&format!("/api/v1/tenants/{id}"))
        .bearer(&op.token)
        .json(json!({"name": "Renamed", "allow_signup": true}))
        .expect(200, "")
        .ok();
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["allow_signup"], true);
    app.post("/api/v1/tenants")
        .bearer(&op.token)
        .json(json!({"name": "dup", "slug": slug}))
        .expect(409, "slug_taken");
    app.get("/api/v1/tenants/00000000-0000-7000-8000-000000000000")
        .bearer(&op.token)
        .send()
        .expect(404, "not_found");
    app.get("/api/v1/tenants/not-a-uuid")
        .bearer(&op.token)
        .send()
        .expect(404, "not_found");
    // Tenant users cannot manage tenants, not even their own.
    app.get("/api/v1/tenants")
        .bearer(&owner.token)
        .send()
        .expect(403, "permission_denied");
    app.get(&format!("/api/v1/tenants/{id}"))
        .bearer(&owner.token)
        .send()
        .expect(403, "permission_denied");
    app.post("/api/v1/tenants")
        .bearer(&owner.token)
        .json(json!({"name": "x", "slug": "xyz-1"}))
        .expect(403, "permission_denied");
    // The operator does not act inside a tenant.
    app.get("/api/v1/accounts")
        .bearer(&op.token)
        .send()
        .expect(403, "permission_denied");
}

fn owners_and_admins_manage_accounts_and_users(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (tenant, slug, owner) = app.tenant(&op, false);
    let admin = app.user(&owner, &slug, "admin", None);
    let finance = app.user(&owner, &slug, "finance", None);
    let acct = app.account(&admin, "Customer One");
    let dev = app.user(&admin, &slug, "developer", Some(&acct));

    let got = app
        .get(&format!("/api/v1/accounts/{acct}"))
        .bearer(&finance.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(got["tenant_id"], tenant.as_str());
    assert_eq!(got["billing_mode"], "prepaid");
    assert_eq!(got["credit_limit_nano"], 0);
    let patched = app
        .patch(&format!("/api/v1/accounts/{acct}"))
        .bearer(&owner.token)
        .json(json!({"billing_mode": "postpaid", "credit_limit_nano": 5_000_000_000i64}))
        .expect(200, "")
        .ok();
    assert_eq!(patched["credit_limit_nano"], 5_000_000_000i64);
    // Finance reads but does not write; developers see only their own account.
    app.post("/api/v1/accounts")
        .bearer(&finance.token)
        .json(json!({"name": "x"}))
        .expect(403, "permission_denied");
    app.post("/api/v1/accounts")
        .bearer(&dev.token)
        .json(json!({"name": "x"}))
        .expect(403, "permission_denied");
    let other = app.account(&owner, "Customer Two");
    let mine = app
        .get("/api/v1/accounts")
        .bearer(&dev.token)
        .send()
        .expect(200, "")
        .ok();
    let ids: Vec<&str> = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![acct.as_str()]);
    app.get(&format!("/api/v1/accounts/{other}"))
        .bearer(&dev.token)
        .send()
        .expect(404, "not_found");
    let all = app
        .get("/api/v1/accounts")
        .bearer(&finance.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(all["data"].as_array().unwrap().len(), 2);

    // Users: only owners/admins list them; admins cannot mint owners; developers need an account.
    let users = app
        .get("/api/v1/users")
        .bearer(&admin.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(users["data"].as_array().unwrap().len(), 4);
    app.get("/api/v1/users")
        .bearer(&finance.token)
        .send()
        .expect(403, "permission_denied");
    app.get("/api/v1/users")
        .bearer(&dev.token)
        .send()
        .expect(403, "permission_denied");
    app.post("/api/v1/users")
        .bearer(&admin.token)
        .json(json!({"email": "o2@example.com", "password": PASSWORD, "role": "owner"}))
        .expect(403, "permission_denied");
    app.post("/api/v1/users")
        .bearer(&owner.token)
        .json(json!({"email": "d2@example.com", "password": PASSWORD, "role": "developer"}))
        .expect(400, "invalid_request");
    app.post("/api/v1/users")
        .bearer(&owner.token)
        .json(json!({"email": "op2@example.com", "password": PASSWORD, "role": "operator"}))
        .expect(400, "invalid_request");
    app.post("/api/v1/users")
        .bearer(&owner.token)
        .json(json!({"email": dev.email, "password": PASSWORD, "role": "finance"}))
        .expect(409, "email_taken");
    app.patch(&format!("/api/v1/users/{}", owner.user_id))
        .bearer(&admin.token)
        .json(json!({"status": "disabled"}))
        .expect(403, "permission_denied");
    app.patch(&format!("/api/v1/users/{}", owner.user_id))
        .bearer(&owner.token)
        .json(json!({"role": "admin"}))
        .expect(403, "permission_denied");

    let shown = app
        .get(&format!("/api/v1/users/{}", dev.user_id))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(
        (shown["role"].as_str(), shown["account_id"].as_str()),
        (Some("developer"), Some(acct.as_str()))
    );
    assert!(shown.get("password_hash").is_none() && !shown.to_string().contains("argon2"));
    assert!(shown["last_login_at"].is_string());

    // Disabling a user ends their sessions: no new login, no refresh.
    let got = app
        .patch(&format!("/api/v1/users/{}", dev.user_id))
        .bearer(&admin.token)
        .json(json!({"status": "disabled"}))
        .expect(200, "")
        .ok();
    assert_eq!(got["status"], "disabled");
    app.post("/api/v1/auth/refresh")
        .json(json!({"refresh_token": dev.refresh}))
        .expect(401, "invalid_refresh_token");
    app.post("/api/v1/auth/login")
        .json(json!({"email": dev.email, "password": PASSWORD, "tenant": slug}))
        .expect(401, "invalid_credentials");
}

fn changes_are_audited(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (tenant, _, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "Audited");
    let (key, secret) = app.key(&owner, Some(&acct));
    app.delete(&format!("/api/v1/keys/{key}"))
        .bearer(&owner.token)
        .header("x-request-id", "req-audit-1")
        .send()
        .expect(200, "");
    let log = app
        .get("/api/v1/audit-log")
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    let entries = log["data"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "tenant.create",
            "user.create",
            "account.create",
            "api_key.create",
            "api_key.revoke"
        ]
    );
    let revoke = entries.last().unwrap();
    assert_eq!(revoke["actor_user_id"], owner.user_id.as_str());
    assert_eq!(revoke["actor_role"], "owner");
    assert_eq!(revoke["target_id"], key.as_str());
    assert_eq!(revoke["tenant_id"], tenant.as_str());
    assert_eq!(revoke["ip"], "127.0.0.1");
    assert_eq!(revoke["request_id"], "req-audit-1");
    assert!(
        !log.to_string().contains(&secret),
        "the audit log must never hold a key secret"
    );
    // Append-only: the database itself refuses to rewrite history.
    use diesel::RunQueryDsl;
    let mut conn = app.db.get().unwrap();
    assert!(
        diesel::sql_query("UPDATE audit_log SET action = 'x'")
            .execute(&mut *conn)
            .is_err()
    );
    assert!(
        diesel::sql_query("DELETE FROM audit_log")
            .execute(&mut *conn)
            .is_err()
    );
}

/// A session sees its user as they are now: a change to the user takes effect on the very next
/// request made with an access token issued before it (not when that token expires).
fn access_tokens_follow_the_user_as_they_are_now(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let first = app.account(&owner, "First");
    let second = app.account(&owner, "Second");
    let admin = app.user(&owner, &slug, "admin", None);
    let dev = app.user(&owner, &slug, "developer", Some(&first));
    let keys_of = |account: &str| {
        app.get(&format!("/api/v1/keys?account_id={account}"))
            .bearer(&owner.token)
            .send()
            .expect(200, "")
            .ok()["data"]
            .as_array()
            .unwrap()
            .len()
    };

    // Demoted: the admin's token no longer creates plans or adjustments.
    let plan = json!({"name": "p", "prices": {"*": {"request_nano": 1}}});
    app.post("/api/v1/plans")
        .bearer(&admin.token)
        .json(plan.clone())
        .expect(201, "");
    app.patch(&format!("/api/v1/users/{}", admin.user_id))
        .bearer(&owner.token)
        .json(json!({"role": "finance"}))
        .expect(200, "");
    app.post("/api/v1/plans")
        .bearer(&admin.token)
        .json(json!({"name": "p2", "prices": {"*": {"request_nano": 1}}}))
        .expect(403, "permission_denied");
    app.post(&format!("/api/v1/accounts/{first}/adjustments"))
        .bearer(&admin.token)
        .json(json!({"amount_nano": 5, "reason": "after demotion"}))
        .expect(403, "permission_denied");

    // Moved: the developer's old token mints keys in the new account only.
    app.post("/api/v1/keys")
        .bearer(&dev.token)
        .json(json!({"name": "before"}))
        .expect(201, "");
    app.patch(&format!("/api/v1/users/{}", dev.user_id))
        .bearer(&owner.token)
        .json(json!({"account_id": second}))
        .expect(200, "");
    app.post("/api/v1/keys")
        .bearer(&dev.token)
        .json(json!({"name": "after"}))
        .expect(201, "");
    app.post("/api/v1/keys")
        .bearer(&dev.token)
        .json(json!({"name": "old account", "account_id": first}))
        .expect(404, "not_found");
    assert_eq!((keys_of(&first), keys_of(&second)), (1, 1));

    // Disabled: the token stops at once, and no key can be minted with it.
    app.patch(&format!("/api/v1/users/{}", dev.user_id))
        .bearer(&owner.token)
        .json(json!({"status": "disabled"}))
        .expect(200, "");
    app.get("/api/v1/me")
        .bearer(&dev.token)
        .send()
        .expect(401, "user_disabled");
    app.post("/api/v1/keys")
        .bearer(&dev.token)
        .json(json!({"name": "disabled"}))
        .expect(401, "user_disabled");
    assert_eq!(keys_of(&second), 1);
    app.post("/api/v1/auth/refresh")
        .json(json!({"refresh_token": dev.refresh}))
        .expect(401, "invalid_refresh_token");
}

both_backends!(
    operator_manages_tenants,
    owners_and_admins_manage_accounts_and_users,
    changes_are_audited,
    access_tokens_follow_the_user_as_they_are_now
);

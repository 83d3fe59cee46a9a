//! API keys: shown once, stored hashed, authenticate `/v1/models`; revoke, rotate (with and
//! without grace), expire — each effective at once.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

fn models(app: &TestApp, key: &str) -> crate::helpers::Resp {
    app.get("/v1/models").bearer(key).send()
}

fn key_is_shown_once_and_stored_hashed(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "A");
    let dev = app.user(&owner, &slug, "developer", Some(&acct));
    let created = app
        .post("/api/v1/keys")
        .bearer(&dev.token)
        .json(json!({"name": "ci"}))
        .expect(201, "")
        .ok();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tg_"));
    assert!(bs58::decode(&secret[3..]).into_vec().unwrap().len() >= 24);
    assert_eq!(
        created["account_id"],
        acct.as_str(),
        "a developer's key belongs to their account"
    );
    assert_eq!(created["last4"], &secret[secret.len() - 4..]);
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["chat:write", "models:read"]));
    assert_eq!(created["status"], "active");

    let listed = app
        .get("/api/v1/keys")
        .bearer(&dev.token)
        .send()
        .expect(200, "");
    let one = app
        .get(&format!("/api/v1/keys/{id}"))
        .bearer(&dev.token)
        .send()
        .expect(200, "");
    for text in [&listed.text, &one.text] {
        assert!(
            !text.contains(&secret),
            "the secret must never be shown again"
        );
    }
    assert!(one.body.get("secret").is_none());
    assert!(one.body["last_used_at"].is_null());

    // Nothing in the database holds the secret.
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret_hash: String,
    }
    let mut conn = app.db.get().unwrap();
    let rows: Vec<Row> = diesel::sql_query("SELECT secret_hash FROM api_keys")
        .load(&mut *conn)
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].secret_hash.len(), 64, "a hex SHA-256");
    assert!(!rows[0].secret_hash.contains(&secret[3..]));

    let res = models(&app, &secret).expect(200, "").ok();
    assert_eq!(res["object"], "list");
    assert_eq!(res["data"][0]["id"], "taogate-demo");
    assert_eq!(res["data"][0]["object"], "model");
    // Use is recorded (asynchronously, at most once a minute).
    let mut used = serde_json::Value::Null;
    for _ in 0..50 {
        used = app
            .get(&format!("/api/v1/keys/{id}"))
            .bearer(&dev.token)
            .send()
            .ok()["last_used_at"]
            .clone();
        if !used.is_null() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(used.is_string(), "last_used_at recorded");
}

fn revocation_is_immediate(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "A");
    let (id, secret) = app.key(&owner, Some(&acct));
    models(&app, &secret).expect(200, "");
    let revoked = app
        .delete(&format!("/api/v1/keys/{id}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    models(&app, &secret).expect(401, "api_key_revoked");
    // Revoking twice is harmless; rotating a revoked key is refused.
    app.delete(&format!("/api/v1/keys/{id}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    app.post(&format!("/api/v1/keys/{id}/rotate"))
        .bearer(&owner.token)
        .json(json!({}))
        .expect(409, "key_not_active");
}

fn rotation_swaps_the_secret_with_optional_grace(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "A");
    let (id, old) = app.key(&owner, Some(&acct));
    let rotated = app
        .post(&format!("/api/v1/keys/{id}/rotate"))
        .bearer(&owner.token)
        .json(json!({}))
        .expect(200, "")
        .ok();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_eq!(rotated["id"], id.as_str(), "rotation keeps the key id");
    assert_ne!(new, old);
    models(&app, &old).expect(401, "invalid_api_key");
    models(&app, &new).expect(200, "");

    let graced = app
        .post(&format!("/api/v1/keys/{id}/rotate"))
        .bearer(&owner.token)
        .json(json!({"grace_period_secs": 3600}))
        .expect(200, "")
        .ok();
    let newest = graced["secret"].as_str().unwrap().to_owned();
    assert!(graced["previous_secret_valid_until"].is_string());
    models(&app, &new).expect(200, "");
    models(&app, &newest).expect(200, "");
    // Revocation ends the grace period too.
    app.delete(&format!("/api/v1/keys/{id}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    models(&app, &new).expect(401, "invalid_api_key");
    models(&app, &newest).expect(401, "api_key_revoked");
    app.post(&format!("/api/v1/keys/{id}/rotate"))
        .bearer(&owner.token)
        .json(json!({"grace_period_secs": 10_000_000}))
        .expect(400, "invalid_request");
}

fn keys_expire(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "A");
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let created = app
        .post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "short-lived", "account_id": acct, "expires_at": soon}))
        .expect(201, "")
        .ok();
    let secret = created["secret"].as_str().unwrap();
    models(&app, secret).expect(200, "");
    std::thread::sleep(std::time::Duration::from_millis(1700));
    models(&app, secret).expect(401, "api_key_expired");
    let shown = app
        .get(&format!("/api/v1/keys/{}", created["id"].as_str().unwrap()))
        .bearer(&owner.token)
        .send()
        .ok();
    assert_eq!(shown["status"], "expired");
    let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    app.post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "x", "account_id": acct, "expires_at": past}))
        .expect(400, "invalid_request");
}

fn scopes_and_garbled_keys(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "A");
    let chat_only = app
        .post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "chat", "account_id": acct, "scopes": ["chat:write"]}))
        .expect(201, "")
        .ok();
    models(&app, chat_only["secret"].as_str().unwrap()).expect(200, "");
    app.post("/api/v1/keys")
        .bearer(&owner.token)
        .json(json!({"name": "x", "account_id": acct, "scopes": ["admin:all"]}))
        .expect(400, "invalid_request");
    app.get("/v1/models").send().expect(401, "missing_api_key");
    for garbled in [
        "tg_",
        "tg_0OIl0OIl",
        "sk-abcdef",
        "tg_2222222222222222222222222222222222222222222222",
        &op.token,
    ] {
        models(&app, garbled).expect(401, "invalid_api_key");
    }
}

/// `taogate_key_lookups_total` from `/metrics`.
fn key_lookups(app: &TestApp) -> u64 {
    let metrics = app.get("/metrics").send().expect(200, "").text;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("taogate_key_lookups_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no key lookup counter in {metrics}"))
}

/// `n` requests with `key` released at once; their statuses.
fn burst(app: &TestApp, key: &str, n: usize) -> Vec<u16> {
    let start = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    models(app, key).status
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// A burst on a key that is not cached makes one database lookup that every request waits for,
/// not one per request; after a revocation the next burst shares one lookup again, and every
/// request in it sees the revocation.
fn a_burst_on_an_uncached_key_looks_it_up_once(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "A");
    let (id, secret) = app.key(&owner, Some(&acct));
    let before = key_lookups(&app);
    let statuses = burst(&app, &secret, 48);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(key_lookups(&app) - before, 1);
    app.delete(&format!("/api/v1/keys/{id}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    let before = key_lookups(&app);
    let statuses = burst(&app, &secret, 48);
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(key_lookups(&app) - before, 1);
}

both_backends!(
    a_burst_on_an_uncached_key_looks_it_up_once,
    key_is_shown_once_and_stored_hashed,
    revocation_is_immediate,
    rotation_swaps_the_secret_with_optional_grace,
    keys_expire,
    scopes_and_garbled_keys,
);

//! Hosted crypto checkouts through a tenant's own Coinbase, on both backends: Coinbase Business
//! checkouts created on a stand-in of its API (tests/py/coinbase_standin.py, written from
//! Coinbase's documentation, which verifies the CDP JWT with the key's public half in Python's
//! `cryptography`), webhooks signed here as Coinbase documents them (Hook0: HMAC-SHA256 of
//! `t.h.<header values>.body`; legacy Commerce: hex HMAC of the raw body) — each payment credited
//! once whatever the deliveries, refunds debited once, forged or stale deliveries refused with
//! nothing moved, the legacy Commerce API for tenants still on it, and the ledger balanced.

use std::process::Command;

use base64::Engine;
use figment::Figment;
use figment::providers::Serialized;
use hmac::Mac;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Resp, TestApp};
use crate::ledger::{balance, reconcile_with_cache};
use crate::procs::Proc;

const UNIT: i64 = 1_000_000_000;
const ENCRYPTION_KEY: &str = "5f1c0a7e3b9d24c86a0e1f3b5d7c9e2a4b6d8f0a1c3e5f7a9b2d4c6e8f0a1b3c";
const HOOK: &str = "coinbase-webhook-secret-0001";
const HOOK2: &str = "coinbase-webhook-secret-0002";
const KEY_ID: &str = "3f6a1c2e-0b1d-4e5f-9a8b-7c6d5e4f3a2b";
const COMMERCE_KEY: &str = "cc-api-key-0123456789";
const SEED: [u8; 32] = [42; 32];

fn python() -> String {
    std::env::var("TAOGATE_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

/// The Ed25519 public half of [`SEED`], computed by Python's `cryptography`.
fn public_key() -> String {
    let out = Command::new(python())
        .args(["-c", "import sys; from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey as K; \
            print(K.from_private_bytes(bytes.fromhex(sys.argv[1])).public_key().public_bytes_raw().hex())",
            &hex::encode(SEED)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `X-Hook0-Signature` for `body` at `t`, covering `headers` (name, value), as Coinbase documents it.
fn hook0(secret: &str, t: i64, headers: &[(&str, &str)], body: &str) -> String {
    let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    let values: Vec<&str> = headers.iter().map(|(_, v)| *v).collect();
    let names = names.join(" ");
    let signed = format!("{t}.{names}.{}.{body}", values.join("."));
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    format!(
        "t={t},h={names},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// `X-CC-Webhook-Signature`: hex HMAC-SHA256 of the raw body.
fn commerce_sig(secret: &str, body: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Business webhook body about checkout `id`.
fn business_event(kind: &str, id: &str, amount: &str, extra: Value) -> String {
    let mut v = json!({"id": id, "url": format!("https://payments.coinbase.com/payment-links/pl_{id}"),
        "amount": amount, "currency": "USDC", "network": "base", "eventType": kind,
        "status": if kind == "checkout.payment.success" { "COMPLETED" } else { "ACTIVE" },
        "metadata": {}, "createdAt": "2026-12-07T10:00:00Z", "updatedAt": "2026-12-07T10:01:00Z"});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v.to_string()
}

fn deliver(app: &TestApp, slug: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = app.post(&format!("/webhooks/coinbase/{slug}"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.raw(Some(body.as_bytes()))
}

/// Delivers a Business event signed over `content-type` and `x-hook0-id`; its outcome.
fn send(app: &TestApp, slug: &str, body: &str, delivery: &str) -> String {
    let signed = [
        ("content-type", "application/json"),
        ("x-hook0-id", delivery),
    ];
    let sig = hook0(HOOK, now(), &signed, body);
    deliver(
        app,
        slug,
        body,
        &[
            ("Content-Type", "application/json"),
            ("X-Hook0-Id", delivery),
            ("X-Hook0-Signature", &sig),
        ],
    )
    .expect(200, "")
    .ok()["outcome"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn requests(server: &Proc) -> Value {
    ureq::get(&format!("{}_standin/requests", server.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

fn coinbase_checkouts_credit_once_and_refunds_reverse_once(b: Backend) {
    let public = public_key();
    let server = Proc::start_program(
        &python(),
        &[
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/coinbase_standin.py"),
            "--port",
            "0",
            "--key-id",
            KEY_ID,
            "--public-key",
            &public,
            "--commerce-key",
            COMMERCE_KEY,
        ],
    );
    let app = TestApp::spawn_with(
        b,
        Figment::new()
            .merge(Serialized::default(
                "payments.encryption_key",
                ENCRYPTION_KEY,
            ))
            .merge(Serialized::default(
                "payments.coinbase.business_api_base",
                &server.url,
            ))
            .merge(Serialized::default(
                "payments.coinbase.commerce_api_base",
                &server.url,
            )),
    );
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let secret = base64::engine::general_purpose::STANDARD
        .encode([SEED.as_slice(), &hex::decode(&public).unwrap()].concat());

    // Settings: a secret that is not a CDP key, and a seed with another public half: 400.
    let put = |body: Value| {
        app.put("/api/v1/billing/coinbase")
            .bearer(&owner.token)
            .json(body)
    };
    put(json!({"api_key_id": KEY_ID, "api_key_secret": "not-a-key-at-all", "webhook_secrets": [HOOK]}))
        .expect(400, "invalid_request");
    let wrong =
        base64::engine::general_purpose::STANDARD.encode([SEED.as_slice(), &[1u8; 32]].concat());
    put(json!({"api_key_id": KEY_ID, "api_key_secret": wrong, "webhook_secrets": [HOOK]}))
        .expect(400, "invalid_request");
    let shown =
        put(json!({"api_key_id": KEY_ID, "api_key_secret": secret, "webhook_secrets": [HOOK]}))
            .expect(200, "")
            .ok();
    assert_eq!(
        (
            shown["api"].as_str(),
            shown["api_key_secret"].as_str(),
            shown["currency"].as_str()
        ),
        (Some("business"), Some("ed25519 key"), Some("usdc"))
    );
    assert_eq!(shown["webhook_path"], format!("/webhooks/coinbase/{slug}"));
    let read = app
        .get("/api/v1/billing/coinbase")
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    assert!(!read.text.contains(&secret) && !read.text.contains(HOOK));

    // A checkout: created with a CDP JWT the stand-in verified, idempotent on our payment id.
    let checkout = |amount: i64| {
        app.post("/api/v1/billing/checkout")
            .bearer(&owner.token)
            .json(json!({"provider": "coinbase", "account_id": account, "amount_nano": amount,
                "success_url": "https://shop.example.com/paid", "cancel_url": "https://shop.example.com/back"}))
            .expect(201, "")
            .ok()
    };
    let paid = checkout(25 * UNIT);
    let id = paid["payment_reference"].as_str().unwrap().to_owned();
    assert_eq!(paid["provider"], "coinbase");
    assert_eq!(
        paid["url"],
        format!("https://payments.coinbase.com/payment-links/pl_{id}")
    );
    let seen = requests(&server);
    let created = &seen[0];
    assert_eq!(created["path"], "/api/v1/checkouts");
    assert!(
        created["claims"].is_object(),
        "the stand-in verified the JWT: {created}"
    );
    assert_eq!(
        created["idempotency_key"],
        format!("topup:{}", paid["id"].as_str().unwrap())
    );
    assert_eq!(
        (
            created["body"]["amount"].as_str(),
            created["body"]["currency"].as_str(),
            created["body"]["network"].as_str()
        ),
        (Some("25.00"), Some("USDC"), Some("base"))
    );
    assert_eq!(
        created["body"]["metadata"]["taogate_account_id"],
        account.as_str()
    );

    // Paid, delivered five times at once (each its own delivery id): one credit.
    let success = business_event(
        "checkout.payment.success",
        &id,
        "25.00",
        json!({"settlement": {"totalAmount": "25.00", "feeAmount": "0.25", "netAmount": "24.75", "currency": "USDC"}}),
    );
    let outcomes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|i| {
                let (app, slug, body) = (&app, &slug, &success);
                s.spawn(move || send(app, slug, body, &format!("msg-{i}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| *o == "credited").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(balance(&app, &owner, &account), 25 * UNIT);

    // Forged, stale, another secret, a signed header changed, no signature: 400, nothing stored.
    let stored = || {
        app.get(&format!("/api/v1/billing/topups?account_id={account}"))
            .bearer(&owner.token)
            .send()
            .expect(200, "")
            .ok()
    };
    let signed = [
        ("content-type", "application/json"),
        ("x-hook0-id", "msg-x"),
    ];
    let headers = |sig: &str| {
        vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Hook0-Id".to_owned(), "msg-x".to_owned()),
            ("X-Hook0-Signature".to_owned(), sig.to_owned()),
        ]
    };
    let post = |body: &str, h: Vec<(String, String)>| {
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        deliver(&app, &slug, body, &h)
    };
    let second = checkout(10 * UNIT);
    let second_id = second["payment_reference"].as_str().unwrap().to_owned();
    let ok_body = business_event("checkout.payment.success", &second_id, "10.00", json!({}));
    for sig in [
        hook0("someone-elses-secret-0001", now(), &signed, &ok_body),
        hook0(HOOK, now() - 301, &signed, &ok_body),
        hook0(
            HOOK,
            now(),
            &[
                ("content-type", "application/json"),
                ("x-hook0-id", "msg-y"),
            ],
            &ok_body,
        ),
        hook0(HOOK, now(), &signed, &ok_body.replace("10.00", "1000.00")),
        "t=1,h=x,v1=zz".to_owned(),
    ] {
        post(&ok_body, headers(&sig)).expect(400, "invalid_signature");
    }
    post(
        &ok_body,
        vec![("Content-Type".into(), "application/json".into())],
    )
    .expect(400, "invalid_signature");
    let before = stored();
    assert!(
        before["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "pending")
    );
    // Coinbase says more was paid than the checkout asked for: credited what was asked.
    let more = business_event("checkout.payment.success", &second_id, "12.00", json!({}));
    assert_eq!(send(&app, &slug, &more, "msg-2"), "credited");
    assert_eq!(balance(&app, &owner, &account), 35 * UNIT);

    // Refunds: 10 of the 25, delivered twice; then the rest; each debited once.
    let refund = |total: &str| {
        business_event(
            "checkout.refund.success",
            &id,
            "25.00",
            json!({"refundedAmount": total, "refunds": [{"id": format!("rf-{total}"), "amount": total, "status": "COMPLETED"}]}),
        )
    };
    assert_eq!(send(&app, &slug, &refund("10.00"), "msg-r1"), "debited");
    assert_eq!(send(&app, &slug, &refund("10.00"), "msg-r2"), "replayed");
    assert_eq!(balance(&app, &owner, &account), 25 * UNIT);
    assert_eq!(send(&app, &slug, &refund("25.00"), "msg-r3"), "debited");
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT);
    // Expired: marked; nothing moves. A checkout taogate never made names no account: nothing moves.
    let third = checkout(5 * UNIT)["payment_reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let expired = business_event("checkout.payment.expired", &third, "5.00", json!({}));
    assert_eq!(send(&app, &slug, &expired, "msg-e"), "marked");
    let stranger = business_event(
        "checkout.payment.success",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "99.00",
        json!({}),
    );
    assert_eq!(send(&app, &slug, &stranger, "msg-s"), "foreign_account");
    let states: Vec<String> = stored()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["refunded", "succeeded", "expired"]);
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT);

    // A second tenant still on legacy Commerce: a charge, then `charge:confirmed` signed
    // X-CC-Webhook-Signature, delivered twice: one credit; `charge:failed` on another: marked.
    let (_, slug2, owner2) = app.tenant(&op, false);
    let account2 = app.account(&owner2, "Legacy");
    app.put("/api/v1/billing/coinbase")
        .bearer(&owner2.token)
        .json(json!({"api": "commerce", "api_key_secret": COMMERCE_KEY, "webhook_secrets": [HOOK2], "currency": "usd"}))
        .expect(200, "");
    let charge = |amount: i64| {
        app.post("/api/v1/billing/checkout")
            .bearer(&owner2.token)
            .json(json!({"provider": "coinbase", "account_id": account2, "amount_nano": amount,
                "success_url": "https://shop.example.com/paid", "cancel_url": "https://shop.example.com/back"}))
            .expect(201, "")
            .ok()
    };
    let c1 = charge(7 * UNIT);
    let charge_id = c1["payment_reference"].as_str().unwrap().to_owned();
    let made = requests(&server);
    let last = made.as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["path"].as_str(), last["api_key"].as_str()),
        (Some("/charges"), Some(COMMERCE_KEY))
    );
    assert_eq!(
        last["body"]["local_price"],
        json!({"amount": "7.00", "currency": "USD"})
    );
    let commerce = |event: &str, kind: &str, charge: &str, amount: &str| {
        json!({"attempt_number": 1, "id": format!("wh-{event}"), "scheduled_for": "2026-12-07T10:00:00Z",
            "event": {"id": event, "type": kind, "api_version": "2018-03-22", "created_at": "2026-12-07T10:00:00Z",
                "data": {"id": charge, "code": "ABCD1234", "pricing": {"local": {"amount": amount, "currency": "USD"}},
                    "metadata": {}}}})
        .to_string()
    };
    let cc = |body: &str, secret: &str| {
        deliver(
            &app,
            &slug2,
            body,
            &[
                ("Content-Type", "application/json"),
                ("X-CC-Webhook-Signature", &commerce_sig(secret, body)),
            ],
        )
    };
    let confirmed = commerce("e1", "charge:confirmed", &charge_id, "7.00");
    cc(&confirmed, HOOK).expect(400, "invalid_signature");
    assert_eq!(
        cc(&confirmed, HOOK2).expect(200, "").ok()["outcome"],
        "credited"
    );
    let again = commerce("e2", "charge:confirmed", &charge_id, "7.00");
    assert_eq!(
        cc(&again, HOOK2).expect(200, "").ok()["outcome"],
        "replayed"
    );
    let other = charge(3 * UNIT)["payment_reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        cc(&commerce("e3", "charge:failed", &other, "3.00"), HOOK2)
            .expect(200, "")
            .ok()["outcome"],
        "marked"
    );
    assert_eq!(balance(&app, &owner2, &account2), 7 * UNIT);
    // The first tenant's deliveries do not open the second tenant's endpoint.
    let cross = hook0(HOOK, now(), &signed, &ok_body);
    let h: Vec<(String, String)> = headers(&cross);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    deliver(&app, &slug2, &ok_body, &h).expect(400, "invalid_signature");
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT);
    assert_eq!(balance(&app, &owner2, &account2), 7 * UNIT);
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(ok, "{report}");
    // The month's statement shows the top-ups by provider and the refunds, and ties.
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let st = app
        .get(&format!(
            "/api/v1/statements?account_id={account}&month={month}"
        ))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(
        (
            st["topups"][0]["provider"].as_str(),
            st["topups"][0]["count"].as_i64(),
            st["topups"][0]["amount_nano"].as_i64()
        ),
        (Some("coinbase"), Some(2), Some(35 * UNIT)),
        "{st}"
    );
    assert_eq!(st["refunds_and_disputes"][0]["amount_nano"], -25 * UNIT);
    assert_eq!(st["closing_balance_nano"], 10 * UNIT);
    // Every credit of the month is backed by a stored notification naming it.
    let (ok, report) = crate::finance::reconcile_period(&app.db_url(), &month);
    assert!(ok, "{report}");
    assert_eq!(report["period"]["credits_without_notification"], json!([]));
    // A credit whose notifications are gone (a hand-made credit, a wiped table) is reported.
    let mut c = app.db.get().unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "DELETE FROM payment_notifications WHERE payload LIKE '%{charge_id}%'"
        )),
        &mut *c,
    )
    .unwrap();
    drop(c);
    let (ok, report) = crate::finance::reconcile_period(&app.db_url(), &month);
    assert!(!ok);
    assert_eq!(
        report["period"]["credits_without_notification"][0]["reference"],
        charge_id.as_str(),
        "{report}"
    );
}

both_backends!(coinbase_checkouts_credit_once_and_refunds_reverse_once);

//! Card payments through a tenant's own Stripe, on both backends: settings sealed and masked,
//! Checkout top-ups created on a stand-in of Stripe's Checkout API (tests/py/stripe_standin.py,
//! written from Stripe's API reference), and webhooks signed by the official `stripe` library —
//! each payment credited once whatever the deliveries, refunds and disputes debited once, forged
//! or stale notifications refused with nothing moved, and the ledger balanced after every test.

use std::io::Write;
use std::process::{Command, Stdio};

use figment::Figment;
use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Resp, Session, TestApp, short_id};
use crate::ledger::{balance, reconcile_with_cache};
use crate::procs::Proc;

const UNIT: i64 = 1_000_000_000;
const ENCRYPTION_KEY: &str = "5f1c0a7e3b9d24c86a0e1f3b5d7c9e2a4b6d8f0a1c3e5f7a9b2d4c6e8f0a1b3c";
const SECRET: &str = "whsec_test_first_secret_0001";
const SECRET2: &str = "whsec_test_second_secret_0002";
const SK: &str = "sk_test_taogate_0123456789abcd";

fn python() -> String {
    std::env::var("TAOGATE_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

/// Runs tests/py/stripe_sign.py (the stripe library) on `job`; its JSON answer.
fn stripe_py(job: Value) -> Value {
    let mut child = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/stripe_sign.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `Stripe-Signature` headers for `bodies`, made by the stripe library, at `now + skew`.
fn sign(bodies: &[&str], secret: &str, skew: i64) -> Vec<String> {
    let now = chrono::Utc::now().timestamp();
    serde_json::from_value(stripe_py(
        json!({"secret": secret, "timestamp": now + skew, "bodies": bodies}),
    ))
    .unwrap()
}

fn standin() -> Proc {
    Proc::start_program(
        &python(),
        &[
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/stripe_standin.py"),
            "--port",
            "0",
        ],
    )
}

fn spawn(b: Backend, api_base: &str, key: &str) -> TestApp {
    TestApp::spawn_with(
        b,
        Figment::new()
            .merge(Serialized::default("payments.encryption_key", key))
            .merge(Serialized::default("payments.stripe.api_base", api_base)),
    )
}

fn configure(app: &TestApp, owner: &Session, secrets: &[&str], policy: &str) -> Resp {
    app.put("/api/v1/billing/stripe").bearer(&owner.token).json(
        json!({"secret_key": SK, "webhook_secrets": secrets, "currency": "usd",
            "dispute_policy": policy}),
    )
}

fn deliver(app: &TestApp, slug: &str, body: &str, signature: Option<&str>) -> Resp {
    let mut req = app
        .post(&format!("/webhooks/stripe/{slug}"))
        .header("Content-Type", "application/json; charset=utf-8");
    if let Some(s) = signature {
        req = req.header("Stripe-Signature", s);
    }
    req.raw(Some(body.as_bytes()))
}

/// Delivers `body` signed with the stripe library; the receipt's outcome (200 expected).
fn send(app: &TestApp, slug: &str, body: &str) -> String {
    let header = sign(&[body], SECRET, 0).remove(0);
    deliver(app, slug, body, Some(&header)).expect(200, "").ok()["outcome"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn event(kind: &str, object: Value) -> String {
    json!({"id": format!("evt_{}", short_id()), "object": "event", "api_version": "2026-09-30",
        "created": chrono::Utc::now().timestamp(), "livemode": false, "type": kind,
        "data": {"object": object}})
    .to_string()
}

fn session_object(cs: &str, pi: &str, account: &str, cents: i64, payment: Option<&str>) -> Value {
    let mut metadata = json!({});
    if let Some(p) = payment {
        metadata["taogate_payment_id"] = json!(p);
    }
    json!({"id": cs, "object": "checkout.session", "mode": "payment", "status": "complete",
        "payment_status": "paid", "amount_total": cents, "currency": "usd",
        "client_reference_id": account, "payment_intent": pi, "customer": "cus_x",
        "metadata": metadata})
}

fn count(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = app.db.get().unwrap();
    diesel::RunQueryDsl::get_result::<N>(diesel::sql_query(sql), &mut *c)
        .unwrap()
        .n
}

fn reconciles(app: &TestApp) {
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(ok, "{report}");
}

fn stripe_settings_are_sealed_masked_and_tenant_scoped(b: Backend) {
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let dev = app.user(&owner, &slug, "developer", Some(&account));
    let finance = app.user(&owner, &slug, "finance", None);
    app.get("/api/v1/billing/stripe")
        .bearer(&owner.token)
        .send()
        .expect(404, "not_found");
    let shown = configure(&app, &owner, &[SECRET, SECRET2], "debit")
        .expect(200, "")
        .ok();
    assert_eq!(shown["secret_key"], "sk_test_…abcd");
    assert_eq!(shown["webhook_secret_count"], 2);
    assert_eq!(shown["webhook_path"], format!("/webhooks/stripe/{slug}"));
    assert_eq!(shown["min_topup_nano"], UNIT);
    let read = app
        .get("/api/v1/billing/stripe")
        .bearer(&finance.token)
        .send();
    assert_eq!(read.expect(200, "").ok(), shown);
    for text in [&read_text(&app, &finance), &audit_text(&app, &owner)] {
        assert!(!text.contains("whsec_") && !text.contains(SK), "{text}");
    }
    // Sealed at rest: neither secret is in the database.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM payment_providers WHERE secret_key_sealed LIKE '%sk_test%' OR webhook_secrets_sealed LIKE '%whsec%'"
        ),
        0
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM payment_providers"),
        1
    );
    // Only owners and admins set them; developers do not read them.
    configure(&app, &dev, &[SECRET], "debit").expect(403, "permission_denied");
    configure(&app, &finance, &[SECRET], "debit").expect(403, "permission_denied");
    app.get("/api/v1/billing/stripe")
        .bearer(&dev.token)
        .send()
        .expect(403, "permission_denied");
    // Another tenant sees its own (none).
    let (_, _, other) = app.tenant(&op, false);
    app.get("/api/v1/billing/stripe")
        .bearer(&other.token)
        .send()
        .expect(404, "not_found");
    // Bad input: a clear 400 naming the field, nothing stored.
    for (body, param) in [
        (
            json!({"secret_key": "pk_test_123456789", "webhook_secrets": [SECRET], "currency": "usd"}),
            "secret_key",
        ),
        (
            json!({"secret_key": SK, "webhook_secrets": [], "currency": "usd"}),
            "webhook_secrets",
        ),
        (
            json!({"secret_key": SK, "webhook_secrets": ["secret"], "currency": "usd"}),
            "webhook_secrets",
        ),
        (
            json!({"secret_key": SK, "webhook_secrets": [SECRET], "currency": "dollars"}),
            "currency",
        ),
        (
            json!({"secret_key": SK, "webhook_secrets": [SECRET], "currency": "usd", "min_topup_nano": 10, "max_topup_nano": 5}),
            "max_topup_nano",
        ),
    ] {
        let res = app
            .put("/api/v1/billing/stripe")
            .bearer(&other.token)
            .json(body)
            .expect(400, "");
        assert_eq!(res.body["error"]["param"], param, "{}", res.text);
    }
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM payment_providers"),
        1
    );
    drop(app);
    // Without an encryption key, secrets are not stored.
    let bare = spawn(b, "http://127.0.0.1:9/", "");
    let op = bare.operator();
    let (_, _, owner) = bare.tenant(&op, false);
    configure(&bare, &owner, &[SECRET], "debit").expect(409, "encryption_key_missing");
}

fn read_text(app: &TestApp, who: &Session) -> String {
    app.get("/api/v1/billing/stripe")
        .bearer(&who.token)
        .send()
        .text
}

fn audit_text(app: &TestApp, who: &Session) -> String {
    app.get("/api/v1/audit-log").bearer(&who.token).send().text
}

fn a_checkout_top_up_is_credited_once_whatever_arrives(b: Backend) {
    let stripe = standin();
    let app = spawn(b, &stripe.url, ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let dev = app.user(&owner, &slug, "developer", Some(&account));
    configure(&app, &owner, &[SECRET], "debit").expect(200, "");
    let body = json!({"account_id": account, "amount_nano": 10 * UNIT,
        "success_url": "https://shop.example.com/paid", "cancel_url": "https://shop.example.com/back"});
    let created = app
        .post("/api/v1/billing/checkout")
        .bearer(&owner.token)
        .header("Idempotency-Key", "topup-1")
        .json(body.clone())
        .expect(201, "")
        .ok();
    let cs = created["checkout_session_id"].as_str().unwrap().to_owned();
    assert!(cs.starts_with("cs_"), "{created}");
    assert!(
        created["url"]
            .as_str()
            .unwrap()
            .starts_with("https://checkout.stripe.com/")
    );
    assert_eq!(created["state"], "pending");
    assert_eq!(created["amount_minor"], 1000);
    // The same Idempotency-Key answers the same top-up.
    let again = app
        .post("/api/v1/billing/checkout")
        .bearer(&owner.token)
        .header("Idempotency-Key", "topup-1")
        .json(body)
        .expect(201, "")
        .ok();
    assert_eq!(again["id"], created["id"]);
    // A developer tops up their own account; the customer is created once and reused.
    let own = app
        .post("/api/v1/billing/checkout")
        .bearer(&dev.token)
        .json(json!({"amount_nano": 5 * UNIT, "success_url": "https://a.example/s", "cancel_url": "https://a.example/c"}))
        .expect(201, "")
        .ok();
    assert_eq!(own["account_id"], account.as_str());
    let seen: Value = ureq::get(&format!("{}_standin/requests", stripe.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let calls: Vec<&Value> = seen.as_array().unwrap().iter().collect();
    let of = |path: &str| calls.iter().filter(|c| c["path"] == path).count();
    assert_eq!(of("/v1/customers"), 1, "{seen}");
    assert_eq!(of("/v1/checkout/sessions"), 2, "{seen}");
    // The customer portal for the account (its saved cards), for the developer and for the owner.
    for (who, query) in [
        (&dev, String::new()),
        (&owner, format!("account_id={account}&")),
    ] {
        let portal = app
            .get(&format!(
                "/api/v1/billing/portal?{query}return_url=https://shop.example.com/account"
            ))
            .bearer(&who.token)
            .send()
            .expect(200, "")
            .ok();
        assert!(
            portal["url"]
                .as_str()
                .unwrap()
                .starts_with("https://billing.stripe.com/"),
            "{portal}"
        );
    }
    let finance = app.user(&owner, &slug, "finance", None);
    app.get(&format!("/api/v1/billing/portal?account_id={account}"))
        .bearer(&finance.token)
        .send()
        .expect(403, "permission_denied");
    let first = calls
        .iter()
        .find(|c| c["path"] == "/v1/checkout/sessions")
        .unwrap();
    assert_eq!(
        first["params"]["client_reference_id"],
        account.as_str(),
        "{first}"
    );
    assert_eq!(first["params"]["mode"], "payment");
    assert_eq!(
        first["idempotency_key"],
        format!("topup:{}", created["id"].as_str().unwrap())
    );
    // Amounts the tenant's rules refuse: 400, nothing created at Stripe.
    for (amount, code) in [
        (0, "invalid_request"),
        (UNIT / 2, "amount_out_of_range"),
        (UNIT + 1, "amount_not_payable"),
    ] {
        app.post("/api/v1/billing/checkout")
            .bearer(&dev.token)
            .json(json!({"amount_nano": amount, "success_url": "https://a.example/s", "cancel_url": "https://a.example/c"}))
            .expect(400, code);
    }
    app.post("/api/v1/billing/checkout")
        .bearer(&dev.token)
        .json(json!({"amount_nano": UNIT, "success_url": "javascript:alert(1)", "cancel_url": "https://a.example/c"}))
        .expect(400, "invalid_request");

    // Paid: one event delivered ten times at once, then its siblings for the same payment.
    let pi = format!("pi_{}", short_id());
    let payment = created["id"].as_str().unwrap();
    let completed = event(
        "checkout.session.completed",
        session_object(&cs, &pi, &account, 1000, Some(payment)),
    );
    let header = sign(&[&completed], SECRET, 0).remove(0);
    let outcomes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    deliver(&app, &slug, &completed, Some(&header))
                        .expect(200, "")
                        .ok()["outcome"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| *o == "credited").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "replayed").count(),
        9,
        "{outcomes:?}"
    );
    let succeeded = event(
        "checkout.session.async_payment_succeeded",
        session_object(&cs, &pi, &account, 1000, Some(payment)),
    );
    let intent = event(
        "payment_intent.succeeded",
        json!({"id": pi, "object": "payment_intent",
        "amount": 1000, "amount_received": 1000, "currency": "usd", "status": "succeeded",
        "metadata": {"taogate_payment_id": payment, "taogate_account_id": account}}),
    );
    let headers = sign(&[&succeeded, &intent], SECRET, 0);
    for (body, header) in [(&succeeded, &headers[0]), (&intent, &headers[1])] {
        assert_eq!(
            deliver(&app, &slug, body, Some(header))
                .expect(200, "")
                .ok()["outcome"],
            "replayed"
        );
    }
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT);
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT COUNT(*) AS n FROM ledger_transactions WHERE idempotency_key = 'stripe:{pi}'"
            )
        ),
        1
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM payment_notifications"),
        3
    );
    let topups = app
        .get(&format!("/api/v1/billing/topups?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    let paid = topups["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == created["id"])
        .unwrap();
    assert_eq!(paid["state"], "succeeded", "{topups}");
    assert_eq!(paid["credited_nano"], 10 * UNIT);
    assert_eq!(paid["payment_reference"], pi.as_str());
    // The developer's own session expires unpaid: marked, nothing moves.
    let expired = event(
        "checkout.session.expired",
        json!({"id": own["checkout_session_id"], "object": "checkout.session",
        "payment_status": "unpaid", "status": "expired", "payment_intent": null}),
    );
    let header = sign(&[&expired], SECRET, 0).remove(0);
    assert_eq!(
        deliver(&app, &slug, &expired, Some(&header))
            .expect(200, "")
            .ok()["outcome"],
        "marked"
    );
    let mine = app
        .get("/api/v1/billing/topups")
        .bearer(&dev.token)
        .send()
        .expect(200, "")
        .ok();
    let expired_view = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == own["id"])
        .unwrap();
    assert_eq!(expired_view["state"], "expired");
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT);
    reconciles(&app);
    drop(stripe);
}

fn forged_stale_or_unreadable_notifications_move_nothing(b: Backend) {
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    configure(&app, &owner, &[SECRET], "debit").expect(200, "");
    let pay = |pi: &str| {
        event(
            "payment_intent.succeeded",
            json!({"id": pi, "object": "payment_intent",
            "amount_received": 700, "currency": "usd", "metadata": {"taogate_account_id": account}}),
        )
    };
    let body = pay("pi_forged");
    let good = sign(&[&body], SECRET, 0).remove(0);
    let (t, v1) = good.split_once(",v1=").unwrap();
    let flipped = format!("{t},v1={}", v1.chars().rev().collect::<String>());
    let wrong = sign(&[&body], "whsec_someone_else_entirely", 0).remove(0);
    let old = sign(&[&body], SECRET, -301).remove(0);
    let changed = body.replace("700", "70000");
    for (body, header) in [
        (body.as_str(), Some(flipped.as_str())),
        (body.as_str(), Some(wrong.as_str())),
        (body.as_str(), Some(old.as_str())),
        (body.as_str(), Some("t=abc,v1=zz")),
        (body.as_str(), Some("")),
        (body.as_str(), None),
        (changed.as_str(), Some(good.as_str())),
    ] {
        deliver(&app, &slug, body, header).expect(400, "invalid_signature");
    }
    // Signed but not an event.
    let junk = "{\"hello\": 1}";
    let header = sign(&[junk], SECRET, 0).remove(0);
    deliver(&app, &slug, junk, Some(&header)).expect(400, "invalid_notification");
    // Another tenant's endpoint does not take this tenant's signature; unknown slugs are 404.
    let (_, other_slug, other) = app.tenant(&op, false);
    configure(&app, &other, &[SECRET2], "debit").expect(200, "");
    deliver(&app, &other_slug, &body, Some(&good)).expect(400, "invalid_signature");
    deliver(&app, "no-such-tenant", &body, Some(&good)).expect(404, "not_found");
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM payment_notifications"),
        0
    );
    assert_eq!(balance(&app, &owner, &account), 0);
    // Rotation: with two secrets configured, the new one verifies too.
    configure(&app, &owner, &[SECRET, SECRET2], "debit").expect(200, "");
    let rotated = pay("pi_rotated");
    let header = sign(&[&rotated], SECRET2, 0).remove(0);
    assert_eq!(
        deliver(&app, &slug, &rotated, Some(&header))
            .expect(200, "")
            .ok()["outcome"],
        "credited"
    );
    assert_eq!(balance(&app, &owner, &account), 7 * UNIT);
    reconciles(&app);
}

fn refunds_and_disputes_move_money_once(b: Backend) {
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let (_, key) = app.key(&owner, Some(&account));
    configure(&app, &owner, &[SECRET], "debit_and_suspend").expect(200, "");
    let send = |body: &str| send(&app, &slug, body);
    // A payment made outside taogate (the tenant's dashboard), naming the account: $20.
    let pi = format!("pi_{}", short_id());
    let paid = event(
        "payment_intent.succeeded",
        json!({"id": pi, "object": "payment_intent",
        "amount_received": 2000, "currency": "usd", "metadata": {"taogate_account_id": account}}),
    );
    assert_eq!(send(&paid), "credited");
    assert_eq!(balance(&app, &owner, &account), 20 * UNIT);
    // Refunds arrive out of order: the cumulative $10 first, then the earlier $5; each again.
    let refunded = |total: i64| {
        event(
            "charge.refunded",
            json!({"id": "ch_1", "object": "charge", "amount": 2000,
            "amount_refunded": total, "currency": "usd", "payment_intent": pi, "refunded": false}),
        )
    };
    let (ten, five) = (refunded(1000), refunded(500));
    assert_eq!(send(&ten), "debited");
    assert_eq!(send(&ten), "replayed");
    assert_eq!(send(&five), "replayed");
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT);
    // A dispute for $15 debits at most what is left ($10) and, by this tenant's policy, suspends.
    let dp = format!("dp_{}", short_id());
    let dispute = |kind: &str, status: &str| {
        event(
            kind,
            json!({"id": dp, "object": "dispute", "amount": 1500, "currency": "usd",
            "charge": "ch_1", "payment_intent": pi, "status": status}),
        )
    };
    assert_eq!(
        send(&dispute("charge.dispute.created", "needs_response")),
        "debited"
    );
    assert_eq!(
        send(&dispute("charge.dispute.created", "needs_response")),
        "replayed"
    );
    assert_eq!(balance(&app, &owner, &account), 0);
    let acct = app
        .get(&format!("/api/v1/accounts/{account}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(acct["status"], "suspended");
    app.post("/v1/chat/completions")
        .bearer(&key)
        .json(json!({"model": "any", "messages": [{"role": "user", "content": "hi"}]}))
        .expect(403, "");
    // Won: the $10 comes back, once.
    let won = dispute("charge.dispute.closed", "won");
    assert_eq!(send(&won), "credited");
    assert_eq!(send(&won), "replayed");
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT);
    // A refund of a payment this tenant never had: stored, nothing moves.
    let stranger = event(
        "charge.refunded",
        json!({"id": "ch_2", "object": "charge", "amount": 100,
        "amount_refunded": 100, "currency": "usd", "payment_intent": "pi_unknown"}),
    );
    assert_eq!(send(&stranger), "unknown_payment");
    let kinds = count(&app, "SELECT COUNT(*) AS n FROM payment_movements");
    assert_eq!(kinds, 4, "credit, refund, dispute, reversal");
    reconciles(&app);
}

fn events_for_another_tenants_account_are_stored_not_credited(b: Backend) {
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let mine = app.account(&owner, "Mine");
    let (_, _, other) = app.tenant(&op, false);
    let theirs = app.account(&other, "Theirs");
    configure(&app, &owner, &[SECRET], "debit").expect(200, "");
    let send = |body: &str| send(&app, &slug, body);
    let foreign = event(
        "checkout.session.completed",
        session_object("cs_foreign", "pi_foreign", &theirs, 5000, None),
    );
    assert_eq!(send(&foreign), "foreign_account");
    let nobody = event(
        "checkout.session.completed",
        session_object("cs_nobody", "pi_nobody", "not-an-id", 5000, None),
    );
    assert_eq!(send(&nobody), "foreign_account");
    let euros = event(
        "payment_intent.succeeded",
        json!({"id": "pi_eur", "amount_received": 100,
        "currency": "eur", "metadata": {"taogate_account_id": mine}}),
    );
    assert_eq!(send(&euros), "currency_mismatch");
    assert_eq!(
        send(&event(
            "customer.created",
            json!({"id": "cus_1", "object": "customer"})
        )),
        "ignored"
    );
    assert_eq!(balance(&app, &owner, &mine), 0);
    assert_eq!(balance(&app, &other, &theirs), 0);
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM payment_notifications"),
        4
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM ledger_transactions WHERE kind = 'topup'"
        ),
        0
    );
    let audit = audit_text(&app, &owner);
    assert!(audit.contains("payment.alert"), "{audit}");
    // The other tenant sees none of it.
    assert!(!audit_text(&app, &other).contains("payment."));
    reconciles(&app);
}

/// localstripe (PyPI, pinned), a stateful Stripe emulator that signs and delivers webhooks.
struct Localstripe {
    _proc: Proc,
    url: String,
    _dir: tempfile::TempDir,
}

impl Localstripe {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = python().replace("/bin/python", "/bin/localstripe");
        let dir = tempfile::tempdir().unwrap();
        let proc = Proc::start_quiet_in(
            &bin,
            &["--port", &port.to_string(), "--from-scratch"],
            dir.path(),
        );
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self {
                    _proc: proc,
                    url,
                    _dir: dir,
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("localstripe did not start");
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        ureq::post(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {SK}"))
            .send_form(form)
            .unwrap_or_else(|e| panic!("localstripe {path}: {e}"))
            .into_json()
            .unwrap_or(Value::Null)
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn auto_top_up_charges_the_saved_card_once_and_backs_off_on_failure(b: Backend) {
    let stripe = Localstripe::start();
    let app = TestApp::spawn_with(
        b,
        Figment::new()
            .merge(Serialized::default(
                "payments.encryption_key",
                ENCRYPTION_KEY,
            ))
            .merge(Serialized::default("payments.stripe.api_base", &stripe.url))
            .merge(Serialized::default("payments.auto_topup_every_ms", 200)),
    );
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Card on file");
    let cardless = app.account(&owner, "No card");
    configure(&app, &owner, &[SECRET], "debit").expect(200, "");
    stripe.post(
        "_config/webhooks/taogate",
        &[
            ("url", &format!("{}/webhooks/stripe/{slug}", app.base)),
            ("secret", SECRET),
        ],
    );
    // The customer (created with the rule) saves a card, as it would through Checkout.
    let rule = json!({"enabled": true, "threshold_nano": 5 * UNIT, "amount_nano": 10 * UNIT});
    // A rule the tenant's bounds refuse.
    app.put(&format!("/api/v1/accounts/{account}/auto-topup"))
        .bearer(&owner.token)
        .json(json!({"enabled": true, "threshold_nano": 0, "amount_nano": 1}))
        .expect(400, "amount_out_of_range");
    app.put(&format!("/api/v1/accounts/{account}/auto-topup"))
        .bearer(&owner.token)
        .json(rule.clone())
        .expect(200, "");
    let customer = {
        #[derive(diesel::QueryableByName)]
        struct C {
            #[diesel(sql_type = diesel::sql_types::Text)]
            customer_id: String,
        }
        let mut c = app.db.get().unwrap();
        diesel::RunQueryDsl::get_result::<C>(
            diesel::sql_query(format!(
                "SELECT customer_id FROM payment_customers WHERE account_id = '{account}'"
            )),
            &mut *c,
        )
        .unwrap()
        .customer_id
    };
    let card = stripe.post(
        "v1/payment_methods",
        &[
            ("type", "card"),
            ("card[number]", "4242424242424242"),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ],
    );
    let pm = card["id"].as_str().unwrap();
    stripe.post(
        &format!("v1/payment_methods/{pm}/attach"),
        &[("customer", &customer)],
    );
    // The balance (0) is below the threshold: one off-session charge, credited by its webhook.
    wait_until("the automatic top-up's credit", || {
        balance(&app, &owner, &account) == 10 * UNIT
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(balance(&app, &owner, &account), 10 * UNIT, "credited once");
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT COUNT(*) AS n FROM payments WHERE account_id = '{account}' AND kind = 'auto_topup'"
            )
        ),
        1
    );
    let topups = app
        .get(&format!("/api/v1/billing/topups?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    let paid = &topups["data"][0];
    assert_eq!(paid["kind"], "auto_topup");
    assert_eq!(paid["state"], "succeeded", "{topups}");
    let pi = paid["payment_reference"].as_str().unwrap().to_owned();
    assert!(pi.starts_with("pi_"), "{paid}");
    // A refund made on Stripe (localstripe sends no charge.refunded): read back from Stripe's API,
    // it debits once, however often it is read, and the webhook for it later moves nothing.
    stripe.post("v1/refunds", &[("payment_intent", &pi), ("amount", "300")]);
    let sync = |app: &TestApp| {
        app.post(&format!(
            "/api/v1/billing/topups/{}/sync",
            paid["id"].as_str().unwrap()
        ))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok()
    };
    assert_eq!(sync(&app)["refunded_minor"], 300);
    assert_eq!(sync(&app)["state"], "partially_refunded");
    assert_eq!(balance(&app, &owner, &account), 7 * UNIT);
    let refund = event(
        "charge.refunded",
        json!({"id": "ch_auto", "object": "charge", "amount": 1000,
        "amount_refunded": 300, "currency": "usd", "payment_intent": pi}),
    );
    assert_eq!(send(&app, &slug, &refund), "replayed");
    stripe.post("v1/refunds", &[("payment_intent", &pi), ("amount", "200")]);
    assert_eq!(sync(&app)["refunded_minor"], 500);
    assert_eq!(balance(&app, &owner, &account), 5 * UNIT);
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT COUNT(*) AS n FROM ledger_transactions WHERE idempotency_key LIKE 'stripe:{pi}:refunded:%'"
            )
        ),
        2
    );

    // No saved card: the attempt fails, is audited, and backs off (no retry within the minute).
    app.put(&format!("/api/v1/accounts/{cardless}/auto-topup"))
        .bearer(&owner.token)
        .json(rule)
        .expect(200, "");
    let view = |app: &TestApp| {
        app.get(&format!("/api/v1/accounts/{cardless}/auto-topup"))
            .bearer(&owner.token)
            .send()
            .expect(200, "")
            .ok()
    };
    wait_until("the failed attempt", || view(&app)["failures"] == 1);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let failed = view(&app);
    assert_eq!(failed["failures"], 1, "{failed}");
    assert!(failed["next_attempt_at"].is_string(), "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("card"),
        "{failed}"
    );
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT COUNT(*) AS n FROM payments WHERE account_id = '{cardless}' AND state = 'failed'"
            )
        ),
        1
    );
    assert_eq!(
        count(
            &app,
            &format!("SELECT COUNT(*) AS n FROM payments WHERE account_id = '{cardless}'")
        ),
        1
    );
    assert!(audit_text(&app, &owner).contains("payment.auto_topup_failed"));
    assert_eq!(balance(&app, &owner, &cardless), 0);
    reconciles(&app);
}

/// Whether the stripe library verifies each (body, header) with `secret`.
fn stripe_verifies(pairs: &[(String, String)], secret: &str) -> Vec<bool> {
    serde_json::from_value(stripe_py(json!({"secret": secret, "verify": pairs}))).unwrap()
}

/// A tenant's notification endpoint: records every request (signature header, body); answers 503
/// to the first one, 200 after.
struct Receiver {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(u16, String, String)>>>,
}

impl Receiver {
    fn start() -> Self {
        use std::io::{BufRead, BufReader, Read};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/taogate-events", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut signature, mut length) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("taogate-signature:") {
                        signature = line[line.len() - v.len()..].trim().to_owned();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut log = log.lock().unwrap();
                let status = if log.is_empty() { 503 } else { 200 };
                log.push((status, signature, String::from_utf8(body).unwrap()));
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        Self { url, seen }
    }

    /// Delivered (answered 200) events: (type, body, signature).
    fn delivered(&self) -> Vec<(String, String, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(status, ..)| *status == 200)
            .map(|(_, sig, body)| {
                let v: Value = serde_json::from_str(body).unwrap();
                (
                    v["type"].as_str().unwrap().to_owned(),
                    body.clone(),
                    sig.clone(),
                )
            })
            .collect()
    }
}

fn tenants_hear_of_payments_and_low_balances_through_signed_retried_webhooks(b: Backend) {
    let receiver = Receiver::start();
    let app = TestApp::spawn_with(
        b,
        Figment::new()
            .merge(Serialized::default(
                "payments.encryption_key",
                ENCRYPTION_KEY,
            ))
            .merge(Serialized::default("payments.auto_topup_every_ms", 200))
            .merge(Serialized::default(
                "payments.webhook_allow_private_targets",
                true,
            )),
    );
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    configure(&app, &owner, &[SECRET], "debit").expect(200, "");
    let hook = app
        .put("/api/v1/billing/webhook")
        .bearer(&owner.token)
        .json(json!({"url": receiver.url}))
        .expect(200, "")
        .ok();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let shown = app
        .get("/api/v1/billing/webhook")
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    assert!(
        shown.get("secret").is_none()
            && shown["secret_hint"]
                .as_str()
                .unwrap()
                .ends_with(&secret[secret.len() - 4..])
    );
    // Below 5 units (it has 0): reported once.
    app.put(&format!("/api/v1/accounts/{account}/balance-alert"))
        .bearer(&owner.token)
        .json(json!({"threshold_nano": 5 * UNIT}))
        .expect(200, "");
    let pi = format!("pi_{}", short_id());
    wait_until("the low balance", || {
        count(
            &app,
            "SELECT COUNT(*) AS n FROM tenant_notifications WHERE event_type = 'account.low_balance'",
        ) == 1
    });
    assert_eq!(
        send(
            &app,
            &slug,
            &event(
                "payment_intent.succeeded",
                json!({"id": pi,
        "amount_received": 2000, "currency": "usd", "metadata": {"taogate_account_id": account}})
            )
        ),
        "credited"
    );
    assert_eq!(
        send(
            &app,
            &slug,
            &event(
                "charge.refunded",
                json!({"id": "ch_n", "amount": 2000,
        "amount_refunded": 500, "currency": "usd", "payment_intent": pi})
            )
        ),
        "debited"
    );
    // The first delivery was refused (503) and retried after 5 s.
    wait_until("three deliveries", || receiver.delivered().len() >= 3);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let delivered = receiver.delivered();
    let mut kinds: Vec<&str> = delivered.iter().map(|(k, ..)| k.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["account.low_balance", "refund.created", "topup.succeeded"],
        "{delivered:?}"
    );
    assert_eq!(
        receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, ..)| *s == 503)
            .count(),
        1
    );
    let topup: Value = serde_json::from_str(
        &delivered
            .iter()
            .find(|(k, ..)| k == "topup.succeeded")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(topup["data"]["account_id"], account.as_str());
    assert_eq!(topup["data"]["amount_nano"], 20 * UNIT);
    // Signed with the tenant's secret, Stripe's scheme: the stripe library verifies every one.
    let pairs: Vec<(String, String)> = delivered
        .iter()
        .map(|(_, body, sig)| (body.clone(), sig.clone()))
        .collect();
    assert_eq!(stripe_verifies(&pairs, &secret), vec![true; 3]);
    assert_eq!(
        stripe_verifies(&pairs, "whsec_not_the_tenants"),
        vec![false; 3]
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM tenant_notifications WHERE delivered_at IS NULL"
        ),
        0
    );
    // Back above the threshold: the alert is cleared, so the next crossing is reported again.
    let alert = app
        .get(&format!("/api/v1/accounts/{account}/balance-alert"))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(alert["below"], false, "15 units is above 5: {alert}");
    reconciles(&app);
}

fn postpaid_usage_reaches_the_stripe_meter_once_despite_an_outage(b: Backend) {
    let stripe = standin();
    let app = TestApp::spawn_with_subnet_and(
        b,
        0,
        Figment::new()
            .merge(Serialized::default(
                "payments.encryption_key",
                ENCRYPTION_KEY,
            ))
            .merge(Serialized::default("payments.stripe.api_base", &stripe.url))
            .merge(Serialized::default("payments.meter_every_ms", 200))
            // Usage reaches the database well within a minute of its request starting here.
            .merge(Serialized::default("payments.meter_lag_secs", 60)),
    );
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "metered", "is_default": true, "prices": {"*": {
            "prompt_nano_per_mtok": UNIT, "completion_nano_per_mtok": 2 * UNIT, "request_nano": 1000}}}))
        .expect(201, "");
    let postpaid = app.account(&owner, "Postpaid");
    app.patch(&format!("/api/v1/accounts/{postpaid}"))
        .bearer(&owner.token)
        .json(json!({"billing_mode": "postpaid", "credit_limit_nano": 100 * UNIT}))
        .expect(200, "");
    let prepaid = app.account(&owner, "Prepaid");
    app.post(&format!("/api/v1/accounts/{prepaid}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": 100 * UNIT, "reason": "top-up"}))
        .expect(201, "");
    let mut body: Value = json!({"secret_key": SK, "webhook_secrets": [SECRET], "currency": "usd",
        "meter_event_name": "taogate_usage"});
    app.put("/api/v1/billing/stripe")
        .bearer(&owner.token)
        .json(body.clone())
        .expect(200, "");
    body["meter_event_name"] = json!("bad name!");
    app.put("/api/v1/billing/stripe")
        .bearer(&owner.token)
        .json(body)
        .expect(400, "invalid_request");
    // Stripe is down for the first seconds: the pusher's attempts fail and are retried.
    ureq::post(&format!("{}_standin/outage", stripe.url))
        .send_json(json!({"seconds": 3}))
        .unwrap();
    let (_, post_key) = app.key(&owner, Some(&postpaid));
    let (_, pre_key) = app.key(&owner, Some(&prepaid));
    for (i, key) in [
        &post_key, &post_key, &pre_key, &post_key, &pre_key, &post_key,
    ]
    .iter()
    .enumerate()
    {
        app.post("/v1/chat/completions")
            .bearer(key)
            .json(json!({"model": "taogate-owner", "messages": [{"role": "user", "content": format!("meter {i}")}]}))
            .expect(200, "");
    }
    app.wait_for_rows("usage_records", 6);
    let postpaid_usage = count(
        &app,
        &format!(
            "SELECT COUNT(*) AS n FROM usage_records WHERE account_id = '{postpaid}' AND charged_nano > 0"
        ),
    );
    assert_eq!(postpaid_usage, 4);
    wait_until("every postpaid record sent", || {
        count(&app, "SELECT COUNT(*) AS n FROM meter_pushes") == postpaid_usage
    });
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let seen: Value = ureq::get(&format!("{}_standin/requests", stripe.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let meter_calls: Vec<&Value> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/v1/billing/meter_events")
        .collect();
    let accepted: Vec<&&Value> = meter_calls.iter().filter(|r| r["status"] == 200).collect();
    assert!(
        meter_calls.iter().any(|r| r["status"] == 503)
            || seen.as_array().unwrap().iter().any(|r| r["status"] == 503),
        "the outage was seen: {seen}"
    );
    let mut ids: Vec<String> = accepted
        .iter()
        .map(|r| r["params"]["identifier"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len() as i64,
        postpaid_usage,
        "one event per record: {meter_calls:?}"
    );
    // Every identifier is a postpaid usage record's id, and the value its charge.
    #[derive(diesel::QueryableByName)]
    struct U {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        charged_nano: i64,
    }
    let mut c = app.db.get().unwrap();
    let rows: Vec<U> = diesel::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT id, charged_nano FROM usage_records WHERE account_id = '{postpaid}' ORDER BY id"
        )),
        &mut *c,
    )
    .unwrap();
    let mut expected: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    for r in &rows {
        let call = accepted
            .iter()
            .find(|c| c["params"]["identifier"] == r.id.as_str())
            .unwrap();
        assert_eq!(
            call["params"]["payload"]["value"],
            r.charged_nano.to_string(),
            "{call}"
        );
        assert_eq!(call["params"]["event_name"], "taogate_usage");
        assert!(
            call["params"]["payload"]["stripe_customer_id"]
                .as_str()
                .unwrap()
                .starts_with("cus_")
        );
    }
    reconciles(&app);
}

fn a_stored_notification_never_applied_is_applied_by_reconcile(b: Backend) {
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (tenant, _, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    configure(&app, &owner, &[SECRET], "debit").expect(200, "");
    // As if the process died after storing the (verified) notification and before applying it.
    let payload = event(
        "payment_intent.succeeded",
        json!({"id": "pi_crashed", "amount_received": 1500,
        "currency": "usd", "metadata": {"taogate_account_id": account}}),
    );
    let stored_at = (chrono::Utc::now() - chrono::Duration::minutes(10)).naive_utc();
    {
        let mut c = app.db.get().unwrap();
        diesel::RunQueryDsl::execute(
            diesel::sql_query(
                "INSERT INTO payment_notifications (id, provider, event_id, tenant_id, event_type, payload, payload_sha256, received_at) \
                 VALUES ($1, 'stripe', 'evt_crashed', $2, 'payment_intent.succeeded', $3, 'x', $4)",
            )
            .bind::<diesel::sql_types::Text, _>(uuid::Uuid::now_v7().to_string())
            .bind::<diesel::sql_types::Text, _>(&tenant)
            .bind::<diesel::sql_types::Text, _>(&payload)
            .bind::<diesel::sql_types::Timestamp, _>(stored_at),
            &mut *c,
        )
        .unwrap();
    }
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(ok, "{report}");
    assert_eq!(report["payment_notifications_applied"], 1, "{report}");
    assert_eq!(balance(&app, &owner, &account), 15 * UNIT);
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(
        ok && report["payment_notifications_applied"] == 0,
        "{report}"
    );
    assert_eq!(balance(&app, &owner, &account), 15 * UNIT);
}

fn a_resellers_own_payment_system_credits_once_and_refunds_once(b: Backend) {
    const CUSTOM: &str = "whsec_custom_provider_secret_000001";
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let (_, other_slug, other) = app.tenant(&op, false);
    let theirs = app.account(&other, "Theirs");
    let shown = app
        .put("/api/v1/billing/custom")
        .bearer(&owner.token)
        .json(json!({"provider": "MyPay", "webhook_secrets": [CUSTOM], "currency": "usd"}))
        .expect(200, "")
        .ok();
    assert_eq!(shown["provider"], "mypay");
    assert_eq!(
        shown["webhook_path"],
        format!("/webhooks/custom/{slug}/mypay")
    );
    assert!(!shown.to_string().contains(CUSTOM));
    let listed = app
        .get("/api/v1/billing/custom")
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    app.put("/api/v1/billing/custom")
        .bearer(&owner.token)
        .json(json!({"provider": "my pay", "webhook_secrets": [CUSTOM], "currency": "usd"}))
        .expect(400, "invalid_request");
    let path = format!("/webhooks/custom/{slug}/mypay");
    let post = |body: &str, header: &str| {
        app.post(&path)
            .header("Content-Type", "application/json")
            .header("Taogate-Signature", header)
            .raw(Some(body.as_bytes()))
    };
    let payment = |id: &str, account: &str, amount: i64, status: &str| {
        json!({"payment_id": id, "account_id": account, "amount_nano": amount, "currency": "usd",
            "status": status, "occurred_at": "2026-12-07T12:00:00Z"})
        .to_string()
    };
    // Another tenant names its own provider alike and reports the same payment id first, for its
    // own account: credited there, and nothing of this tenant's is taken.
    app.put("/api/v1/billing/custom")
        .bearer(&other.token)
        .json(json!({"provider": "mypay", "webhook_secrets": [CUSTOM], "currency": "usd"}))
        .expect(200, "");
    let first = payment("p-1", &theirs, 7 * UNIT, "succeeded");
    let credited = app
        .post(&format!("/webhooks/custom/{other_slug}/mypay"))
        .header("Content-Type", "application/json")
        .header("Taogate-Signature", &sign(&[&first], CUSTOM, 0).remove(0))
        .raw(Some(first.as_bytes()))
        .expect(200, "")
        .ok();
    assert_eq!(credited["outcome"], "credited");
    let paid = payment("p-1", &account, 7 * UNIT, "succeeded");
    let header = sign(&[&paid], CUSTOM, 0).remove(0);
    let outcomes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                s.spawn(|| {
                    post(&paid, &header).expect(200, "").ok()["outcome"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outcomes.iter().filter(|o| *o == "credited").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(balance(&app, &owner, &account), 7 * UNIT);
    // Forged, stale, and the Stripe endpoint's secret: nothing moves.
    post(
        &paid,
        &sign(&[&paid], "whsec_not_this_providers_secret_99", 0).remove(0),
    )
    .expect(400, "invalid_signature");
    post(&paid, &sign(&[&paid], CUSTOM, -301).remove(0)).expect(400, "invalid_signature");
    app.post(&format!("/webhooks/custom/{slug}/otherpay"))
        .header("Taogate-Signature", &header)
        .raw(Some(paid.as_bytes()))
        .expect(404, "not_found");
    // The same payment id told differently is refused, not applied.
    let changed = payment("p-1", &account, 7 * UNIT, "succeeded").replace("12:00:00", "12:00:01");
    post(&changed, &sign(&[&changed], CUSTOM, 0).remove(0)).expect(409, "notification_conflict");
    let send_custom = |body: &str| {
        post(body, &sign(&[body], CUSTOM, 0).remove(0))
            .expect(200, "")
            .ok()["outcome"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Another tenant's account, and a refund of a payment never made: stored, nothing moves.
    assert_eq!(
        send_custom(&payment("p-2", &theirs, UNIT, "succeeded")),
        "foreign_account"
    );
    assert_eq!(
        send_custom(&payment("p-404", &account, UNIT, "refunded")),
        "unknown_payment"
    );
    // A refund reverses once.
    let refunded = payment("p-1", &account, 7 * UNIT, "refunded");
    assert_eq!(send_custom(&refunded), "debited");
    assert_eq!(send_custom(&refunded), "replayed");
    assert_eq!(balance(&app, &owner, &account), 0);
    assert_eq!(balance(&app, &other, &theirs), 7 * UNIT);
    // This tenant's credit and refund, the other tenant's credit: three keys, each its tenant's.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM ledger_transactions WHERE idempotency_key LIKE 'custom:%:mypay:%'"
        ),
        3
    );
    reconciles(&app);
}

/// `BTCPay-Sig` for `body`, computed here as BTCPay documents it: `sha256=` + hex HMAC-SHA256 of the
/// raw body with the webhook secret.
fn btcpay_sig(body: &str, secret: &str) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn btcpay_invoices_credit_once_when_settled(b: Backend) {
    const KEY: &str = "greenfield-api-key-0123456789";
    const HOOK: &str = "btcpay-webhook-secret-0001";
    let server = Proc::start_program(
        &python(),
        &[
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/btcpay_standin.py"),
            "--port",
            "0",
            "--api-key",
            KEY,
            "--store",
            "Store1",
        ],
    );
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let shown = app
        .put("/api/v1/billing/btcpay")
        .bearer(&owner.token)
        .json(
            json!({"server_url": server.url, "store_id": "Store1", "api_key": KEY,
            "webhook_secrets": [HOOK], "currency": "usd"}),
        )
        .expect(200, "")
        .ok();
    assert_eq!(shown["api_key"], "…6789");
    assert_eq!(shown["webhook_path"], format!("/webhooks/btcpay/{slug}"));
    let read = app
        .get("/api/v1/billing/btcpay")
        .bearer(&owner.token)
        .send()
        .expect(200, "");
    assert!(!read.text.contains(KEY) && !read.text.contains(HOOK));
    let checkout = |amount: i64| {
        app.post("/api/v1/billing/checkout")
            .bearer(&owner.token)
            .json(json!({"provider": "btcpay", "account_id": account, "amount_nano": amount,
                "success_url": "https://shop.example.com/paid", "cancel_url": "https://shop.example.com/back"}))
            .expect(201, "")
            .ok()
    };
    let paid = checkout(25 * UNIT);
    let invoice = paid["payment_reference"].as_str().unwrap().to_owned();
    assert_eq!(paid["url"], format!("{}i/{invoice}", server.url));
    assert_eq!(paid["provider"], "btcpay");
    let seen: Value = ureq::get(&format!("{}_standin/requests", server.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let created = &seen[0];
    assert_eq!(created["path"], "/api/v1/stores/Store1/invoices");
    assert_eq!(created["authorization"], format!("token {KEY}"));
    assert_eq!(created["body"]["amount"], "25.00");
    assert_eq!(created["body"]["currency"], "USD");
    assert_eq!(
        created["body"]["metadata"]["taogate_account_id"],
        account.as_str()
    );
    // Settled, delivered four times at once (each a redelivery with its own deliveryId): one credit.
    let settled = |delivery: &str, invoice: &str| {
        json!({"deliveryId": delivery, "webhookId": "wh1", "originalDeliveryId": "d-0",
            "isRedelivery": delivery != "d-0", "type": "InvoiceSettled", "timestamp": 1_765_000_000,
            "storeId": "Store1", "invoiceId": invoice, "manuallyMarked": false, "overPaid": false})
        .to_string()
    };
    let post = |body: &str, sig: Option<&str>| {
        let mut req = app
            .post(&format!("/webhooks/btcpay/{slug}"))
            .header("Content-Type", "application/json");
        if let Some(sig) = sig {
            req = req.header("BTCPay-Sig", sig);
        }
        req.raw(Some(body.as_bytes()))
    };
    let outcomes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let body = settled(&format!("d-{i}"), &invoice);
                let post = &post;
                s.spawn(move || {
                    post(&body, Some(&btcpay_sig(&body, HOOK)))
                        .expect(200, "")
                        .ok()["outcome"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
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
    // Forged, unsigned, another secret: 400, nothing stored.
    let body = settled("d-9", &invoice);
    post(&body, Some(&btcpay_sig(&body, "someone-elses-secret-xx")))
        .expect(400, "invalid_signature");
    post(&body, None).expect(400, "invalid_signature");
    post(&body, Some("sha256=00")).expect(400, "invalid_signature");
    // Another invoice expires: failed, nothing moves; an invoice taogate never made: nothing moves.
    let other = checkout(5 * UNIT)["payment_reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let expired = json!({"deliveryId": "d-x", "type": "InvoiceExpired", "storeId": "Store1", "invoiceId": other}).to_string();
    assert_eq!(
        post(&expired, Some(&btcpay_sig(&expired, HOOK)))
            .expect(200, "")
            .ok()["outcome"],
        "marked"
    );
    let stranger = settled("d-s", "NotOurInvoice");
    assert_eq!(
        post(&stranger, Some(&btcpay_sig(&stranger, HOOK)))
            .expect(200, "")
            .ok()["outcome"],
        "unknown_payment"
    );
    let topups = app
        .get(&format!("/api/v1/billing/topups?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .expect(200, "")
        .ok();
    let states: Vec<&str> = topups["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded", "expired"], "{topups}");
    assert_eq!(balance(&app, &owner, &account), 25 * UNIT);
    reconciles(&app);
}

/// The README's "ten-line sender" for a reseller's own payment method, run as printed: its
/// `report` function (everything before the example call) reports a payment, and taogate credits it.
fn the_readme_sender_for_a_custom_provider_works_as_printed(b: Backend) {
    const CUSTOM: &str = "whsec_readme_sender_secret_0000001";
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme
        .find("**Your own payment method.**")
        .expect("the README section")..];
    let code = &section[section.find("```python\n").unwrap() + 10..];
    let code = &code[..code.find("```").unwrap()];
    let function = &code[..code.find("\nreport(").expect("the example call")];
    assert!(function.lines().count() <= 12, "{function}");
    let app = spawn(b, "http://127.0.0.1:9/", ENCRYPTION_KEY);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    app.put("/api/v1/billing/custom")
        .bearer(&owner.token)
        .json(json!({"provider": "mypay", "webhook_secrets": [CUSTOM], "currency": "usd"}))
        .expect(200, "");
    let script = format!(
        "{function}\nimport sys\nprint(json.dumps(report(sys.argv[1], sys.argv[2], 'mypay', sys.argv[3], \
         {{'payment_id': 'readme-1', 'account_id': sys.argv[4], 'amount_nano': 5_000_000_000, \
         'currency': 'usd', 'status': 'succeeded', 'occurred_at': '2026-12-07T12:00:00Z'}})))\n"
    );
    let out = Command::new(python())
        .args(["-c", &script, &app.base, &slug, CUSTOM, &account])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["outcome"], "credited", "{receipt}");
    assert_eq!(balance(&app, &owner, &account), 5 * UNIT);
    reconciles(&app);
}

both_backends!(
    stripe_settings_are_sealed_masked_and_tenant_scoped,
    a_checkout_top_up_is_credited_once_whatever_arrives,
    forged_stale_or_unreadable_notifications_move_nothing,
    refunds_and_disputes_move_money_once,
    events_for_another_tenants_account_are_stored_not_credited,
    auto_top_up_charges_the_saved_card_once_and_backs_off_on_failure,
    tenants_hear_of_payments_and_low_balances_through_signed_retried_webhooks,
    postpaid_usage_reaches_the_stripe_meter_once_despite_an_outage,
    a_stored_notification_never_applied_is_applied_by_reconcile,
    a_resellers_own_payment_system_credits_once_and_refunds_once,
    btcpay_invoices_credit_once_when_settled,
    the_readme_sender_for_a_custom_provider_works_as_printed,
);

//! Charging through the ledger under randomised concurrent traffic (JSON and streamed answers,
//! clients that hang up mid-stream, requests whose upstream fails), on both backends: every usage
//! record is priced at the plan's retail and the tenant's wholesale price, posted exactly once,
//! every transaction sums to zero and every balance equals its credits minus its debits.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use serde_json::json;
use taogate::billing::prices::Price;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

const UNIT: i64 = 1_000_000_000;
const RETAIL: Price = Price {
    prompt_nano_per_mtok: 3 * UNIT,
    completion_nano_per_mtok: 6 * UNIT,
    request_nano: 500,
};
const WHOLESALE: Price = Price {
    prompt_nano_per_mtok: UNIT,
    completion_nano_per_mtok: 2 * UNIT,
    request_nano: 100,
};

fn price_json(p: &Price) -> serde_json::Value {
    json!({"prompt_nano_per_mtok": p.prompt_nano_per_mtok,
        "completion_nano_per_mtok": p.completion_nano_per_mtok, "request_nano": p.request_nano})
}

/// Starts a streamed request on a raw socket and hangs up after the first event.
fn hang_up_mid_stream(app: &TestApp, key: &str, n: usize) {
    let body = json!({"model": "taogate-owner", "stream": true,
        "messages": [{"role": "user", "content": format!("cancel me {n} one two three four five six")}]})
    .to_string();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    write!(sock, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let (mut seen, mut buf, started) = (String::new(), [0u8; 4096], Instant::now());
    while !seen.contains("data: ") && started.elapsed() < Duration::from_secs(10) {
        let n = sock.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[derive(diesel::QueryableByName)]
struct Charged {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    prompt_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    completion_tokens: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    charged_nano: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    tenant_charged_nano: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    postings: i64,
}

fn ledger_balance(app: &TestApp, purpose: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct B {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        total: i64,
    }
    let mut conn = app.db.get().unwrap();
    diesel::sql_query(format!(
        "SELECT CAST(COALESCE(SUM(e.amount_nano), 0) AS BIGINT) AS total FROM ledger_entries e \
         JOIN ledger_accounts a ON a.id = e.account_id WHERE a.purpose = '{purpose}'"
    ))
    .get_result::<B>(&mut *conn)
    .unwrap()
    .total
}

fn every_request_is_charged_exactly_once(b: Backend) {
    use figment::providers::Serialized;
    // A model the gateway serves but no worker routes: its requests fail upstream.
    let overrides = figment::Figment::new().merge(Serialized::default(
        "models",
        json!([{"id": "nowhere", "owned_by": "test"}]),
    ));
    // Words 5 ms apart: a client that hangs up after the first event really leaves mid-stream.
    let app = TestApp::spawn_with_subnet_and(b, 5, overrides);
    let op = app.operator();
    let (tenant, _, owner) = app.tenant(&op, false);
    app.patch(&format!("/api/v1/tenants/{tenant}"))
        .bearer(&op.token)
        .json(json!({"wholesale_prices": {"*": price_json(&WHOLESALE)}}))
        .expect(200, "");
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "metered", "is_default": true, "prices": {"*": price_json(&RETAIL)}}))
        .expect(201, "");
    let account = app.account(&owner, "Customer");
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": 1000 * UNIT, "reason": "top-up"}))
        .expect(201, "");
    let (_, key) = app.key(&owner, Some(&account));

    let (clients, per_client) = (8usize, 125usize);
    std::thread::scope(|s| {
        for c in 0..clients {
            let (app, key) = (&app, &key);
            s.spawn(move || {
                for i in 0..per_client {
                    let n = c * per_client + i;
                    match n % 10 {
                        0 => hang_up_mid_stream(app, key, n),
                        3 | 7 => {
                            let res = app.post("/v1/chat/completions").bearer(key).json(json!({
                                "model": "nowhere", "messages": [{"role": "user", "content": "fail"}]}));
                            assert_ne!(res.status, 200, "{}", res.text);
                        }
                        _ => {
                            let res = app.post("/v1/chat/completions").bearer(key).json(json!({
                                "model": "taogate-owner", "stream": n % 2 == 0,
                                "messages": [{"role": "user", "content": format!("request {n}")}]}));
                            assert_eq!(res.status, 200, "{}", res.text);
                        }
                    }
                }
            });
        }
    });
    let total = (clients * per_client) as i64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.count("usage_records") < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} settled",
            app.count("usage_records")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut conn = app.db.get().unwrap();
    let rows: Vec<Charged> = diesel::sql_query(
        "SELECT u.id, u.status, u.prompt_tokens, u.completion_tokens, u.charged_nano, u.tenant_charged_nano, \
         (SELECT COUNT(*) FROM ledger_transactions t WHERE t.idempotency_key = 'usage:' || u.id) AS postings \
         FROM usage_records u",
    )
    .load(&mut *conn)
    .unwrap();
    drop(conn);
    assert_eq!(rows.len() as i64, total);
    let (mut retail, mut wholesale) = (0i64, 0i64);
    for r in &rows {
        if r.status == "upstream_error" {
            assert_eq!(
                (r.charged_nano, r.tenant_charged_nano, r.postings),
                (0, 0, 0),
                "{}",
                r.id
            );
            continue;
        }
        assert_eq!(
            r.charged_nano,
            RETAIL.cost(r.prompt_tokens, r.completion_tokens).0,
            "{}",
            r.id
        );
        assert_eq!(
            r.tenant_charged_nano,
            WHOLESALE.cost(r.prompt_tokens, r.completion_tokens).0
        );
        assert_eq!(r.postings, 1, "usage {} posted exactly once", r.id);
        retail += r.charged_nano;
        wholesale += r.tenant_charged_nano;
    }
    let statuses = |s: &str| rows.iter().filter(|r| r.status == s).count();
    assert_eq!(statuses("upstream_error"), 200);
    assert_eq!(statuses("client_disconnected"), 100);
    assert_eq!(
        app.count("ledger_transactions"),
        1 + (total - 200),
        "one top-up and one posting per charged request"
    );
    let balance = app
        .get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .ok()["balance_nano"]
        .as_i64()
        .unwrap();
    assert_eq!(
        balance,
        1000 * UNIT - retail,
        "credits minus debits, to the nano-unit"
    );
    assert_eq!(ledger_balance(&app, "customer_balance"), balance);
    assert_eq!(ledger_balance(&app, "tenant_revenue"), retail);
    assert_eq!(ledger_balance(&app, "tenant_payable"), -wholesale);
    assert_eq!(ledger_balance(&app, "operator_revenue"), wholesale);
    let mut conn = app.db.get().unwrap();
    let report = taogate::models::ledger::reconcile(&mut conn, false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    drop(conn);

    // The usage report adds up to the same figures, however it is grouped.
    let report = |query: &str| {
        app.get(&format!("/api/v1/usage?{query}"))
            .bearer(&owner.token)
            .send()
            .expect(200, "")
            .ok()["data"]
            .as_array()
            .unwrap()
            .clone()
    };
    let by_model = report("group_by=model");
    let groups: Vec<(&str, i64)> = by_model
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap(),
                g["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![("nowhere", 200), ("taogate-owner", total - 200)]
    );
    for by in ["model", "key", "day"] {
        let charged: i64 = report(&format!("group_by={by}&account_id={account}"))
            .iter()
            .map(|g| g["charged_nano"].as_i64().unwrap())
            .sum();
        assert_eq!(charged, retail, "grouped by {by}");
    }
    // A charged usage record whose posting is missing is drift.
    {
        let mut conn = app.db.get().unwrap();
        diesel::sql_query(
            "INSERT INTO usage_records (id, request_id, tenant_id, account_id, api_key_id, model, \
             prompt_tokens, completion_tokens, estimated, status, started_at, ended_at, latency_ms, \
             charged_nano, tenant_charged_nano) SELECT 'forged', 'forged', tenant_id, account_id, \
             api_key_id, model, 1, 1, FALSE, 'ok', started_at, ended_at, 1, 5, 0 FROM usage_records LIMIT 1",
        )
        .execute(&mut *conn)
        .unwrap();
        let report = taogate::models::ledger::reconcile(&mut conn, false).unwrap();
        assert_eq!(report.usage_without_posting, vec!["forged".to_owned()]);
        assert!(!report.is_clean());
    }
    let past = report("from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z");
    assert!(past.is_empty());
    app.get("/api/v1/usage?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z")
        .bearer(&owner.token)
        .send()
        .expect(400, "invalid_request");
}

both_backends!(every_request_is_charged_exactly_once);

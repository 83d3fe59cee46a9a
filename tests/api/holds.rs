//! Balance holds at admission, on both backends (in process; Redis in the same Lua call as the
//! limits): 1,000 concurrent requests on a balance that covers about ten never overdraw it by more
//! than one hold, the rest get 402 `insufficient_quota` naming what bit; top-ups reach admission at
//! once; postpaid accounts spend down to their credit limit; nothing stays held or pending.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Session, TestApp};

const UNIT: i64 = 1_000_000_000;
/// 0.001 per request, 1 per 1M prompt tokens, 1 per 1M completion tokens (1,000 nano each).
const PRICE: (i64, i64, i64) = (UNIT, UNIT, 1_000_000);
const MAX_TOKENS: i64 = 20;

fn metered(app: &TestApp, hold_cap: Option<i64>) -> (Session, String, String) {
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(
            json!({"name": "metered", "is_default": true, "hold_cap_nano": hold_cap,
            "prices": {"*": {"prompt_nano_per_mtok": PRICE.0, "completion_nano_per_mtok": PRICE.1,
                "request_nano": PRICE.2}}}),
        )
        .expect(201, "");
    let account = app.account(&owner, "Customer");
    let (_, key) = app.key(&owner, Some(&account));
    (owner, account, key)
}

fn fund(app: &TestApp, owner: &Session, account: &str, amount: i64) {
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": amount, "reason": "top-up"}))
        .expect(201, "");
}

fn request(n: usize) -> Value {
    json!({"model": "taogate-owner", "stream": n.is_multiple_of(2), "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": format!("request {n} one two three four five six seven eight")}]})
}

fn chat(app: &TestApp, key: &str, n: usize) -> crate::helpers::Resp {
    app.post("/v1/chat/completions")
        .bearer(key)
        .json(request(n))
}

/// The worst case of request `n`: its prompt estimate and MAX_TOKENS completion tokens.
fn worst_case(n: usize) -> i64 {
    let req: taogate::openai::ChatRequest = serde_json::from_value(request(n)).unwrap();
    let price = taogate::billing::prices::Price {
        prompt_nano_per_mtok: PRICE.0,
        completion_nano_per_mtok: PRICE.1,
        request_nano: PRICE.2,
    };
    price
        .cost(
            taogate::openai::estimate_tokens(&req.prompt_text()),
            MAX_TOKENS,
        )
        .0
}

fn balance(app: &TestApp, owner: &Session, account: &str) -> Value {
    app.get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .ok()
}

/// Waits until every settled request is in the ledger and nothing is held or pending.
fn quiesce(app: &TestApp, owner: &Session, account: &str, usage: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = balance(app, owner, account);
        if app.count("usage_records") >= usage && b["held_nano"] == 0 && b["pending_nano"] == 0 {
            return b;
        }
        assert!(Instant::now() < deadline, "never settled: {b}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn a_thousand_concurrent_requests_never_overdraw_beyond_one_hold(b: Backend) {
    // Words 2 ms apart: streamed requests hold their reservation while they run.
    let app = TestApp::spawn_with_subnet(b, 2);
    let (owner, account, key) = metered(&app, None);
    chat(&app, &key, 0).expect(402, "insufficient_quota");
    let hold = worst_case(999);
    let funded = 10 * hold;
    fund(&app, &owner, &account, funded);

    let n = 1000;
    let outcomes: Vec<(u16, Value)> = crate::helpers::burst(&[app.base.as_str()], &key, request, n)
        .into_iter()
        .map(|(status, text)| (status, serde_json::from_str(&text).unwrap_or(Value::Null)))
        .collect();
    let served = outcomes.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&Value> = outcomes
        .iter()
        .filter(|(s, _)| *s == 402)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(served + refused.len(), n, "only 200 and 402");
    assert!(
        (10..=25).contains(&served),
        "a balance of ten holds served {served}"
    );
    for body in &refused {
        let e = &body["error"];
        assert_eq!(
            (&e["type"], &e["code"]),
            (&json!("insufficient_quota"), &json!("insufficient_quota"))
        );
        let bit = e["limit"].as_str().unwrap();
        assert!(bit == "account balance" || bit == "in-flight holds", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("in-flight holds"),
            "{e}"
        );
    }
    assert!(
        refused
            .iter()
            .any(|b| b["error"]["limit"] == "in-flight holds"),
        "while requests run, their holds are what bites"
    );

    let settled = quiesce(&app, &owner, &account, served as i64);
    let left = settled["balance_nano"].as_i64().unwrap();
    let decisions: Vec<String> = app
        .get("/metrics")
        .send()
        .text
        .lines()
        .filter(|l| {
            l.starts_with("taogate_limiter_decisions") || l.starts_with("taogate_limiter_degraded")
        })
        .map(str::to_owned)
        .collect();
    eprintln!(
        "{served} served, {} refused, {left} of {funded} left (hold {hold}); {decisions:?}",
        refused.len()
    );
    assert!(
        decisions.iter().any(|l| l == "taogate_limiter_degraded 0"),
        "the shared limiter must decide every request here: {decisions:?}"
    );
    assert!(left >= -hold, "overdraft {} exceeds one hold {hold}", -left);
    assert!(left < hold, "{left} left: the balance was used up");
    assert_eq!(settled["spendable_nano"], settled["balance_nano"]);
    // And it is the ledger's: credits minus debits of what was served.
    let charged: i64 = {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct S {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            total: i64,
        }
        let mut conn = app.db.get().unwrap();
        diesel::sql_query(
            "SELECT CAST(COALESCE(SUM(charged_nano), 0) AS BIGINT) AS total FROM usage_records",
        )
        .get_result::<S>(&mut *conn)
        .unwrap()
        .total
    };
    assert_eq!(left, funded - charged);
}

fn top_ups_credit_limits_and_caps_reach_admission(b: Backend) {
    let app = TestApp::spawn_with_subnet(b, 0);
    // A cap below the worst case: each request reserves only the cap.
    let cap = PRICE.2;
    let (owner, account, key) = metered(&app, Some(cap));
    let plans = app.get("/api/v1/plans").bearer(&owner.token).send().ok();
    let plan = plans["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(plans["data"][0]["hold_cap_nano"], cap);
    for bad in [json!(0), json!(-5), json!("1")] {
        let res = app
            .patch(&format!("/api/v1/plans/{plan}"))
            .bearer(&owner.token)
            .json(json!({"hold_cap_nano": bad}));
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
    }
    assert_eq!(
        app.get(&format!("/api/v1/plans/{plan}"))
            .bearer(&owner.token)
            .send()
            .ok()["hold_cap_nano"],
        cap,
        "a refused change changed nothing"
    );
    let e = chat(&app, &key, 1).expect(402, "insufficient_quota");
    let err = serde_json::from_str::<Value>(&e.text).unwrap()["error"].clone();
    assert_eq!(err["limit"], "account balance");
    assert!(
        err["message"].as_str().unwrap().contains("up to 0.001 "),
        "{err}"
    );

    // A top-up is seen by the very next request.
    fund(&app, &owner, &account, cap);
    chat(&app, &key, 1).expect(200, "");
    let b1 = quiesce(&app, &owner, &account, 1);
    assert!(
        b1["balance_nano"].as_i64().unwrap() < 0,
        "the cap let one request overdraw: {b1}"
    );
    chat(&app, &key, 2).expect(402, "insufficient_quota");

    // Postpaid: spends down to the credit limit, and says so when it bites.
    app.patch(&format!("/api/v1/accounts/{account}"))
        .bearer(&owner.token)
        .json(json!({"billing_mode": "postpaid", "credit_limit_nano": 2 * cap}))
        .expect(200, "");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut served = 0;
    loop {
        let res = chat(&app, &key, 3 + served);
        if res.status == 402 {
            let err = serde_json::from_str::<Value>(&res.text).unwrap()["error"].clone();
            if served == 0 && err["limit"] == "account balance" {
                // Every replica drops its cached key within a second of the change.
                assert!(Instant::now() < deadline, "the billing mode never changed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            assert_eq!(err["limit"], "account credit limit", "{err}");
            assert!(
                err["message"]
                    .as_str()
                    .unwrap()
                    .contains("credit limit 0.002"),
                "{err}"
            );
            break;
        }
        assert_eq!(res.status, 200, "{}", res.text);
        served += 1;
        quiesce(&app, &owner, &account, 1 + served as i64);
        assert!(
            Instant::now() < deadline && served < 10,
            "the credit limit never bit"
        );
    }
    let end = quiesce(&app, &owner, &account, 1 + served as i64);
    let left = end["balance_nano"].as_i64().unwrap();
    assert!(
        served >= 1 && left >= -2 * cap - cap,
        "{served} served, {end}"
    );
    assert_eq!(end["billing_mode"], "postpaid");
}

both_backends!(
    a_thousand_concurrent_requests_never_overdraw_beyond_one_hold,
    top_ups_credit_limits_and_caps_reach_admission,
);

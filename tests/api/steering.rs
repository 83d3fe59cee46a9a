//! Nothing a client says can steer the money path (issue 17): a client's `x-request-id` is a
//! correlation id only — concurrent requests sharing one get a slot and a hold each.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, burst_with};

const UNIT: i64 = 1_000_000_000;
const MAX_TOKENS: i64 = 20;

fn body(_: usize) -> Value {
    json!({"model": "taogate-owner", "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "one two three four five six seven eight"}]})
}

fn statuses(app: &TestApp, key: &str, n: usize, request_id: &str) -> Vec<u16> {
    burst_with(
        &[app.base.as_str()],
        key,
        body,
        n,
        &[("x-request-id", request_id)],
    )
    .into_iter()
    .map(|(status, _)| status)
    .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

fn one_request_id_does_not_share_slots_or_holds(b: Backend) {
    // Words 40 ms apart: every request of the burst is still running when the last is decided.
    let app = TestApp::spawn_with_subnet(b, 40);
    let (owner, account, _, _) = app.api_key();
    let (_, key) = app.concurrent_key(&owner, &account, 2);
    let out = statuses(&app, &key, 20, "same-id-for-all");
    assert_eq!(count(&out, 200), 2, "concurrency 2 admitted: {out:?}");
    assert_eq!(count(&out, 429), 18, "{out:?}");

    // A priced account funded for exactly two holds.
    let price = taogate::billing::prices::Price {
        prompt_nano_per_mtok: UNIT,
        completion_nano_per_mtok: UNIT,
        request_nano: 1_000_000,
    };
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "metered", "is_default": true, "prices": {"*": price}}))
        .expect(201, "");
    let paying = app.account(&owner, "Paying");
    let (_, paying_key) = app.key(&owner, Some(&paying));
    let req: taogate::openai::ChatRequest = serde_json::from_value(body(0)).unwrap();
    let hold = price
        .cost(
            taogate::openai::estimate_tokens(&req.prompt_text()),
            MAX_TOKENS,
        )
        .0;
    app.post(&format!("/api/v1/accounts/{paying}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": 2 * hold, "reason": "two holds"}))
        .expect(201, "");
    let out = statuses(&app, &paying_key, 20, "same-id-for-all");
    assert_eq!(
        count(&out, 200),
        2,
        "a balance of two holds admitted: {out:?}"
    );
    assert_eq!(count(&out, 402), 18, "{out:?}");
    app.wait_for_rows("usage_records", 4);
    let balance = app
        .get(&format!("/api/v1/balance?account_id={paying}"))
        .bearer(&owner.token)
        .send()
        .ok();
    assert!(balance["balance_nano"].as_i64().unwrap() >= 0, "{balance}");
}

fn adjust(app: &TestApp, token: &str, account: &str, amount: Value) -> crate::helpers::Resp {
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(token)
        .json(json!({"amount_nano": amount, "reason": "range"}))
}

fn amounts_have_a_range(b: Backend) {
    let app = TestApp::spawn(b);
    let (owner, account, _, _) = app.api_key();
    let max = taogate::billing::amount::MAX_AMOUNT_NANO;
    for bad in [
        json!(i64::MIN),
        json!(i64::MAX),
        json!(10_000_000_000_000_000_000u64),
        json!(max + 1),
        json!(-max - 1),
    ] {
        let res = adjust(&app, &owner.token, &account, bad.clone());
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
        assert_eq!(res.body["error"]["param"], "amount_nano", "{}", res.text);
        assert_eq!(
            res.body["error"]["code"], "amount_out_of_range",
            "{}",
            res.text
        );
    }
    let res = adjust(&app, &owner.token, &account, json!(1.5));
    assert_eq!(res.status, 400, "fractions are refused: {}", res.text);
    // Four maximal credits reach the balance bound; a fifth would leave it.
    for _ in 0..4 {
        adjust(&app, &owner.token, &account, json!(max)).expect(201, "");
    }
    let res = adjust(&app, &owner.token, &account, json!(max));
    assert_eq!(res.status, 400, "{}", res.text);
    assert_eq!(res.body["error"]["code"], "amount_out_of_range");
    let balance = app
        .get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .ok();
    assert_eq!(
        balance["balance_nano"],
        json!(4 * max),
        "an integer: {balance}"
    );
    // Prices, credit limits and hold caps too.
    for (field, bad) in [
        (
            "prices.*.request_nano",
            json!({"*": {"request_nano": i64::MAX}}),
        ),
        (
            "prices.m.prompt_nano_per_mtok",
            json!({"m": {"prompt_nano_per_mtok": 10_000_000_000_000_000_000u64}}),
        ),
        (
            "prices.m.completion_nano_per_mtok",
            json!({"m": {"completion_nano_per_mtok": -1}}),
        ),
    ] {
        let res = app
            .post("/api/v1/plans")
            .bearer(&owner.token)
            .json(json!({"name": "bad", "prices": bad}));
        assert_eq!(res.status, 400, "{bad}: {}", res.text);
        assert_eq!(res.body["error"]["param"], field, "{}", res.text);
    }
    let res = app
        .patch(&format!("/api/v1/accounts/{account}"))
        .bearer(&owner.token)
        .json(json!({"credit_limit_nano": 10_000_000_000_000_000_000u64}));
    assert_eq!(res.status, 400, "{}", res.text);
    assert_eq!(res.body["error"]["param"], "credit_limit_nano");
    let res = app
        .post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "capped", "hold_cap_nano": i64::MAX}));
    assert_eq!(res.status, 400, "{}", res.text);
    assert_eq!(res.body["error"]["param"], "hold_cap_nano");
    let (clean, report) = crate::ledger::reconcile_with_cache(&app.db_url(), false, None);
    assert!(clean, "reconcile works after any accepted input: {report}");
}

fn idempotency_keys_are_scoped_to_the_caller(b: Backend) {
    let app = TestApp::spawn(b);
    let (owner, account, _, _) = app.api_key();
    let slug = owner
        .email
        .split('@')
        .nth(1)
        .and_then(|d| d.split('.').next())
        .unwrap()
        .to_owned();
    let admin = app.user(&owner, &slug, "admin", None);
    let post = |who: &crate::helpers::Session, amount: i64| {
        app.post(&format!("/api/v1/accounts/{account}/adjustments"))
            .bearer(&who.token)
            .header("idempotency-key", "shared-key")
            .json(json!({"amount_nano": amount, "reason": "credit"}))
    };
    let first = post(&owner, 100).expect(201, "");
    let other = post(&admin, 999).expect(201, "");
    assert_eq!(other.body["amount_nano"], 999, "{}", other.text);
    assert_ne!(other.body["transaction_id"], first.body["transaction_id"]);
    assert!(other.header("idempotent-replayed").is_none());
    let again = post(&owner, 100).expect(201, "");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["transaction_id"], first.body["transaction_id"]);
    let balance = app
        .get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .ok();
    assert_eq!(
        balance["balance_nano"], 1099,
        "each caller's credit moved once: {balance}"
    );
}

fn an_unreadable_price_book_is_never_free(b: Backend) {
    use diesel::RunQueryDsl;
    let app = TestApp::spawn_with_subnet(b, 0);
    let (owner, account, _, _) = app.api_key();
    let plan = app
        .post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "metered", "is_default": true,
            "prices": {"*": {"request_nano": 5, "completion_nano_per_mtok": UNIT}}}))
        .expect(201, "")
        .ok();
    // Refused when written.
    let res = app
        .patch(&format!("/api/v1/plans/{}", plan["id"].as_str().unwrap()))
        .bearer(&owner.token)
        .json(json!({"prices": {"*": {"request_nano": 5, "extra": 1}}}));
    assert_eq!(res.status, 400, "{}", res.text);
    // Broken behind the API's back (a hand edit, another version): requests are refused.
    {
        let mut conn = app.db.get().unwrap();
        diesel::sql_query(format!(
            "UPDATE plans SET prices = '{{\"*\": {{\"request_nano\": 5, \"extra\": 1}}}}' WHERE id = '{}'",
            plan["id"].as_str().unwrap()
        ))
        .execute(&mut *conn)
        .unwrap();
    }
    let (_, key) = app.key(&owner, Some(&account));
    let res = app.post("/v1/chat/completions").bearer(&key).json(body(0));
    assert_eq!(res.status, 503, "{}", res.text);
    assert_eq!(res.body["error"]["code"], "pricing_unavailable");
    assert_eq!(app.count("usage_records"), 0, "nothing was served");
}

/// A non-stream client that leaves mid-answer, by FIN or by RST: the request is settled at once
/// as `client_gone` (the upstream cancelled), so its slot and hold come back immediately.
fn a_client_gone_mid_answer_is_settled_at_once(b: Backend) {
    use std::io::Write;
    // Words 150 ms apart: an answer takes seconds.
    let app = TestApp::spawn_with_subnet(b, 150);
    let (owner, account, _, _) = app.api_key();
    let (key_id, key) = app.concurrent_key(&owner, &account, 1);
    let addr = app.base.trim_start_matches("http://").to_owned();
    for (n, reset) in [(1, false), (2, true)] {
        let rid = format!("gone-{n}");
        let payload = body(0).to_string();
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            conn,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
             x-request-id: {rid}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let busy = app.post("/v1/chat/completions").bearer(&key).json(body(0));
        assert_eq!(
            busy.status, 429,
            "the slot is taken while it runs: {}",
            busy.text
        );
        let left = std::time::Instant::now();
        if reset {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                conn.set_nonblocking(true).unwrap();
                let tcp = tokio::net::TcpStream::from_std(conn).unwrap();
                tcp.set_zero_linger().unwrap();
                drop(tcp);
            });
        } else {
            conn.shutdown(std::net::Shutdown::Both).unwrap();
            drop(conn);
        }
        // The slot comes back at once, not after the lease.
        let mut freed = false;
        while left.elapsed() < std::time::Duration::from_secs(1) {
            let limits = app
                .get(&format!("/api/v1/keys/{key_id}/limits"))
                .bearer(&owner.token)
                .send()
                .ok();
            let used = limits["limits"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["scope"] == "key" && l["name"] == "concurrency")
                .map(|l| l["used"].clone());
            if used == Some(json!(0)) {
                freed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(freed, "reset {reset}: the slot stayed taken");
        app.wait_for_rows("usage_records", n);
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct S {
            #[diesel(sql_type = diesel::sql_types::Text)]
            status: String,
        }
        let mut c = app.db.get().unwrap();
        let row: S = diesel::sql_query(format!(
            "SELECT status FROM usage_records WHERE request_id = '{rid}'"
        ))
        .get_result(&mut *c)
        .unwrap();
        assert_eq!(row.status, "client_gone", "reset {reset}");
    }
}

/// A revoked key stops working on an open WebSocket at its next message (issue 18): the message
/// gets `api_key_revoked` and the socket closes with 1008 (policy violation).
fn a_revoked_key_is_refused_on_an_open_websocket(b: Backend) {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest;
    let app = TestApp::spawn_with_subnet(b, 0);
    let (owner, account, _, _) = app.api_key();
    let (key_id, key) = app.key(&owner, Some(&account));
    let mut req = format!("{}/v1/chat/ws", app.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    let next = |ws: &mut tungstenite::WebSocket<_>| loop {
        match ws.read().unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "chunk" {
                    return Some(v);
                }
            }
            Message::Close(frame) => {
                return frame
                    .map(|f| json!({"close": u16::from(f.code), "reason": f.reason.to_string()}));
            }
            _ => {}
        }
    };
    ws.send(Message::text(body(0).to_string())).unwrap();
    assert_eq!(next(&mut ws).unwrap()["type"], "done");
    app.delete(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .send();
    ws.send(Message::text(body(1).to_string())).unwrap();
    let refused = next(&mut ws).unwrap();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["error"]["code"], "api_key_revoked", "{refused}");
    let closed = next(&mut ws).unwrap();
    assert_eq!(closed["close"], 1008, "{closed}");
}

both_backends!(
    one_request_id_does_not_share_slots_or_holds,
    amounts_have_a_range,
    idempotency_keys_are_scoped_to_the_caller,
    an_unreadable_price_book_is_never_free,
    a_client_gone_mid_answer_is_settled_at_once,
    a_revoked_key_is_refused_on_an_open_websocket,
);

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
    let (key_id, key) = app.key(&owner, Some(&account));
    app.patch(&format!("/api/v1/keys/{key_id}"))
        .bearer(&owner.token)
        .json(json!({"limits": {"concurrency": 2}}))
        .expect(200, "");
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

both_backends!(one_request_id_does_not_share_slots_or_holds);

//! The dev Epistula miner (a `taogate devnet-miner` process) checks requests as SN1's miner does:
//! the worker's signed requests pass; forged signatures, stale timestamps, requests signed for
//! another miner, unknown validators and tampered bodies are refused.

use serde_json::json;
use taogate::worker::epistula;
use taogate::worker::hotkey::Hotkey;

use crate::procs::Proc;

fn post(url: &str, headers: &[(&'static str, String)], body: &[u8]) -> (u16, String) {
    let mut req =
        ureq::post(&format!("{url}/v1/chat/completions")).set("content-type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn dev_miner_verifies_epistula_like_a_real_miner() {
    let validator = Hotkey::generate();
    let miner = Proc::start(
        &[
            "devnet-miner",
            "--kind",
            "epistula",
            "--allow-validator",
            &validator.ss58,
            "--label",
            "m",
        ],
        None,
    );
    let miner_hotkey = miner.hotkey.clone().unwrap();
    let body = serde_json::to_vec(
        &json!({"model": "x", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp_millis();

    let (status, text) = post(
        &miner.url,
        &epistula::sign(&validator, &miner_hotkey, &body, now),
        &body,
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("data: [DONE]"));

    let mut forged = epistula::sign(&Hotkey::generate(), &miner_hotkey, &body, now);
    forged
        .iter_mut()
        .find(|(k, _)| *k == epistula::SIGNED_BY)
        .unwrap()
        .1 = validator.ss58.clone();
    let (status, text) = post(&miner.url, &forged, &body);
    assert_eq!(
        (status, text.contains("Signature Mismatch")),
        (400, true),
        "{text}"
    );

    let (status, text) = post(
        &miner.url,
        &epistula::sign(&validator, &miner_hotkey, &body, now - 9_000),
        &body,
    );
    assert_eq!((status, text.contains("stale")), (400, true), "{text}");

    let (status, text) = post(
        &miner.url,
        &epistula::sign(&validator, &Hotkey::generate().ss58, &body, now),
        &body,
    );
    assert_eq!(
        (status, text.contains("not intended for self")),
        (400, true),
        "{text}"
    );

    let (status, _) = post(
        &miner.url,
        &epistula::sign(&Hotkey::generate(), &miner_hotkey, &body, now),
        &body,
    );
    assert_eq!(status, 401, "an unknown validator");

    let tampered = serde_json::to_vec(
        &json!({"model": "x", "stream": true, "messages": [{"role": "user", "content": "HI"}]}),
    )
    .unwrap();
    let (status, text) = post(
        &miner.url,
        &epistula::sign(&validator, &miner_hotkey, &body, now),
        &tampered,
    );
    assert_eq!(
        (status, text.contains("Signature Mismatch")),
        (400, true),
        "{text}"
    );

    let (status, _) = post(&miner.url, &[], &body);
    assert_eq!(status, 400, "unsigned");
}

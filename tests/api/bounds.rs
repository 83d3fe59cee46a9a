//! A dishonest upstream cannot steer a charge (issue 17): through a real `taogate worker`, an
//! OpenAI-compatible stand-in reports whatever usage the prompt asks it to — negative, huge,
//! none, honest — and the charge stays within what the request asked for (`max_tokens`), never
//! negative, with `usage_source` saying where the billed counts came from.
//!
//! The stand-in speaks the OpenAI SSE wire format from plain `std::net` (it shares no code with
//! the gateway): `data: {chunk}` events, a usage chunk with `choices: []`, then `data: [DONE]`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use figment::Figment;
use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};
use crate::procs;

const SECRET: &str = "worker-secret-0123456789";
const UNIT: i64 = 1_000_000_000;
const MAX_TOKENS: i64 = 5;

/// Serves chat completions whose `usage` is dictated by the last user message:
/// `report <prompt> <completion>` or `report none`. The answer is always three words.
fn lying_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || serve(conn));
        }
    });
    url
}

fn serve(mut conn: std::net::TcpStream) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut length = 0usize;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    if !request_line.starts_with("POST") {
        let _ =
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        return;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    let ask = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let words: Vec<&str> = ask.split_whitespace().collect();
    let usage = match words.as_slice() {
        ["report", "none", ..] => None,
        ["report", p, c, ..] => Some(json!({"prompt_tokens": p.parse::<i64>().unwrap(),
            "completion_tokens": c.parse::<i64>().unwrap(), "total_tokens": 0})),
        _ => None,
    };
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "liar",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for w in ["Sure", " thing", " friend"] {
        events.push(chunk(json!({"content": w}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if let Some(u) = usage {
        events.push(
            json!({"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1,
            "model": "liar", "choices": [], "usage": u}),
        );
    }
    let mut out = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
    );
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    let _ = conn.write_all(out.as_bytes());
}

fn gateway(b: Backend, worker: &str) -> TestApp {
    let overrides = Figment::new()
        .merge(Serialized::default("pool.first_byte_timeout_ms", 5000))
        .merge(Serialized::default("pool.worker_secret", SECRET));
    let worker = worker.to_owned();
    TestApp::spawn_full(b, overrides, move |mut c, _| async move {
        c.pool.workers = vec![worker];
        c.models.push(taogate::config::ModelConfig {
            id: "m".into(),
            owned_by: "test".into(),
            max_tokens: Some(100),
        });
        c
    })
}

fn usage_row(app: &TestApp, request_id: &str) -> Value {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        prompt_tokens: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        completion_tokens: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        charged_nano: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        usage_source: String,
    }
    for _ in 0..250 {
        let mut conn = app.db.get().unwrap();
        let rows: Vec<Row> = diesel::sql_query(format!(
            "SELECT prompt_tokens, completion_tokens, charged_nano, usage_source FROM usage_records \
             WHERE request_id = '{request_id}'"
        ))
        .load(&mut *conn)
        .unwrap();
        if let Some(r) = rows.first() {
            return json!({"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                "charged_nano": r.charged_nano, "usage_source": r.usage_source});
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no usage record for {request_id}");
}

fn lying_usage_is_bounded_by_the_request(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = lying_upstream();
    let worker = procs::worker(dir.path(), "w", SECRET, &upstream, "k", None);
    let app = gateway(b, &worker.url);
    let (owner, account, _, key) = app.api_key();
    let price = taogate::billing::prices::Price {
        prompt_nano_per_mtok: UNIT,
        completion_nano_per_mtok: UNIT,
        request_nano: 0,
    };
    app.post("/api/v1/plans")
        .bearer(&owner.token)
        .json(json!({"name": "metered", "is_default": true, "prices": {"*": price}}))
        .expect(201, "");
    let funded = 1_000 * UNIT;
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": funded, "reason": "top-up"}))
        .expect(201, "");
    // The most any of these prompts may be billed: the gateway's count plus the tolerance.
    let worst = price.cost(64 + 20, MAX_TOKENS).0;
    let cases = [
        ("report 10 -1000000", "clamped"),
        ("report 10 10000000", "clamped"),
        ("report -5 3", "clamped"),
        ("report 100000000 3", "clamped"),
        ("report none", "counted"),
        ("report 10 3", "upstream"),
    ];
    let mut n = 0;
    for stream in [false, true] {
        for (prompt, source) in cases {
            n += 1;
            let rid = format!("bounds-{n}");
            let res = app
                .post("/v1/chat/completions")
                .bearer(&key)
                .header("x-request-id", &rid)
                .json(
                    json!({"model": "m", "stream": stream, "max_tokens": MAX_TOKENS,
                    "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": prompt}]}),
                );
            assert_eq!(res.status, 200, "{prompt}: {}", res.text);
            if !stream {
                let usage = &res.body["usage"];
                let completion = usage["completion_tokens"].as_i64().unwrap();
                assert!(
                    (0..=MAX_TOKENS).contains(&completion),
                    "{prompt}: the answer says it billed {usage}"
                );
            }
            let row = usage_row(&app, &rid);
            let charged = row["charged_nano"].as_i64().unwrap();
            let completion = row["completion_tokens"].as_i64().unwrap();
            assert!(
                (0..=MAX_TOKENS).contains(&completion),
                "{prompt} (stream {stream}): {row}"
            );
            assert!(row["prompt_tokens"].as_i64().unwrap() >= 0, "{row}");
            assert!(
                (0..=worst).contains(&charged),
                "{prompt}: {row} (bound {worst})"
            );
            assert_eq!(
                row["usage_source"], source,
                "{prompt} (stream {stream}): {row}"
            );
            if source == "upstream" {
                assert_eq!(
                    (row["prompt_tokens"].as_i64(), Some(completion)),
                    (Some(10), Some(3)),
                    "honest usage is billed as reported"
                );
            }
        }
    }
    app.wait_for_rows("ledger_transactions", n + 1);
    let balance = app
        .get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&owner.token)
        .send()
        .ok();
    let left = balance["balance_nano"].as_i64().unwrap();
    assert!(left < funded, "the balance never goes up: {balance}");
    assert!(left >= funded - n * worst, "{balance}");
    let report = {
        let mut conn = app.db.get().unwrap();
        taogate::models::ledger::reconcile(&mut conn, false).unwrap()
    };
    assert!(report.is_clean(), "{report:?}");
    let metrics = app.get("/metrics").send().text;
    assert!(
        metrics.contains("taogate_usage_source_total{source=\"clamped\",upstream=\"owner\"} 8"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("usage_source"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

both_backends!(lying_usage_is_bounded_by_the_request);

//! Finance on both backends: usage exports (CSV read back by Python's `csv` module, JSONL line by
//! line) whose totals equal the ledger's usage postings for every granularity; who sees what; a
//! closed month exported twice with a late record in between comes out byte-identical, the late
//! record in the next month; statements (JSON, CSV, and a PDF read back with `pdftotext` and
//! rendered with `pdftoppm`) that tie opening + lines = closing = the balance; revenue reports.

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::{Datelike, Duration, NaiveDateTime};
use serde_json::{Value, json};
use taogate::billing::metering::writer::write_batch;
use taogate::domain::{AccountId, ApiKeyId, Nano, TenantId, UsageSource};
use taogate::models::usage::UsageRecord;

use crate::both_backends;
use crate::helpers::{Backend, Session, TestApp};
use crate::ledger::{balance, reconcile_with_cache};

fn python() -> String {
    std::env::var("TAOGATE_TEST_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned())
}

fn t(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
}

/// A priced usage record of `account` started at `at`.
fn record(
    tenant: &str,
    account: &str,
    key: &str,
    model: &str,
    at: NaiveDateTime,
    i: i64,
) -> UsageRecord {
    UsageRecord {
        id: uuid::Uuid::now_v7().to_string(),
        request_id: format!("req-{i}"),
        tenant_id: TenantId::parse(tenant).unwrap(),
        account_id: AccountId::parse(account).unwrap(),
        api_key_id: ApiKeyId::parse(key).unwrap(),
        model: model.into(),
        prompt_tokens: 100 + i,
        completion_tokens: 20 + i,
        estimated: false,
        status: "ok".into(),
        worker: Some("w".into()),
        upstream: Some(if i % 2 == 0 { "owner-a" } else { "miner-7" }.into()),
        miner_uid: None,
        started_at: at,
        ended_at: at + Duration::milliseconds(250),
        ttft_ms: Some(10),
        latency_ms: 250,
        wholesale_cost_nano: Some(Nano(30 + i)),
        charged_nano: Nano(1_000 + 7 * i),
        tenant_charged_nano: Nano(400 + 3 * i),
        usage_source: UsageSource::Upstream,
        prompt_nano_per_mtok: Some(2_000_000),
        completion_nano_per_mtok: Some(8_000_000),
        request_nano: Some(1_000),
    }
}

fn write(app: &TestApp, records: Vec<UsageRecord>) {
    let db = app.db.clone();
    actix_web::rt::System::new()
        .block_on(db.write(move |c| write_batch(c, &records).map_err(anyhow::Error::from)))
        .unwrap();
}

/// Σ of the ledger's usage postings debited from `tenant`'s customers (all of them, or one).
fn ledger_usage(app: &TestApp, tenant: &str, account: Option<&str>) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = app.db.get().unwrap();
    let filter = account.map_or(String::new(), |a| format!(" AND a.owner_id = '{a}'"));
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(-e.amount_nano), 0) AS BIGINT) AS n FROM ledger_entries e \
         JOIN ledger_transactions t ON t.id = e.transaction_id JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE t.idempotency_key LIKE 'usage:%' AND a.purpose = 'customer_balance' AND a.tenant_id = '{tenant}'{filter}"
    );
    diesel::RunQueryDsl::get_result::<N>(diesel::sql_query(sql), &mut *c)
        .unwrap()
        .n
}

/// Rows of a CSV as Python's `csv.DictReader` reads them.
fn python_csv(text: &str) -> Vec<serde_json::Map<String, Value>> {
    let mut child = Command::new(python())
        .args(["-c", "import csv, io, json, sys; print(json.dumps(list(csv.DictReader(io.StringIO(sys.stdin.read(), newline='')))))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn export(app: &TestApp, who: &Session, query: &str) -> String {
    let res = app
        .get(&format!("/api/v1/usage/export?{query}"))
        .bearer(&who.token)
        .send()
        .expect(200, "");
    res.text
}

fn sum(rows: &[serde_json::Map<String, Value>], col: &str) -> i64 {
    rows.iter()
        .map(|r| match &r[col] {
            Value::String(s) => s.parse::<i64>().unwrap(),
            Value::Number(n) => n.as_i64().unwrap(),
            other => panic!("{col}: {other}"),
        })
        .sum()
}

fn usage_exports_tie_to_the_ledger_and_closed_months_are_final(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (tenant, slug, owner) = app.tenant(&op, false);
    let (tenant2, _, owner2) = app.tenant(&op, false);
    let a1 = app.account(&owner, "A1");
    let a2 = app.account(&owner, "A2");
    let b1 = app.account(&owner2, "B1");
    let (k1, _) = app.key(&owner, Some(&a1));
    let (k2, _) = app.key(&owner, Some(&a2));
    let (kb, _) = app.key(&owner2, Some(&b1));
    // October (closed), November (closed) and December (open) usage, several hours and models.
    let mut records = Vec::new();
    let mut i = 0;
    for (day, hour) in [
        ("2026-10-03", 1),
        ("2026-10-03", 1),
        ("2026-10-03", 5),
        ("2026-10-20", 23),
        ("2026-11-01", 0),
        ("2026-11-30", 23),
        ("2026-12-01", 0),
        ("2026-12-02", 13),
    ] {
        for (account, key, model) in [
            (&a1, &k1, "m-small"),
            (&a2, &k2, "m-large"),
            (&a1, &k1, "m-large"),
        ] {
            let at = t(&format!("{day} {hour:02}:{:02}:00", i % 60));
            records.push(record(&tenant, account, key, model, at, i));
            i += 1;
        }
        records.push(record(
            &tenant2,
            &b1,
            &kb,
            "m-small",
            t(&format!("{day} {hour:02}:30:00")),
            i,
        ));
        i += 1;
    }
    write(&app, records);
    let finance = app.user(&owner, &slug, "finance", None);
    let range = "from=2026-10-01T00:00:00Z&to=2026-12-07T00:00:00Z";
    let total = ledger_usage(&app, &tenant, None);
    assert!(total > 0);
    // Every granularity, CSV and JSONL: Σ amount_nano = the ledger's usage postings; per account too.
    for g in ["request", "hour", "day", "month"] {
        let csv = export(&app, &finance, &format!("{range}&granularity={g}"));
        let rows = python_csv(&csv);
        assert_eq!(sum(&rows, "amount_nano"), total, "{g}");
        assert_eq!(sum(&rows, "requests"), 24, "{g}");
        for (acct, _) in [(&a1, 0), (&a2, 0)] {
            let mine: Vec<_> = rows
                .iter()
                .filter(|r| r["account_id"] == acct.as_str())
                .cloned()
                .collect();
            assert_eq!(
                sum(&mine, "amount_nano"),
                ledger_usage(&app, &tenant, Some(acct)),
                "{g} {acct}"
            );
        }
        assert!(
            rows.iter()
                .all(|r| r["currency"] == "usd" && r["tenant"] == slug.as_str())
        );
        assert!(
            rows.iter()
                .all(|r| r["upstream_cost_nano"].as_str() == Some("")),
            "the operator's cost is not the tenant's to see"
        );
        let jsonl = export(
            &app,
            &finance,
            &format!("{range}&granularity={g}&format=jsonl"),
        );
        let lines: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), rows.len(), "{g}");
        assert_eq!(
            lines
                .iter()
                .map(|l| l["amount_nano"].as_i64().unwrap())
                .sum::<i64>(),
            total
        );
        for l in &lines {
            let nano = l["amount_nano"].as_i64().unwrap();
            assert_eq!(
                l["amount"],
                format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
            );
            assert_eq!(
                l["margin_nano"].as_i64().unwrap(),
                nano - l["wholesale_nano"].as_i64().unwrap()
            );
        }
    }
    // Request rows carry the unit prices and the key's prefix; groups by model only, too.
    let req = python_csv(&export(
        &app,
        &finance,
        &format!("{range}&granularity=request"),
    ));
    assert_eq!(req[0]["prompt_price_nano_per_mtok"], "2000000");
    assert!(
        req.iter()
            .all(|r| r["api_key_prefix"].as_str().is_some_and(|p| !p.is_empty()))
    );
    let by_model = python_csv(&export(
        &app,
        &finance,
        &format!("{range}&granularity=month&group_by=model"),
    ));
    assert!(
        by_model
            .iter()
            .all(|r| r["account_id"] == "" && r["model"] != "")
    );
    assert_eq!(by_model.len(), 3 * 2, "three months, two models");
    // A developer: their own account, retail only. Another tenant: nothing of it. The operator: all.
    let dev = app.user(&owner, &slug, "developer", Some(&a2));
    let mine = python_csv(&export(&app, &dev, &format!("{range}&granularity=request")));
    assert_eq!(mine.len(), 8);
    assert!(mine.iter().all(|r| r["account_id"] == a2.as_str()
        && r["wholesale_nano"] == ""
        && r["margin_nano"] == ""));
    app.get(&format!("/api/v1/usage/export?{range}&account_id={a1}"))
        .bearer(&dev.token)
        .send()
        .expect(404, "not_found");
    app.get(&format!("/api/v1/usage/export?{range}&account_id={a1}"))
        .bearer(&owner2.token)
        .send()
        .expect(404, "not_found");
    app.get(&format!("/api/v1/usage/export?{range}&tenant_id={tenant}"))
        .bearer(&owner2.token)
        .send()
        .expect(400, "invalid_request");
    let all = python_csv(&export(&app, &op, &format!("{range}&granularity=month")));
    assert_eq!(
        sum(&all, "amount_nano"),
        total + ledger_usage(&app, &tenant2, None)
    );
    assert!(all.iter().all(|r| r["upstream_cost_nano"] != ""));
    // Bad input: a clear 400.
    for bad in [
        "from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        &format!("{range}&group_by=tenant"),
        &format!("{range}&granularity=week"),
    ] {
        app.get(&format!("/api/v1/usage/export?{bad}"))
            .bearer(&finance.token)
            .send()
            .expect(400, "");
    }

    // October is closed: exported, then a late October record arrives, exported again → same bytes.
    let october = "from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z&granularity=day";
    let first = export(&app, &finance, october);
    write(
        &app,
        vec![record(
            &tenant,
            &a1,
            &k1,
            "m-small",
            t("2026-10-15 12:00:00"),
            99,
        )],
    );
    assert_eq!(export(&app, &finance, october), first);
    assert_eq!(export(&app, &finance, october), first);
    // November was closed (its cutoff stored) before it arrived too: it is carried into the first
    // open period, December (its first bucket), once.
    let november = python_csv(&export(
        &app,
        &finance,
        "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&granularity=month",
    ));
    assert_eq!(sum(&november, "requests"), 6);
    let december = python_csv(&export(
        &app,
        &finance,
        "from=2026-12-01T00:00:00Z&to=2026-12-07T00:00:00Z&granularity=month",
    ));
    assert_eq!(sum(&december, "requests"), 6 + 1);
    let everything = python_csv(&export(
        &app,
        &finance,
        &format!("{range}&granularity=month"),
    ));
    assert_eq!(
        sum(&everything, "amount_nano"),
        ledger_usage(&app, &tenant, None)
    );
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(ok, "{report}");
}

fn statements_tie_opening_lines_and_closing_to_the_balance(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (tenant, slug, owner) = app.tenant(&op, false);
    let (_, _, owner2) = app.tenant(&op, false);
    let a1 = app.account(&owner, "Acme Research");
    let (k1, _) = app.key(&owner, Some(&a1));
    app.post(&format!("/api/v1/accounts/{a1}/adjustments"))
        .bearer(&owner.token)
        .json(json!({"amount_nano": 50_000_000_000i64, "reason": "opening credit"}))
        .expect(201, "");
    let now = chrono::Utc::now().naive_utc();
    write(
        &app,
        (0..5)
            .map(|i| {
                record(
                    &tenant,
                    &a1,
                    &k1,
                    if i < 3 { "m-small" } else { "m-large" },
                    now,
                    i,
                )
            })
            .collect(),
    );
    let month = now.format("%Y-%m").to_string();
    let finance = app.user(&owner, &slug, "finance", None);
    let doc = app
        .get(&format!("/api/v1/statements?account_id={a1}&month={month}"))
        .bearer(&finance.token)
        .send()
        .expect(200, "")
        .ok();
    let bal = balance(&app, &owner, &a1);
    let lines: i64 = [
        "topups",
        "usage",
        "refunds_and_disputes",
        "adjustments",
        "other",
    ]
    .iter()
    .flat_map(|k| {
        doc[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["amount_nano"].as_i64().unwrap())
    })
    .sum();
    assert_eq!(
        doc["opening_balance_nano"].as_i64().unwrap() + lines,
        doc["closing_balance_nano"].as_i64().unwrap()
    );
    assert_eq!(doc["closing_balance_nano"].as_i64().unwrap(), bal);
    assert_eq!(doc["adjustments"][0]["amount_nano"], 50_000_000_000i64);
    let usage: Vec<(String, i64)> = doc["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["model"].as_str().unwrap().to_owned(),
                u["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        usage,
        [("m-large".to_owned(), 2), ("m-small".to_owned(), 3)]
    );
    assert_eq!(doc["closed"], false);
    // CSV: the same figures, read by Python's csv module.
    let csv = app
        .get(&format!(
            "/api/v1/statements?account_id={a1}&month={month}&format=csv"
        ))
        .bearer(&finance.token)
        .send()
        .expect(200, "");
    let rows = python_csv(&csv.text);
    let closing = rows
        .iter()
        .find(|r| r["section"] == "closing_balance")
        .unwrap();
    assert_eq!(closing["amount_nano"], bal.to_string());
    let body: i64 = rows
        .iter()
        .filter(|r| r["section"] != "closing_balance")
        .map(|r| r["amount_nano"].as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(body, bal);
    // PDF: the totals are in its text (pdftotext), and it renders (pdftoppm).
    let pdf = pdf_bytes(
        &app,
        &finance,
        &format!("/api/v1/statements?account_id={a1}&month={month}&format=pdf"),
    );
    assert!(pdf.starts_with(b"%PDF"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.pdf");
    std::fs::write(&path, &pdf).unwrap();
    let text = Command::new("pdftotext")
        .args(["-layout"])
        .arg(&path)
        .arg("-")
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    for needle in [
        "Acme Research",
        "Closing balance",
        doc["closing_balance"].as_str().unwrap(),
        doc["opening_balance"].as_str().unwrap(),
        "m-large",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
    let png = Command::new("pdftoppm")
        .args(["-png", "-r", "50", "-singlefile"])
        .arg(&path)
        .arg(dir.path().join("page"))
        .status()
        .unwrap();
    assert!(png.success());
    assert!(
        std::fs::metadata(dir.path().join("page.png"))
            .unwrap()
            .len()
            > 1000
    );
    // A closed month (last month: nothing moved then) is final: the same bytes every time.
    let last = (now.date().with_day0(0).unwrap() - Duration::days(1))
        .format("%Y-%m")
        .to_string();
    let q = format!("/api/v1/statements?account_id={a1}&month={last}&format=pdf");
    let once = pdf_bytes(&app, &finance, &q);
    assert!(
        pdf_bytes(&app, &finance, &q) == once,
        "the PDF of a closed month changed"
    );
    let closed = app
        .get(&format!("/api/v1/statements?account_id={a1}&month={last}"))
        .bearer(&finance.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(
        (
            closed["closed"].as_bool(),
            closed["closing_balance_nano"].as_i64()
        ),
        (Some(true), Some(0))
    );
    // Who may: a developer their own; another tenant nothing; bad months refused.
    let dev = app.user(&owner, &slug, "developer", Some(&a1));
    app.get(&format!("/api/v1/statements?month={month}"))
        .bearer(&dev.token)
        .send()
        .expect(200, "");
    app.get(&format!("/api/v1/statements?account_id={a1}&month={month}"))
        .bearer(&owner2.token)
        .send()
        .expect(404, "not_found");
    for bad in ["2026-13", "3000-01", "2026/01"] {
        app.get(&format!("/api/v1/statements?account_id={a1}&month={bad}"))
            .bearer(&finance.token)
            .send()
            .expect(400, "invalid_request");
    }
    // The revenue report ties to the export and to the ledger: retail = usage postings.
    let rev = app
        .get("/api/v1/reports/revenue?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z&by=model")
        .bearer(&finance.token)
        .send()
        .expect(200, "")
        .ok();
    let retail: i64 = rev["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["retail_nano"].as_i64().unwrap())
        .sum();
    assert_eq!(retail, ledger_usage(&app, &tenant, None));
    assert_eq!(rev["totals"][0]["retail_nano"].as_i64().unwrap(), retail);
    assert!(rev["data"][0]["upstream_cost_nano"].is_null());
    let by_route = app.get(&format!("/api/v1/reports/revenue?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z&by=route&tenant_id={tenant}"))
        .bearer(&op.token).send().expect(200, "").ok();
    let routes: Vec<&str> = by_route["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["group"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["miner-7", "owner-a"]);
    let line = &by_route["data"][0];
    assert_eq!(
        line["operator_margin_nano"].as_i64().unwrap(),
        line["wholesale_nano"].as_i64().unwrap() - line["upstream_cost_nano"].as_i64().unwrap()
    );
    app.get("/api/v1/reports/revenue?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z")
        .bearer(&dev.token)
        .send()
        .expect(403, "");
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(ok, "{report}");
}

/// `taogate reconcile --period <month>`: (exit success, its JSON report).
pub(crate) fn reconcile_period(db_url: &str, month: &str) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_taogate"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .args(["reconcile", "--period", month])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| json!({"stderr": String::from_utf8_lossy(&out.stderr).to_string()}));
    (out.status.success(), report)
}

fn pdf_bytes(app: &TestApp, who: &Session, path: &str) -> Vec<u8> {
    let res = ureq::get(&format!("{}{path}", app.base))
        .set("Authorization", &format!("Bearer {}", who.token))
        .call()
        .unwrap();
    assert_eq!(res.header("content-type"), Some("application/pdf"));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut res.into_reader(), &mut out).unwrap();
    out
}

/// `taogate export` as finance runs it: a month to a file, equal to the API's export; killed by the
/// kernel part-way (a file size limit, SIGXFSZ) and resumed with `--resume`: the same bytes.
fn the_cli_exports_a_month_and_resumes_where_it_stopped(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (tenant, slug, owner) = app.tenant(&op, false);
    let a1 = app.account(&owner, "A1");
    let (k1, _) = app.key(&owner, Some(&a1));
    let records = (0..60)
        .map(|i| {
            record(
                &tenant,
                &a1,
                &k1,
                ["m-small", "m-large", "m-tiny"][i as usize % 3],
                t("2026-11-01 00:00:00") + Duration::hours(11 * i),
                i,
            )
        })
        .collect();
    write(&app, records);
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &std::path::Path, extra: &[&str], limit_kb: Option<u32>| {
        let mut args = vec![
            "export",
            "--month",
            "2026-11",
            "--granularity",
            "day",
            "--tenant",
            slug.as_str(),
            "--out",
        ];
        let out = out.to_str().unwrap().to_owned();
        args.push(&out);
        args.extend_from_slice(extra);
        let mut cmd = match limit_kb {
            Some(kb) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("ulimit -f {kb}; exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_taogate"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_taogate")),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", app.db_url())
            .args(&args)
            .output()
            .unwrap()
    };
    let full = dir.path().join("full.csv");
    let out = run(&full, &[], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    let total = ledger_usage(&app, &tenant, None);
    let decimal = format!("{}.{:09}", total / 1_000_000_000, total % 1_000_000_000);
    assert!(
        summary.contains("60 request(s)") && summary.contains(&format!("{decimal} usd")),
        "{summary}"
    );
    let bytes = std::fs::read(&full).unwrap();
    assert!(!dir.path().join("full.csv.cursor").exists());
    // The same as the API's export of that month for the operator.
    let api = export(
        &app,
        &op,
        &format!(
            "from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z&granularity=day&tenant_id={tenant}"
        ),
    );
    assert!(
        api.as_bytes() == bytes.as_slice(),
        "CLI and API differ:\n{api}\n---\n{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        bytes.len() > 6 * 1024,
        "{} bytes: too small to be cut",
        bytes.len()
    );
    // Interrupted: the kernel stops it at 4 KiB. Resumed: identical to the uninterrupted run.
    let part = dir.path().join("part.csv");
    let cut = run(&part, &[], Some(4));
    assert!(!cut.status.success());
    assert!(
        dir.path().join("part.csv.cursor").exists(),
        "a checkpoint was kept"
    );
    assert!(std::fs::read(&part).unwrap().len() < bytes.len());
    let resumed = run(&part, &["--resume"], None);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        std::fs::read(&part).unwrap() == bytes,
        "the resumed file differs"
    );
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("60 request(s)"),
        "the summary counts both runs"
    );
    // Resuming what is complete is refused; so is a bad month.
    assert!(!run(&part, &["--resume"], None).status.success());
    let bad = Command::new(env!("CARGO_BIN_EXE_taogate"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.db_url())
        .args(["export", "--month", "2026-13"])
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--month"));
}

both_backends!(
    the_cli_exports_a_month_and_resumes_where_it_stopped,
    usage_exports_tie_to_the_ledger_and_closed_months_are_final,
    statements_tie_opening_lines_and_closing_to_the_balance
);

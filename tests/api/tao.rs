//! TAO deposits end to end, on both backends: addresses derived as bittensor_wallet derives them,
//! and a watcher reading a stand-in subtensor node (tests/py/subtensor_standin.py: storage keys
//! hashed and AccountInfo packed by its own Python code, from Substrate's documented formats) —
//! deposits across blocks, two in one block, a sweep, dust, a node failing then recovering, three
//! watchers at once (the server's and two more) and several passes per range: every deposit
//! credited exactly once, nothing from blocks not yet finalized.

use std::process::Command;

use figment::Figment;
use figment::providers::Serialized;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Backend, Session, TestApp};
use crate::ledger::{balance, reconcile_with_cache};
use crate::procs::Proc;

const UNIT: i64 = 1_000_000_000;
const TAO: i64 = 1_000_000_000;
const PHRASE: &str = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

fn bt_python() -> String {
    std::env::var("TAOGATE_TEST_BT10_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-bt10/bin/python").to_owned()
    })
}

struct Chain {
    proc: Proc,
}

impl Chain {
    fn start() -> Self {
        let proc = Proc::start_program(
            &bt_python(),
            &[
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/subtensor_standin.py"),
                "--port",
                "0",
            ],
        );
        Self { proc }
    }

    fn control(&self, what: &str, body: Value) -> Value {
        ureq::post(&format!("{}_standin/{what}", self.proc.url))
            .send_json(body)
            .unwrap()
            .into_json()
            .unwrap()
    }

    /// Appends a block setting these free balances; its number.
    fn block(&self, set: &[(&str, i64)]) -> i64 {
        let set: serde_json::Map<String, Value> = set
            .iter()
            .map(|(a, v)| ((*a).to_owned(), json!(v)))
            .collect();
        self.control("block", json!({"set": set}))["number"]
            .as_i64()
            .unwrap()
    }

    fn finalize(&self, number: i64) {
        self.control("finalize", json!({"number": number}));
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

fn deposit(app: &TestApp, who: &Session, account: &str) -> Value {
    app.get(&format!("/api/v1/billing/tao?account_id={account}"))
        .bearer(&who.token)
        .send()
        .expect(200, "")
        .ok()
}

fn tao_config(url: &str) -> taogate::billing::payments::tao::TaoConfig {
    taogate::billing::payments::tao::TaoConfig {
        mnemonic: PHRASE.to_owned().into(),
        mnemonic_file: String::new(),
        rpc_url: url.to_owned(),
        min_deposit_rao: 1000,
        poll_ms: 100,
        max_blocks_per_pass: 2,
        rpc_timeout_ms: 5000,
        price_url: String::new(),
        price_pointer: "/price".into(),
        price_currency: "usd".into(),
    }
}

fn tao_deposits_are_credited_once_after_finality(b: Backend) {
    let chain = Chain::start();
    let app = TestApp::spawn_with(
        b,
        Figment::new()
            .merge(Serialized::default(
                "payments.encryption_key",
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            ))
            .merge(Serialized::default("payments.tao.mnemonic", PHRASE))
            .merge(Serialized::default("payments.tao.rpc_url", &chain.proc.url))
            .merge(Serialized::default("payments.tao.poll_ms", 100))
            .merge(Serialized::default("payments.tao.max_blocks_per_pass", 2))
            .merge(Serialized::default("payments.tao.min_deposit_rao", 1000)),
    );
    let op = app.operator();
    let (tenant_a, slug_a, owner_a) = app.tenant(&op, false);
    let (_, _, owner_b) = app.tenant(&op, false);
    let a1 = app.account(&owner_a, "A1");
    let a2 = app.account(&owner_a, "A2");
    let b1 = app.account(&owner_b, "B1");
    app.get(&format!("/api/v1/billing/tao?account_id={a1}"))
        .bearer(&owner_a.token)
        .send()
        .expect(409, "payments_not_configured");
    let shown = app
        .put("/api/v1/billing/tao")
        .bearer(&owner_a.token)
        .json(json!({"currency": "tao"}))
        .expect(200, "")
        .ok();
    assert_eq!(
        (
            shown["rate_source"].as_str(),
            shown["nano_per_tao"].as_i64(),
            shown["enabled"].as_bool()
        ),
        (Some("tao"), Some(TAO), Some(true))
    );
    app.put("/api/v1/billing/tao")
        .bearer(&owner_b.token)
        .json(json!({"currency": "usd"}))
        .expect(400, "invalid_request");
    // Tenant B's ledger is in dollars: 1 TAO = 400 units.
    app.put("/api/v1/billing/tao")
        .bearer(&owner_b.token)
        .json(json!({"currency": "usd", "nano_per_tao": 400 * UNIT}))
        .expect(200, "");
    let d1 = deposit(&app, &owner_a, &a1);
    let addr1 = d1["address"].as_str().unwrap().to_owned();
    assert_eq!(
        d1["derivation_path"],
        format!("//taogate//{tenant_a}//{a1}")
    );
    // The address is the one bittensor_wallet derives from the mnemonic and the path.
    let out = Command::new(bt_python())
        .args(["-c", "import sys; from bittensor_wallet import Keypair; print(Keypair.create_from_uri(sys.argv[1]).ss58_address)",
            &format!("{PHRASE}{}", d1["derivation_path"].as_str().unwrap())])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), addr1);
    // Stable, the developer's own, and hidden from other tenants.
    let dev = app.user(&owner_a, &slug_a, "developer", Some(&a1));
    let own = app
        .get("/api/v1/billing/tao")
        .bearer(&dev.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(own["address"], addr1.as_str());
    app.get(&format!("/api/v1/billing/tao?account_id={a1}"))
        .bearer(&owner_b.token)
        .send()
        .expect(404, "not_found");
    let addr2 = deposit(&app, &owner_a, &a2)["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr_b = deposit(&app, &owner_b, &b1)["address"]
        .as_str()
        .unwrap()
        .to_owned();

    // Block 1: 5 TAO to A1, finalized → credited.
    let n = chain.block(&[(&addr1, 5 * TAO)]);
    chain.finalize(n);
    wait_until("the first deposit", || {
        balance(&app, &owner_a, &a1) == 5 * UNIT
    });
    // Blocks 2-3, not finalized: two deposits in one block, and B1's. Nothing credited; pending shown.
    chain.block(&[(&addr1, 7 * TAO), (&addr2, TAO)]);
    let three = chain.block(&[(&addr_b, TAO / 2)]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(balance(&app, &owner_a, &a1), 5 * UNIT);
    assert_eq!(balance(&app, &owner_a, &a2), 0);
    assert_eq!(deposit(&app, &owner_a, &a1)["pending"], 2 * TAO);
    // The node fails a few calls, then finalizes: each credited once, B1 at its tenant's rate.
    chain.control("fail", json!({"count": 3}));
    chain.finalize(three);
    wait_until("blocks 2 and 3", || {
        balance(&app, &owner_b, &b1) == 200 * UNIT
    });
    assert_eq!(balance(&app, &owner_a, &a1), 7 * UNIT);
    assert_eq!(balance(&app, &owner_a, &a2), UNIT);
    // A sweep (not a debit), dust (recorded, not credited), then a deposit on top of the dust.
    chain.block(&[(&addr1, 0)]);
    chain.block(&[(&addr1, 300)]);
    let six = chain.block(&[(&addr1, 3 * TAO + 300)]);
    chain.finalize(six);
    wait_until("blocks 4-6", || balance(&app, &owner_a, &a1) == 10 * UNIT);
    // Two more watchers on the same database, at once with the server's: blocks 7-8 read once.
    chain.block(&[(&addr2, 4 * TAO)]);
    let eight = chain.block(&[(&addr2, 6 * TAO)]);
    chain.finalize(eight);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (db, url) = (app.db.clone(), chain.proc.url.clone());
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let watcher = taogate::billing::payments::tao::watcher::Watcher::new(
                    db,
                    tao_config(&url),
                    None,
                )
                .unwrap();
                for _ in 0..5 {
                    let _ = rt.block_on(watcher.run_once());
                }
            });
        }
    });
    wait_until("blocks 7-8", || balance(&app, &owner_a, &a2) == 6 * UNIT);
    // Not finalized: never credited.
    chain.block(&[(&addr1, 50 * TAO)]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(balance(&app, &owner_a, &a1), 10 * UNIT);
    assert_eq!(balance(&app, &owner_a, &a2), 6 * UNIT);
    assert_eq!(balance(&app, &owner_b, &b1), 200 * UNIT);
    // Every increase recorded once; every credit posted once.
    assert_eq!(count(&app, "SELECT COUNT(*) AS n FROM tao_deposits"), 8);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM tao_deposits WHERE status = 'dust'"
        ),
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) AS n FROM ledger_transactions WHERE idempotency_key LIKE 'tao:%'"
        ),
        7
    );
    let view = deposit(&app, &owner_a, &a1);
    assert_eq!(
        (view["credited"].as_i64(), view["credited_rao"].as_i64()),
        (Some(10 * UNIT), Some(10 * TAO))
    );
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(ok, "{report}");
}

/// A tenant priced by the operator's price endpoint (tests/py/price_standin.py): each deposit is
/// credited at the price read when its block is applied, and that rate is stored on it; while the
/// endpoint fails, the block waits and nothing is credited at a stale or made-up rate.
fn tao_on_the_price_feed_is_credited_at_the_rate_of_its_block(b: Backend) {
    let chain = Chain::start();
    let feed = Proc::start_program(
        &std::env::var("TAOGATE_TEST_PYTHON").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned()
        }),
        &[
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/price_standin.py"),
            "--port",
            "0",
            "--body",
            r#"{"bittensor": {"usd": 250.5}}"#,
        ],
    );
    let set_price = |status: u16, body: Value| {
        ureq::post(&format!("{}_standin/set", feed.url))
            .send_json(json!({"status": status, "body": body}))
            .unwrap();
    };
    let app = TestApp::spawn_with(
        b,
        Figment::new()
            .merge(Serialized::default("payments.tao.mnemonic", PHRASE))
            .merge(Serialized::default("payments.tao.rpc_url", &chain.proc.url))
            .merge(Serialized::default("payments.tao.poll_ms", 100))
            .merge(Serialized::default(
                "payments.tao.price_url",
                format!("{}price", feed.url),
            ))
            .merge(Serialized::default(
                "payments.tao.price_pointer",
                "/bittensor/usd",
            ))
            .merge(Serialized::default("payments.tao.price_currency", "usd")),
    );
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let a1 = app.account(&owner, "A1");
    let put = |body: Value| {
        app.put("/api/v1/billing/tao")
            .bearer(&owner.token)
            .json(body)
    };
    put(json!({"currency": "usd", "rate_source": "feed", "nano_per_tao": 5}))
        .expect(400, "invalid_request");
    put(json!({"currency": "eur", "rate_source": "feed"})).expect(400, "invalid_request");
    put(json!({"currency": "tao", "rate_source": "feed"})).expect(400, "invalid_request");
    let shown = put(json!({"currency": "usd", "rate_source": "feed"}))
        .expect(200, "")
        .ok();
    assert_eq!(
        (
            shown["rate_source"].as_str(),
            shown["nano_per_tao"].is_null()
        ),
        (Some("feed"), true)
    );
    let view = deposit(&app, &owner, &a1);
    assert_eq!(
        (view["rate_source"].as_str(), view["rate"].as_i64()),
        (Some("feed"), Some(250_500_000_000))
    );
    let addr = view["address"].as_str().unwrap().to_owned();
    // 2 TAO at 250.5 → 501 units.
    let n = chain.block(&[(&addr, 2 * TAO)]);
    chain.finalize(n);
    wait_until("the first deposit", || {
        balance(&app, &owner, &a1) == 501 * UNIT
    });
    // The feed fails: the next deposit's block waits; the view shows no rate.
    set_price(503, json!({}));
    let n = chain.block(&[(&addr, 3 * TAO)]);
    chain.finalize(n);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(balance(&app, &owner, &a1), 501 * UNIT);
    assert!(deposit(&app, &owner, &a1)["rate"].is_null());
    // The feed answers again, at another price: credited once, at that price.
    set_price(200, json!({"bittensor": {"usd": "300"}}));
    wait_until("the second deposit", || {
        balance(&app, &owner, &a1) == 801 * UNIT
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(balance(&app, &owner, &a1), 801 * UNIT);
    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        amount_rao: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        rate: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        rate_source: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        credited_nano: i64,
    }
    let mut c = app.db.get().unwrap();
    let rows: Vec<Row> = diesel::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT amount_rao, rate, rate_source, credited_nano FROM tao_deposits ORDER BY block_number",
        ),
        &mut *c,
    )
    .unwrap();
    let feed_row = |amount_rao, rate, credited_nano| Row {
        amount_rao,
        rate,
        rate_source: "feed".into(),
        credited_nano,
    };
    assert_eq!(
        rows,
        [
            feed_row(2 * TAO, 250_500_000_000, 501 * UNIT),
            feed_row(TAO, 300 * UNIT, 300 * UNIT)
        ]
    );
    let (ok, report) = reconcile_with_cache(&app.db_url(), false, None);
    assert!(ok, "{report}");
}

both_backends!(
    tao_deposits_are_credited_once_after_finality,
    tao_on_the_price_feed_is_credited_at_the_rate_of_its_block
);

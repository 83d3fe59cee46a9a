//! The ledger through the API and `taogate reconcile`, on both backends: adjustments post balanced
//! transactions exactly once per key (also under concurrency), balances are projections of the
//! entries, the ledger is append-only, and reconcile catches and repairs drift.

use std::collections::HashSet;
use std::process::Command;

use diesel::RunQueryDsl;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, Session, TestApp};

const UNIT: i64 = 1_000_000_000;

fn adjust(
    app: &TestApp,
    who: &Session,
    account: &str,
    amount: i64,
    key: &str,
) -> crate::helpers::Resp {
    app.post(&format!("/api/v1/accounts/{account}/adjustments"))
        .bearer(&who.token)
        .header("Idempotency-Key", key)
        .json(json!({"amount_nano": amount, "reason": "goodwill credit"}))
}

pub(crate) fn balance(app: &TestApp, who: &Session, account: &str) -> i64 {
    app.get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&who.token)
        .send()
        .expect(200, "")
        .ok()["balance_nano"]
        .as_i64()
        .unwrap()
}

fn reconcile_cli(db_url: &str, rebuild: bool) -> (bool, serde_json::Value) {
    reconcile_with_cache(db_url, rebuild, None)
}

/// `taogate reconcile` on `db_url`, checking the balances cached in Redis (url, prefix) if given.
pub(crate) fn reconcile_with_cache(
    db_url: &str,
    rebuild: bool,
    redis: Option<(&str, &str)>,
) -> (bool, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taogate"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .arg("reconcile");
    if let Some((url, prefix)) = redis {
        cmd.env("REDIS_URL", url)
            .env("TAOGATE_REDIS_PREFIX", prefix);
    }
    if rebuild {
        cmd.arg("--rebuild");
    }
    let out = cmd.output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        json!({"stdout": String::from_utf8_lossy(&out.stdout), "stderr": String::from_utf8_lossy(&out.stderr)})
    });
    if !out.status.success() {
        eprintln!(
            "reconcile ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), report)
}

fn adjustments_post_once_and_balances_follow_the_entries(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    let account = app.account(&owner, "Customer");
    let first = adjust(&app, &owner, &account, 5 * UNIT, "k1")
        .expect(201, "")
        .ok();
    assert_eq!(first["balance_nano"], 5 * UNIT);
    // The same key again: the stored response, and nothing moved twice.
    let again = adjust(&app, &owner, &account, 5 * UNIT, "k1")
        .expect(201, "")
        .ok();
    assert_eq!(again["transaction_id"], first["transaction_id"]);
    adjust(&app, &owner, &account, -2 * UNIT, "k2").expect(201, "");
    assert_eq!(balance(&app, &owner, &account), 3 * UNIT);
    adjust(&app, &owner, &account, 0, "k3").expect(400, "invalid_request");

    // Who may move and read money.
    let dev = app.user(&owner, &slug, "developer", Some(&account));
    let finance = app.user(&owner, &slug, "finance", None);
    adjust(&app, &dev, &account, UNIT, "k4").expect(403, "permission_denied");
    adjust(&app, &finance, &account, UNIT, "k5").expect(403, "permission_denied");
    let own = app
        .get("/api/v1/balance")
        .bearer(&dev.token)
        .send()
        .expect(200, "")
        .ok();
    assert_eq!(own["balance_nano"], 3 * UNIT);
    assert_eq!(own["spendable_nano"], 3 * UNIT, "prepaid: the balance");
    assert_eq!(balance(&app, &finance, &account), 3 * UNIT);
    let (_, _, stranger) = app.tenant(&op, false);
    app.get(&format!("/api/v1/balance?account_id={account}"))
        .bearer(&stranger.token)
        .send()
        .expect(404, "not_found");
    adjust(&app, &stranger, &account, UNIT, "k6").expect(404, "not_found");

    let statement = app
        .get(&format!("/api/v1/ledger?account_id={account}"))
        .bearer(&finance.token)
        .send()
        .expect(200, "")
        .ok();
    let amounts: Vec<i64> = statement["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount_nano"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![5 * UNIT, -2 * UNIT]);
    assert_eq!(statement["data"][0]["memo"], "goodwill credit");
    assert_eq!(app.count("ledger_transactions"), 2);
    assert_eq!(app.count("ledger_entries"), 4);
    // Postpaid: the credit limit adds to what may be spent.
    app.patch(&format!("/api/v1/accounts/{account}"))
        .bearer(&owner.token)
        .json(json!({"billing_mode": "postpaid", "credit_limit_nano": 10 * UNIT}))
        .expect(200, "");
    let own = app.get("/api/v1/balance").bearer(&dev.token).send().ok();
    assert_eq!(own["spendable_nano"], 13 * UNIT);
}

fn concurrent_adjustments_keep_every_invariant(b: Backend) {
    let app = TestApp::spawn(b);
    let (owner, account, _, _) = app.api_key();
    // 8 clients × 12 adjustments; every key is sent twice, by two different clients.
    let amounts = |i: i64| {
        if i % 3 == 0 {
            -(i + 1) * 1_000
        } else {
            (i + 1) * 7_919
        }
    };
    std::thread::scope(|s| {
        for client in 0..8i64 {
            let (app, owner, account) = (&app, &owner, &account);
            s.spawn(move || {
                for j in 0..12i64 {
                    let i = (client / 2) * 12 + j;
                    let res = adjust(app, owner, account, amounts(i), &format!("c{i}"));
                    assert!(
                        [201, 409].contains(&res.status),
                        "{}: {}",
                        res.status,
                        res.text
                    );
                }
            });
        }
    });
    let expected: i64 = (0..48).map(amounts).sum();
    assert_eq!(balance(&app, &owner, &account), expected);
    assert_eq!(app.count("ledger_transactions"), 48, "each key posted once");
    let mut conn = app.db.get().unwrap();
    let report = taogate::models::ledger::reconcile(&mut conn, false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.entries, 96);
    let keys: HashSet<String> = {
        #[derive(diesel::QueryableByName)]
        struct K {
            #[diesel(sql_type = diesel::sql_types::Text)]
            idempotency_key: String,
        }
        diesel::sql_query("SELECT idempotency_key FROM ledger_transactions")
            .load::<K>(&mut *conn)
            .unwrap()
            .into_iter()
            .map(|k| k.idempotency_key)
            .collect()
    };
    assert_eq!(keys.len(), 48);
}

fn the_ledger_is_append_only_and_reconcile_repairs_drift(b: Backend) {
    let app = TestApp::spawn(b);
    let (owner, account, _, _) = app.api_key();
    adjust(&app, &owner, &account, 4 * UNIT, "a").expect(201, "");
    let db_url = app.db_url();
    let (clean, report) = reconcile_cli(&db_url, false);
    assert!(clean, "{report}");
    assert_eq!(report["sum_of_all_entries"], 0);
    let mut conn = app.db.get().unwrap();
    for sql in [
        "UPDATE ledger_entries SET amount_nano = 1",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_transactions",
    ] {
        assert!(
            diesel::sql_query(sql).execute(&mut *conn).is_err(),
            "{sql} must be refused"
        );
    }
    // A cached balance that drifted from its entries is reported (non-zero exit) and rebuilt.
    diesel::sql_query("UPDATE ledger_balances SET balance_nano = balance_nano + 7")
        .execute(&mut *conn)
        .unwrap();
    drop(conn);
    let (clean, report) = reconcile_cli(&db_url, false);
    assert!(!clean);
    assert_eq!(
        report["balance_drift"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    let (_, report) = reconcile_cli(&db_url, true);
    assert_eq!(report["rebuilt"], 2);
    let (clean, report) = reconcile_cli(&db_url, false);
    assert!(clean, "{report}");
    assert_eq!(balance(&app, &owner, &account), 4 * UNIT);
}

/// Ledger accounts are append-only like the rest of the ledger; an entry must name an existing
/// transaction and account (PostgreSQL: a check per statement, SQLite: foreign keys), and one that
/// got in with the checks bypassed is reported by reconcile.
fn entries_name_existing_parents_and_accounts_are_append_only(b: Backend) {
    #[derive(diesel::QueryableByName)]
    struct Ids {
        #[diesel(sql_type = diesel::sql_types::Text)]
        transaction_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        account_id: String,
    }
    let app = TestApp::spawn(b);
    let (owner, account, _, _) = app.api_key();
    adjust(&app, &owner, &account, 4 * UNIT, "a").expect(201, "");
    let mut conn = app.db.get().unwrap();
    let known: Ids = diesel::sql_query("SELECT transaction_id, account_id FROM ledger_entries")
        .get_result(&mut *conn)
        .unwrap();
    let now = "'2026-11-26 00:00:00'";
    let entry = |id: &str, txn: &str, acct: &str| {
        format!(
            "INSERT INTO ledger_entries (id, transaction_id, account_id, amount_nano, created_at) \
             VALUES ('{id}', '{txn}', '{acct}', 5, {now})"
        )
    };
    let mut refused = vec![
        entry("e1", "no-such-transaction", &known.account_id),
        entry("e2", &known.transaction_id, "no-such-account"),
        "UPDATE ledger_accounts SET purpose = purpose".to_owned(),
        "DELETE FROM ledger_accounts".to_owned(),
    ];
    if b == Backend::Postgres {
        for table in ["ledger_accounts", "ledger_transactions", "ledger_entries"] {
            refused.push(format!("TRUNCATE {table} CASCADE"));
        }
    }
    for sql in &refused {
        assert!(
            diesel::sql_query(sql).execute(&mut *conn).is_err(),
            "{sql} must be refused"
        );
    }
    let count = |conn: &mut taogate::db::DbConn| {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query("SELECT COUNT(*) AS n FROM ledger_entries")
            .get_result::<N>(conn)
            .unwrap()
            .n
    };
    assert_eq!(count(&mut conn), 2, "nothing of the refused writes stayed");
    let (bypass, restore) = match b {
        Backend::Postgres => (
            "ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_have_parents",
            "ALTER TABLE ledger_entries ENABLE TRIGGER ledger_entries_have_parents",
        ),
        Backend::Sqlite => ("PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = ON"),
    };
    diesel::sql_query(bypass).execute(&mut *conn).unwrap();
    diesel::sql_query(entry("orphan", "no-such-transaction", &known.account_id))
        .execute(&mut *conn)
        .unwrap();
    diesel::sql_query(restore).execute(&mut *conn).unwrap();
    drop(conn);
    let (clean, report) = reconcile_cli(&app.db_url(), false);
    assert!(!clean, "{report}");
    assert_eq!(report["orphan_entries"], json!(["orphan"]), "{report}");
}

both_backends!(
    entries_name_existing_parents_and_accounts_are_append_only,
    adjustments_post_once_and_balances_follow_the_entries,
    concurrent_adjustments_keep_every_invariant,
    the_ledger_is_append_only_and_reconcile_repairs_drift,
);

//! The PostgreSQL bulk usage writer: 1200 records over several tenants and accounts, written in
//! batches, replayed (whole, re-cut, concurrently by two writers), land once each with one
//! `usage:<id>` posting each, balances equal to their entries and to what the per-row path gives;
//! usage is partitioned by month and the writer adds partitions ahead of time.

use std::collections::HashMap;

use chrono::{Duration, NaiveDateTime};
use diesel::{Connection, RunQueryDsl};
use taogate::billing::holds::LedgerSync;
use taogate::billing::metering::bulk::partitions::{Partition, ensure_usage_partitions};
use taogate::billing::metering::writer::{write_batch, write_batch_per_row};
use taogate::db::{Db, DbConn};
use taogate::domain::{AccountId, ApiKeyId, Nano, TenantId};
use taogate::models::ledger::reconcile;
use taogate::models::usage::UsageRecord;

use crate::helpers::{Backend, TestApp, TestDb};

type Syncs = Vec<(TenantId, LedgerSync)>;

/// `n` records over 3 tenants × 4 accounts; some free, some charged only retail or only wholesale.
fn records(n: usize, now: NaiveDateTime) -> Vec<UsageRecord> {
    let tenants: Vec<TenantId> = (0..3).map(|_| TenantId::generate()).collect();
    let accounts: Vec<AccountId> = (0..12).map(|_| AccountId::generate()).collect();
    (0..n)
        .map(|i| {
            let k = i as i64;
            UsageRecord {
                id: uuid::Uuid::now_v7().to_string(),
                request_id: format!("req-{i}"),
                tenant_id: tenants[i % 12 / 4].clone(),
                account_id: accounts[i % 12].clone(),
                api_key_id: ApiKeyId::generate(),
                model: "m".into(),
                prompt_tokens: k,
                completion_tokens: 2 * k,
                estimated: i % 5 == 0,
                status: "ok".into(),
                worker: (i % 2 == 0).then(|| "w".into()),
                upstream: None,
                miner_uid: Some(format!("{i}")),
                started_at: now - Duration::milliseconds(k),
                ended_at: now,
                ttft_ms: (i % 3 == 0).then_some(k),
                latency_ms: k,
                wholesale_cost_nano: Some(Nano(k)),
                charged_nano: Nano(if i % 7 == 0 { 0 } else { 1_000 + 13 * k }),
                tenant_charged_nano: Nano(if i % 11 == 0 { 0 } else { 400 + 5 * k }),
                usage_source: taogate::domain::UsageSource::Upstream,
                prompt_nano_per_mtok: None,
                completion_nano_per_mtok: None,
                request_nano: None,
            }
        })
        .collect()
}

fn write(db: &Db, batch: &[UsageRecord], bulk: bool) -> Syncs {
    let batch = batch.to_vec();
    actix_web::rt::System::new()
        .block_on(db.write(move |c| {
            let written = if bulk {
                write_batch(c, &batch)
            } else {
                write_batch_per_row(c, &batch)
            };
            written.map_err(anyhow::Error::from)
        }))
        .unwrap()
}

fn write_all(db: &Db, records: &[UsageRecord], batch: usize, bulk: bool) -> Syncs {
    records
        .chunks(batch)
        .flat_map(|b| write(db, b, bulk))
        .collect()
}

/// The first pass: 300 records, then all of them in batches of 500 (the first batch part replay).
fn first_pass(db: &Db, records: &[UsageRecord], bulk: bool) -> Syncs {
    let mut syncs = write_all(db, &records[..300], 500, bulk);
    syncs.extend(write_all(db, records, 500, bulk));
    syncs
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn scalar(db: &Db, sql: &str) -> i64 {
    let mut conn = db.get().unwrap();
    diesel::sql_query(sql)
        .get_result::<N>(&mut *conn)
        .unwrap()
        .n
}

/// Every ledger balance by owner and purpose (comparable across databases), with its entries' sum.
fn balances(db: &Db) -> HashMap<String, (i64, i64)> {
    #[derive(diesel::QueryableByName)]
    struct B {
        #[diesel(sql_type = diesel::sql_types::Text)]
        owner: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        balance: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        entries: i64,
    }
    let mut conn = db.get().unwrap();
    diesel::sql_query(
        "SELECT a.owner_kind || ':' || a.owner_id || ':' || a.purpose AS owner, \
         b.balance_nano AS balance, CAST(COALESCE((SELECT SUM(e.amount_nano) FROM ledger_entries e \
         WHERE e.account_id = a.id), 0) AS BIGINT) AS entries \
         FROM ledger_accounts a JOIN ledger_balances b ON b.account_id = a.id",
    )
    .load::<B>(&mut *conn)
    .unwrap()
    .into_iter()
    .map(|b| (b.owner, (b.balance, b.entries)))
    .collect()
}

/// The ledger state a batch reported per account: (tenant, account, balance, committed ids).
fn reported(syncs: &[(TenantId, LedgerSync)]) -> Vec<(String, String, i64, Vec<String>)> {
    syncs
        .iter()
        .map(|(t, s)| {
            (
                t.to_string(),
                s.account.to_string(),
                s.balance.0,
                s.committed.clone(),
            )
        })
        .collect()
}

fn assert_written_once(db: &Db, records: &[UsageRecord]) {
    let charged = records
        .iter()
        .filter(|r| r.charged_nano.0 != 0 || r.tenant_charged_nano.0 != 0)
        .count() as i64;
    assert_eq!(
        scalar(db, "SELECT COUNT(*) AS n FROM usage_records"),
        records.len() as i64
    );
    assert_eq!(
        scalar(db, "SELECT COUNT(*) AS n FROM ledger_transactions"),
        charged
    );
    assert_eq!(
        scalar(
            db,
            "SELECT COUNT(*) AS n FROM usage_records u WHERE (SELECT COUNT(*) FROM \
             ledger_transactions t WHERE t.idempotency_key = 'usage:' || u.id) <> \
             CASE WHEN u.charged_nano <> 0 OR u.tenant_charged_nano <> 0 THEN 1 ELSE 0 END"
        ),
        0,
        "each charged record has exactly one posting, a free one none"
    );
    assert_eq!(
        scalar(
            db,
            "SELECT CAST(COALESCE(SUM(amount_nano), 0) AS BIGINT) AS n FROM ledger_entries"
        ),
        0
    );
    let mut conn = db.get().unwrap();
    let report = reconcile(&mut conn, false).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn bulk_writes_each_record_and_charge_once_and_replays_change_nothing() {
    let app = TestApp::spawn(Backend::Postgres);
    let now = taogate::db::now();
    let records = records(1200, now);
    let first = first_pass(&app.db, &records, true);
    assert_written_once(&app.db, &records);
    let after = balances(&app.db);
    assert!(after.values().all(|(cached, entries)| cached == entries));

    // Customers pay their retail charges, exactly.
    let mut retail: HashMap<&str, i64> = HashMap::new();
    for r in &records {
        *retail.entry(r.account_id.as_str()).or_default() -= r.charged_nano.0;
    }
    let last: HashMap<&str, i64> = first
        .iter()
        .map(|(_, s)| (s.account.as_str(), s.balance.0))
        .collect();
    assert_eq!(
        last, retail,
        "the last reading of each account is its whole charge"
    );

    // Replays: the same batches, the whole set in one batch with duplicates, other cuts.
    let replay = write_all(&app.db, &records, 500, true);
    let ids = |syncs: &[(TenantId, LedgerSync)]| {
        reported(syncs)
            .into_iter()
            .map(|r| (r.0, r.1, r.3))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&replay),
        ids(&first[first.len() - replay.len()..]),
        "a replay reports the same events…"
    );
    assert!(
        replay
            .iter()
            .all(|(_, s)| last[s.account.as_str()] == s.balance.0),
        "… at the balances they already made"
    );
    let mut doubled = records.clone();
    doubled.extend(records[..300].iter().cloned());
    write(&app.db, &doubled, true);
    write_all(&app.db, &records, 77, true);
    assert_written_once(&app.db, &records);
    assert_eq!(balances(&app.db), after, "replays moved nothing");

    // The per-row path over the same records ends in the same ledger.
    let reference = TestDb::new(Backend::Postgres);
    let rows_db = Db::connect(&reference.url, 2).unwrap();
    let per_row = first_pass(&rows_db, &records, false);
    assert_eq!(reported(&per_row), reported(&first));
    assert_eq!(balances(&rows_db), after);
    assert_written_once(&rows_db, &records);
}

#[test]
fn overlapping_batches_from_two_writers_land_once() {
    let app = TestApp::spawn(Backend::Postgres);
    let records = records(800, taogate::db::now());
    std::thread::scope(|s| {
        let (db, records) = (&app.db, &records);
        s.spawn(move || write_all(db, records, 200, true));
        s.spawn(move || {
            let mut reversed = records.clone();
            reversed.reverse();
            write_all(db, &reversed, 150, true)
        });
    });
    assert_written_once(&app.db, &records);
}

#[test]
fn usage_is_partitioned_by_month_and_partitions_are_added_ahead() {
    let app = TestApp::spawn(Backend::Postgres);
    let now = taogate::db::now();
    let mut conn = app.db.get().unwrap();
    let DbConn::Pg(pg) = &mut *conn else {
        panic!("a PostgreSQL connection")
    };
    // The migration made the months around it; the writer adds the current one and two ahead.
    ensure_usage_partitions(pg, now);
    let later = now + Duration::days(400);
    pg.transaction(|pg| {
        let made = ensure_usage_partitions(pg, later);
        assert!(
            made.iter().all(|(_, p)| *p == Partition::Created),
            "{made:?}"
        );
        let again = ensure_usage_partitions(pg, later);
        assert!(
            again.iter().all(|(_, p)| *p == Partition::Existed),
            "{again:?}"
        );
        // A month whose rows already sit in the default partition cannot get its own: refused,
        // without failing the transaction; its rows stay (and are written) in the default.
        let far = now + Duration::days(1000);
        let early = records(1, far);
        taogate::billing::metering::bulk::write_batch_pg(pg, &early).unwrap();
        let made = ensure_usage_partitions(pg, far);
        assert_eq!(made[0].1, Partition::Refused, "{made:?}");
        assert_eq!(made[1].1, Partition::Created, "{made:?}");
        taogate::billing::metering::bulk::write_batch_pg(pg, &records(3, far)).unwrap();
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
    drop(conn);
    write_all(&app.db, &records(50, now), 500, true);
    let partitions = scalar(
        &app.db,
        "SELECT COUNT(*) AS n FROM pg_inherits WHERE inhparent = 'usage_records'::regclass",
    );
    assert!(
        partitions >= 1 + 3 + 3 + 2,
        "default, now+2, later+2, far+1..2: {partitions}"
    );
    assert_eq!(
        scalar(&app.db, "SELECT COUNT(*) AS n FROM usage_records_default"),
        4,
        "only the far month's rows are in the default partition"
    );
    let month = now.format("usage_records_y%Ym%m").to_string();
    assert_eq!(
        scalar(&app.db, &format!("SELECT COUNT(*) AS n FROM {month}")),
        50
    );
    assert_eq!(
        scalar(&app.db, "SELECT COUNT(*) AS n FROM usage_records"),
        54
    );
}

/// Bad money never halts money: a record that cannot be posted (its charge cannot be negated) is
/// found by splitting its batch, set aside in `usage_dead_letters` with its error, and every other
/// record of that batch and of later batches posts; `taogate reconcile` lists it and stays clean.
fn a_poisoned_record_is_dead_lettered_and_the_rest_posts(b: Backend) {
    use std::sync::Arc;
    use taogate::billing::metering::writer::UsageWriter;
    use taogate::limits::guard::Guard;
    use taogate::limits::memory::MemoryBackend;
    use taogate::limits::{Clock, shared::Shared};
    use taogate::metrics::GatewayMetrics;

    let test_db = TestDb::new(b);
    let db = Db::connect(&test_db.url, 4).unwrap();
    let now = taogate::db::now();
    let mut first = records(40, now);
    first[17].charged_nano = Nano(i64::MIN);
    let poisoned = first[17].id.clone();
    let later = records(10, now);
    let config = taogate::config::Config::load(None, figment::Figment::new()).unwrap();
    let metrics = Arc::new(GatewayMetrics::new());
    let memory = Shared::Memory(MemoryBackend::new(Clock::System));
    let guard = Guard::new(memory, Clock::System, config.limits, metrics.clone());
    let dir = tempfile::tempdir().unwrap();
    let writer = UsageWriter::new(db.clone(), guard, dir.path(), 2).unwrap();
    actix_web::rt::System::new().block_on(async {
        writer.spawn();
        first.iter().cloned().for_each(|r| writer.submit(r));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while metrics.usage_written.get() < 39 || metrics.usage_dead_letters.get() < 1 {
            assert!(std::time::Instant::now() < deadline, "the writer stalled");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        later.iter().cloned().for_each(|r| writer.submit(r));
        while metrics.usage_written.get() < 49 {
            assert!(
                std::time::Instant::now() < deadline,
                "later batches stalled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    assert_eq!(scalar(&db, "SELECT COUNT(*) AS n FROM usage_records"), 49);
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) AS n FROM usage_dead_letters"),
        1
    );
    let (clean, report) = crate::ledger::reconcile_with_cache(&test_db.url, false, None);
    assert!(clean, "{report}");
    assert_eq!(
        report["usage_dead_letters"][0]["id"],
        poisoned.as_str(),
        "{report}"
    );
    assert!(
        report["usage_dead_letters"][0]["error"]
            .as_str()
            .unwrap()
            .contains("out of range"),
        "{report}"
    );
}

crate::both_backends!(a_poisoned_record_is_dead_lettered_and_the_rest_posts);

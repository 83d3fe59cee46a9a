//! The usage batch writer: settled requests are journaled ([`super::journal`]), handed over in
//! memory and written in batches (up to [`max_batch`] records or [`LINGER`]), each batch one
//! database transaction holding the usage
//! records and their ledger postings. Writing is idempotent — a record id is unique and its posting
//! key is `usage:<id>` — so a retried batch neither loses nor doubles a charge. While the database
//! is down, batches wait and retry with backoff; requests keep being served. After a batch commits,
//! the cached balances of the accounts it charged move to the ledger version that includes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::{Connection, RunQueryDsl};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::billing::holds::LedgerSync;
use crate::billing::lines::post_usage;
use crate::billing::metering::journal::Journal;
use crate::db::{Backend, Db, DbConn};
use crate::domain::{AccountId, TenantId};
use crate::limits::guard::Guard;
use crate::metrics::GatewayMetrics;
use crate::models::ledger::{LedgerAccount, PostError};
use crate::models::usage::DeadLetter;
use crate::models::usage::UsageRecord;

/// Records per batch at most: PostgreSQL's set-based path gains from large batches; SQLite's
/// per-row path holds the database's one write lock for the whole batch, so it stays short.
pub fn max_batch(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 2000,
        Backend::Sqlite => 500,
    }
}
pub const LINGER: Duration = Duration::from_millis(10);

/// A journaled record and its journal sequence number.
type Entry = (u64, UsageRecord);

#[derive(Clone)]
pub struct UsageWriter {
    tx: UnboundedSender<Entry>,
    rx: Arc<Mutex<Option<UnboundedReceiver<Entry>>>>,
    db: Db,
    limiter: Arc<Guard>,
    journal: Arc<Journal>,
    /// Batches written at once, each on its own connection (`database.usage_writer_lanes`): on
    /// PostgreSQL the next batch is written while one commits (two lanes ingest ~1.75× one on
    /// 2 cores: bench/results.md). SQLite writes one at a time.
    lanes: usize,
}

/// Writes records not yet written, each with its charge; returns, per charged account, the
/// ledger reading that includes the batch (read under the balance row's lock, in the same
/// transaction, so it is exactly what this commit makes visible or newer). Set-based on PostgreSQL
/// ([`super::bulk`]); on SQLite a statement per usage row (no savepoints), then the postings
/// record by record.
pub fn write_batch(
    conn: &mut DbConn,
    records: &[UsageRecord],
) -> Result<Vec<(TenantId, LedgerSync)>, PostError> {
    match conn {
        DbConn::Pg(pg) => super::bulk::write_batch_pg(pg, records),
        DbConn::Sqlite(sqlite) => {
            UsageRecord::insert_new_sqlite(sqlite, records)?;
            post_and_read(conn, records)
        }
    }
}

/// [`write_batch`] one record at a time (a savepoint per usage row, then [`post_usage`]), on
/// either backend: the reference the set-based paths are measured against (`bench/ingest.rs`).
pub fn write_batch_per_row(
    conn: &mut DbConn,
    records: &[UsageRecord],
) -> Result<Vec<(TenantId, LedgerSync)>, PostError> {
    for record in records {
        let inserted = conn.transaction(|c| record.insert(c));
        match inserted {
            Ok(()) => {}
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {}
            Err(e) => return Err(e.into()),
        }
    }
    post_and_read(conn, records)
}

/// Posts each written record's charge (once: a posting is keyed by its record) and reads, per
/// charged account, the ledger state that includes them.
fn post_and_read(
    conn: &mut DbConn,
    records: &[UsageRecord],
) -> Result<Vec<(TenantId, LedgerSync)>, PostError> {
    let mut charged: BTreeMap<(TenantId, AccountId), Vec<String>> = BTreeMap::new();
    for record in records {
        post_usage(conn, record)?;
        if record.charged_nano.0 != 0 {
            charged
                .entry((record.tenant_id.clone(), record.account_id.clone()))
                .or_default()
                .push(record.id.clone());
        }
    }
    charged
        .into_iter()
        .map(|((tenant, account), committed)| {
            let (balance, version) = LedgerAccount::customer_state(conn, &account)?;
            let sync = LedgerSync {
                account,
                balance,
                version,
                committed,
            };
            Ok((tenant, sync))
        })
        .collect()
}

impl UsageWriter {
    /// A writer over the journal in `journal_dir`; what a previous process journaled and did not
    /// commit is queued first.
    pub fn new(
        db: Db,
        limiter: Arc<Guard>,
        journal_dir: &Path,
        lanes: usize,
    ) -> anyhow::Result<Self> {
        let (journal, recovered) = Journal::open(journal_dir)?;
        let (tx, rx) = unbounded_channel();
        for entry in recovered {
            tx.send(entry).expect("the receiver is held");
        }
        Ok(Self {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
            limiter,
            journal: Arc::new(journal),
            lanes: match db.backend() {
                Backend::Postgres => lanes.max(1),
                Backend::Sqlite => 1,
            },
            db,
        })
    }

    /// Journals the record (durable against a crash from here on) and queues it for the database.
    pub fn submit(&self, record: UsageRecord) {
        let tx = &self.tx;
        let appended = self.journal.append(record, |seq, record| {
            if tx.send((seq, record)).is_err() {
                tracing::error!("usage writer stopped; a usage record was not written");
            }
        });
        match appended {
            Ok(backlog) => self.limiter.metrics().usage_backlog.set(backlog as i64),
            Err(e) => {
                tracing::error!(error = %e, "could not journal a usage record; it is queued in memory only")
            }
        }
    }

    /// Starts the writing loop (once; later calls do nothing). Up to `lanes` batches are in
    /// flight at once; journal lines are dropped in journal order, once their batch and every
    /// batch before it have committed.
    pub fn spawn(&self) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let (db, limiter, journal) = (self.db.clone(), self.limiter.clone(), self.journal.clone());
        let (max_batch, lanes) = (max_batch(db.backend()), self.lanes);
        actix_web::rt::spawn(async move {
            let mut writing = FuturesOrdered::new();
            let mut open = true;
            while open || !writing.is_empty() {
                tokio::select! {
                    Some(done) = writing.next(), if !writing.is_empty() => {
                        let Ok(last) = done else {
                            // The batch's task died: keep its lines (replayed at the next start).
                            tracing::error!("a usage batch write failed hard; usage writer stopped");
                            return;
                        };
                        let j = journal.clone();
                        off_executor("trim the usage journal", move || j.committed(last)).await;
                        limiter.metrics().usage_backlog.set(journal.backlog() as i64);
                    }
                    first = rx.recv(), if open && writing.len() < lanes => {
                        let Some(first) = first else {
                            open = false;
                            continue;
                        };
                        let (batch, closed) = gather(first, &mut rx, max_batch).await;
                        open = !closed;
                        // Disk flushes and trims block: off the executor, or every connection
                        // this thread serves would wait for the disk.
                        let j = journal.clone();
                        off_executor("fsync the usage journal", move || j.sync()).await;
                        let last = batch.last().map_or(0, |(seq, _)| *seq);
                        let records = batch.into_iter().map(|(_, r)| r).collect();
                        let (db, limiter) = (db.clone(), limiter.clone());
                        writing.push_back(actix_web::rt::spawn(async move {
                            let metrics = limiter.metrics().clone();
                            for (tenant, sync) in write_with_retry(&db, Arc::new(records), &metrics).await {
                                limiter.sync(&tenant, &sync).await;
                            }
                            last
                        }));
                    }
                }
            }
        });
    }
}

/// A batch: `first`, then what arrives within [`LINGER`], up to `max` records; and whether the
/// channel closed meanwhile.
async fn gather(first: Entry, rx: &mut UnboundedReceiver<Entry>, max: usize) -> (Vec<Entry>, bool) {
    let mut batch = vec![first];
    let linger = tokio::time::sleep(LINGER);
    tokio::pin!(linger);
    while batch.len() < max {
        tokio::select! {
            next = rx.recv() => match next {
                Some(r) => batch.push(r),
                None => return (batch, true),
            },
            _ = &mut linger => break,
        }
    }
    (batch, false)
}

/// Runs blocking file work on the blocking pool; a failure is logged (the journal is replayed).
async fn off_executor(what: &str, work: impl FnOnce() -> std::io::Result<()> + Send + 'static) {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not {what}"),
        Err(e) => tracing::warn!(error = %e, "did not {what}"),
    }
}

/// Writes a batch, waiting out database outages. A batch that fails for another reason (bad data:
/// an overflow, a missing row…) is split in halves, each written alone, until the records that
/// fail on their own are found; each of those is set aside in `usage_dead_letters` with its error
/// (counted by `taogate_usage_dead_letters_total`, listed by `taogate reconcile`), and everything
/// else posts. Bad money never halts money.
async fn write_with_retry(
    db: &Db,
    batch: Arc<Vec<UsageRecord>>,
    metrics: &GatewayMetrics,
) -> Vec<(TenantId, LedgerSync)> {
    let mut backoff = Duration::from_millis(100);
    let mut alone_failures = 0;
    loop {
        let records = batch.clone();
        let started = std::time::Instant::now();
        let written = db
            .write(move |c| write_batch(c, &records).map_err(WriteError::from))
            .await;
        let e = match written {
            Ok(syncs) => {
                metrics
                    .usage_batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics.usage_written.inc_by(batch.len() as u64);
                let posted = batch
                    .iter()
                    .filter(|r| crate::billing::lines::usage_lines(r).is_ok_and(|l| !l.is_empty()))
                    .count();
                metrics
                    .ledger_postings
                    .with_label_values(&["usage"])
                    .inc_by(posted as u64);
                return syncs;
            }
            Err(e) => e,
        };
        metrics.usage_write_failures.inc();
        if !reachable(db).await {
            tracing::warn!(error = %e, records = batch.len(), retry_in = ?backoff,
                "could not write usage (database unreachable); retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        if batch.len() > 1 {
            tracing::warn!(error = %e, records = batch.len(), "a usage batch failed; splitting it to find the bad records");
            let (left, right) = batch.split_at(batch.len() / 2);
            let (left, right) = (Arc::new(left.to_vec()), Arc::new(right.to_vec()));
            let mut syncs = Box::pin(write_with_retry(db, left, metrics)).await;
            syncs.extend(Box::pin(write_with_retry(db, right, metrics)).await);
            return syncs;
        }
        // One record, failing on its own with the database up: after a few tries, set it aside.
        alone_failures += 1;
        if alone_failures < DEAD_LETTER_AFTER {
            tokio::time::sleep(backoff).await;
            continue;
        }
        let record = batch[0].clone();
        let error = e.to_string();
        tracing::error!(record = %record.id, error = %error, "usage record cannot be posted; dead-lettered");
        let set_aside = db
            .write(move |c| DeadLetter::record(c, &record, &error).map_err(WriteError::from))
            .await;
        match set_aside {
            Ok(()) => {
                metrics.usage_dead_letters.inc();
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not dead-letter a usage record; retrying");
                alone_failures = 0;
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// How often a lone record must fail, with the database reachable, before it is set aside.
const DEAD_LETTER_AFTER: u32 = 3;

/// Whether the database answers at all (a failed batch is then the batch's fault).
async fn reachable(db: &Db) -> bool {
    db.run(|c| diesel::sql_query("SELECT 1").execute(c))
        .await
        .is_ok()
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Post(#[from] PostError),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

impl From<diesel::result::Error> for WriteError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Post(PostError::Db(e))
    }
}

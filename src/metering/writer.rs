//! The usage batch writer: settled requests are handed over in memory and written in batches (up
//! to [`MAX_BATCH`] records or [`LINGER`]), each batch one database transaction holding the usage
//! records and their ledger postings. Writing is idempotent — a record id is unique and its posting
//! key is `usage:<id>` — so a retried batch neither loses nor doubles a charge. While the database
//! is down, batches wait and retry with backoff; requests keep being served.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::Connection;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::db::{Db, DbConn};
use crate::models::ledger::{PostError, charge_usage};
use crate::models::usage::UsageRecord;

pub const MAX_BATCH: usize = 500;
pub const LINGER: Duration = Duration::from_millis(10);

#[derive(Clone)]
pub struct UsageWriter {
    tx: UnboundedSender<UsageRecord>,
    rx: Arc<Mutex<Option<UnboundedReceiver<UsageRecord>>>>,
    db: Db,
}

/// Writes records not yet written, each with its charge; returns how many were new.
fn write_batch(conn: &mut DbConn, records: &[UsageRecord]) -> Result<usize, PostError> {
    let mut new = 0;
    for record in records {
        let inserted = conn.transaction(|c| record.insert(c));
        match inserted {
            Ok(()) => new += 1,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {}
            Err(e) => return Err(e.into()),
        }
        charge_usage(conn, record)?;
    }
    Ok(new)
}

impl UsageWriter {
    pub fn new(db: Db) -> Self {
        let (tx, rx) = unbounded_channel();
        Self {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
            db,
        }
    }

    pub fn submit(&self, record: UsageRecord) {
        if self.tx.send(record).is_err() {
            tracing::error!("usage writer stopped; a usage record was not written");
        }
    }

    /// Starts the writing loop (once; later calls do nothing).
    pub fn spawn(&self) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let db = self.db.clone();
        actix_web::rt::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let linger = tokio::time::sleep(LINGER);
                tokio::pin!(linger);
                while batch.len() < MAX_BATCH {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(r) => batch.push(r),
                            None => break,
                        },
                        _ = &mut linger => break,
                    }
                }
                write_with_retry(&db, Arc::new(batch)).await;
            }
        });
    }
}

async fn write_with_retry(db: &Db, batch: Arc<Vec<UsageRecord>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let records = batch.clone();
        let written = db
            .write(move |c| write_batch(c, &records).map_err(WriteError::from))
            .await;
        match written {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, records = batch.len(), retry_in = ?backoff,
                    "could not write usage; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
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

//! Monthly partitions of `usage_records` (PostgreSQL, migration 000008): the writer keeps the
//! partitions of the current month and the next [`MONTHS_AHEAD`] in place, so a month's partition
//! exists before its first row and no row has to leave the default partition (which PostgreSQL
//! would refuse). The SQL function `usage_records_add_month` names and creates one partition.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{Datelike, Months, NaiveDate, NaiveDateTime};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Date};

/// Months created ahead of the current one.
pub const MONTHS_AHEAD: u32 = 2;

/// The month (`year * 12 + month0`) whose partitions were last found in place; `i64::MIN`: none.
static ENSURED: AtomicI64 = AtomicI64::new(i64::MIN);

/// What became of one month's partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    Existed,
    Created,
    /// Not created (rows of the month already in the default partition, a concurrent creator, no
    /// privilege…): the month's rows go to the default partition.
    Refused,
}

#[derive(QueryableByName)]
struct Added {
    #[diesel(sql_type = Bool)]
    added: bool,
}

/// Creates the missing partitions of `now`'s month and the [`MONTHS_AHEAD`] after it; returns each
/// month (its first day) with what became of it. Never fails the caller's transaction.
pub fn ensure_usage_partitions(
    pg: &mut PgConnection,
    now: NaiveDateTime,
) -> Vec<(NaiveDate, Partition)> {
    let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).unwrap_or(now.date());
    (0..=MONTHS_AHEAD)
        .filter_map(|ahead| first.checked_add_months(Months::new(ahead)))
        .map(|month| (month, add_month(pg, month)))
        .collect()
}

/// [`ensure_usage_partitions`] once a month per process: a batch runs it until one finds every
/// partition in place (one it created commits with its batch, or not at all).
pub fn ensure_for(pg: &mut PgConnection, now: NaiveDateTime) {
    let month = i64::from(now.year()) * 12 + i64::from(now.month0());
    if ENSURED.load(Ordering::Relaxed) == month {
        return;
    }
    let outcome = ensure_usage_partitions(pg, now);
    if outcome.iter().all(|(_, p)| *p != Partition::Created) {
        ENSURED.store(month, Ordering::Relaxed);
    }
}

fn add_month(pg: &mut PgConnection, month: NaiveDate) -> Partition {
    // A savepoint: a refused partition must not abort the caller's transaction.
    let added = pg.transaction(|c| {
        diesel::sql_query("SELECT usage_records_add_month($1) AS added")
            .bind::<Date, _>(month)
            .get_result::<Added>(c)
    });
    match added {
        Ok(Added { added: true }) => Partition::Created,
        Ok(Added { added: false }) => Partition::Existed,
        Err(e) => {
            tracing::warn!(error = %e, %month,
                "usage partition not created; the month's rows go to the default partition");
            Partition::Refused
        }
    }
}

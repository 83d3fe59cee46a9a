//! `taogate reconcile --period YYYY-MM`: finance's checks of one month, on top of the ledger's own.
//! For every tenant and account, what an export of the month shows (Σ `amount_nano` of the records
//! it reads, with the same closed-month cutoff) equals what the ledger's usage postings of those
//! records took from the account's balance; and every payment credit of the month has the
//! provider's notification naming it stored in `payment_notifications` (TAO deposits are read from
//! the chain, not notified, and are checked by the watcher's own keys).

use chrono::NaiveDateTime;
use serde::Serialize;

use super::currency_of;
use super::export::{Granularity, Plan, TenantRef, Viewer, selection};
use crate::db::DbConn;
use crate::models::finance::{self, ExportTie, UnbackedCredit};
use crate::models::tenant::Tenant;

/// What the month's checks found.
#[derive(Debug, Serialize)]
pub struct PeriodReport {
    pub month: String,
    pub accounts_checked: usize,
    pub records_checked: i64,
    /// Accounts whose exported total differs from their usage postings.
    pub export_mismatches: Vec<ExportTie>,
    /// Credits no stored notification backs.
    pub credits_without_notification: Vec<UnbackedCredit>,
}

impl PeriodReport {
    pub fn is_clean(&self) -> bool {
        self.export_mismatches.is_empty() && self.credits_without_notification.is_empty()
    }
}

/// Checks the month `[from, to)` (`month` is its `YYYY-MM`) at `now`.
pub fn check(
    conn: &mut DbConn,
    month: &str,
    (from, to): (NaiveDateTime, NaiveDateTime),
    now: NaiveDateTime,
) -> diesel::QueryResult<PeriodReport> {
    let mut report = PeriodReport {
        month: month.to_owned(),
        accounts_checked: 0,
        records_checked: 0,
        export_mismatches: Vec::new(),
        credits_without_notification: Vec::new(),
    };
    let tenants = Tenant::list(conn, "", i64::from(u32::MAX))?;
    for t in tenants {
        let tenant = TenantRef {
            currency: currency_of(conn, &t.id)?,
            id: t.id,
            slug: t.slug,
        };
        let plan = Plan {
            tenants: vec![tenant.clone()],
            account: None,
            from,
            to,
            granularity: Granularity::Month,
            group_by: Vec::new(),
            viewer: Viewer::Operator,
            format: Default::default(),
            now,
        };
        let sel = selection(conn, &plan, &tenant.id, (from, to)).map_err(|e| match e {
            super::export::ExportError::Db(e) => e,
            other => diesel::result::Error::QueryBuilderError(other.to_string().into()),
        })?;
        for tie in finance::export_ties(conn, &sel)? {
            report.accounts_checked += 1;
            report.records_checked += tie.records;
            if tie.exported_nano != tie.posted_nano {
                report.export_mismatches.push(tie);
            }
        }
    }
    report.credits_without_notification = finance::unbacked_credits(conn, from, to)?;
    Ok(report)
}

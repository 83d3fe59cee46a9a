//! `taogate reconcile [--rebuild]`: recomputes every ledger balance from its entries and checks the
//! invariants — Σ of all entries = 0, every transaction sums to zero, cached balance = entries,
//! every charged usage record has exactly its posting and every usage posting its record — and,
//! with Redis configured, every cached spendable balance against the ledger (same version, same
//! amount; no pending usage the ledger already holds). Prints the report as JSON; exits non-zero
//! on any drift. `--rebuild` rewrites drifted ledger balances from the entries (the report still
//! shows what was found); cached balances are never rewritten here (they follow the ledger).
//! `--period YYYY-MM` adds finance's checks of that month ([`crate::finance::reconcile`]).
//! Payment notifications stored but never applied are applied first (see
//! [`crate::billing::payments::inbox::apply_stored`]).

use std::time::Duration;

use serde::Serialize;

use crate::billing::balance::{CacheReport, check_cached};
use crate::config::Config;
use crate::limits::Clock;
use crate::limits::redis::RedisBackend;
use crate::models::ledger;
use crate::models::usage::DeadLetter;
use crate::redis_link::RedisLink;

#[derive(Serialize)]
struct Output {
    #[serde(flatten)]
    ledger: ledger::Report,
    /// `null` without Redis: the embedded mode's cache lives in the server process.
    cached_balances: Option<CacheReport>,
    /// Usage records the writer could not post, set aside with their error: not drift (the
    /// ledger never saw them) but charges someone must look at. They do not fail the exit code.
    usage_dead_letters: Vec<DeadLetterView>,
    /// Payment notifications that were stored (verified) but never applied — a crash between the
    /// two and no redelivery — applied now, before the ledger is checked.
    payment_notifications_applied: usize,
    /// With `--period YYYY-MM`: exports against usage postings, credits against notifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<crate::finance::reconcile::PeriodReport>,
}

#[derive(Serialize)]
struct DeadLetterView {
    id: String,
    tenant_id: String,
    account_id: String,
    error: String,
    created_at: String,
}

/// Returns whether the ledger (and the cache) was clean.
pub async fn run(config: Config, rebuild: bool, period: Option<String>) -> anyhow::Result<bool> {
    config.validate(false)?;
    let bounds = match &period {
        Some(m) => Some(
            crate::finance::statement::month_range(m)
                .ok_or_else(|| anyhow::anyhow!("--period: a month, YYYY-MM"))?,
        ),
        None => None,
    };
    let db = super::open_db(&config, false)?;
    let notifications = db
        .write(crate::billing::payments::inbox::apply_stored)
        .await
        .map_err(|e| anyhow::anyhow!("stored payment notifications could not be applied: {e}"))?;
    if notifications > 0 {
        eprintln!(
            "{notifications} stored payment notification(s) had not been applied; applied now"
        );
    }
    let report = db.run(move |c| ledger::reconcile(c, rebuild)).await?;
    let dead: Vec<DeadLetterView> = db
        .run(DeadLetter::all)
        .await?
        .into_iter()
        .map(|d| DeadLetterView {
            id: d.id,
            tenant_id: d.tenant_id.to_string(),
            account_id: d.account_id.to_string(),
            error: d.error,
            created_at: d.created_at.and_utc().to_rfc3339(),
        })
        .collect();
    if !dead.is_empty() {
        eprintln!(
            "{} usage record(s) could not be posted and were dead-lettered (usage_dead_letters)",
            dead.len()
        );
    }
    let cache = if config.redis_url.is_empty() {
        None
    } else {
        let link = RedisLink::new(&config.redis_url, Duration::from_secs(5))?;
        let backend = RedisBackend::new(link, &config.redis_prefix, Clock::System);
        Some(check_cached(&db, &backend).await?)
    };
    let period_report = match (period, bounds) {
        (Some(month), Some(bounds)) => {
            let now = crate::db::now();
            Some(
                db.run(move |c| crate::finance::reconcile::check(c, &month, bounds, now))
                    .await?,
            )
        }
        _ => None,
    };
    if let Some(p) = period_report.as_ref().filter(|p| !p.is_clean()) {
        eprintln!(
            "period {}: {} account(s) whose export differs from their usage postings, {} credit(s) without a stored notification",
            p.month,
            p.export_mismatches.len(),
            p.credits_without_notification.len()
        );
    }
    let clean = report.is_clean()
        && cache.as_ref().is_none_or(CacheReport::is_clean)
        && period_report.as_ref().is_none_or(|p| p.is_clean());
    if !report.is_clean() {
        eprintln!(
            "ledger drift: {} entry(ies) without transaction or account, {} unbalanced transaction(s), {} account(s) whose cached balance differs, Σ entries = {}, \
             {} usage record(s) without posting, {} posting(s) without usage, {} amount mismatch(es)",
            report.orphan_entries.len(),
            report.unbalanced_transactions.len(),
            report.balance_drift.len(),
            report.sum_of_all_entries,
            report.usage_without_posting.len(),
            report.postings_without_usage.len(),
            report.usage_amount_mismatch.len()
        );
    }
    if let Some(c) = cache.as_ref().filter(|c| !c.is_clean()) {
        eprintln!(
            "cached balance drift: {} account(s) cached at the ledger's version with another amount, \
             {} pending usage event(s) already in the ledger",
            c.mismatched.len(),
            c.stale_pending.len()
        );
    }
    let output = Output {
        ledger: report,
        cached_balances: cache,
        usage_dead_letters: dead,
        payment_notifications_applied: notifications,
        period: period_report,
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(clean)
}

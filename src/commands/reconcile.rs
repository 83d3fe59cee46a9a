//! `taogate reconcile [--rebuild]`: recomputes every ledger balance from its entries and checks the
//! invariants — Σ of all entries = 0, every transaction sums to zero, cached balance = entries,
//! every charged usage record has exactly its posting and every usage posting its record.
//! Prints the report as JSON; exits non-zero on any drift. `--rebuild` rewrites drifted cached
//! balances from the entries (the report still shows what was found).

use crate::config::Config;
use crate::models::ledger;

/// Returns whether the ledger was clean.
pub async fn run(config: Config, rebuild: bool) -> anyhow::Result<bool> {
    config.validate(false)?;
    let db = super::open_db(&config, false)?;
    let report = db.run(move |c| ledger::reconcile(c, rebuild)).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.is_clean() {
        eprintln!(
            "ledger drift: {} unbalanced transaction(s), {} account(s) whose cached balance differs, Σ entries = {}, \
             {} usage record(s) without posting, {} posting(s) without usage, {} amount mismatch(es)",
            report.unbalanced_transactions.len(),
            report.balance_drift.len(),
            report.sum_of_all_entries,
            report.usage_without_posting.len(),
            report.postings_without_usage.len(),
            report.usage_amount_mismatch.len()
        );
    }
    Ok(report.is_clean())
}

//! Keeping each account's cached spendable balance (in Redis, or in process) in step with the
//! ledger: on first use (an admission that finds no cached balance), after a top-up or adjustment,
//! after every batch the usage writer commits, and on a timer for accounts in use. A sync carries
//! the ledger balance with its version and the usage events it includes, so nothing in flight is
//! counted twice or missed (see [`crate::billing::holds`]).

use std::sync::Arc;
use std::time::Duration;

use crate::billing::holds::LedgerSync;
use crate::db::{Db, DbError};
use crate::domain::{AccountId, Nano, TenantId};
use crate::limits::Backend;
use crate::limits::guard::Guard;
use crate::models::ledger::LedgerAccount;
use crate::models::usage::UsageRecord;

/// How often accounts with holds are re-synchronised from the ledger.
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// Reads the account's ledger balance and brings its cached balance up to it; pending usage
/// events already committed are retired with it.
pub async fn resync(
    db: &Db,
    limiter: &Arc<Guard>,
    tenant: &TenantId,
    account: &AccountId,
) -> Result<(), DbError> {
    let pending = limiter
        .balance(tenant, account)
        .await
        .ok()
        .flatten()
        .map(|(_, events)| events)
        .unwrap_or_default();
    let id = account.clone();
    let sync = db
        .run(move |c| {
            // Committed events first, the balance after: the balance read includes every one of them.
            let committed = UsageRecord::existing_ids(c, &pending)?;
            let (balance, version) = LedgerAccount::customer_state(c, &id)?;
            Ok(LedgerSync {
                account: id,
                balance,
                version,
                committed,
            })
        })
        .await?;
    limiter.sync(tenant, &sync).await;
    Ok(())
}

/// Re-synchronises the accounts that took holds on this replica, every [`RESYNC_EVERY`].
pub fn spawn_resync_timer(db: Db, limiter: Arc<Guard>) {
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(RESYNC_EVERY).await;
            for (tenant, account) in limiter.take_touched() {
                if let Err(e) = resync(&db, &limiter, &tenant, &account).await {
                    tracing::warn!(error = %e, "could not re-synchronise a cached balance");
                }
            }
        }
    });
}

/// How the cached balances compare with the ledger (`taogate reconcile`).
#[derive(Debug, Default, serde::Serialize)]
pub struct CacheReport {
    /// Customer balances that have a cached copy.
    pub checked: usize,
    /// Cached at an older ledger version (a sync still to come; not drift).
    pub behind: Vec<AccountId>,
    /// Cached at the ledger's version with another amount: (account, cached, ledger).
    pub mismatched: Vec<(AccountId, Nano, Nano)>,
    /// Pending usage events already in the ledger while the cache is at the ledger's version
    /// (counted twice against spendable).
    pub stale_pending: Vec<String>,
    /// Σ of open holds across accounts (informational).
    pub held: Nano,
}

impl CacheReport {
    pub fn is_clean(&self) -> bool {
        self.mismatched.is_empty() && self.stale_pending.is_empty()
    }
}

/// Compares every cached customer balance in `backend` with the ledger.
pub async fn check_cached<B: Backend>(db: &Db, backend: &B) -> anyhow::Result<CacheReport> {
    let states = db.run(LedgerAccount::customer_states).await?;
    let mut report = CacheReport::default();
    for (tenant, account, balance, version) in states {
        let Some((cached, pending)) = backend.balance(&tenant, &account).await? else {
            continue;
        };
        report.checked += 1;
        report.held = Nano(report.held.0.saturating_add(cached.held.0));
        if cached.version < version {
            report.behind.push(account);
            continue;
        }
        if cached.ledger != balance || cached.version > version {
            report
                .mismatched
                .push((account.clone(), cached.ledger, balance));
        }
        let committed = db
            .run(move |c| UsageRecord::existing_ids(c, &pending))
            .await?;
        report.stale_pending.extend(committed);
    }
    Ok(report)
}

//! The PostgreSQL usage batch writer: [`write_batch_pg`] writes what the per-row
//! [`write_batch_per_row`](super::writer::write_batch_per_row) writes — each usage record once, its
//! `usage:<id>` ledger transaction once with entries summing to zero, every balance moved by its
//! entries — in a fixed handful of set-based statements per batch instead of about ten per record.
//! It runs inside the caller's transaction; a replayed batch changes nothing (the records and the
//! idempotency keys are already there). Owns the monthly usage partitions ([`partitions`]).

mod accounts;
mod ledger;
pub mod partitions;
mod usage;

use std::collections::{BTreeMap, HashMap};

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};

use crate::billing::holds::LedgerSync;
use crate::domain::{AccountId, Nano, TenantId};
use crate::models::ledger::PostError;
use crate::models::usage::UsageRecord;
use accounts::Key;

/// Writes the records not yet written and posts their charges; returns, per charged account, its
/// balance and version read under the row lock the postings took (as `write_batch` does).
pub fn write_batch_pg(
    pg: &mut PgConnection,
    records: &[UsageRecord],
) -> Result<Vec<(TenantId, LedgerSync)>, PostError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let now = crate::db::now();
    // First: a new partition locks the whole table, so take it before any row lock.
    partitions::ensure_for(pg, now);
    usage::insert(pg, records)?;
    let accounts = accounts::resolve(pg, &accounts::wanted(records), now)?;
    ledger::post(pg, records, &accounts, now)?;
    Ok(syncs(pg, records, &accounts)?)
}

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = Text)]
    account_id: String,
    #[diesel(sql_type = BigInt)]
    balance_nano: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// Per account charged in `records` (tenant, account order): its ledger balance and version, with
/// the ids of its records (all of them: replayed ones are in this version too).
fn syncs(
    pg: &mut PgConnection,
    records: &[UsageRecord],
    accounts: &HashMap<Key, String>,
) -> QueryResult<Vec<(TenantId, LedgerSync)>> {
    let mut charged: BTreeMap<(&TenantId, &AccountId), Vec<String>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.charged_nano.0 != 0) {
        charged
            .entry((&r.tenant_id, &r.account_id))
            .or_default()
            .push(r.id.clone());
    }
    let ledger_id = |account: &AccountId| accounts.get(&Key::customer(account));
    let ids: Vec<&String> = charged.keys().filter_map(|(_, a)| ledger_id(a)).collect();
    let states: HashMap<String, (i64, i64)> = diesel::sql_query(
        "SELECT account_id, balance_nano, version FROM ledger_balances WHERE account_id = ANY($1)",
    )
    .bind::<Array<Text>, _>(&ids)
    .load::<State>(pg)?
    .into_iter()
    .map(|s| (s.account_id, (s.balance_nano, s.version)))
    .collect();
    Ok(charged
        .into_iter()
        .map(|((tenant, account), committed)| {
            let (balance, version) = ledger_id(account)
                .and_then(|id| states.get(id))
                .copied()
                .unwrap_or((0, 0));
            let sync = LedgerSync {
                account: account.clone(),
                balance: Nano(balance),
                version,
                committed,
            };
            (tenant.clone(), sync)
        })
        .collect())
}

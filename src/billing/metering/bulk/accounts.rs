//! The ledger accounts a usage batch posts to, found in one statement and, the first time, created
//! with their zero balance rows in one more — the set-based form of [`LedgerAccount::ensure`]
//! (same accounts, same uniqueness on owner and purpose).
//!
//! [`LedgerAccount::ensure`]: crate::models::ledger::LedgerAccount::ensure

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Timestamp};

pub use crate::billing::lines::LedgerRef as Key;
use crate::billing::lines::usage_lines;
use crate::domain::TenantId;
use crate::models::usage::UsageRecord;

/// The accounts `records` post to (their [`usage_lines`]), each with the tenant it belongs to.
pub fn wanted(records: &[UsageRecord]) -> HashMap<Key, Option<TenantId>> {
    let mut wanted = HashMap::new();
    for r in records {
        // A record whose lines cannot be built fails where they are posted.
        for (ledger, _) in usage_lines(r).unwrap_or_default() {
            let tenant = ledger.tenant_of(&r.tenant_id);
            wanted.insert(ledger, tenant);
        }
    }
    wanted
}

/// The ledger account id of every wanted key, creating those missing.
pub fn resolve(
    pg: &mut PgConnection,
    wanted: &HashMap<Key, Option<TenantId>>,
    now: NaiveDateTime,
) -> QueryResult<HashMap<Key, String>> {
    let mut ids = find(pg, wanted.keys())?;
    let missing: Vec<(&Key, &Option<TenantId>)> = wanted
        .iter()
        .filter(|(k, _)| !ids.contains_key(*k))
        .collect();
    if missing.is_empty() {
        return Ok(ids);
    }
    create(pg, &missing, now)?;
    // Ours, or a concurrent writer's (its insert committed before ours went on).
    ids.extend(find(pg, missing.iter().map(|(k, _)| *k))?);
    if ids.len() != wanted.len() {
        return Err(diesel::result::Error::NotFound);
    }
    Ok(ids)
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(embed)]
    key: Key,
}

fn find<'a>(
    pg: &mut PgConnection,
    keys: impl Iterator<Item = &'a Key>,
) -> QueryResult<HashMap<Key, String>> {
    let keys: Vec<&Key> = keys.collect();
    let found: Vec<Found> = diesel::sql_query(
        "SELECT a.id, a.owner_kind, a.owner_id, a.purpose FROM ledger_accounts a \
         JOIN unnest($1, $2, $3) AS w (owner_kind, owner_id, purpose) \
         ON a.owner_kind = w.owner_kind AND a.owner_id = w.owner_id AND a.purpose = w.purpose",
    )
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.owner).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.owner_id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(keys.iter().map(|k| k.purpose).collect::<Vec<_>>())
    .load(pg)?;
    Ok(found.into_iter().map(|f| (f.key, f.id)).collect())
}

/// Inserts the accounts (a concurrent creator's win is no error) and zero balances for those new,
/// in key order (a lock order between writers creating the same accounts).
fn create(
    pg: &mut PgConnection,
    missing: &[(&Key, &Option<TenantId>)],
    now: NaiveDateTime,
) -> QueryResult<usize> {
    diesel::sql_query(
        "WITH created AS ( \
           INSERT INTO ledger_accounts (id, tenant_id, owner_kind, owner_id, purpose, created_at) \
           SELECT w.id, w.tenant_id, w.owner_kind, w.owner_id, w.purpose, $6 \
           FROM unnest($1, $2, $3, $4, $5) AS w (id, tenant_id, owner_kind, owner_id, purpose) \
           ORDER BY w.owner_kind, w.owner_id, w.purpose \
           ON CONFLICT (owner_kind, owner_id, purpose) DO NOTHING RETURNING id) \
         INSERT INTO ledger_balances (account_id, balance_nano, updated_at, version) \
         SELECT id, 0, $6, 0 FROM created",
    )
    .bind::<Array<Text>, _>(
        missing
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(missing.iter().map(|(_, t)| t.as_ref()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(missing.iter().map(|(k, _)| k.owner).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        missing
            .iter()
            .map(|(k, _)| k.owner_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(missing.iter().map(|(k, _)| k.purpose).collect::<Vec<_>>())
    .bind::<Timestamp, _>(now)
    .execute(pg)
}

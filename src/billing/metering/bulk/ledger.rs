//! A batch's usage postings, set-based: every `usage:<record id>` transaction claimed in one
//! statement (`ON CONFLICT (idempotency_key) DO NOTHING RETURNING id` tells which are new), the
//! entries of the new ones copied in (`COPY … BINARY`), and each touched balance moved once by the
//! sum of its new entries, its version bumped once, rows locked in account-id order first.
//! The lines are [`usage_lines`], as the per-row writer posts them.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Timestamp};

use super::accounts::Key;
use crate::billing::amount::MAX_BALANCE_NANO;
use crate::billing::lines::{usage_key, usage_lines};
use crate::db::schema::ledger_entries;
use crate::domain::TransactionKind;
use crate::models::ledger::PostError;
use crate::models::usage::UsageRecord;

/// One record's transaction: a fresh id (used if it is new) and its (account, amount) lines.
struct Charge<'a> {
    record: &'a UsageRecord,
    id: String,
    lines: Vec<(&'a str, i64)>,
}

/// Posts what `records` charged, each once; `accounts` holds every account they post to.
pub fn post(
    pg: &mut PgConnection,
    records: &[UsageRecord],
    accounts: &HashMap<Key, String>,
    now: NaiveDateTime,
) -> Result<(), PostError> {
    let charges = records
        .iter()
        .map(|r| charge(r, accounts))
        .filter_map(Result::transpose)
        .collect::<Result<Vec<_>, _>>()?;
    if charges.is_empty() {
        return Ok(());
    }
    let new = claim(pg, &charges, now)?;
    let fresh: Vec<&Charge<'_>> = charges.iter().filter(|c| new.contains(&c.id)).collect();
    insert_entries(pg, &fresh, now)?;
    move_balances(pg, &fresh, now)
}

/// The lines of one record ([`usage_lines`]) on their ledger account ids (none for a free request).
fn charge<'a>(
    record: &'a UsageRecord,
    accounts: &'a HashMap<Key, String>,
) -> Result<Option<Charge<'a>>, PostError> {
    let mut lines = usage_lines(record)?
        .into_iter()
        .map(|(ledger, amount)| {
            accounts
                .get(&ledger)
                .map(|id| (id.as_str(), amount.0))
                .ok_or(PostError::Db(diesel::result::Error::NotFound))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if lines.is_empty() {
        return Ok(None);
    }
    lines.sort_by(|a, b| a.0.cmp(b.0));
    let id = uuid::Uuid::now_v7().to_string();
    Ok(Some(Charge { record, id, lines }))
}

/// Inserts the transactions whose keys are unused; returns the ids of those inserted.
fn claim(
    pg: &mut PgConnection,
    charges: &[Charge<'_>],
    now: NaiveDateTime,
) -> QueryResult<HashSet<String>> {
    #[derive(QueryableByName)]
    struct Claimed {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let claimed: Vec<Claimed> = diesel::sql_query(
        "INSERT INTO ledger_transactions \
           (id, tenant_id, idempotency_key, kind, reference, memo, created_at) \
         SELECT w.id, w.tenant_id, w.idempotency_key, $6, w.reference, w.memo, $7 \
         FROM unnest($1, $2, $3, $4, $5) AS w (id, tenant_id, idempotency_key, reference, memo) \
         ORDER BY w.idempotency_key \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
    )
    .bind::<Array<Text>, _>(charges.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(
        charges
            .iter()
            .map(|c| &c.record.tenant_id)
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        charges
            .iter()
            .map(|c| usage_key(&c.record.id))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        charges
            .iter()
            .map(|c| c.record.id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        charges
            .iter()
            .map(|c| c.record.model.as_str())
            .collect::<Vec<_>>(),
    )
    .bind::<Text, _>(TransactionKind::Usage)
    .bind::<Timestamp, _>(now)
    .load(pg)?;
    Ok(claimed.into_iter().map(|c| c.id).collect())
}

/// A ledger entry as `COPY` writes it (`ledger_entries`, every column).
#[derive(Insertable)]
#[diesel(table_name = ledger_entries, treat_none_as_default_value = false)]
struct NewEntry<'a> {
    id: String,
    transaction_id: &'a str,
    account_id: &'a str,
    amount_nano: i64,
    created_at: NaiveDateTime,
}

/// The entries of the new transactions, in one `COPY` (they are new rows: nothing to conflict).
fn insert_entries(
    pg: &mut PgConnection,
    fresh: &[&Charge<'_>],
    now: NaiveDateTime,
) -> QueryResult<usize> {
    let entries: Vec<NewEntry<'_>> = fresh
        .iter()
        .flat_map(|c| {
            c.lines.iter().map(|(account, amount)| NewEntry {
                id: uuid::Uuid::now_v7().to_string(),
                transaction_id: &c.id,
                account_id: account,
                amount_nano: *amount,
                created_at: now,
            })
        })
        .collect();
    if entries.is_empty() {
        return Ok(0);
    }
    diesel::copy_from(ledger_entries::table)
        .from_insertable(&entries)
        .execute(pg)
}

/// Adds each account's new entries to its balance, once, bumping its version once; the rows are
/// locked first in one order (byte order of the id, as `NewTransaction::post` sorts), so writers
/// touching the same accounts queue instead of deadlocking.
fn move_balances(
    pg: &mut PgConnection,
    fresh: &[&Charge<'_>],
    now: NaiveDateTime,
) -> Result<(), PostError> {
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    for (account, amount) in fresh.iter().flat_map(|c| &c.lines) {
        *sums.entry(account).or_default() += i128::from(*amount);
    }
    if sums.is_empty() {
        return Ok(());
    }
    let accounts: Vec<&str> = sums.keys().copied().collect();
    let amounts = sums
        .values()
        .map(|s| i64::try_from(*s))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|e| PostError::Db(diesel::result::Error::SerializationError(Box::new(e))))?;
    diesel::sql_query(
        "SELECT account_id FROM ledger_balances WHERE account_id = ANY($1) \
         ORDER BY account_id COLLATE \"C\" FOR UPDATE",
    )
    .bind::<Array<Text>, _>(&accounts)
    .execute(pg)?;
    let moved = diesel::sql_query(
        "UPDATE ledger_balances AS b SET balance_nano = b.balance_nano + d.amount, \
         version = b.version + 1, updated_at = $3 \
         FROM unnest($1, $2) AS d (account_id, amount) WHERE b.account_id = d.account_id \
         AND b.balance_nano BETWEEN -$4::bigint - d.amount AND $4::bigint - d.amount",
    )
    .bind::<Array<Text>, _>(&accounts)
    .bind::<Array<BigInt>, _>(&amounts)
    .bind::<Timestamp, _>(now)
    .bind::<BigInt, _>(MAX_BALANCE_NANO)
    .execute(pg)?;
    if moved != accounts.len() {
        // Every row exists (resolved above and locked): one would leave its range.
        return Err(PostError::OutOfRange);
    }
    Ok(())
}

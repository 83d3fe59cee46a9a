//! The double-entry ledger: accounts, transactions and their entries. A transaction is posted
//! whole or not at all, only if its entries sum to zero, and at most once per idempotency key (a
//! second post with the same key returns the first). Entries are append-only (database triggers);
//! `ledger_balances` is a projection updated in the same database transaction and rebuilt by
//! [`reconcile`].

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::billing::amount::MAX_BALANCE_NANO;
use crate::db::DbConn;
use crate::db::schema::{ledger_accounts, ledger_balances, ledger_entries, ledger_transactions};
use crate::domain::{
    AccountId, LedgerAccountId, LedgerOwner, LedgerPurpose, Nano, TenantId, TransactionKind,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_accounts)]
pub struct LedgerAccount {
    pub id: LedgerAccountId,
    pub tenant_id: Option<TenantId>,
    pub owner_kind: LedgerOwner,
    pub owner_id: String,
    pub purpose: LedgerPurpose,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_transactions)]
pub struct LedgerTransaction {
    pub id: String,
    pub tenant_id: Option<TenantId>,
    pub idempotency_key: String,
    pub kind: TransactionKind,
    pub reference: Option<String>,
    pub memo: Option<String>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = ledger_entries)]
pub struct LedgerEntry {
    pub id: String,
    pub transaction_id: String,
    pub account_id: LedgerAccountId,
    pub amount_nano: Nano,
    pub created_at: NaiveDateTime,
}

impl LedgerEntry {
    /// What transaction `txn` moved on ledger account `account` (0 if nothing).
    pub fn amount_in(conn: &mut DbConn, txn: &str, account: &LedgerAccountId) -> QueryResult<Nano> {
        ledger_entries::table
            .filter(
                ledger_entries::transaction_id
                    .eq(txn)
                    .and(ledger_entries::account_id.eq(account)),
            )
            .select(ledger_entries::amount_nano)
            .load::<Nano>(conn)
            .map(|amounts| Nano(amounts.iter().map(|a| a.0).sum()))
    }
}

/// The operator's own ledger accounts have this owner id.
pub const OPERATOR: &str = "operator";

fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

impl LedgerAccount {
    fn find(
        conn: &mut DbConn,
        owner: LedgerOwner,
        owner_id: &str,
        purpose: LedgerPurpose,
    ) -> QueryResult<Option<Self>> {
        ledger_accounts::table
            .filter(
                ledger_accounts::owner_kind
                    .eq(owner)
                    .and(ledger_accounts::owner_id.eq(owner_id))
                    .and(ledger_accounts::purpose.eq(purpose)),
            )
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// The ledger account of `owner` for `purpose`, created (with a zero balance row) on first use.
    pub fn ensure(
        conn: &mut DbConn,
        tenant: Option<&TenantId>,
        owner: LedgerOwner,
        owner_id: &str,
        purpose: LedgerPurpose,
    ) -> QueryResult<Self> {
        if let Some(found) = Self::find(conn, owner, owner_id, purpose)? {
            return Ok(found);
        }
        let now = crate::db::now();
        let account = Self {
            id: LedgerAccountId::generate(),
            tenant_id: tenant.cloned(),
            owner_kind: owner,
            owner_id: owner_id.to_owned(),
            purpose,
            created_at: now,
        };
        // A savepoint: a concurrent creator's unique violation must not abort the caller's transaction.
        let created = conn.transaction(|c| {
            diesel::insert_into(ledger_accounts::table)
                .values(&account)
                .execute(c)?;
            diesel::insert_into(ledger_balances::table)
                .values((
                    ledger_balances::account_id.eq(&account.id),
                    ledger_balances::balance_nano.eq(0i64),
                    ledger_balances::updated_at.eq(now),
                ))
                .execute(c)
        });
        match created {
            Ok(_) => Ok(account),
            Err(e) if is_unique_violation(&e) => {
                Self::find(conn, owner, owner_id, purpose)?.ok_or(diesel::result::Error::NotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// An account's (customer's) balance.
    pub fn customer(
        conn: &mut DbConn,
        tenant: &TenantId,
        account: &AccountId,
    ) -> QueryResult<Self> {
        Self::ensure(
            conn,
            Some(tenant),
            LedgerOwner::Account,
            account.as_str(),
            LedgerPurpose::CustomerBalance,
        )
    }

    /// One of the tenant's own ledger accounts.
    pub fn of_tenant(
        conn: &mut DbConn,
        tenant: &TenantId,
        purpose: LedgerPurpose,
    ) -> QueryResult<Self> {
        Self::ensure(
            conn,
            Some(tenant),
            LedgerOwner::Tenant,
            tenant.as_str(),
            purpose,
        )
    }

    /// A customer's balance and its version (bumped by every posting), without creating the
    /// ledger account: an account that never had one stands at zero, version 0.
    pub fn customer_state(conn: &mut DbConn, account: &AccountId) -> QueryResult<(Nano, i64)> {
        ledger_balances::table
            .inner_join(ledger_accounts::table)
            .filter(
                ledger_accounts::owner_kind
                    .eq(LedgerOwner::Account)
                    .and(ledger_accounts::owner_id.eq(account.as_str()))
                    .and(ledger_accounts::purpose.eq(LedgerPurpose::CustomerBalance)),
            )
            .select((ledger_balances::balance_nano, ledger_balances::version))
            .first::<(i64, i64)>(conn)
            .optional()
            .map(|found| found.map_or((Nano(0), 0), |(b, v)| (Nano(b), v)))
    }

    /// Every customer balance: (tenant, account, balance, version).
    pub fn customer_states(
        conn: &mut DbConn,
    ) -> QueryResult<Vec<(TenantId, AccountId, Nano, i64)>> {
        ledger_balances::table
            .inner_join(ledger_accounts::table)
            .filter(
                ledger_accounts::owner_kind
                    .eq(LedgerOwner::Account)
                    .and(ledger_accounts::purpose.eq(LedgerPurpose::CustomerBalance)),
            )
            .select((
                ledger_accounts::tenant_id.assume_not_null(),
                ledger_accounts::owner_id,
                ledger_balances::balance_nano,
                ledger_balances::version,
            ))
            .load(conn)
    }

    /// The cached balance (kept in step with the entries in every posting transaction).
    pub fn balance(conn: &mut DbConn, id: &LedgerAccountId) -> QueryResult<Nano> {
        ledger_balances::table
            .find(id)
            .select(ledger_balances::balance_nano)
            .first::<i64>(conn)
            .map(Nano)
    }
}

/// One line of a transaction: `amount` credits (positive) or debits (negative) `account`.
#[derive(Debug, Clone)]
pub struct Posting {
    pub account: LedgerAccountId,
    pub amount: Nano,
}

/// A transaction to post.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    pub tenant_id: Option<TenantId>,
    pub idempotency_key: String,
    pub kind: TransactionKind,
    pub reference: Option<String>,
    pub memo: Option<String>,
    pub postings: Vec<Posting>,
}

/// What posting did.
#[derive(Debug, Clone)]
pub enum Posted {
    New(LedgerTransaction),
    /// The idempotency key was used before: nothing moved again; this is the first transaction.
    Replayed(LedgerTransaction),
}

#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("a transaction needs at least two non-zero entries that sum to zero")]
    Unbalanced,
    /// A balance would leave `±MAX_BALANCE_NANO` (`billing::amount`), or an amount cannot be
    /// negated: nothing is posted.
    #[error("an amount or a resulting balance is out of range")]
    OutOfRange,
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

impl NewTransaction {
    fn balanced(&self) -> bool {
        let sum: i128 = self.postings.iter().map(|p| i128::from(p.amount.0)).sum();
        self.postings.len() >= 2 && sum == 0 && self.postings.iter().all(|p| p.amount.0 != 0)
    }

    /// Posts the transaction exactly once (see the module docs).
    pub fn post(self, conn: &mut DbConn) -> Result<Posted, PostError> {
        if !self.balanced() {
            return Err(PostError::Unbalanced);
        }
        let now = crate::db::now();
        let txn = LedgerTransaction {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: self.tenant_id,
            idempotency_key: self.idempotency_key,
            kind: self.kind,
            reference: self.reference,
            memo: self.memo,
            created_at: now,
        };
        let claimed = conn.transaction(|c| {
            diesel::insert_into(ledger_transactions::table)
                .values(&txn)
                .execute(c)
        });
        match claimed {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                let first = ledger_transactions::table
                    .filter(ledger_transactions::idempotency_key.eq(&txn.idempotency_key))
                    .select(LedgerTransaction::as_select())
                    .first(conn)?;
                return Ok(Posted::Replayed(first));
            }
            Err(e) => return Err(e.into()),
        }
        let mut postings = self.postings;
        // One lock order for every transaction: no deadlock between two touching the same accounts.
        postings.sort_by(|a, b| a.account.cmp(&b.account));
        let entries: Vec<LedgerEntry> = postings
            .iter()
            .map(|p| LedgerEntry {
                id: uuid::Uuid::now_v7().to_string(),
                transaction_id: txn.id.clone(),
                account_id: p.account.clone(),
                amount_nano: p.amount,
                created_at: now,
            })
            .collect();
        // One statement per entry: multi-row INSERT does not go through diesel's MultiBackend.
        for entry in &entries {
            diesel::insert_into(ledger_entries::table)
                .values(entry)
                .execute(conn)?;
        }
        for p in &postings {
            // The balance may only move within ±MAX_BALANCE_NANO: `balance + amount` in range
            // ⇔ `balance` in `[-MAX - amount, MAX - amount]` (computed here, so SQL never
            // overflows — SQLite would turn the sum into a float).
            let max = i128::from(MAX_BALANCE_NANO);
            let bound = |v: i128| v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
            let amount = i128::from(p.amount.0);
            let (low, high) = (bound(-max - amount), bound(max - amount));
            let updated = diesel::update(
                ledger_balances::table
                    .find(&p.account)
                    .filter(ledger_balances::balance_nano.between(low, high)),
            )
            .set((
                ledger_balances::balance_nano.eq(ledger_balances::balance_nano + p.amount.0),
                ledger_balances::updated_at.eq(now),
                ledger_balances::version.eq(ledger_balances::version + 1),
            ))
            .execute(conn)?;
            if updated != 1 {
                let exists = ledger_balances::table
                    .find(&p.account)
                    .count()
                    .get_result::<i64>(conn)?;
                return Err(if exists == 1 {
                    PostError::OutOfRange
                } else {
                    diesel::result::Error::NotFound.into()
                });
            }
        }
        Ok(Posted::New(txn))
    }
}

/// An entry with its transaction, for statements.
#[derive(Debug, Clone, Queryable)]
pub struct EntryLine {
    pub entry: LedgerEntry,
    pub transaction: LedgerTransaction,
}

impl EntryLine {
    /// Entries of one ledger account, oldest first, after `after` (keyset on the entry id).
    pub fn of_account(
        conn: &mut DbConn,
        account: &LedgerAccountId,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        ledger_entries::table
            .inner_join(ledger_transactions::table)
            .filter(
                ledger_entries::account_id
                    .eq(account)
                    .and(ledger_entries::id.gt(after)),
            )
            .order(ledger_entries::id.asc())
            .limit(limit + 1)
            .select((LedgerEntry::as_select(), LedgerTransaction::as_select()))
            .load::<(LedgerEntry, LedgerTransaction)>(conn)
            .map(|rows| {
                rows.into_iter()
                    .map(|(entry, transaction)| Self { entry, transaction })
                    .collect()
            })
    }
}

/// What `taogate reconcile` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub transactions: i64,
    pub entries: i64,
    /// Σ of every entry: must be 0.
    pub sum_of_all_entries: i64,
    /// Entries whose transaction or account does not exist (the database refuses them; this finds
    /// any written with its checks bypassed).
    pub orphan_entries: Vec<String>,
    /// Transactions whose entries do not sum to zero: (id, sum).
    pub unbalanced_transactions: Vec<(String, i64)>,
    /// Accounts whose cached balance differs from the sum of their entries: (id, cached, entries).
    pub balance_drift: Vec<(String, i64, i64)>,
    /// Charged usage records without their `usage:<id>` posting.
    pub usage_without_posting: Vec<String>,
    /// Usage postings without their usage record.
    pub postings_without_usage: Vec<String>,
    /// Usage records whose posting moved another amount than they were charged.
    pub usage_amount_mismatch: Vec<String>,
    /// Cached balances rewritten from the entries (with `rebuild`).
    pub rebuilt: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.sum_of_all_entries == 0
            && self.orphan_entries.is_empty()
            && self.unbalanced_transactions.is_empty()
            && self.balance_drift.is_empty()
            && self.usage_without_posting.is_empty()
            && self.postings_without_usage.is_empty()
            && self.usage_amount_mismatch.is_empty()
    }
}

#[derive(QueryableByName)]
struct IdSum {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

fn ids(conn: &mut DbConn, sql: &str) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query(sql)
        .load::<Id>(conn)?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

#[derive(QueryableByName)]
struct AccountSums {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    cached: i64,
    #[diesel(sql_type = BigInt)]
    computed: i64,
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    transactions: i64,
    #[diesel(sql_type = BigInt)]
    entries: i64,
    #[diesel(sql_type = BigInt)]
    total: i64,
}

/// Recomputes every balance from the entries and checks the invariants; with `rebuild`, rewrites
/// drifted cached balances (the report still lists the drift found).
pub fn reconcile(conn: &mut DbConn, rebuild: bool) -> QueryResult<Report> {
    conn.transaction(|c| {
        let counts: Counts = diesel::sql_query(
            "SELECT (SELECT COUNT(*) FROM ledger_transactions) AS transactions, \
             (SELECT COUNT(*) FROM ledger_entries) AS entries, \
             CAST(COALESCE((SELECT SUM(amount_nano) FROM ledger_entries), 0) AS BIGINT) AS total",
        )
        .get_result(c)?;
        let unbalanced: Vec<IdSum> = diesel::sql_query(
            "SELECT transaction_id AS id, CAST(SUM(amount_nano) AS BIGINT) AS total \
             FROM ledger_entries GROUP BY transaction_id HAVING SUM(amount_nano) <> 0",
        )
        .load(c)?;
        let sums: Vec<AccountSums> = diesel::sql_query(
            "SELECT a.id AS id, COALESCE(b.balance_nano, 0) AS cached, \
             CAST(COALESCE((SELECT SUM(e.amount_nano) FROM ledger_entries e WHERE e.account_id = a.id), 0) AS BIGINT) AS computed \
             FROM ledger_accounts a LEFT JOIN ledger_balances b ON b.account_id = a.id",
        )
        .load(c)?;
        let drift: Vec<(String, i64, i64)> = sums
            .into_iter()
            .filter(|s| s.cached != s.computed)
            .map(|s| (s.id, s.cached, s.computed))
            .collect();
        let mut rebuilt = 0;
        if rebuild {
            for (id, _, computed) in &drift {
                rebuilt += diesel::update(ledger_balances::table.find(id))
                    .set((
                        ledger_balances::balance_nano.eq(computed),
                        ledger_balances::updated_at.eq(crate::db::now()),
                        ledger_balances::version.eq(ledger_balances::version + 1),
                    ))
                    .execute(c)?;
            }
        }
        let orphan_entries = ids(
            c,
            "SELECT e.id AS id FROM ledger_entries e \
             WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.id = e.transaction_id) \
             OR NOT EXISTS (SELECT 1 FROM ledger_accounts a WHERE a.id = e.account_id)",
        )?;
        let usage_without_posting = ids(
            c,
            "SELECT u.id AS id FROM usage_records u \
             WHERE (u.charged_nano <> 0 OR u.tenant_charged_nano <> 0) AND NOT EXISTS \
             (SELECT 1 FROM ledger_transactions t WHERE t.idempotency_key = 'usage:' || u.id)",
        )?;
        let postings_without_usage = ids(
            c,
            "SELECT t.id AS id FROM ledger_transactions t WHERE t.kind = 'usage' AND NOT EXISTS \
             (SELECT 1 FROM usage_records u WHERE t.idempotency_key = 'usage:' || u.id)",
        )?;
        let usage_amount_mismatch = ids(
            c,
            "SELECT u.id AS id FROM usage_records u \
             JOIN ledger_transactions t ON t.idempotency_key = 'usage:' || u.id \
             WHERE (SELECT CAST(SUM(e.amount_nano) AS BIGINT) FROM ledger_entries e \
                    WHERE e.transaction_id = t.id AND e.amount_nano > 0) \
                   <> u.charged_nano + u.tenant_charged_nano",
        )?;
        Ok(Report {
            orphan_entries,
            usage_without_posting,
            postings_without_usage,
            usage_amount_mismatch,
            transactions: counts.transactions,
            entries: counts.entries,
            sum_of_all_entries: counts.total,
            unbalanced_transactions: unbalanced.into_iter().map(|u| (u.id, u.total)).collect(),
            balance_drift: drift,
            rebuilt,
        })
    })
}

//! Usage records: what one data-plane request delivered (tokens, status, who answered).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::DbConn;
use crate::db::schema::{usage_dead_letters, usage_records};
use crate::domain::{AccountId, ApiKeyId, Nano, TenantId, UsageSource};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = usage_records)]
pub struct UsageRecord {
    pub id: String,
    pub request_id: String,
    pub tenant_id: TenantId,
    pub account_id: AccountId,
    pub api_key_id: ApiKeyId,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub estimated: bool,
    pub status: String,
    pub worker: Option<String>,
    pub upstream: Option<String>,
    pub miner_uid: Option<String>,
    pub started_at: NaiveDateTime,
    pub ended_at: NaiveDateTime,
    pub ttft_ms: Option<i64>,
    pub latency_ms: i64,
    /// Tokens × the answering route's wholesale price (nano-units), when it has one.
    pub wholesale_cost_nano: Option<Nano>,
    /// What the account was charged (the plan's retail price).
    pub charged_nano: Nano,
    /// What the tenant owes the operator for it (the tenant's wholesale price).
    pub tenant_charged_nano: Nano,
    /// Where the billed token counts came from (journal lines of older versions: `upstream`
    /// unless `estimated`, fixed up on replay).
    #[serde(default = "unknown_source")]
    pub usage_source: UsageSource,
    /// The retail unit prices it was charged at (`None`: unpriced, or recorded before they were
    /// kept).
    #[serde(default)]
    pub prompt_nano_per_mtok: Option<i64>,
    #[serde(default)]
    pub completion_nano_per_mtok: Option<i64>,
    #[serde(default)]
    pub request_nano: Option<i64>,
}

fn unknown_source() -> UsageSource {
    UsageSource::Upstream
}

/// The part of a usage record that usage reports aggregate.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = usage_records)]
pub struct UsageLine {
    pub api_key_id: ApiKeyId,
    pub model: String,
    pub started_at: NaiveDateTime,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub charged_nano: Nano,
}

/// Whose usage a quota counts.
#[derive(Clone, Copy, Debug)]
pub enum QuotaScope<'a> {
    Key(&'a str),
    Account(&'a str),
    Tenant,
}

#[derive(QueryableByName)]
struct QuotaUsage {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    requests: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    tokens: i64,
}

impl UsageRecord {
    /// Requests and tokens (prompt + completion) recorded for `scope` of `tenant` since `since`.
    pub fn quota_usage(
        conn: &mut DbConn,
        tenant: &TenantId,
        scope: QuotaScope<'_>,
        since: NaiveDateTime,
    ) -> QueryResult<(i64, i64)> {
        use diesel::sql_types::{Text, Timestamp};
        let select = "SELECT COUNT(*) AS requests, \
            CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS tokens \
            FROM usage_records WHERE tenant_id = $1 AND started_at >= $2";
        let query = diesel::sql_query(match scope {
            QuotaScope::Key(_) => format!("{select} AND api_key_id = $3"),
            QuotaScope::Account(_) => format!("{select} AND account_id = $3"),
            QuotaScope::Tenant => select.to_owned(),
        })
        .into_boxed()
        .bind::<Text, _>(tenant.as_str())
        .bind::<Timestamp, _>(since);
        let query = match scope {
            QuotaScope::Key(id) | QuotaScope::Account(id) => query.bind::<Text, _>(id),
            QuotaScope::Tenant => query,
        };
        let row: QuotaUsage = query.get_result(conn)?;
        Ok((row.requests, row.tokens))
    }

    /// Which of `ids` are recorded (a record commits with its ledger posting).
    pub fn existing_ids(conn: &mut DbConn, ids: &[String]) -> QueryResult<Vec<String>> {
        let mut found = Vec::new();
        for chunk in ids.chunks(500) {
            found.extend(
                usage_records::table
                    .filter(usage_records::id.eq_any(chunk))
                    .select(usage_records::id)
                    .load::<String>(conn)?,
            );
        }
        Ok(found)
    }

    /// Inserts it, stamped with when it reached the database (`recorded_at`).
    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(usage_records::table)
            .values((self, usage_records::recorded_at.eq(crate::db::now())))
            .execute(conn)
            .map(drop)
    }

    /// Inserts the ones not there yet, one statement each and no savepoint (SQLite: a record
    /// already written — a replayed batch — is skipped by `ON CONFLICT DO NOTHING`, which covers
    /// uniqueness only; any other failure fails the batch, as on the per-row path). One
    /// multi-row statement is not possible here: diesel's SQLite batch insert refuses optional
    /// columns.
    pub fn insert_new_sqlite(
        conn: &mut diesel::sqlite::SqliteConnection,
        records: &[UsageRecord],
    ) -> QueryResult<()> {
        let at = crate::db::now();
        for record in records {
            diesel::insert_into(usage_records::table)
                .values((record, usage_records::recorded_at.eq(at)))
                .on_conflict_do_nothing()
                .execute(conn)?;
        }
        Ok(())
    }

    /// What usage reports need of the records of `tenant` (optionally one account) started in
    /// `[from, to)`, at most `cap` + 1 of them (so a caller can tell the range was too large).
    pub fn in_range(
        conn: &mut DbConn,
        tenant: &TenantId,
        account: Option<&AccountId>,
        (from, to): (NaiveDateTime, NaiveDateTime),
        cap: i64,
    ) -> QueryResult<Vec<UsageLine>> {
        let mut query = usage_records::table
            .filter(
                usage_records::tenant_id
                    .eq(tenant)
                    .and(usage_records::started_at.ge(from))
                    .and(usage_records::started_at.lt(to)),
            )
            .select(UsageLine::as_select())
            .limit(cap + 1)
            .into_boxed();
        if let Some(account) = account {
            query = query.filter(usage_records::account_id.eq(account));
        }
        query.load(conn)
    }

    pub fn list_for_key(conn: &mut DbConn, key: &ApiKeyId) -> QueryResult<Vec<Self>> {
        usage_records::table
            .filter(usage_records::api_key_id.eq(key))
            .order(usage_records::id.asc())
            .select(Self::as_select())
            .load(conn)
    }
}

/// A usage record the writer could not post (see `billing::metering::writer`), with its error.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = usage_dead_letters)]
pub struct DeadLetter {
    pub id: String,
    pub tenant_id: TenantId,
    pub account_id: AccountId,
    /// The record as JSON (as journaled).
    pub record: String,
    pub error: String,
    pub created_at: NaiveDateTime,
}

impl DeadLetter {
    /// Sets `record` aside with `error` (once: a second time changes nothing).
    pub fn record(conn: &mut DbConn, record: &UsageRecord, error: &str) -> QueryResult<()> {
        let letter = Self {
            id: record.id.clone(),
            tenant_id: record.tenant_id.clone(),
            account_id: record.account_id.clone(),
            record: serde_json::to_string(record).unwrap_or_default(),
            error: error.chars().take(2000).collect(),
            created_at: crate::db::now(),
        };
        match diesel::insert_into(usage_dead_letters::table)
            .values(&letter)
            .execute(conn)
        {
            Ok(_) => Ok(()),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every dead letter, oldest first.
    pub fn all(conn: &mut DbConn) -> QueryResult<Vec<Self>> {
        usage_dead_letters::table
            .order(usage_dead_letters::id.asc())
            .select(Self::as_select())
            .load(conn)
    }
}

//! The queries finance reads with: usage records page by page (request-level exports) or summed
//! per group over one period (aggregated exports, revenue reports), the ledger of one account over a
//! month (statements), and the closed-period records (export cutoffs, stored statements). Plain
//! SQL that both backends run; every sum cast to BIGINT.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamp};

use crate::db::DbConn;
use crate::db::schema::{export_cutoffs, statements};
use crate::domain::{AccountId, TenantId};

/// One usage record as a request-level export reads it.
#[derive(Debug, Clone, QueryableByName)]
pub struct RecordRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Timestamp)]
    pub started_at: NaiveDateTime,
    #[diesel(sql_type = Timestamp)]
    pub ended_at: NaiveDateTime,
    #[diesel(sql_type = Text)]
    pub account_id: String,
    #[diesel(sql_type = Text)]
    pub api_key_id: String,
    #[diesel(sql_type = Text)]
    pub model: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub upstream: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub completion_tokens: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub prompt_nano_per_mtok: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub completion_nano_per_mtok: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub request_nano: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pub charged_nano: i64,
    #[diesel(sql_type = BigInt)]
    pub tenant_charged_nano: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub wholesale_cost_nano: Option<i64>,
    #[diesel(sql_type = Text)]
    pub usage_source: String,
}

/// The sums of one group of usage records.
#[derive(Debug, Clone, QueryableByName)]
pub struct GroupRow {
    #[diesel(sql_type = Text)]
    pub account_id: String,
    #[diesel(sql_type = Text)]
    pub api_key_id: String,
    #[diesel(sql_type = Text)]
    pub model: String,
    #[diesel(sql_type = Text)]
    pub upstream: String,
    #[diesel(sql_type = BigInt)]
    pub requests: i64,
    #[diesel(sql_type = BigInt)]
    pub prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub completion_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub charged_nano: i64,
    #[diesel(sql_type = BigInt)]
    pub tenant_charged_nano: i64,
    #[diesel(sql_type = BigInt)]
    pub upstream_cost_nano: i64,
    /// Records with retail unit prices, and their extremes (one price when min = max for all).
    #[diesel(sql_type = BigInt)]
    pub priced: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub min_prompt_price: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub max_prompt_price: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub min_completion_price: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub max_completion_price: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub min_request_price: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub max_request_price: Option<i64>,
    #[diesel(sql_type = Text)]
    pub min_source: String,
    #[diesel(sql_type = Text)]
    pub max_source: String,
}

/// Which usage records a query reads: one tenant's (optionally one account's), started in
/// `[from, to)`, recorded by `cutoff` (if any) — plus, with `late_since`, the records started
/// before `from` that arrived after that earlier cutoff and by `cutoff` (late arrivals carried
/// into this period).
#[derive(Debug, Clone)]
pub struct Selection {
    pub tenant: TenantId,
    pub account: Option<AccountId>,
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    pub cutoff: Option<NaiveDateTime>,
    pub late_since: Option<NaiveDateTime>,
}

impl Selection {
    /// The WHERE clause over `usage_records` and its binds (`$1` on).
    fn clause(&self) -> (String, Vec<Bind>) {
        // Placeholders are numbered in the order they first appear (SQLite numbers them so).
        let mut binds = vec![
            Bind::Text(self.tenant.to_string()),
            Bind::Time(self.from),
            Bind::Time(self.to),
        ];
        let mut text = String::from("tenant_id = $1 AND ");
        match self.late_since {
            Some(since) => {
                binds.push(Bind::Time(since));
                text += &format!(
                    "((started_at >= $2 AND started_at < $3) OR (started_at < $2 AND recorded_at > ${}))",
                    binds.len()
                );
            }
            None => text += "started_at >= $2 AND started_at < $3",
        }
        if let Some(c) = self.cutoff {
            binds.push(Bind::Time(c));
            text += &format!(
                " AND (recorded_at IS NULL OR recorded_at <= ${})",
                binds.len()
            );
        }
        if let Some(a) = &self.account {
            binds.push(Bind::Text(a.to_string()));
            text += &format!(" AND account_id = ${}", binds.len());
        }
        (text, binds)
    }
}

#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Time(NaiveDateTime),
    Int(i64),
}

fn bound<'a>(
    sql: String,
    binds: Vec<Bind>,
) -> diesel::query_builder::BoxedSqlQuery<
    'a,
    <DbConn as diesel::Connection>::Backend,
    diesel::query_builder::SqlQuery,
> {
    let mut q = diesel::sql_query(sql).into_boxed();
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind::<Text, _>(s),
            Bind::Time(t) => q.bind::<Timestamp, _>(t),
            Bind::Int(i) => q.bind::<BigInt, _>(i),
        };
    }
    q
}

/// The grouping columns an aggregated export may use.
pub const GROUP_COLUMNS: [&str; 4] = ["account_id", "api_key_id", "model", "upstream"];

/// Usage records of `sel` after `(started_at, id)`, in that order, at most `limit`.
pub fn records_after(
    conn: &mut DbConn,
    sel: &Selection,
    after: Option<(NaiveDateTime, String)>,
    limit: i64,
) -> QueryResult<Vec<RecordRow>> {
    let (clause, mut binds) = sel.clause();
    let mut n = binds.len();
    let mut keyset = String::new();
    if let Some((t, id)) = after {
        // A row comparison, so PostgreSQL walks the (tenant_id, started_at, id) index from there.
        keyset = format!(" AND (started_at, id) > (${}, ${})", n + 1, n + 2);
        binds.push(Bind::Time(t));
        binds.push(Bind::Text(id));
        n += 2;
    }
    binds.push(Bind::Int(limit));
    let sql = format!(
        "SELECT id, started_at, ended_at, account_id, api_key_id, model, upstream, prompt_tokens, \
         completion_tokens, prompt_nano_per_mtok, completion_nano_per_mtok, request_nano, \
         charged_nano, tenant_charged_nano, wholesale_cost_nano, usage_source \
         FROM usage_records WHERE {clause}{keyset} ORDER BY started_at, id LIMIT ${}",
        n + 1
    );
    bound(sql, binds).load(conn)
}

/// The sums of `sel`'s records per group of `columns` (a subset of [`GROUP_COLUMNS`], in that
/// order; the others come back empty), ordered by the group.
pub fn groups(conn: &mut DbConn, sel: &Selection, columns: &[&str]) -> QueryResult<Vec<GroupRow>> {
    let (clause, binds) = sel.clause();
    let cols: Vec<&str> = GROUP_COLUMNS
        .iter()
        .copied()
        .filter(|c| columns.contains(c))
        .collect();
    let select: Vec<String> = GROUP_COLUMNS
        .iter()
        .map(|c| {
            if !cols.contains(c) {
                format!("'' AS {c}")
            } else if *c == "upstream" {
                "COALESCE(upstream, '') AS upstream".to_owned()
            } else {
                (*c).to_owned()
            }
        })
        .collect();
    let group = if cols.is_empty() {
        String::new()
    } else {
        let keys: Vec<String> = cols
            .iter()
            .map(|c| {
                if *c == "upstream" {
                    "COALESCE(upstream, '')".to_owned()
                } else {
                    (*c).to_owned()
                }
            })
            .collect();
        format!(" GROUP BY {k} ORDER BY {k}", k = keys.join(", "))
    };
    let sql = format!(
        "SELECT {}, COUNT(*) AS requests, \
         CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
         CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
         CAST(COALESCE(SUM(charged_nano), 0) AS BIGINT) AS charged_nano, \
         CAST(COALESCE(SUM(tenant_charged_nano), 0) AS BIGINT) AS tenant_charged_nano, \
         CAST(COALESCE(SUM(wholesale_cost_nano), 0) AS BIGINT) AS upstream_cost_nano, \
         COUNT(prompt_nano_per_mtok) AS priced, \
         MIN(prompt_nano_per_mtok) AS min_prompt_price, MAX(prompt_nano_per_mtok) AS max_prompt_price, \
         MIN(completion_nano_per_mtok) AS min_completion_price, \
         MAX(completion_nano_per_mtok) AS max_completion_price, \
         MIN(request_nano) AS min_request_price, MAX(request_nano) AS max_request_price, \
         MIN(usage_source) AS min_source, MAX(usage_source) AS max_source \
         FROM usage_records WHERE {clause}{group}",
        select.join(", ")
    );
    let rows: Vec<GroupRow> = bound(sql, binds).load(conn)?;
    // Without a GROUP BY an empty selection still answers one row of zeros: none.
    Ok(rows.into_iter().filter(|r| r.requests > 0).collect())
}

/// How many usage records `sel` holds.
pub fn count(conn: &mut DbConn, sel: &Selection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let (clause, binds) = sel.clause();
    let sql = format!("SELECT COUNT(*) AS n FROM usage_records WHERE {clause}");
    Ok(bound(sql, binds).get_result::<N>(conn)?.n)
}

/// API key prefixes by id, for the ids given.
pub fn key_prefixes(conn: &mut DbConn, ids: &[String]) -> QueryResult<Vec<(String, String)>> {
    use crate::db::schema::api_keys;
    api_keys::table
        .filter(api_keys::id.eq_any(ids))
        .select((api_keys::id, api_keys::prefix))
        .load(conn)
}

/// A closed month's export cutoff for a tenant.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = export_cutoffs)]
pub struct ExportCutoff {
    pub tenant_id: TenantId,
    pub month: String,
    pub cutoff_at: NaiveDateTime,
}

impl ExportCutoff {
    /// The stored cutoff of `month`, or `now` stored as it (the first export after it closed).
    pub fn get_or_set(
        conn: &mut DbConn,
        tenant: &TenantId,
        month: &str,
        now: NaiveDateTime,
    ) -> QueryResult<NaiveDateTime> {
        let found = export_cutoffs::table
            .find((tenant, month))
            .select(export_cutoffs::cutoff_at)
            .first(conn)
            .optional()?;
        if let Some(c) = found {
            return Ok(c);
        }
        let row = Self {
            tenant_id: tenant.clone(),
            month: month.to_owned(),
            cutoff_at: now,
        };
        match diesel::insert_into(export_cutoffs::table)
            .values(&row)
            .execute(conn)
        {
            Ok(_) => Ok(now),
            // Another export stored it first: use that one.
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => export_cutoffs::table
                .find((tenant, month))
                .select(export_cutoffs::cutoff_at)
                .first(conn),
            Err(e) => Err(e),
        }
    }

    /// The stored cutoff of `month`, if any.
    pub fn find(
        conn: &mut DbConn,
        tenant: &TenantId,
        month: &str,
    ) -> QueryResult<Option<NaiveDateTime>> {
        export_cutoffs::table
            .find((tenant, month))
            .select(export_cutoffs::cutoff_at)
            .first(conn)
            .optional()
    }
}

/// A closed month's statement, as first made.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = statements)]
pub struct StoredStatement {
    pub account_id: AccountId,
    pub month: String,
    pub tenant_id: TenantId,
    pub document: String,
    pub created_at: NaiveDateTime,
}

impl StoredStatement {
    pub fn find(conn: &mut DbConn, account: &AccountId, month: &str) -> QueryResult<Option<Self>> {
        statements::table
            .find((account, month))
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Stores it unless one is stored already; the stored one.
    pub fn keep(self, conn: &mut DbConn) -> QueryResult<Self> {
        match diesel::insert_into(statements::table)
            .values(&self)
            .execute(conn)
        {
            Ok(_) => Ok(self),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => statements::table
                .find((&self.account_id, &self.month))
                .select(Self::as_select())
                .first(conn),
            Err(e) => Err(e),
        }
    }
}

/// The ledger movements of one account's balance in a period, summed per kind of line: `usage`
/// per model; payment movements per provider and movement kind (`credit`, `refund`, `dispute`,
/// `dispute_reversal`); anything else per transaction kind.
#[derive(Debug, Clone, QueryableByName)]
pub struct StatementLine {
    #[diesel(sql_type = Text)]
    pub class: String,
    #[diesel(sql_type = Text)]
    pub model: String,
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Text)]
    pub movement: String,
    #[diesel(sql_type = BigInt)]
    pub entries: i64,
    #[diesel(sql_type = BigInt)]
    pub amount_nano: i64,
    #[diesel(sql_type = BigInt)]
    pub prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    pub completion_tokens: i64,
}

/// The customer balance ledger account of `account`, if it has one.
pub fn balance_account(conn: &mut DbConn, account: &AccountId) -> QueryResult<Option<String>> {
    use crate::db::schema::ledger_accounts;
    use crate::domain::{LedgerOwner, LedgerPurpose};
    ledger_accounts::table
        .filter(
            ledger_accounts::owner_kind
                .eq(LedgerOwner::Account)
                .and(ledger_accounts::owner_id.eq(account.as_str()))
                .and(ledger_accounts::purpose.eq(LedgerPurpose::CustomerBalance)),
        )
        .select(ledger_accounts::id)
        .first(conn)
        .optional()
}

/// Σ of a ledger account's entries made before `before`.
pub fn balance_before(
    conn: &mut DbConn,
    ledger_account: &str,
    before: NaiveDateTime,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    diesel::sql_query(
        "SELECT CAST(COALESCE(SUM(amount_nano), 0) AS BIGINT) AS n FROM ledger_entries \
         WHERE account_id = $1 AND created_at < $2",
    )
    .bind::<Text, _>(ledger_account)
    .bind::<Timestamp, _>(before)
    .get_result::<N>(conn)
    .map(|r| r.n)
}

/// The lines of a ledger account's entries made in `[from, to)`.
pub fn statement_lines(
    conn: &mut DbConn,
    ledger_account: &str,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> QueryResult<Vec<StatementLine>> {
    diesel::sql_query(
        "SELECT CASE WHEN t.idempotency_key LIKE 'usage:%' THEN 'usage' \
                     WHEN pm.kind IS NOT NULL THEN 'payment' ELSE t.kind END AS class, \
         COALESCE(u.model, '') AS model, COALESCE(p.provider, '') AS provider, \
         COALESCE(pm.kind, '') AS movement, COUNT(*) AS entries, \
         CAST(COALESCE(SUM(e.amount_nano), 0) AS BIGINT) AS amount_nano, \
         CAST(COALESCE(SUM(u.prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
         CAST(COALESCE(SUM(u.completion_tokens), 0) AS BIGINT) AS completion_tokens \
         FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id \
         LEFT JOIN payment_movements pm ON pm.transaction_id = t.id \
         LEFT JOIN payments p ON p.id = pm.payment_id \
         LEFT JOIN usage_records u ON t.idempotency_key LIKE 'usage:%' \
              AND u.id = SUBSTR(t.idempotency_key, 7) \
         WHERE e.account_id = $1 AND e.created_at >= $2 AND e.created_at < $3 \
         GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )
    .bind::<Text, _>(ledger_account)
    .bind::<Timestamp, _>(from)
    .bind::<Timestamp, _>(to)
    .load(conn)
}

/// Per account of a selection: Σ `charged_nano` of its usage records (what an export shows) and
/// Σ of what the ledger's `usage:<id>` postings of those records debited its balance.
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct ExportTie {
    #[diesel(sql_type = Text)]
    pub account_id: String,
    #[diesel(sql_type = BigInt)]
    pub records: i64,
    #[diesel(sql_type = BigInt)]
    pub exported_nano: i64,
    #[diesel(sql_type = BigInt)]
    pub posted_nano: i64,
}

/// [`ExportTie`] per account of `sel`.
pub fn export_ties(conn: &mut DbConn, sel: &Selection) -> QueryResult<Vec<ExportTie>> {
    let (clause, binds) = sel.clause();
    let sql = format!(
        "SELECT u.account_id AS account_id, COUNT(*) AS records, \
         CAST(COALESCE(SUM(u.charged_nano), 0) AS BIGINT) AS exported_nano, \
         CAST(COALESCE(SUM(p.posted), 0) AS BIGINT) AS posted_nano \
         FROM (SELECT id, account_id, charged_nano FROM usage_records WHERE {clause}) u \
         LEFT JOIN (SELECT t.idempotency_key AS k, SUM(-e.amount_nano) AS posted \
                    FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id \
                    JOIN ledger_accounts a ON a.id = e.account_id AND a.purpose = 'customer_balance' \
                    WHERE t.idempotency_key LIKE 'usage:%' GROUP BY t.idempotency_key) p \
              ON p.k = 'usage:' || u.id \
         GROUP BY u.account_id ORDER BY u.account_id"
    );
    bound(sql, binds).load(conn)
}

/// A payment credit with no stored provider notification naming its reference.
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct UnbackedCredit {
    #[diesel(sql_type = Text)]
    pub payment_id: String,
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    #[diesel(sql_type = Text)]
    pub provider: String,
    #[diesel(sql_type = Text)]
    pub reference: String,
    #[diesel(sql_type = BigInt)]
    pub amount_nano: i64,
}

/// Credits made in `[from, to)` by providers that notify (not the chain watcher) whose reference no
/// stored notification of that provider and tenant contains.
pub fn unbacked_credits(
    conn: &mut DbConn,
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> QueryResult<Vec<UnbackedCredit>> {
    diesel::sql_query(
        "SELECT p.id AS payment_id, p.tenant_id AS tenant_id, p.provider AS provider, \
         COALESCE(p.reference, '') AS reference, m.amount_nano AS amount_nano \
         FROM payment_movements m JOIN payments p ON p.id = m.payment_id \
         WHERE m.kind = 'credit' AND m.created_at >= $1 AND m.created_at < $2 AND p.provider <> 'tao' \
         AND NOT EXISTS (SELECT 1 FROM payment_notifications n WHERE n.provider = p.provider \
              AND n.tenant_id = p.tenant_id AND p.reference IS NOT NULL \
              AND n.payload LIKE '%' || p.reference || '%') \
         ORDER BY p.id",
    )
    .bind::<Timestamp, _>(from)
    .bind::<Timestamp, _>(to)
    .load(conn)
}

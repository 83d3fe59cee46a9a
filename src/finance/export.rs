//! Usage exports: the usage records of a period as RFC 4180 CSV (a header row, the `csv` crate) or
//! JSONL, one row per request or per (period, group). Streamed at constant memory: request rows
//! are read in keyset pages of `(started_at, id)`, groups one period at a time, and every row is
//! written out before the next page is read.
//!
//! Periods are half-open `[from, to)` in UTC (ISO 8601). Buckets (`hour`, `day`, `month`) are
//! calendar-aligned and clipped to the range. Amounts are integer nano-units beside an exact
//! decimal string (`amount`, 9 places), in the tenant's ledger currency ([`super::currency_of`]).
//! `margin_nano` is the reseller's margin: retail (`amount_nano`) minus wholesale.
//!
//! Who sees what: the operator every column of every tenant; a tenant's owner, admin and finance
//! their tenant, without the operator's `upstream_cost_nano`; a developer their own account's
//! retail amounts only (wholesale, upstream cost and margin left empty).
//!
//! **Closed months.** A calendar month is closed an hour after it ends. The first export that
//! reads a closed month stores its cutoff (`export_cutoffs`, per tenant); every later export of it
//! reads only records recorded by that cutoff, so it comes out byte-identical. A record that
//! arrives later (`recorded_at` after the cutoff) is carried into the next month: read at the start
//! of the next month's export (its first bucket), never lost, never counted twice.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::DbConn;
use crate::domain::{AccountId, TenantId};
use crate::models::finance::{self, ExportCutoff, GroupRow, RecordRow, Selection};

/// Rows read per page of a request-level export.
const PAGE: i64 = 10_000;
/// A month is closed this long after it ends.
pub const CLOSE_GRACE_SECS: i64 = 3600;

/// The columns, in order.
pub const COLUMNS: [&str; 21] = [
    "period_start",
    "period_end",
    "tenant",
    "account_id",
    "api_key_id",
    "api_key_prefix",
    "model",
    "upstream",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "prompt_price_nano_per_mtok",
    "completion_price_nano_per_mtok",
    "request_price_nano",
    "amount_nano",
    "amount",
    "wholesale_nano",
    "upstream_cost_nano",
    "margin_nano",
    "usage_source",
    "currency",
];

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Csv,
    Jsonl,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Request,
    Hour,
    #[default]
    Day,
    Month,
}

/// What an aggregated export groups by (besides the period).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Account,
    Key,
    Model,
    Route,
}

impl Dimension {
    /// Parses `account,key,model,route` (any subset, any order; empty: all four).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let mut out: Vec<Self> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let d = match part {
                "account" => Self::Account,
                "key" => Self::Key,
                "model" => Self::Model,
                "route" => Self::Route,
                other => {
                    return Err(format!(
                        "unknown group_by `{other}` (account, key, model, route)"
                    ));
                }
            };
            if !out.contains(&d) {
                out.push(d);
            }
        }
        if out.is_empty() {
            out = vec![Self::Account, Self::Key, Self::Model, Self::Route];
        }
        out.sort();
        Ok(out)
    }

    fn column(self) -> &'static str {
        match self {
            Self::Account => "account_id",
            Self::Key => "api_key_id",
            Self::Model => "model",
            Self::Route => "upstream",
        }
    }
}

/// Whose eyes the export is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Viewer {
    Operator,
    Tenant,
    Developer,
}

/// A tenant in an export.
#[derive(Clone, Debug)]
pub struct TenantRef {
    pub id: TenantId,
    pub slug: String,
    pub currency: String,
}

/// What to export.
#[derive(Clone, Debug)]
pub struct Plan {
    pub tenants: Vec<TenantRef>,
    pub account: Option<AccountId>,
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    pub granularity: Granularity,
    pub group_by: Vec<Dimension>,
    pub viewer: Viewer,
    pub format: Format,
    /// When the export runs (closes months; stamps new cutoffs).
    pub now: NaiveDateTime,
}

/// Where a (resumed) export stands: the tenant (index in the plan), the month piece, and within
/// it the last request written or the next bucket to write.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    pub tenant: usize,
    pub piece: usize,
    pub after: Option<(NaiveDateTime, String)>,
    pub bucket: Option<NaiveDateTime>,
}

/// One output row.
#[derive(Debug, Serialize)]
pub struct Row {
    pub period_start: String,
    pub period_end: String,
    pub tenant: String,
    pub account_id: Option<String>,
    pub api_key_id: Option<String>,
    pub api_key_prefix: Option<String>,
    pub model: Option<String>,
    pub upstream: Option<String>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub prompt_price_nano_per_mtok: Option<i64>,
    pub completion_price_nano_per_mtok: Option<i64>,
    pub request_price_nano: Option<i64>,
    pub amount_nano: i64,
    pub amount: String,
    pub wholesale_nano: Option<i64>,
    pub upstream_cost_nano: Option<i64>,
    pub margin_nano: Option<i64>,
    pub usage_source: String,
    pub currency: String,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub rows: u64,
    pub requests: i64,
    /// Σ `amount_nano` per currency.
    pub totals: BTreeMap<String, i64>,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// `nano` as an exact decimal with 9 places (`-1.500000000`).
pub fn decimal(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    let abs = nano.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

/// ISO 8601 UTC (`2026-12-07T10:00:00Z`, microseconds when there are any).
pub fn iso(t: NaiveDateTime) -> String {
    if t.nanosecond() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

fn month_start(t: NaiveDateTime) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
        .expect("day 1")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
}

fn next_month(t: NaiveDateTime) -> NaiveDateTime {
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .expect("day 1")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
}

/// `YYYY-MM` of a month.
pub fn month_key(t: NaiveDateTime) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

/// The calendar months `[from, to)` touches, each clipped to it.
fn pieces(from: NaiveDateTime, to: NaiveDateTime) -> Vec<(NaiveDateTime, NaiveDateTime)> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = next_month(start).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// The bucket containing `t`: its start and end.
fn bucket(g: Granularity, t: NaiveDateTime) -> (NaiveDateTime, NaiveDateTime) {
    match g {
        Granularity::Hour => {
            let s = t.date().and_hms_opt(t.hour(), 0, 0).expect("hour");
            (s, s + Duration::hours(1))
        }
        Granularity::Day => {
            let s = t.date().and_hms_opt(0, 0, 0).expect("midnight");
            (s, s + Duration::days(1))
        }
        Granularity::Month | Granularity::Request => (month_start(t), next_month(t)),
    }
}

/// Whether the month starting at `start` is closed at `now`.
pub fn closed(start: NaiveDateTime, now: NaiveDateTime) -> bool {
    next_month(start) + Duration::seconds(CLOSE_GRACE_SECS) <= now
}

/// The selection of one month piece of one tenant: a closed month reads up to its cutoff (stored
/// on first use); a piece starting at its month's start carries in the previous month's late
/// arrivals.
pub fn selection(
    conn: &mut DbConn,
    plan: &Plan,
    tenant: &TenantId,
    (from, to): (NaiveDateTime, NaiveDateTime),
) -> Result<Selection, ExportError> {
    let start = month_start(from);
    let cutoff = if closed(start, plan.now) {
        Some(ExportCutoff::get_or_set(
            conn,
            tenant,
            &month_key(start),
            plan.now,
        )?)
    } else {
        None
    };
    let late_since = if from == start {
        let prev = month_start(start - Duration::days(1));
        ExportCutoff::find(conn, tenant, &month_key(prev))?
    } else {
        None
    };
    Ok(Selection {
        tenant: tenant.clone(),
        account: plan.account.clone(),
        from,
        to,
        cutoff,
        late_since,
    })
}

/// Writes rows as CSV or JSONL to `out`.
pub struct Encoder<W: Write> {
    format: Format,
    csv: Option<csv::Writer<W>>,
    json: Option<W>,
}

impl<W: Write> Encoder<W> {
    /// A new encoder; the CSV header is written unless `resuming`.
    pub fn new(format: Format, out: W, resuming: bool) -> Result<Self, ExportError> {
        Ok(match format {
            Format::Csv => {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(out);
                if !resuming {
                    w.write_record(COLUMNS)?;
                }
                Self {
                    format,
                    csv: Some(w),
                    json: None,
                }
            }
            Format::Jsonl => Self {
                format,
                csv: None,
                json: Some(out),
            },
        })
    }

    pub fn row(&mut self, row: &Row) -> Result<(), ExportError> {
        match (self.format, &mut self.csv, &mut self.json) {
            (Format::Csv, Some(w), _) => w.serialize(row)?,
            (_, _, Some(w)) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")?;
            }
            _ => unreachable!("an encoder has its writer"),
        }
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn flush(&mut self) -> Result<(), ExportError> {
        if let Some(w) = &mut self.csv {
            w.flush()?;
        }
        if let Some(w) = &mut self.json {
            w.flush()?;
        }
        Ok(())
    }

    /// The underlying writer (flush first).
    pub fn get_ref(&self) -> &W {
        match (&self.csv, &self.json) {
            (Some(w), _) => w.get_ref(),
            (_, Some(w)) => w,
            _ => unreachable!("an encoder has its writer"),
        }
    }
}

/// What the runner reports to its caller as it goes.
pub trait Progress {
    /// `rows` more rows were written (`so_far` in all); `cursor` is where a resumed export would
    /// continue (the encoder is flushed first).
    fn checkpoint(
        &mut self,
        rows: u64,
        cursor: &Cursor,
        so_far: &Summary,
    ) -> Result<(), ExportError>;
}

/// No progress reporting.
pub struct Quiet;

impl Progress for Quiet {
    fn checkpoint(&mut self, _: u64, _: &Cursor, _: &Summary) -> Result<(), ExportError> {
        Ok(())
    }
}

struct Writer<'a, W: Write, P: Progress> {
    enc: &'a mut Encoder<W>,
    progress: &'a mut P,
    summary: Summary,
    prefixes: HashMap<String, String>,
    pending: u64,
}

impl<W: Write, P: Progress> Writer<'_, W, P> {
    fn emit(&mut self, row: Row) -> Result<(), ExportError> {
        self.summary.rows += 1;
        self.summary.requests += row.requests;
        *self.summary.totals.entry(row.currency.clone()).or_default() += row.amount_nano;
        self.enc.row(&row)?;
        self.pending += 1;
        Ok(())
    }

    fn checkpoint(&mut self, cursor: &Cursor) -> Result<(), ExportError> {
        self.enc.flush()?;
        let n = std::mem::take(&mut self.pending);
        self.progress.checkpoint(n, cursor, &self.summary)
    }

    fn prefix(&mut self, conn: &mut DbConn, ids: &[&str]) -> Result<(), ExportError> {
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !id.is_empty() && !self.prefixes.contains_key(**id))
            .map(|id| (*id).to_owned())
            .collect();
        if !missing.is_empty() {
            for (id, prefix) in finance::key_prefixes(conn, &missing)? {
                self.prefixes.insert(id, prefix);
            }
        }
        Ok(())
    }
}

fn money(
    viewer: Viewer,
    charged: i64,
    wholesale: i64,
    upstream: i64,
) -> (Option<i64>, Option<i64>, Option<i64>) {
    match viewer {
        Viewer::Operator => (Some(wholesale), Some(upstream), Some(charged - wholesale)),
        Viewer::Tenant => (Some(wholesale), None, Some(charged - wholesale)),
        Viewer::Developer => (None, None, None),
    }
}

fn request_row(
    plan: &Plan,
    t: &TenantRef,
    r: RecordRow,
    prefixes: &HashMap<String, String>,
) -> Row {
    let upstream_cost = r.wholesale_cost_nano.unwrap_or(0);
    let (wholesale, upstream_cost, margin) = money(
        plan.viewer,
        r.charged_nano,
        r.tenant_charged_nano,
        upstream_cost,
    );
    Row {
        period_start: iso(r.started_at),
        period_end: iso(r.ended_at),
        tenant: t.slug.clone(),
        api_key_prefix: prefixes.get(&r.api_key_id).cloned(),
        account_id: Some(r.account_id),
        api_key_id: Some(r.api_key_id),
        model: Some(r.model),
        upstream: r.upstream,
        requests: 1,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        prompt_price_nano_per_mtok: r.prompt_nano_per_mtok,
        completion_price_nano_per_mtok: r.completion_nano_per_mtok,
        request_price_nano: r.request_nano,
        amount_nano: r.charged_nano,
        amount: decimal(r.charged_nano),
        wholesale_nano: wholesale,
        upstream_cost_nano: upstream_cost,
        margin_nano: margin,
        usage_source: r.usage_source,
        currency: t.currency.clone(),
    }
}

fn one_price(g: &GroupRow, min: Option<i64>, max: Option<i64>) -> Option<i64> {
    (g.priced == g.requests && min == max)
        .then_some(min)
        .flatten()
}

fn group_row(
    plan: &Plan,
    t: &TenantRef,
    (start, end): (NaiveDateTime, NaiveDateTime),
    g: GroupRow,
    prefixes: &HashMap<String, String>,
) -> Row {
    let (wholesale, upstream_cost, margin) = money(
        plan.viewer,
        g.charged_nano,
        g.tenant_charged_nano,
        g.upstream_cost_nano,
    );
    let by = |d: Dimension, v: &str| plan.group_by.contains(&d).then(|| v.to_owned());
    Row {
        period_start: iso(start),
        period_end: iso(end),
        tenant: t.slug.clone(),
        account_id: by(Dimension::Account, &g.account_id),
        api_key_prefix: by(Dimension::Key, &g.api_key_id).and_then(|k| prefixes.get(&k).cloned()),
        api_key_id: by(Dimension::Key, &g.api_key_id),
        model: by(Dimension::Model, &g.model),
        upstream: by(Dimension::Route, &g.upstream).filter(|u| !u.is_empty()),
        requests: g.requests,
        prompt_tokens: g.prompt_tokens,
        completion_tokens: g.completion_tokens,
        prompt_price_nano_per_mtok: one_price(&g, g.min_prompt_price, g.max_prompt_price),
        completion_price_nano_per_mtok: one_price(
            &g,
            g.min_completion_price,
            g.max_completion_price,
        ),
        request_price_nano: one_price(&g, g.min_request_price, g.max_request_price),
        amount_nano: g.charged_nano,
        amount: decimal(g.charged_nano),
        wholesale_nano: wholesale,
        upstream_cost_nano: upstream_cost,
        margin_nano: margin,
        usage_source: if g.min_source == g.max_source {
            g.min_source.clone()
        } else {
            "mixed".to_owned()
        },
        currency: t.currency.clone(),
    }
}

/// Runs `plan` from `start` (a resumed export) into `enc`, reporting to `progress`.
pub fn run<W: Write, P: Progress>(
    conn: &mut DbConn,
    plan: &Plan,
    start: Cursor,
    enc: &mut Encoder<W>,
    progress: &mut P,
) -> Result<Summary, ExportError> {
    let mut w = Writer {
        enc,
        progress,
        summary: Summary::default(),
        prefixes: HashMap::new(),
        pending: 0,
    };
    let columns: Vec<&str> = plan.group_by.iter().map(|d| d.column()).collect();
    let month_pieces = pieces(plan.from, plan.to);
    for (ti, tenant) in plan.tenants.iter().enumerate().skip(start.tenant) {
        for (pi, piece) in month_pieces.iter().enumerate() {
            let resumed = ti == start.tenant && pi == start.piece;
            if ti == start.tenant && pi < start.piece {
                continue;
            }
            let sel = selection(conn, plan, &tenant.id, *piece)?;
            if plan.granularity == Granularity::Request {
                let mut after = if resumed { start.after.clone() } else { None };
                loop {
                    let page = finance::records_after(conn, &sel, after.clone(), PAGE)?;
                    let ids: Vec<&str> = page.iter().map(|r| r.api_key_id.as_str()).collect();
                    w.prefix(conn, &ids)?;
                    let full = page.len() as i64 == PAGE;
                    if let Some(last) = page.last() {
                        after = Some((last.started_at, last.id.clone()));
                    }
                    for r in page {
                        let row = request_row(plan, tenant, r, &w.prefixes);
                        w.emit(row)?;
                    }
                    let cursor = Cursor {
                        tenant: ti,
                        piece: pi,
                        after: after.clone(),
                        bucket: None,
                    };
                    w.checkpoint(&cursor)?;
                    if !full {
                        break;
                    }
                }
            } else {
                let mut b = match (resumed, start.bucket) {
                    (true, Some(b)) => b,
                    _ => piece.0,
                };
                while b < piece.1 {
                    let (_, bucket_end) = bucket(plan.granularity, b);
                    let end = bucket_end.min(piece.1);
                    let mut sel_b = sel.clone();
                    sel_b.from = b;
                    sel_b.to = end;
                    // Late arrivals are carried into the month's first bucket only.
                    if b != piece.0 {
                        sel_b.late_since = None;
                    }
                    let groups = finance::groups(conn, &sel_b, &columns)?;
                    let ids: Vec<&str> = groups.iter().map(|g| g.api_key_id.as_str()).collect();
                    w.prefix(conn, &ids)?;
                    for g in groups {
                        let row = group_row(plan, tenant, (b, end), g, &w.prefixes);
                        w.emit(row)?;
                    }
                    b = end;
                    let cursor = Cursor {
                        tenant: ti,
                        piece: pi,
                        after: None,
                        bucket: Some(b),
                    };
                    w.checkpoint(&cursor)?;
                }
            }
        }
    }
    Ok(w.summary)
}

/// How many usage records `plan` reads (for a progress bar's length).
pub fn records(conn: &mut DbConn, plan: &Plan) -> Result<u64, ExportError> {
    let mut n = 0;
    for tenant in &plan.tenants {
        for piece in pieces(plan.from, plan.to) {
            let sel = selection(conn, plan, &tenant.id, piece)?;
            n += finance::count(conn, &sel)? as u64;
        }
    }
    Ok(n)
}

/// How many (tenant, period) buckets an aggregated `plan` writes (for a progress bar's length).
pub fn periods(plan: &Plan) -> usize {
    let mut n = 0;
    for (start, end) in pieces(plan.from, plan.to) {
        let mut b = start;
        while b < end {
            b = bucket(plan.granularity, b).1.min(end);
            n += 1;
        }
    }
    n * plan.tenants.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn decimals_and_times_are_exact() {
        assert_eq!(decimal(1_500_000_000), "1.500000000");
        assert_eq!(decimal(-7), "-0.000000007");
        assert_eq!(decimal(0), "0.000000000");
        assert_eq!(decimal(i64::MIN), "-9223372036.854775808");
        assert_eq!(iso(t("2026-12-07 10:00:00")), "2026-12-07T10:00:00Z");
    }

    #[test]
    fn ranges_split_into_months_and_calendar_buckets() {
        let p = pieces(t("2026-10-15 00:00:00"), t("2026-12-02 00:00:00"));
        assert_eq!(
            p,
            [
                (t("2026-10-15 00:00:00"), t("2026-11-01 00:00:00")),
                (t("2026-11-01 00:00:00"), t("2026-12-01 00:00:00")),
                (t("2026-12-01 00:00:00"), t("2026-12-02 00:00:00")),
            ]
        );
        assert_eq!(
            bucket(Granularity::Hour, t("2026-12-31 23:59:59")),
            (t("2026-12-31 23:00:00"), t("2027-01-01 00:00:00"))
        );
        assert_eq!(
            bucket(Granularity::Month, t("2026-12-31 23:59:59")),
            (t("2026-12-01 00:00:00"), t("2027-01-01 00:00:00"))
        );
        assert!(closed(t("2026-11-01 00:00:00"), t("2026-12-01 01:00:00")));
        assert!(!closed(t("2026-11-01 00:00:00"), t("2026-12-01 00:59:59")));
        assert_eq!(
            Dimension::parse_list("model, account").unwrap(),
            [Dimension::Account, Dimension::Model]
        );
        assert!(Dimension::parse_list("tenant").is_err());
    }
}

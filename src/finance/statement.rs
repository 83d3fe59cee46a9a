//! Monthly statements per account: opening balance, top-ups by provider, usage by model, refunds
//! and disputes, adjustments, other movements, closing balance — read from the ledger entries of
//! the account's balance made in the calendar month (UTC), so opening + Σ lines = closing exactly,
//! and the closing balance is the next month's opening balance. A usage line is dated by when it
//! was posted: a request that ran on the last evening of a month and was posted after midnight is
//! on the next month's statement.
//!
//! A closed month's statement (an hour after the month ends) is stored the first time it is made
//! (`statements`); every later request renders that document, so JSON, CSV and PDF re-export
//! byte-identical. Rendered as JSON, CSV (one line per item) or PDF ([`super::pdf`]).

use chrono::{NaiveDate, NaiveDateTime};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::export::{closed, decimal, iso};
use crate::db::DbConn;
use crate::domain::{AccountId, TenantId};
use crate::models::finance::{self, StatementLine, StoredStatement};

/// A top-up, refund or dispute line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct PaymentLine {
    /// `stripe`, `btcpay`, `coinbase`, `tao` or `custom:<name>`.
    pub provider: String,
    /// `credit` (a top-up), `refund`, `dispute` or `dispute_reversal`.
    pub kind: String,
    pub count: i64,
    pub amount_nano: i64,
    pub amount: String,
}

/// Usage of one model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct UsageLine {
    pub model: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Charged (negative: it lowers the balance).
    pub amount_nano: i64,
    pub amount: String,
}

/// Any other movement, per ledger transaction kind (adjustments among them).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct OtherLine {
    pub kind: String,
    pub count: i64,
    pub amount_nano: i64,
    pub amount: String,
}

/// One account's month.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Statement {
    pub object: String,
    pub tenant: String,
    pub account_id: String,
    pub account_name: String,
    pub currency: String,
    /// `YYYY-MM`.
    pub month: String,
    pub period_start: String,
    pub period_end: String,
    /// Closed months are final (stored; identical on every request).
    pub closed: bool,
    pub opening_balance_nano: i64,
    pub opening_balance: String,
    pub topups: Vec<PaymentLine>,
    pub usage: Vec<UsageLine>,
    pub refunds_and_disputes: Vec<PaymentLine>,
    pub adjustments: Vec<OtherLine>,
    pub other: Vec<OtherLine>,
    pub closing_balance_nano: i64,
    pub closing_balance: String,
}

/// Parses `YYYY-MM` into the month's start and end.
pub fn month_range(month: &str) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let (y, m) = month.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    let start = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
    let end = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)?
    }
    .and_hms_opt(0, 0, 0)?;
    Some((start, end))
}

fn provider_name(stored: &str) -> String {
    // custom:<tenant>:<name> → custom:<name>
    match stored
        .strip_prefix("custom:")
        .and_then(|r| r.split_once(':'))
    {
        Some((_, name)) => format!("custom:{name}"),
        None => stored.to_owned(),
    }
}

/// Who the statement is for.
pub struct Subject {
    pub tenant_id: TenantId,
    pub tenant_slug: String,
    pub account: AccountId,
    pub account_name: String,
    pub currency: String,
}

/// The statement of `subject` for `month` (`YYYY-MM`, already checked): a closed month's stored
/// document (stored now if it is the first request), else made from the ledger as it stands.
pub fn make(
    conn: &mut DbConn,
    subject: &Subject,
    month: &str,
    (start, end): (NaiveDateTime, NaiveDateTime),
    now: NaiveDateTime,
) -> diesel::QueryResult<Statement> {
    let is_closed = closed(start, now);
    if is_closed
        && let Some(stored) = StoredStatement::find(conn, &subject.account, month)?
        && let Ok(doc) = serde_json::from_str(&stored.document)
    {
        return Ok(doc);
    }
    let ledger = finance::balance_account(conn, &subject.account)?;
    let (opening, lines) = match &ledger {
        Some(l) => (
            finance::balance_before(conn, l, start)?,
            finance::statement_lines(conn, l, start, end)?,
        ),
        None => (0, Vec::new()),
    };
    let statement = build(subject, month, (start, end), is_closed, opening, lines);
    if is_closed {
        let stored = StoredStatement {
            account_id: subject.account.clone(),
            month: month.to_owned(),
            tenant_id: subject.tenant_id.clone(),
            document: serde_json::to_string(&statement).expect("a statement serialises"),
            created_at: now,
        }
        .keep(conn)?;
        if let Ok(doc) = serde_json::from_str(&stored.document) {
            return Ok(doc);
        }
    }
    Ok(statement)
}

fn build(
    subject: &Subject,
    month: &str,
    (start, end): (NaiveDateTime, NaiveDateTime),
    is_closed: bool,
    opening: i64,
    lines: Vec<StatementLine>,
) -> Statement {
    let mut s = Statement {
        object: "statement".into(),
        tenant: subject.tenant_slug.clone(),
        account_id: subject.account.to_string(),
        account_name: subject.account_name.clone(),
        currency: subject.currency.clone(),
        month: month.to_owned(),
        period_start: iso(start),
        period_end: iso(end),
        closed: is_closed,
        opening_balance_nano: opening,
        opening_balance: decimal(opening),
        topups: Vec::new(),
        usage: Vec::new(),
        refunds_and_disputes: Vec::new(),
        adjustments: Vec::new(),
        other: Vec::new(),
        closing_balance_nano: 0,
        closing_balance: String::new(),
    };
    let mut closing = opening;
    for l in lines {
        closing += l.amount_nano;
        match l.class.as_str() {
            "usage" => s.usage.push(UsageLine {
                model: l.model,
                requests: l.entries,
                prompt_tokens: l.prompt_tokens,
                completion_tokens: l.completion_tokens,
                amount_nano: l.amount_nano,
                amount: decimal(l.amount_nano),
            }),
            "payment" => {
                let line = PaymentLine {
                    provider: provider_name(&l.provider),
                    kind: l.movement.clone(),
                    count: l.entries,
                    amount_nano: l.amount_nano,
                    amount: decimal(l.amount_nano),
                };
                if l.movement == "credit" {
                    s.topups.push(line);
                } else {
                    s.refunds_and_disputes.push(line);
                }
            }
            kind => {
                let line = OtherLine {
                    kind: kind.to_owned(),
                    count: l.entries,
                    amount_nano: l.amount_nano,
                    amount: decimal(l.amount_nano),
                };
                if kind == "adjustment" {
                    s.adjustments.push(line);
                } else {
                    s.other.push(line);
                }
            }
        }
    }
    s.closing_balance_nano = closing;
    s.closing_balance = decimal(closing);
    s
}

/// The statement as CSV: `section,item,count,prompt_tokens,completion_tokens,amount_nano,amount,currency`.
pub fn csv(s: &Statement) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "section",
        "item",
        "count",
        "prompt_tokens",
        "completion_tokens",
        "amount_nano",
        "amount",
        "currency",
    ])?;
    let mut line = |section: &str, item: &str, count: String, p: String, c: String, nano: i64| {
        w.write_record([
            section,
            item,
            &count,
            &p,
            &c,
            &nano.to_string(),
            &decimal(nano),
            &s.currency,
        ])
    };
    line(
        "opening_balance",
        "",
        String::new(),
        String::new(),
        String::new(),
        s.opening_balance_nano,
    )?;
    for t in &s.topups {
        line(
            "topup",
            &t.provider,
            t.count.to_string(),
            String::new(),
            String::new(),
            t.amount_nano,
        )?;
    }
    for u in &s.usage {
        line(
            "usage",
            &u.model,
            u.requests.to_string(),
            u.prompt_tokens.to_string(),
            u.completion_tokens.to_string(),
            u.amount_nano,
        )?;
    }
    for r in &s.refunds_and_disputes {
        let item = format!("{} {}", r.provider, r.kind);
        line(
            "refund_or_dispute",
            &item,
            r.count.to_string(),
            String::new(),
            String::new(),
            r.amount_nano,
        )?;
    }
    for a in &s.adjustments {
        line(
            "adjustment",
            &a.kind,
            a.count.to_string(),
            String::new(),
            String::new(),
            a.amount_nano,
        )?;
    }
    for o in &s.other {
        line(
            "other",
            &o.kind,
            o.count.to_string(),
            String::new(),
            String::new(),
            o.amount_nano,
        )?;
    }
    line(
        "closing_balance",
        "",
        String::new(),
        String::new(),
        String::new(),
        s.closing_balance_nano,
    )?;
    w.into_inner().map_err(|e| e.into_error().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_parse_strictly() {
        let (s, e) = month_range("2026-12").unwrap();
        assert_eq!(
            (iso(s), iso(e)),
            (
                "2026-12-01T00:00:00Z".to_owned(),
                "2027-01-01T00:00:00Z".to_owned()
            )
        );
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-00"] {
            assert!(month_range(bad).is_none(), "{bad}");
        }
        assert_eq!(provider_name("custom:t1:mypay"), "custom:mypay");
        assert_eq!(provider_name("stripe"), "stripe");
    }
}

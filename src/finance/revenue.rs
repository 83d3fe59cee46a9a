//! Revenue reports: for a period, per model, per route (upstream) or per account — retail revenue
//! (what accounts were charged), wholesale cost (what the tenant owes the operator), the
//! reseller's margin (retail − wholesale); and for the operator also the upstream cost (what the
//! answering routes cost, when they report it) and the operator's margin (wholesale − upstream).
//! Summed from the usage records of the period (started in `[from, to)`), which are what the
//! ledger's usage postings were made from.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::export::{TenantRef, Viewer};
use crate::db::DbConn;
use crate::models::finance::{self, Selection};

/// What a report is grouped by.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RevenueBy {
    #[default]
    Model,
    Route,
    Account,
}

/// One group of a report.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq, Eq)]
pub struct RevenueLine {
    /// The model, the route (`""`: none answered) or the account id.
    pub group: String,
    pub currency: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub retail_nano: i64,
    pub wholesale_nano: i64,
    /// retail − wholesale.
    pub margin_nano: i64,
    /// Operator only.
    pub upstream_cost_nano: Option<i64>,
    /// wholesale − upstream cost; operator only.
    pub operator_margin_nano: Option<i64>,
}

/// Sums `tenants`' usage in `[from, to)` per `by` (and currency).
pub fn report(
    conn: &mut DbConn,
    tenants: &[TenantRef],
    (from, to): (NaiveDateTime, NaiveDateTime),
    by: RevenueBy,
    viewer: Viewer,
) -> diesel::QueryResult<(Vec<RevenueLine>, Vec<RevenueLine>)> {
    let column = match by {
        RevenueBy::Model => "model",
        RevenueBy::Route => "upstream",
        RevenueBy::Account => "account_id",
    };
    let mut lines: BTreeMap<(String, String), RevenueLine> = BTreeMap::new();
    for t in tenants {
        let sel = Selection {
            tenant: t.id.clone(),
            account: None,
            from,
            to,
            cutoff: None,
            late_since: None,
        };
        for g in finance::groups(conn, &sel, &[column])? {
            let group = match by {
                RevenueBy::Model => g.model,
                RevenueBy::Route => g.upstream,
                RevenueBy::Account => g.account_id,
            };
            let line = lines
                .entry((group.clone(), t.currency.clone()))
                .or_insert_with(|| RevenueLine {
                    group,
                    currency: t.currency.clone(),
                    ..Default::default()
                });
            line.requests += g.requests;
            line.prompt_tokens += g.prompt_tokens;
            line.completion_tokens += g.completion_tokens;
            line.retail_nano += g.charged_nano;
            line.wholesale_nano += g.tenant_charged_nano;
            if viewer == Viewer::Operator {
                *line.upstream_cost_nano.get_or_insert(0) += g.upstream_cost_nano;
            }
        }
    }
    let mut totals: BTreeMap<String, RevenueLine> = BTreeMap::new();
    let mut out = Vec::with_capacity(lines.len());
    for (_, mut line) in lines {
        line.margin_nano = line.retail_nano - line.wholesale_nano;
        line.operator_margin_nano = line.upstream_cost_nano.map(|u| line.wholesale_nano - u);
        let total = totals
            .entry(line.currency.clone())
            .or_insert_with(|| RevenueLine {
                group: "total".into(),
                currency: line.currency.clone(),
                upstream_cost_nano: line.upstream_cost_nano.map(|_| 0),
                ..Default::default()
            });
        total.requests += line.requests;
        total.prompt_tokens += line.prompt_tokens;
        total.completion_tokens += line.completion_tokens;
        total.retail_nano += line.retail_nano;
        total.wholesale_nano += line.wholesale_nano;
        total.margin_nano += line.margin_nano;
        if let (Some(t), Some(u)) = (total.upstream_cost_nano.as_mut(), line.upstream_cost_nano) {
            *t += u;
        }
        out.push(line);
    }
    let totals = totals
        .into_values()
        .map(|mut t| {
            t.operator_margin_nano = t.upstream_cost_nano.map(|u| t.wholesale_nano - u);
            t
        })
        .collect();
    Ok((out, totals))
}

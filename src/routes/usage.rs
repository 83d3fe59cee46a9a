//! `GET /usage?from&to&group_by=day|key|model[&account_id]`: requests, tokens and charges of the
//! caller's tenant (a developer: their account), grouped, for a time range (default: this UTC month
//! so far). Aggregated from the usage records of the range, at most [`MAX_ROWS`] of them.

use std::collections::BTreeMap;

use actix_web::{get, web};
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::Caller;
use crate::domain::{AccountId, Nano, Role};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::models::account::Account;
use crate::models::usage::{UsageLine, UsageRecord};
use crate::state::AppState;

/// Records one report may aggregate; a larger range gets 400 `range_too_large`.
pub const MAX_ROWS: i64 = 200_000;

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    #[default]
    Day,
    Key,
    Model,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start (RFC 3339, inclusive). Default: the first of this month, 00:00 UTC.
    pub from: Option<DateTime<Utc>>,
    /// End (RFC 3339, exclusive). Default: now.
    pub to: Option<DateTime<Utc>>,
    /// `day` (UTC date), `key` (API key id) or `model`. Default `day`.
    pub group_by: Option<GroupBy>,
    /// Only this account (tenant-wide roles); a developer always sees their own.
    pub account_id: Option<String>,
}

#[derive(Serialize, ToSchema, Default, Debug, PartialEq, Eq)]
pub struct UsageGroup {
    /// The day (`YYYY-MM-DD`), key id or model.
    pub group: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// What the requests were charged (retail), nano-units.
    #[schema(value_type = i64)]
    pub charged_nano: Nano,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    pub object: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub group_by: GroupBy,
    pub data: Vec<UsageGroup>,
}

fn group_of(line: &UsageLine, by: GroupBy) -> String {
    match by {
        GroupBy::Day => line.started_at.date().to_string(),
        GroupBy::Key => line.api_key_id.to_string(),
        GroupBy::Model => line.model.clone(),
    }
}

/// Sums `lines` per group, in group order.
pub fn aggregate(lines: &[UsageLine], by: GroupBy) -> Vec<UsageGroup> {
    let mut groups: BTreeMap<String, UsageGroup> = BTreeMap::new();
    for line in lines {
        let key = group_of(line, by);
        let g = groups.entry(key.clone()).or_insert_with(|| UsageGroup {
            group: key,
            ..Default::default()
        });
        g.requests += 1;
        g.prompt_tokens += line.prompt_tokens;
        g.completion_tokens += line.completion_tokens;
        g.charged_nano = Nano(g.charged_nano.0.saturating_add(line.charged_nano.0));
    }
    groups.into_values().collect()
}

/// Usage of the tenant (or one account), grouped by day, key or model.
#[utoipa::path(tag = "money", params(UsageQuery), responses((status = 200, body = UsageReport), (status = 400, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/usage")]
pub async fn get_usage(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<UsageQuery>,
) -> ApiResult<web::Json<UsageReport>> {
    let tenant = caller.tenant()?.clone();
    let query = query.into_inner();
    let account = match caller.role {
        Role::Developer => {
            let own = caller
                .account_scope()
                .ok_or_else(|| ApiError::forbidden("no account"))?;
            if query
                .account_id
                .as_deref()
                .is_some_and(|a| AccountId::parse(a).as_ref() != Some(own))
            {
                return Err(ApiError::NotFound { what: "account" });
            }
            Some(own.clone())
        }
        _ => {
            caller.tenant_reader()?;
            match query.account_id.as_deref() {
                Some(a) => Some(AccountId::parse(a).ok_or(ApiError::NotFound { what: "account" })?),
                None => None,
            }
        }
    };
    let now = Utc::now();
    let month_start = now
        .date_naive()
        .with_day(1)
        .expect("day 1")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let (from, to) = (query.from.unwrap_or(month_start), query.to.unwrap_or(now));
    if to <= from {
        return Err(ApiError::invalid_param("to", "to must be after from"));
    }
    let by = query.group_by.unwrap_or_default();
    let range = (from.naive_utc(), to.naive_utc());
    let lines = state
        .db
        .run(move |c| {
            if let Some(account) = &account {
                Account::find_in_tenant(c, &tenant, account)?;
            }
            UsageRecord::in_range(c, &tenant, account.as_ref(), range, MAX_ROWS)
        })
        .await
        .not_found_as("account")?;
    if lines.len() as i64 > MAX_ROWS {
        return Err(ApiError::bad_request(
            "range_too_large",
            format!("more than {MAX_ROWS} requests in this range; ask for a shorter one"),
        ));
    }
    Ok(web::Json(UsageReport {
        object: "usage",
        from,
        to,
        group_by: by,
        data: aggregate(&lines, by),
    }))
}

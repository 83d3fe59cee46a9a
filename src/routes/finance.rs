//! Finance on the management API: `GET /usage/export` (CSV or JSONL, streamed), `GET /statements`
//! (JSON, CSV or PDF) and `GET /reports/revenue`. The rules live in [`crate::finance`]; these
//! handlers check who may see what, then answer.

use std::io::Write;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::Caller;
use crate::db::Db;
use crate::domain::{AccountId, Role, TenantId};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::finance::export::{
    self, Cursor, Dimension, Encoder, Format, Granularity, Plan, Quiet, TenantRef, Viewer,
};
use crate::finance::revenue::{self, RevenueBy, RevenueLine};
use crate::finance::statement::{self, Statement, Subject};
use crate::finance::{currency_of, pdf};
use crate::models::account::Account;
use crate::models::tenant::Tenant;
use crate::state::AppState;

/// Longest range one export or report covers.
pub const MAX_RANGE_DAYS: i64 = 400;

/// Whose data a finance request reads: every tenant (`None`, the operator without `tenant_id`)
/// or one, optionally one account.
struct Scope {
    viewer: Viewer,
    tenant: Option<TenantId>,
    account: Option<AccountId>,
}

fn scope(caller: &Caller, tenant_id: Option<&str>, account_id: Option<&str>) -> ApiResult<Scope> {
    let not_found = |what| ApiError::NotFound { what };
    let account = match account_id {
        Some(a) => Some(AccountId::parse(a).ok_or(not_found("account"))?),
        None => None,
    };
    match caller.role {
        Role::Operator => {
            let tenant = match tenant_id {
                Some(t) => Some(TenantId::parse(t).ok_or(not_found("tenant"))?),
                None => None,
            };
            if account.is_some() && tenant.is_none() {
                return Err(ApiError::invalid_param(
                    "account_id",
                    "account_id goes with tenant_id",
                ));
            }
            Ok(Scope {
                viewer: Viewer::Operator,
                tenant,
                account,
            })
        }
        _ if tenant_id.is_some() => Err(ApiError::invalid_param(
            "tenant_id",
            "tenant_id is for the operator; a tenant user reads their own tenant",
        )),
        Role::Developer => {
            let own = caller
                .account_scope()
                .ok_or_else(|| ApiError::forbidden("no account"))?;
            if account.as_ref().is_some_and(|a| a != own) {
                return Err(not_found("account"));
            }
            Ok(Scope {
                viewer: Viewer::Developer,
                tenant: Some(caller.tenant()?.clone()),
                account: Some(own.clone()),
            })
        }
        _ => Ok(Scope {
            viewer: Viewer::Tenant,
            tenant: Some(caller.tenant_reader()?.clone()),
            account,
        }),
    }
}

/// The tenants a scope reads, with their slugs and currencies; 404 for an unknown tenant or an
/// account outside it.
async fn tenants(db: &Db, scope: &Scope) -> ApiResult<Vec<TenantRef>> {
    let (tenant, account) = (scope.tenant.clone(), scope.account.clone());
    db.run(move |c| {
        let list = match &tenant {
            Some(t) => {
                let found = Tenant::find(c, t)?;
                if let Some(a) = &account {
                    Account::find_in_tenant(c, t, a)?;
                }
                vec![found]
            }
            None => {
                let mut all = Vec::new();
                let mut after = String::new();
                loop {
                    let page = Tenant::list(c, &after, 500)?;
                    let more = page.len() > 500;
                    all.extend(page.into_iter().take(500));
                    match (more, all.last()) {
                        (true, Some(last)) => after = last.id.to_string(),
                        _ => break,
                    }
                }
                all.sort_by(|a, b| a.slug.cmp(&b.slug));
                all
            }
        };
        list.into_iter()
            .map(|t| {
                Ok(TenantRef {
                    currency: currency_of(c, &t.id)?,
                    id: t.id,
                    slug: t.slug,
                })
            })
            .collect()
    })
    .await
    .not_found_as(if scope.account.is_some() {
        "account"
    } else {
        "tenant"
    })
}

fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> ApiResult<()> {
    if to <= from {
        return Err(ApiError::invalid_param("to", "to must be after from"));
    }
    if to - from > chrono::Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::invalid_param(
            "to",
            format!("a range covers at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Start (RFC 3339, inclusive).
    pub from: DateTime<Utc>,
    /// End (RFC 3339, exclusive); at most 400 days after `from`.
    pub to: DateTime<Utc>,
    /// `csv` (default; RFC 4180 with a header row) or `jsonl`.
    pub format: Option<Format>,
    /// `request` (one row per request), `hour`, `day` (default) or `month`.
    pub granularity: Option<Granularity>,
    /// For `hour` / `day` / `month`: any of `account,key,model,route`, comma-separated (default all).
    #[param(max_length = 100)]
    pub group_by: Option<String>,
    /// Only this account (owner, admin, finance; with `tenant_id` for the operator).
    pub account_id: Option<String>,
    /// The operator: only this tenant (default: every tenant).
    pub tenant_id: Option<String>,
}

/// Sends what is written to it to the response, 64 KiB at a time.
struct Channel {
    tx: tokio::sync::mpsc::Sender<Result<web::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Channel {
    const CHUNK: usize = 64 * 1024;

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(Self::CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Write for Channel {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Usage as CSV or JSONL for finance (owner, admin, finance: their tenant; a developer: their own
/// account, retail amounts only; the operator: every tenant, or `tenant_id`), streamed at constant
/// memory. Columns: `period_start, period_end, tenant, account_id, api_key_id, api_key_prefix,
/// model, upstream, requests, prompt_tokens, completion_tokens, prompt_price_nano_per_mtok,
/// completion_price_nano_per_mtok, request_price_nano, amount_nano, amount, wholesale_nano,
/// upstream_cost_nano, margin_nano, usage_source, currency`. Periods are half-open, UTC; a closed
/// month re-exports byte-identical (late records go to the next month).
#[utoipa::path(tag = "finance", params(ExportQuery),
    responses((status = 200, description = "The export (text/csv or application/jsonl)", content_type = "text/csv", body = String),
        (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("jwt" = [])))]
#[get("/usage/export")]
pub async fn usage_export(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ExportQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    range(q.from, q.to)?;
    let group_by = Dimension::parse_list(q.group_by.as_deref().unwrap_or(""))
        .map_err(|why| ApiError::invalid_param("group_by", why))?;
    let scope = scope(&caller, q.tenant_id.as_deref(), q.account_id.as_deref())?;
    let tenants = tenants(&state.db, &scope).await?;
    let format = q.format.unwrap_or_default();
    let plan = Plan {
        tenants,
        account: scope.account,
        from: q.from.naive_utc(),
        to: q.to.naive_utc(),
        granularity: q.granularity.unwrap_or_default(),
        group_by,
        viewer: scope.viewer,
        format,
        now: crate::db::now(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || {
        let abort = tx.clone();
        let result = (|| {
            let mut conn = db.get().map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut enc = Encoder::new(
                format,
                Channel {
                    tx,
                    buf: Vec::new(),
                },
                false,
            )?;
            export::run(&mut conn, &plan, Cursor::default(), &mut enc, &mut Quiet)?;
            enc.flush()
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "a usage export stopped");
            // The body ends in an error: the client sees a broken transfer, never a short file.
            let _ = abort.blocking_send(Err(std::io::Error::other("export stopped")));
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Jsonl => ("application/jsonl", "jsonl"),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            "Content-Disposition",
            format!(
                "attachment; filename=\"usage-{}.{ext}\"",
                q.from.format("%Y%m%d")
            ),
        ))
        .streaming(body))
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StatementFormat {
    #[default]
    Json,
    Csv,
    Pdf,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    /// The account: required for owner, admin and finance; a developer gets their own.
    pub account_id: Option<String>,
    /// The calendar month, `YYYY-MM` (UTC), not in the future.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$")]
    pub month: String,
    /// `json` (default), `csv` or `pdf`.
    pub format: Option<StatementFormat>,
}

/// An account's statement for a month (a developer their own; owner, admin, finance any of the
/// tenant's): opening balance, top-ups by provider, usage by model, refunds and disputes,
/// adjustments, closing balance — tied to the ledger; a closed month is final and re-exports
/// byte-identical.
#[utoipa::path(tag = "finance", params(StatementQuery),
    responses((status = 200, body = Statement), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("jwt" = [])))]
#[get("/statements")]
pub async fn get_statement(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<StatementQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let now = crate::db::now();
    let bounds = statement::month_range(&q.month)
        .filter(|(start, _)| *start <= now)
        .ok_or_else(|| {
            ApiError::invalid_param("month", "month must be YYYY-MM, not in the future")
        })?;
    let scope = scope(&caller, None, q.account_id.as_deref())?;
    let (Some(tenant), Some(account)) = (scope.tenant, scope.account) else {
        return Err(ApiError::invalid_param(
            "account_id",
            "account_id is required",
        ));
    };
    let month = q.month.clone();
    let doc = state
        .db
        .run(move |c| {
            let t = Tenant::find(c, &tenant)?;
            let a = Account::find_in_tenant(c, &tenant, &account)?;
            let subject = Subject {
                currency: currency_of(c, &tenant)?,
                tenant_id: tenant,
                tenant_slug: t.slug,
                account_name: a.name,
                account,
            };
            statement::make(c, &subject, &month, bounds, now)
        })
        .await
        .not_found_as("account")?;
    let name = format!("statement-{}-{}", doc.month, doc.account_id);
    Ok(match q.format.unwrap_or_default() {
        StatementFormat::Json => HttpResponse::Ok().json(doc),
        StatementFormat::Csv => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{name}.csv\""),
            ))
            .body(statement::csv(&doc).map_err(ApiError::internal)?),
        StatementFormat::Pdf => HttpResponse::Ok()
            .content_type("application/pdf")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"{name}.pdf\""),
            ))
            .body(pdf::render(&doc).map_err(ApiError::internal_msg)?),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevenueQuery {
    /// Start (RFC 3339, inclusive).
    pub from: DateTime<Utc>,
    /// End (RFC 3339, exclusive); at most 400 days after `from`.
    pub to: DateTime<Utc>,
    /// `model` (default), `route` or `account`.
    pub by: Option<RevenueBy>,
    /// The operator: only this tenant (default: every tenant).
    pub tenant_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RevenueReport {
    pub object: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub by: RevenueBy,
    pub data: Vec<RevenueLine>,
    /// One per currency.
    pub totals: Vec<RevenueLine>,
}

/// Retail revenue, wholesale cost and margin for a period, by model, route or account (owner,
/// admin, finance: their tenant; the operator: every tenant or `tenant_id`, with upstream cost and
/// the operator's margin).
#[utoipa::path(tag = "finance", params(RevenueQuery),
    responses((status = 200, body = RevenueReport), (status = 400, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("jwt" = [])))]
#[get("/reports/revenue")]
pub async fn revenue_report(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<RevenueQuery>,
) -> ApiResult<web::Json<RevenueReport>> {
    let q = query.into_inner();
    range(q.from, q.to)?;
    if caller.role == Role::Developer {
        return Err(ApiError::forbidden(
            "requires the owner, admin or finance role",
        ));
    }
    let scope = scope(&caller, q.tenant_id.as_deref(), None)?;
    let tenants = tenants(&state.db, &scope).await?;
    let by = q.by.unwrap_or_default();
    let (from, to) = (q.from.naive_utc(), q.to.naive_utc());
    let viewer = scope.viewer;
    let (data, totals) = state
        .db
        .run(move |c| revenue::report(c, &tenants, (from, to), by, viewer))
        .await?;
    Ok(web::Json(RevenueReport {
        object: "revenue_report",
        from: q.from,
        to: q.to,
        by,
        data,
        totals,
    }))
}

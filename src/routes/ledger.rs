//! Money through the API: `GET /balance`, `GET /ledger` (an account's statement, paginated) and
//! `POST /accounts/{id}/adjustments` (a manual credit or debit with a reason: audited, posted once
//! per `Idempotency-Key`). Every movement is a balanced ledger transaction.

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::caller::{Caller, RequestMeta};
use crate::billing::adjust::Adjustment;
use crate::billing::amount::{self, Sign};
use crate::billing::balance::resync;
use crate::domain::{AccountId, BillingMode, Nano, Role, TransactionKind};
use crate::error::{ApiError, ApiResult, ResultExt};
use crate::http::extract::Json;
use crate::models::account::Account;
use crate::models::audit::AuditEntry;
use crate::models::ledger::{EntryLine, LedgerAccount, PostError, Posted};
use crate::models::{List, Page, utc};
use crate::state::AppState;
use crate::validate;

#[derive(Serialize, ToSchema)]
pub struct BalanceView {
    pub object: &'static str,
    pub account_id: AccountId,
    /// Credits minus debits, in nano-units.
    #[schema(value_type = i64)]
    pub balance_nano: Nano,
    pub billing_mode: BillingMode,
    #[schema(value_type = i64)]
    pub credit_limit_nano: Nano,
    /// Reserved by requests in flight (released or captured when they end).
    #[schema(value_type = i64)]
    pub held_nano: Nano,
    /// Captured by finished requests and not yet in the ledger (seconds at most).
    #[schema(value_type = i64)]
    pub pending_nano: Nano,
    /// What requests may still spend: the balance, plus the credit limit when postpaid, minus
    /// holds and pending usage.
    #[schema(value_type = i64)]
    pub spendable_nano: Nano,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    /// Required for tenant-wide roles; a developer always sees their own account.
    pub account_id: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountQuery {
    /// Required for tenant-wide roles; a developer always sees their own account.
    pub account_id: Option<String>,
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    #[param(pattern = "^[!-~]{1,100}$")]
    pub after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    pub object: &'static str,
    pub transaction_id: String,
    pub kind: TransactionKind,
    /// Positive: credited to the account; negative: debited.
    #[schema(value_type = i64)]
    pub amount_nano: Nano,
    pub reference: Option<String>,
    pub memo: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdjustment {
    /// Nano-units to credit (positive) or debit (negative); not zero.
    #[schema(value_type = i64)]
    pub amount_nano: Nano,
    /// Why (kept in the ledger and the audit log).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct AdjustmentView {
    pub object: &'static str,
    pub transaction_id: String,
    pub account_id: AccountId,
    #[schema(value_type = i64)]
    pub amount_nano: Nano,
    pub reason: String,
    /// The account's balance after the adjustment.
    #[schema(value_type = i64)]
    pub balance_nano: Nano,
}

/// The account a money read is about: a developer's own, else the one asked for (owner, admin,
/// finance).
pub fn account_of(caller: &Caller, asked: Option<&str>) -> ApiResult<AccountId> {
    if caller.role == Role::Developer {
        let own = caller
            .account_scope()
            .ok_or_else(|| ApiError::forbidden("no account"))?;
        return match asked.map(AccountId::parse) {
            Some(Some(a)) if a != *own => Err(ApiError::NotFound { what: "account" }),
            Some(None) => Err(ApiError::NotFound { what: "account" }),
            _ => Ok(own.clone()),
        };
    }
    caller.tenant_reader()?;
    let asked =
        asked.ok_or_else(|| ApiError::invalid_param("account_id", "account_id is required"))?;
    AccountId::parse(asked).ok_or(ApiError::NotFound { what: "account" })
}

/// An account's balance and what it may spend.
#[utoipa::path(tag = "money", params(BalanceQuery), responses((status = 200, body = BalanceView), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[get("/balance")]
pub async fn get_balance(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<BalanceQuery>,
) -> ApiResult<web::Json<BalanceView>> {
    let tenant = caller.tenant()?.clone();
    let id = account_of(&caller, query.account_id.as_deref())?;
    let (account, balance) = state
        .db
        .write(move |c| {
            let account = Account::find_in_tenant(c, &tenant, &id).not_found_as("account")?;
            let ledger = LedgerAccount::customer(c, &tenant, &account.id)?;
            let balance = LedgerAccount::balance(c, &ledger.id)?;
            Ok::<_, ApiError>((account, balance))
        })
        .await?;
    let credit = match account.billing_mode {
        BillingMode::Prepaid => 0,
        BillingMode::Postpaid => account.credit_limit_nano.0,
    };
    // The cached balance's in-flight parts; none cached means nothing is in flight.
    let cached = state
        .limiter
        .balance(&account.tenant_id, &account.id)
        .await
        .ok()
        .flatten()
        .map(|(reading, _)| reading)
        .unwrap_or_default();
    Ok(web::Json(BalanceView {
        object: "balance",
        held_nano: cached.held,
        pending_nano: cached.pending,
        spendable_nano: Nano(
            balance
                .0
                .saturating_add(credit)
                .saturating_sub(cached.held.0)
                .saturating_sub(cached.pending.0),
        ),
        account_id: account.id,
        balance_nano: balance,
        billing_mode: account.billing_mode,
        credit_limit_nano: account.credit_limit_nano,
    }))
}

/// An account's statement: its ledger entries, oldest first (owner, admin, finance; a developer
/// their own).
#[utoipa::path(tag = "money", params(AccountQuery), responses((status = 200, body = List<EntryView>)), security(("jwt" = [])))]
#[get("/ledger")]
pub async fn list_ledger(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<AccountQuery>,
) -> ApiResult<web::Json<List<EntryView>>> {
    let tenant = caller.tenant()?.clone();
    let id = account_of(&caller, query.account_id.as_deref())?;
    let page = Page {
        limit: query.limit,
        after: query.after.clone(),
    };
    let (limit, after) = (page.limit()?, page.after()?);
    let rows = state
        .db
        .write(move |c| {
            Account::find_in_tenant(c, &tenant, &id).not_found_as("account")?;
            let ledger = LedgerAccount::customer(c, &tenant, &id)?;
            Ok::<_, ApiError>(EntryLine::of_account(c, &ledger.id, &after, limit)?)
        })
        .await?;
    Ok(web::Json(List::from_rows(rows, limit, |l| EntryView {
        id: l.entry.id,
        object: "ledger_entry",
        transaction_id: l.transaction.id,
        kind: l.transaction.kind,
        amount_nano: l.entry.amount_nano,
        reference: l.transaction.reference,
        memo: l.transaction.memo,
        created_at: utc(l.entry.created_at),
    })))
}

/// Credits or debits an account by hand, with a reason (owner, admin). Posted once per
/// `Idempotency-Key`; audited.
#[utoipa::path(tag = "money", request_body = CreateAdjustment,
    responses((status = 201, body = AdjustmentView), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)), security(("jwt" = [])))]
#[post("/accounts/{id}/adjustments")]
pub async fn create_adjustment(
    state: web::Data<AppState>,
    caller: Caller,
    meta: RequestMeta,
    req: HttpRequest,
    id: web::Path<String>,
    body: Json<CreateAdjustment>,
) -> ApiResult<HttpResponse> {
    let tenant = caller.managed_tenant()?.clone();
    let id = AccountId::parse(&id).ok_or(ApiError::NotFound { what: "account" })?;
    let body = body.into_inner();
    let amount = amount::input("amount_nano", body.amount_nano, Sign::NonZero)?;
    let reason = validate::name("reason", &body.reason, 500)?;
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let actor = caller.actor(&meta);
    let (account_id, tenant_id) = (id.clone(), tenant.clone());
    let adjusted = state
        .db
        .write(move |c| {
            Account::find_in_tenant(c, &tenant, &id).not_found_as("account")?;
            let adjusted = Adjustment {
                tenant: &tenant,
                account: &id,
                by: actor.user_id.as_ref(),
                key: &key,
                amount,
                reason: &reason,
            }
            .post(c)
            .map_err(|e| match e {
                PostError::Db(e) => e.into(),
                PostError::OutOfRange => ApiError::BadRequest {
                    code: "amount_out_of_range",
                    message: "amount_nano would take a balance out of range".into(),
                    param: Some("amount_nano".into()),
                },
                PostError::Unbalanced => ApiError::internal_msg("unbalanced adjustment"),
            })?;
            if let Posted::New(t) = &adjusted.posted {
                AuditEntry::record(c, &actor, Some(&tenant), "ledger.adjustment", ("account", id.as_str()),
                    serde_json::json!({"transaction_id": t.id, "amount_nano": amount, "reason": reason}))?;
            }
            Ok::<_, ApiError>(adjusted)
        })
        .await?;
    let txn = match adjusted.posted {
        Posted::New(t) => {
            state
                .metrics
                .ledger_postings
                .with_label_values(&["adjustment"])
                .inc();
            t
        }
        Posted::Replayed(t) => t,
    };
    // Requests see the new balance at once (not only at the next re-sync).
    resync(&state.db, &state.limiter, &tenant_id, &account_id).await?;
    Ok(HttpResponse::Created().json(AdjustmentView {
        object: "adjustment",
        transaction_id: txn.id,
        account_id,
        amount_nano: adjusted.amount,
        reason: txn.memo.unwrap_or_default(),
        balance_nano: adjusted.balance,
    }))
}

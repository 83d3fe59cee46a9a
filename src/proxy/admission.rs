//! Admitting one data-plane request: scope, model and request checks, then the first-line flood
//! brake (governor, this replica), then every limit and quota that applies in one shared decision
//! ([`crate::limits::guard::Guard`]: one Redis round trip), the balance hold of a priced request
//! included. What it decides is left in the request for the `x-ratelimit-*` headers; what it admits
//! carries a permit that settle releases.

use actix_web::{HttpMessage, HttpRequest};
use governor::clock::{Clock as _, DefaultClock};

use crate::auth::caller::KeyCaller;
use crate::billing::balance::resync;
use crate::billing::holds::hold_for;
use crate::billing::settle::{Admission, Admitted};
use crate::error::{ApiError, ApiResult, LimitRefusal};
use crate::limits::guard::Verdict;
use crate::limits::response::{Headroom, RateInfo};
use crate::limits::{Ask, quotas};
use crate::openai::{ChatRequest, DEFAULT_MAX_TOKENS_LIMIT, estimate_tokens};
use crate::state::AppState;

/// Checks scope, model and the request itself; returns the model's completion budget.
fn check(state: &AppState, caller: &KeyCaller, req: &ChatRequest) -> ApiResult<i64> {
    if !caller.key().has_scope("chat:write") {
        return Err(ApiError::Forbidden {
            code: "insufficient_scope",
            message: "this key lacks the chat:write scope".into(),
        });
    }
    if req.model.trim().is_empty() {
        return Err(ApiError::invalid_param("model", "model must not be empty"));
    }
    let model = state
        .config
        .models
        .iter()
        .find(|m| m.id == req.model)
        .ok_or_else(|| ApiError::ModelNotFound {
            model: req.model.clone(),
        })?;
    let budget = model.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS_LIMIT);
    req.validate(budget)?;
    Ok(budget)
}

/// The governor brake of this replica: refuses floods before Redis is asked.
fn first_line(state: &AppState, caller: &KeyCaller, http: Option<&HttpRequest>) -> ApiResult<()> {
    let entry = &caller.entry;
    let Err(not_until) = entry.first_line.check() else {
        return Ok(());
    };
    state
        .metrics
        .limiter_decisions
        .with_label_values(&["first_line", "refused"])
        .inc();
    // The brake stands for the key's rpm (or, without one, the per-second flood guard).
    let kind = if entry.first_line_rpm.is_some() {
        "rpm"
    } else {
        "first_line"
    };
    state
        .metrics
        .refusals
        .with_label_values(&["key", kind])
        .inc();
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    if let (Some(rpm), Some(http)) = (entry.first_line_rpm, http) {
        let requests = Headroom {
            limit: rpm,
            remaining: 0,
            reset_ms: wait.as_millis() as i64,
        };
        http.extensions_mut().insert(RateInfo {
            requests: Some(requests),
            tokens: None,
        });
    }
    let (limit, what) = match entry.first_line_rpm {
        Some(rpm) => ("key rpm".to_owned(), format!("limit {rpm} per minute")),
        None => (
            "key flood".to_owned(),
            format!("limit {} per second", state.key_cache.flood_per_sec),
        ),
    };
    Err(ApiError::LimitExceeded(Box::new(LimitRefusal {
        code: "rate_limit_exceeded",
        message: format!("Rate limit reached for {limit}: {what}. Please retry shortly."),
        limit,
        retry_after_secs: wait.as_secs() + 1,
        reset_at: None,
    })))
}

/// Everything a request must pass before it is sent upstream. `http` receives the rate-limit
/// headers (WebSocket messages have none).
pub async fn admit(
    state: &AppState,
    caller: &KeyCaller,
    req: &ChatRequest,
    request_id: &str,
    http: Option<&HttpRequest>,
) -> ApiResult<Admitted> {
    let budget = check(state, caller, req)?;
    let context = &caller.entry.context;
    // A stored price book that cannot be read prices nothing: refuse rather than serve free.
    let (Ok(retail), Ok(wholesale)) = (&context.retail, &context.wholesale) else {
        return Err(ApiError::PricingUnavailable);
    };
    let prices = (
        retail.for_model(&req.model),
        wholesale.for_model(&req.model),
    );
    first_line(state, caller, http)?;
    let prompt_text = req.prompt_text();
    let prompt_estimate = estimate_tokens(&prompt_text);
    let completion_cap = req.max_output_tokens().unwrap_or(budget).min(budget);
    let key = caller.key();
    // The client's x-request-id is a correlation id only: two requests sending the same one must
    // not share a slot, a hold or a settle key, so every admission gets an id of our own.
    let admission_id = uuid::Uuid::now_v7().to_string();
    let ask = Ask {
        tenant: key.tenant_id.clone(),
        admission_id: admission_id.clone(),
        descriptors: caller.entry.descriptors.clone(),
        tokens: prompt_estimate,
        hold: prices.0.and_then(|price| {
            hold_for(
                &price,
                (prompt_estimate, completion_cap),
                context,
                &key.account_id,
            )
        }),
    };
    let unavailable = |_| ApiError::LimiterUnavailable;
    let mut verdict = state.limiter.admit(ask).await.map_err(unavailable)?;
    // First use of a quota period, or counters the limiter lost: rebuild them from the usage
    // records; first use of this account's balance here: load it from the ledger. Then decide.
    for _ in 0..2 {
        verdict = match verdict {
            Verdict::Unseeded {
                ask,
                at_ms,
                descriptors,
            } => {
                quotas::rebuild(
                    &state.db,
                    &state.limiter,
                    &key.tenant_id,
                    descriptors,
                    at_ms,
                )
                .await?;
                state.limiter.admit(ask).await.map_err(unavailable)?
            }
            Verdict::Unsynced(ask) => {
                resync(&state.db, &state.limiter, &key.tenant_id, &key.account_id).await?;
                state.limiter.admit(ask).await.map_err(unavailable)?
            }
            decided => decided,
        };
    }
    let remember = |info: RateInfo| {
        if let Some(http) = http {
            http.extensions_mut().insert(info);
        }
    };
    match verdict {
        Verdict::Admitted(permit) => {
            remember(permit.info);
            let admission = Admission {
                admission_id,
                request_id: request_id.to_owned(),
                prompt: (prompt_text, prompt_estimate),
                completion_cap,
                permit: Some(permit),
                prices,
            };
            Ok(Admitted::new(&state.meter, key, req, admission))
        }
        Verdict::Refused(refusal) => {
            remember(refusal.info);
            Err(refusal.to_error())
        }
        Verdict::Insufficient(shortfall) => {
            remember(shortfall.info);
            Err(shortfall.to_error(caller.entry.context.billing_mode))
        }
        Verdict::Unsynced(_) | Verdict::Unseeded { .. } => Err(ApiError::LimiterUnavailable),
    }
}

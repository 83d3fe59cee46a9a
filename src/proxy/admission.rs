//! Admitting one data-plane request: scope, model and request checks, then the first-line flood
//! brake (governor, this replica), then every limit and quota that applies in one shared decision
//! ([`crate::limits::guard::Guard`]: one Redis round trip). What it decides is left in the request
//! for the `x-ratelimit-*` headers; what it admits carries a permit that settle releases.

use actix_web::{HttpMessage, HttpRequest};
use governor::clock::{Clock as _, DefaultClock};

use crate::auth::caller::KeyCaller;
use crate::error::{ApiError, ApiResult, LimitRefusal};
use crate::limits::Ask;
use crate::limits::guard::Verdict;
use crate::limits::response::{Headroom, RateInfo};
use crate::metering::Admitted;
use crate::openai::{ChatRequest, DEFAULT_MAX_TOKENS_LIMIT, estimate_tokens};
use crate::state::AppState;

/// Checks scope, model and the request itself.
fn check(state: &AppState, caller: &KeyCaller, req: &ChatRequest) -> ApiResult<()> {
    if !caller.key().has_scope("chat:write") {
        return Err(ApiError::Forbidden {
            code: "insufficient_scope",
            message: "this key lacks the chat:write scope".into(),
        });
    }
    let model = state
        .config
        .models
        .iter()
        .find(|m| m.id == req.model)
        .ok_or_else(|| ApiError::ModelNotFound {
            model: req.model.clone(),
        })?;
    req.validate(model.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS_LIMIT))
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
    check(state, caller, req)?;
    first_line(state, caller, http)?;
    let prompt_estimate = estimate_tokens(&req.prompt_text());
    let key = caller.key();
    let ask = Ask {
        tenant: key.tenant_id.to_string(),
        request_id: request_id.to_owned(),
        descriptors: caller.entry.descriptors.clone(),
        tokens: prompt_estimate,
    };
    let verdict = state
        .limiter
        .admit(ask)
        .await
        .map_err(|_| ApiError::LimiterUnavailable)?;
    let remember = |info: RateInfo| {
        if let Some(http) = http {
            http.extensions_mut().insert(info);
        }
    };
    match verdict {
        Verdict::Admitted(permit) => {
            remember(permit.info);
            let context = &caller.entry.context;
            let prices = (
                context.retail.for_model(&req.model),
                context.wholesale.for_model(&req.model),
            );
            Ok(Admitted::new(
                request_id,
                key,
                req,
                prompt_estimate,
                Some(permit),
                prices,
            ))
        }
        Verdict::Refused(refusal) => {
            remember(refusal.info);
            Err(refusal.to_error())
        }
    }
}

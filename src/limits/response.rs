//! What a client sees of its limits: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on
//! every data-plane response (the tightest request- and token-counting limit that applies, OpenAI's
//! header names and reset format), the 429 body naming the limit that refused a request, and the
//! 402 body naming what of the account's money fell short.

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;

use super::guard::{Refusal, Shortfall};
use super::{Descriptor, Kind, Reading};
use crate::domain::{BillingMode, Nano};
use crate::error::{ApiError, LimitRefusal};

/// Headroom of the tightest limit of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Headroom {
    pub limit: i64,
    pub remaining: i64,
    pub reset_ms: i64,
}

/// What the `x-ratelimit-*` headers of a response say (and a WebSocket `done` message's
/// `ratelimit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RateInfo {
    pub requests: Option<Headroom>,
    pub tokens: Option<Headroom>,
}

impl RateInfo {
    pub fn new(descriptors: &[Descriptor], readings: &[Reading]) -> Self {
        let tightest = |tokens: bool| {
            descriptors
                .iter()
                .zip(readings)
                .filter(|(d, _)| d.kind != Kind::Concurrency && d.kind.counts_tokens() == tokens)
                .map(|(d, r)| Headroom {
                    limit: d.limit,
                    remaining: (d.limit - r.used).max(0),
                    reset_ms: r.reset_ms.max(0),
                })
                .min_by_key(|h| (h.remaining, std::cmp::Reverse(h.reset_ms)))
        };
        Self {
            requests: tightest(false),
            tokens: tightest(true),
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (family, headroom) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some(h) = headroom else { continue };
            out.push((name(family, "limit"), h.limit.to_string()));
            out.push((name(family, "remaining"), h.remaining.to_string()));
            out.push((name(family, "reset"), duration(h.reset_ms)));
        }
        out
    }
}

fn name(family: &str, what: &str) -> &'static str {
    match (family, what) {
        ("requests", "limit") => "x-ratelimit-limit-requests",
        ("requests", "remaining") => "x-ratelimit-remaining-requests",
        ("requests", _) => "x-ratelimit-reset-requests",
        (_, "limit") => "x-ratelimit-limit-tokens",
        (_, "remaining") => "x-ratelimit-remaining-tokens",
        _ => "x-ratelimit-reset-tokens",
    }
}

/// OpenAI's reset format: `250ms`, `1s`, `6m0s`, `1h2m3s`, `20.5s`.
pub fn duration(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let s = (ms % 60_000) as f64 / 1000.0;
    let secs = format!("{s}s");
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// Middleware: copies the [`RateInfo`] a handler left in the request onto the response, whatever
/// its status (so refusals and upstream errors carry them too).
pub async fn attach(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let info = res.request().extensions().get::<RateInfo>().copied();
    if let Some(info) = info {
        let headers = res.headers_mut();
        for (n, v) in info.headers() {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(HeaderName::from_static(n), v);
            }
        }
    }
    Ok(res)
}

impl Refusal {
    /// The 429 for this refusal: `quota_exceeded` with the reset time for quotas,
    /// `rate_limit_exceeded` for windows and concurrency.
    pub fn to_error(&self) -> ApiError {
        let d = &self.descriptor;
        let retry_after_secs = ((self.retry_after_ms.max(1) + 999) / 1000) as u64;
        let unit = if d.kind.counts_tokens() {
            "tokens"
        } else {
            "requests"
        };
        let (code, message, reset_at) = if d.kind.is_quota() {
            let reset = chrono::DateTime::from_timestamp_millis(self.at_ms + self.retry_after_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            let message = format!(
                "Quota exceeded for {}: {} of {} {unit} used; it resets at {}.",
                d.label(),
                self.reading.used,
                d.limit,
                reset.as_deref().unwrap_or("the end of the period")
            );
            ("quota_exceeded", message, reset)
        } else if d.kind == Kind::Concurrency {
            let message = format!(
                "Rate limit reached for {}: {} requests already in flight (limit {}). Retry when one finishes.",
                d.label(),
                self.reading.used,
                d.limit
            );
            ("rate_limit_exceeded", message, None)
        } else {
            let needs = d.cost(self.tokens);
            let message = if needs > d.limit {
                format!(
                    "Request too large for {}: it needs {needs} {unit}, the limit is {} per minute.",
                    d.label(),
                    d.limit
                )
            } else {
                format!(
                    "Rate limit reached for {}: limit {}, used {}, requested {needs}. Please retry after {}.",
                    d.label(),
                    d.limit,
                    self.reading.used,
                    duration(self.retry_after_ms)
                )
            };
            ("rate_limit_exceeded", message, None)
        };
        ApiError::LimitExceeded(Box::new(LimitRefusal {
            code,
            message,
            limit: d.label(),
            retry_after_secs,
            reset_at,
        }))
    }
}

impl Shortfall {
    /// The 402 answer: what bit — the balance (prepaid), the credit limit (postpaid), or holds of
    /// requests still in flight when the balance alone would have covered it — with the figures.
    pub fn to_error(&self, mode: BillingMode) -> ApiError {
        let b = &self.balance;
        let (need, floor) = (self.hold.amount.0, self.hold.floor.0);
        let (ledger, pending, held) = (b.ledger.0, b.pending.0, b.held.0);
        let limit = if ledger.saturating_sub(pending).saturating_sub(need) >= floor {
            "in-flight holds"
        } else if mode == BillingMode::Postpaid {
            "account credit limit"
        } else {
            "account balance"
        };
        let mut message = format!(
            "Insufficient quota ({limit}): this request may cost up to {} and the account has {} \
             available (balance {}",
            Nano(need),
            Nano(b.spendable().0.saturating_sub(floor)),
            Nano(ledger.saturating_sub(pending)),
        );
        if mode == BillingMode::Postpaid {
            message.push_str(&format!(", credit limit {}", Nano(-floor)));
        }
        message.push_str(&format!(
            ", in-flight holds {}). Add funds to the account or lower max_tokens.",
            Nano(held)
        ));
        ApiError::InsufficientQuota {
            limit: limit.into(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_report_the_tightest_limit_of_each_kind() {
        let d = |scope, kind, limit| Descriptor {
            scope,
            id: "x".into(),
            kind,
            limit,
        };
        let descriptors = [
            d(super::super::Scope::Key, Kind::Rpm, 100),
            d(super::super::Scope::Account, Kind::Rpm, 10),
            d(super::super::Scope::Key, Kind::Concurrency, 1),
            d(super::super::Scope::Key, Kind::Tpm, 1000),
        ];
        let r = |used, reset_ms| Reading { used, reset_ms };
        let info = RateInfo::new(
            &descriptors,
            &[r(5, 1000), r(9, 30_000), r(1, 0), r(400, 2000)],
        );
        assert_eq!(
            info.requests,
            Some(Headroom {
                limit: 10,
                remaining: 1,
                reset_ms: 30_000
            }),
            "account rpm has less room than key rpm; concurrency is not a request rate"
        );
        assert_eq!(info.tokens.map(|t| t.remaining), Some(600));
        let headers = info.headers();
        assert!(headers.contains(&("x-ratelimit-reset-requests", "30s".into())));
        assert_eq!(headers.len(), 6);
    }

    #[test]
    fn reset_durations_read_like_openai() {
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(1000), "1s");
        assert_eq!(duration(20_500), "20.5s");
        assert_eq!(duration(360_000), "6m0s");
        assert_eq!(duration(3_723_000), "1h2m3s");
    }
}

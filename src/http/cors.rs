//! CORS for a browser dashboard on another origin: off unless `http.cors_allowed_origins` names
//! origins. Allowed origins get preflights answered and the headers a client reads (rate limits,
//! request id, `Retry-After`) exposed; any other origin gets no CORS headers (the browser blocks
//! it) and is otherwise served as usual, since API calls authenticate by bearer token, not cookie.

use actix_cors::Cors;
use actix_web::middleware::Condition;

/// Request headers a dashboard sends.
const ALLOWED_HEADERS: [&str; 4] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
];

/// Response headers a dashboard may read.
const EXPOSED_HEADERS: [&str; 8] = [
    "x-request-id",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// The CORS middleware for `origins` (disabled when empty).
pub fn layer(origins: &[String]) -> Condition<Cors> {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers(ALLOWED_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .block_on_origin_mismatch(false)
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    Condition::new(!origins.is_empty(), cors)
}

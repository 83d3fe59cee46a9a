//! Cross-cutting HTTP plumbing: request ids, request bodies and extractor errors, idempotency,
//! the method table (405), CORS.

pub mod cors;
pub mod extract;
pub mod idempotency;
pub mod methods;
pub mod observe;
pub mod peer;
pub mod request_id;
pub mod span;

pub use crate::worker::no_delay;

/// `on_connect` of the gateway: [`no_delay`], and [`peer::watch`] so a handler can notice a client
/// that left.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    no_delay(conn, data);
    peer::watch(conn, data);
}

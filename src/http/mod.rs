//! Cross-cutting HTTP plumbing: request ids, request bodies and extractor errors, idempotency,
//! the method table (405), CORS.

pub mod cors;
pub mod extract;
pub mod idempotency;
pub mod methods;
pub mod peer;
pub mod request_id;

/// Disables Nagle's algorithm on every accepted connection: responses (SSE chunks above all) are
/// many small writes, and Nagle plus the peer's delayed ACK would hold each one back ~40 ms.
pub fn no_delay(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let _ = tcp.set_nodelay(true);
    }
}

/// `on_connect` of the gateway: [`no_delay`], and [`peer::watch`] so a handler can notice a client
/// that left.
pub fn on_connect(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    no_delay(conn, data);
    peer::watch(conn, data);
}

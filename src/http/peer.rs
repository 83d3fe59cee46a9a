//! Noticing that a client went away while its request is still being answered. actix-web drops a
//! handler when the connection errors (a reset), but not when the client merely closes it (FIN):
//! the handler would run on and answer nobody. [`watch`] keeps a duplicate of each accepted
//! socket's descriptor in the connection's data; [`gone`] resolves once the peer has closed or
//! reset it — the same test nginx makes (a readable socket whose `recv(MSG_PEEK)` returns 0).
//! Nothing is read from the socket: bytes the client pipelines stay where actix-web finds them.

use std::os::fd::AsFd;
use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::dev::Extensions;

/// A duplicate of the connection's socket (same socket, own descriptor).
#[derive(Clone)]
pub struct Peer(Arc<std::net::TcpStream>);

/// `on_connect`: remembers the socket of every TCP connection.
pub fn watch(conn: &dyn std::any::Any, data: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Ok(fd) = tcp.as_fd().try_clone_to_owned()
    {
        data.insert(Peer(Arc::new(std::net::TcpStream::from(fd))));
    }
}

/// Resolves when the client of `req` has closed or reset its connection; never, if it cannot be
/// watched (not TCP, the socket cannot be registered, or a pipelined request is waiting in front
/// of the close).
pub async fn gone(req: &HttpRequest) {
    let watched = req
        .conn_data::<Peer>()
        .and_then(|peer| peer.0.try_clone().ok())
        .and_then(|dup| tokio::net::TcpStream::from_std(dup).ok());
    if let Some(tcp) = watched {
        let mut byte = [0u8; 1];
        match tcp.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

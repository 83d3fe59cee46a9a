//! Noticing that a client went away while its request is still being answered. actix-web drops a
//! handler when the connection errors (a reset), but not when the client merely closes it (FIN):
//! the handler would run on and answer nobody. [`watch`] registers a duplicate of each accepted
//! socket's descriptor with the worker's reactor, once per connection; [`gone`] resolves once the
//! peer has closed or reset it — the same test nginx makes (a readable socket whose
//! `recv(MSG_PEEK)` returns 0). Nothing is read from the socket: bytes the client pipelines stay
//! where actix-web finds them. Waiting costs no system call until the socket becomes readable.

use std::os::fd::AsFd;
use std::rc::Rc;

use actix_web::HttpRequest;
use actix_web::dev::Extensions;

/// A duplicate of the connection's socket (same socket, own descriptor), registered with the
/// reactor of the worker that serves the connection.
#[derive(Clone)]
pub struct Peer(Rc<tokio::net::TcpStream>);

/// `on_connect`: remembers the socket of every TCP connection.
pub fn watch(conn: &dyn std::any::Any, data: &mut Extensions) {
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    let registered = tcp
        .as_fd()
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .and_then(tokio::net::TcpStream::from_std);
    if let Ok(dup) = registered {
        data.insert(Peer(Rc::new(dup)));
    }
}

/// Resolves when the client of `req` has closed or reset its connection; never, if it cannot be
/// watched (not TCP, or a pipelined request waits in front of the close).
pub async fn gone(req: &HttpRequest) {
    if let Some(peer) = req.conn_data::<Peer>().cloned() {
        let mut byte = [0u8; 1];
        match peer.0.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

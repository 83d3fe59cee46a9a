//! Outbound HTTP clients, one per thread (shared by the gateway and the worker, so it imports
//! nothing of either). A `reqwest` client keeps a pool of connections, and each
//! connection's task runs on the runtime of the thread that opened it; the gateway's and the
//! worker's HTTP servers run one single-threaded runtime per thread, so a client shared by all of
//! them hands a request made on one thread to a connection driven by another — a wake-up of the
//! other thread and back for every request (eventfd writes, epoll wakes, context switches; the
//! profile of issue 23). Each thread here gets its own client, built from the same settings on
//! its first use, so a request and its connection stay on one thread (as [`crate::redis_link`]
//! does for Redis).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Build = dyn Fn() -> reqwest::ClientBuilder + Send + Sync;

/// A family of clients with the same settings, one per thread that uses it.
#[derive(Clone)]
pub struct ThreadClients {
    id: u64,
    build: Arc<Build>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static CLIENTS: RefCell<HashMap<u64, reqwest::Client>> = RefCell::new(HashMap::new());
}

impl ThreadClients {
    /// Clients built by `settings`; the settings are checked once here (an invalid one fails now,
    /// not on a thread's first request).
    pub fn new(
        settings: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> reqwest::Result<Self> {
        settings().build()?;
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            build: Arc::new(settings),
        })
    }

    /// This thread's client (a cheap handle), built on first use.
    pub fn client(&self) -> reqwest::Client {
        CLIENTS.with(|clients| {
            clients
                .borrow_mut()
                .entry(self.id)
                .or_insert_with(|| {
                    (self.build)()
                        .build()
                        .expect("settings checked when the family was made")
                })
                .clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_here() -> usize {
        CLIENTS.with(|c| c.borrow().len())
    }

    #[test]
    fn one_client_per_thread_and_family() {
        let a = ThreadClients::new(reqwest::Client::builder).unwrap();
        let b = ThreadClients::new(reqwest::Client::builder).unwrap();
        let before = built_here();
        a.client();
        a.client();
        assert_eq!(built_here(), before + 1, "a thread reuses its client");
        b.client();
        assert_eq!(built_here(), before + 2, "another family, another client");
        let there = std::thread::spawn(move || {
            a.client();
            built_here()
        })
        .join()
        .unwrap();
        assert_eq!(there, 1, "another thread builds its own");
    }
}

//! Lazily opened, shared (multiplexed) Redis connections with a deadline on every use: one per
//! thread that uses the link, opened on its first use. A multiplexed connection's driver runs on
//! the runtime that opened it; the gateway's HTTP workers each run their own single-threaded
//! runtime, so a connection shared by all of them would make every other worker's Redis calls hop
//! to the opener's thread and back (two thread wake-ups per round trip) and wait whenever that
//! thread is busy. An error on any thread retires every thread's connection (a generation count),
//! so after Redis restarts no thread fails once more on a connection it has not used since. Used
//! by the worker registry, the limiter and the cache-invalidation publisher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::Context;
use redis::aio::MultiplexedConnection;

#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// Each thread's connection and the generation it was opened in.
    conns: Mutex<Slots>,
    /// Bumped by every failed call: connections of an older generation are reopened.
    generation: AtomicU64,
    timeout: Duration,
}

type Slots = HashMap<ThreadId, (u64, MultiplexedConnection)>;

impl RedisLink {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let inner = Inner {
            client: redis::Client::open(url).context("redis_url")?,
            conns: Mutex::default(),
            generation: AtomicU64::new(0),
            timeout,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.inner.client
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This thread's connection, opened (on this thread's runtime) if it has none of the current
    /// generation.
    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let thread = std::thread::current().id();
        let generation = self.inner.generation.load(Ordering::Acquire);
        if let Some((g, c)) = self.slots().get(&thread)
            && *g == generation
        {
            return Ok(c.clone());
        }
        // The link's deadline is the connection's own: redis-rs would otherwise fail a reply
        // after its default 500 ms, whatever `limits.redis_timeout_ms` says (a loaded Redis
        // then degraded the limiter though the configured deadline was far off).
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.timeout))
            .set_response_timeout(Some(self.inner.timeout));
        let c = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.slots().insert(thread, (generation, c.clone()));
        Ok(c)
    }

    /// Runs `f` on the connection within the deadline; on failure the connection is dropped.
    pub async fn run<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let conn = self.connection().await?;
            Ok::<_, anyhow::Error>(f(conn).await?)
        };
        let timeout = self.inner.timeout;
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("redis did not answer within {timeout:?}")),
        };
        if result.is_err() {
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
        result
    }
}

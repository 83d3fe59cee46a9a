//! One lazily opened, shared (multiplexed) Redis connection with a deadline on every use: opened on
//! first use, dropped after an error so the next use reconnects. Used by the worker registry, the
//! limiter and the cache-invalidation publisher.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex as AsyncMutex;

#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    conn: Arc<AsyncMutex<Option<MultiplexedConnection>>>,
    timeout: Duration,
}

impl RedisLink {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url).context("redis_url")?,
            conn: Arc::default(),
            timeout,
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *slot = Some(c.clone());
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
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "redis did not answer within {:?}",
                self.timeout
            )),
        };
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }
}

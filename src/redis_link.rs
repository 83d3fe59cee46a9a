//! Lazily opened, shared (multiplexed) Redis connections with a deadline on every use: one per
//! thread that uses the link, opened on its first use. A multiplexed connection's driver runs on
//! the runtime that opened it; the gateway's HTTP workers each run their own single-threaded
//! runtime, so a connection shared by all of them would make every other worker's Redis calls hop
//! to the opener's thread and back (two thread wake-ups per round trip) and wait whenever that
//! thread is busy. Used by the worker registry, the limiter and the cache-invalidation publisher.
//!
//! The URL picks the kind of Redis:
//! - `redis://[user:pass@]host:port[/db]` — one node; `rediss://` the same over TLS.
//! - `redis+cluster://[user:pass@]h1:p1,h2:p2,…` — a Redis Cluster (`rediss+cluster://` over TLS):
//!   the nodes listed are where the slot map is first read; the cluster client follows `MOVED`
//!   and `ASK` and keeps one connection per node. Every multi-key script keeps its keys in one hash
//!   slot (the limiter's keys carry the tenant as hash tag, the registry's `{registry}`).
//!
//! On one node an error on any thread retires every thread's connection (a generation count), so
//! after Redis restarts no thread fails once more on a connection it has not used since. A cluster
//! connection reconnects the node that failed by itself: one slot's node being down must not make
//! every thread reconnect to every node (the other tenants' slots are fine).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::{Context, bail};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to whichever kind of Redis the link points at.
#[derive(Clone)]
pub enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What a `redis_url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A single node's URL, as the `redis` crate reads it.
    Node(String),
    /// One URL per seed node (credentials and TLS repeated on each).
    Cluster(Vec<String>),
}

/// Reads a `redis_url` (see the module header); the error names what is wrong, never the password.
pub fn parse(url: &str) -> anyhow::Result<Target> {
    let (scheme, rest) = url
        .split_once("://")
        .context("must start with redis://, rediss://, redis+cluster:// or rediss+cluster://")?;
    let node_scheme = match scheme {
        "redis" | "rediss" => {
            redis::parse_redis_url(url).context("not a valid Redis URL")?;
            return Ok(Target::Node(url.to_owned()));
        }
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => bail!("must start with redis://, rediss://, redis+cluster:// or rediss+cluster://"),
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    if hosts.contains(['/', '?', '#']) {
        bail!("a cluster URL takes no database number or options (host:port,host:port,…)");
    }
    let nodes: Vec<String> = hosts
        .split(',')
        .map(|h| {
            let (host, port) = h.rsplit_once(':').unwrap_or((h, ""));
            if host.is_empty() || port.parse::<u16>().is_err() {
                bail!("each cluster node must be host:port");
            }
            Ok(format!("{node_scheme}://{userinfo}{h}"))
        })
        .collect::<anyhow::Result<_>>()?;
    for n in &nodes {
        redis::parse_redis_url(n).context("not a valid Redis URL")?;
    }
    Ok(Target::Cluster(nodes))
}

enum Clients {
    Node(redis::Client),
    Cluster {
        client: Box<ClusterClient>,
        /// One client per seed node, for subscriptions (classic pub/sub reaches every node).
        nodes: Vec<redis::Client>,
        /// Where the next subscription is tried.
        next: AtomicUsize,
    },
}

#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Clients,
    /// Each thread's connection and the generation it was opened in.
    conns: Mutex<Slots>,
    /// Bumped by every failed call on a single node: connections of an older generation are
    /// reopened.
    generation: AtomicU64,
    timeout: Duration,
}

type Slots = HashMap<ThreadId, (u64, Conn)>;

type Opening<'a> = Pin<Box<dyn Future<Output = redis::RedisResult<Conn>> + Send + 'a>>;

impl RedisLink {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let clients = match parse(url).context("redis_url")? {
            Target::Node(url) => Clients::Node(redis::Client::open(url).context("redis_url")?),
            Target::Cluster(nodes) => Clients::Cluster {
                client: Box::new(
                    ClusterClient::builder(nodes.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .build()
                        .context("redis_url")?,
                ),
                nodes: nodes
                    .iter()
                    .map(|n| redis::Client::open(n.as_str()))
                    .collect::<Result<_, _>>()
                    .context("redis_url")?,
                next: AtomicUsize::new(0),
            },
        };
        let inner = Inner {
            clients,
            conns: Mutex::default(),
            generation: AtomicU64::new(0),
            timeout,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Whether the link speaks to a Redis Cluster (where a failure is one slot's, not all keys').
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.clients, Clients::Cluster { .. })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self) -> Opening<'_> {
        let timeout = self.inner.timeout;
        match &self.inner.clients {
            Clients::Node(client) => Box::pin(async move {
                // The link's deadline is the connection's own: redis-rs would otherwise fail a
                // reply after its default 500 ms, whatever `limits.redis_timeout_ms` says.
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Ok(Conn::Node(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }),
            Clients::Cluster { client, .. } => {
                Box::pin(async move { Ok(Conn::Cluster(client.get_async_connection().await?)) })
            }
        }
    }

    /// This thread's connection, opened (on this thread's runtime) if it has none of the current
    /// generation.
    async fn connection(&self) -> anyhow::Result<Conn> {
        let thread = std::thread::current().id();
        let generation = self.inner.generation.load(Ordering::Acquire);
        if let Some((g, c)) = self.slots().get(&thread)
            && *g == generation
        {
            return Ok(c.clone());
        }
        let c = self.open().await?;
        self.slots().insert(thread, (generation, c.clone()));
        Ok(c)
    }

    /// Runs `f` on the connection within the deadline; on failure a single node's connections are
    /// dropped.
    pub async fn run<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(Conn) -> Fut,
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
            crate::metrics::backend_error("redis");
            if !self.is_cluster() {
                self.inner.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        result
    }

    /// A fresh subscriber connection. On a cluster, the seed nodes are tried in turn, starting
    /// after the one used last: classic pub/sub messages reach every node, so any node will do.
    pub async fn pubsub(&self) -> anyhow::Result<redis::aio::PubSub> {
        let timeout = self.inner.timeout.max(Duration::from_secs(1));
        match &self.inner.clients {
            Clients::Node(client) => Ok(tokio::time::timeout(timeout, client.get_async_pubsub())
                .await
                .map_err(|_| anyhow::anyhow!("timeout"))??),
            Clients::Cluster { nodes, next, .. } => {
                let mut last = anyhow::anyhow!("no cluster node");
                for _ in 0..nodes.len() {
                    let i = next.fetch_add(1, Ordering::Relaxed) % nodes.len();
                    match tokio::time::timeout(timeout, nodes[i].get_async_pubsub()).await {
                        Ok(Ok(p)) => return Ok(p),
                        Ok(Err(e)) => last = e.into(),
                        Err(_) => last = anyhow::anyhow!("timeout"),
                    }
                }
                Err(last)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_node_or_a_cluster() {
        assert_eq!(
            parse("redis://:pw@127.0.0.1:6379/2").unwrap(),
            Target::Node("redis://:pw@127.0.0.1:6379/2".into())
        );
        assert_eq!(
            parse("rediss+cluster://u:p%40ss@a:7000,b:7001/").unwrap(),
            Target::Cluster(vec![
                "rediss://u:p%40ss@a:7000".into(),
                "rediss://u:p%40ss@b:7001".into()
            ])
        );
        assert_eq!(
            parse("redis+cluster://10.0.0.1:7000").unwrap(),
            Target::Cluster(vec!["redis://10.0.0.1:7000".into()])
        );
        for bad in [
            "http://a:1",
            "redis+cluster://a",
            "redis+cluster://a:1,b",
            "redis+cluster://a:1/0",
            "redis+cluster://:secret@a:x",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }
}

//! Where workers announce themselves: a heartbeat every `pool.heartbeat_secs`, valid for
//! `pool.heartbeat_ttl_secs`. With Redis (`REDIS_URL`) every gateway replica sees every worker: one
//! sorted set `<prefix>workers`, member = worker URL, score = when its heartbeat lapses on Redis'
//! own clock (hosts' clocks may disagree); reading it drops lapsed members and returns the rest, one
//! round trip whatever else the Redis holds. Without Redis, in process (the embedded mode, where
//! `dev` runs worker and gateway together). Gateways add announced workers to their pool and drop
//! them when their heartbeat lapses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redis_link::RedisLink;

#[derive(Clone)]
pub enum Registry {
    Memory(Arc<Mutex<HashMap<String, Instant>>>),
    Redis { link: RedisLink, prefix: String },
}

/// Deadline of one registry call to Redis.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Milliseconds on Redis' clock (`TIME`), for both scripts.
const NOW_MS: &str =
    "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)";

/// KEYS[1] = set, ARGV[1] = url, ARGV[2] = ttl ms.
fn announce_script() -> redis::Script {
    redis::Script::new(&format!(
        "{NOW_MS} redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) return 1"
    ))
}

/// KEYS[1] = set: drops lapsed heartbeats, returns the live URLs.
fn live_script() -> redis::Script {
    redis::Script::new(&format!(
        "{NOW_MS} redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) return redis.call('ZRANGE', KEYS[1], 0, -1)"
    ))
}

impl Registry {
    /// Redis when `redis_url` is set, else in process.
    pub fn new(redis_url: &str, prefix: &str) -> anyhow::Result<Self> {
        if redis_url.is_empty() {
            return Ok(Self::Memory(Arc::default()));
        }
        Ok(Self::Redis {
            link: RedisLink::new(redis_url, REDIS_TIMEOUT)?,
            prefix: prefix.to_owned(),
        })
    }

    /// Announces `url` as alive for `ttl`.
    pub async fn announce(&self, url: &str, ttl: Duration) -> anyhow::Result<()> {
        match self {
            Self::Memory(map) => {
                map.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(url.to_owned(), Instant::now() + ttl);
                Ok(())
            }
            Self::Redis { link, prefix } => {
                let key = format!("{prefix}{{registry}}:workers");
                link.run(|mut conn| async move {
                    announce_script()
                        .key(key)
                        .arg(url)
                        .arg(ttl.as_millis() as u64)
                        .invoke_async::<()>(&mut conn)
                        .await
                })
                .await
            }
        }
    }

    /// URLs of workers whose heartbeat is current.
    pub async fn live(&self) -> anyhow::Result<Vec<String>> {
        match self {
            Self::Memory(map) => {
                let now = Instant::now();
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                map.retain(|_, until| *until > now);
                Ok(map.keys().cloned().collect())
            }
            Self::Redis { link, prefix } => {
                let key = format!("{prefix}{{registry}}:workers");
                link.run(|mut conn| async move {
                    live_script()
                        .key(key)
                        .invoke_async::<Vec<String>>(&mut conn)
                        .await
                })
                .await
            }
        }
    }

    /// Keeps announcing `url` every `every` (for as long as the runtime lives).
    pub fn spawn_announcer(&self, url: String, every: Duration, ttl: Duration) {
        let registry = self.clone();
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = registry.announce(&url, ttl).await {
                    tracing::warn!(error = %e, "worker heartbeat failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn memory_heartbeats_expire() {
        let r = Registry::new("", "").unwrap();
        r.announce("http://a", Duration::from_millis(40))
            .await
            .unwrap();
        r.announce("http://b", Duration::from_secs(10))
            .await
            .unwrap();
        let mut live = r.live().await.unwrap();
        live.sort();
        assert_eq!(live, vec!["http://a", "http://b"]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(r.live().await.unwrap(), vec!["http://b"]);
    }
}

//! Where workers announce themselves: a heartbeat every `pool.heartbeat_secs`, valid for
//! `pool.heartbeat_ttl_secs`. With Redis (`REDIS_URL`) every gateway replica sees every worker
//! (`SET <prefix>workers:<url> … PX ttl`, read back with `SCAN`); without it, in process (the
//! embedded mode, where `dev` runs worker and gateway together). Gateways add announced workers to
//! their pool and drop them when their heartbeat lapses.

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
                let key = format!("{prefix}workers:{url}");
                link.run(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(chrono::Utc::now().timestamp_millis())
                        .arg("PX")
                        .arg(ttl.as_millis() as u64)
                        .query_async::<()>(&mut conn)
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
                let pattern = format!("{prefix}workers:*");
                let (mut cursor, mut urls) = (0u64, Vec::new());
                loop {
                    let (next, keys) = link
                        .run(|mut conn| {
                            let pattern = pattern.clone();
                            async move {
                                redis::cmd("SCAN")
                                    .arg(cursor)
                                    .arg("MATCH")
                                    .arg(pattern)
                                    .arg("COUNT")
                                    .arg(200)
                                    .query_async::<(u64, Vec<String>)>(&mut conn)
                                    .await
                            }
                        })
                        .await?;
                    urls.extend(keys.into_iter().filter_map(|k| {
                        k.strip_prefix(&format!("{prefix}workers:"))
                            .map(str::to_owned)
                    }));
                    if next == 0 {
                        return Ok(urls);
                    }
                    cursor = next;
                }
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

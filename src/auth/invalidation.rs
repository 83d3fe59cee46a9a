//! Push invalidation of the [`KeyCache`] across replicas: a change is applied to the local cache at
//! once and published on `<prefix>invalidate` (Redis pub/sub); every replica's subscriber applies
//! it within milliseconds. Without Redis there is one replica and the local apply is all there is.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::key_cache::{Invalidation, KeyCache};
use crate::redis_link::RedisLink;

#[derive(Clone)]
pub struct Invalidator {
    cache: Arc<KeyCache>,
    redis: Option<(RedisLink, String)>,
}

impl Invalidator {
    pub fn new(cache: Arc<KeyCache>, redis: Option<RedisLink>, prefix: &str) -> Self {
        Self {
            cache,
            redis: redis.map(|link| (link, format!("{prefix}invalidate"))),
        }
    }

    /// Applies `what` here and tells every other replica. A failed publish is logged: replicas
    /// that cannot hear it have lost their subscription too, and bypass their caches meanwhile.
    pub async fn publish(&self, what: Invalidation) {
        self.cache.apply(&what);
        let Some((link, channel)) = &self.redis else {
            return;
        };
        let message = what.encode();
        let sent = link
            .run(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(message)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = sent {
            tracing::error!(error = %e, "could not publish a key cache invalidation");
        }
    }

    /// Keeps a subscription open (reconnecting), applying what arrives. The cache is live only
    /// while subscribed.
    pub fn spawn_subscriber(&self) {
        let Some((link, channel)) = self.redis.clone() else {
            return;
        };
        let cache = self.cache.clone();
        actix_web::rt::spawn(async move {
            loop {
                match subscribe(&link, &channel).await {
                    Ok(mut pubsub) => {
                        cache.set_live(true);
                        tracing::info!("key cache: receiving invalidations");
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            let payload: String = msg.get_payload().unwrap_or_default();
                            match Invalidation::decode(&payload) {
                                Some(what) => cache.apply(&what),
                                None => tracing::warn!(%payload, "unreadable invalidation"),
                            }
                        }
                        cache.set_live(false);
                        tracing::warn!(
                            "key cache: invalidation subscription lost; bypassing the cache"
                        );
                    }
                    Err(e) => tracing::debug!(error = %e, "key cache: cannot subscribe yet"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

async fn subscribe(link: &RedisLink, channel: &str) -> anyhow::Result<redis::aio::PubSub> {
    let mut pubsub = tokio::time::timeout(Duration::from_secs(2), link.client().get_async_pubsub())
        .await
        .map_err(|_| anyhow::anyhow!("timeout"))??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

//! Push invalidation of the [`KeyCache`] across replicas: a change is applied to the local cache at
//! once and published on `<prefix>{registry}:invalidate` (classic Redis pub/sub, which a Redis
//! Cluster delivers to subscribers on every node); every replica's subscriber applies it within
//! milliseconds. Without Redis there is one replica and the local apply is all there is.
//!
//! A revocation never waits on a hung Redis: every replica publishes a heartbeat on the channel
//! every quarter of `limits.key_cache_trust_ms` and trusts its cache only while it hears one
//! (anyone's) within that window — a Redis that stops answering (paused, partitioned) without
//! closing the connection turns every replica's cache off within the window, and keys are read
//! from the database until Redis speaks again (the cache restarts empty: messages may have been
//! missed). A publish that fails is queued and retried, in order, until delivered.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::key_cache::{Invalidation, KeyCache};
use crate::redis_link::RedisLink;

/// The heartbeat message (not an [`Invalidation`] encoding).
const HEARTBEAT: &str = "hb";

#[derive(Clone)]
pub struct Invalidator {
    cache: Arc<KeyCache>,
    /// This replica's tag on what it publishes: its own messages, already applied when
    /// published, are not applied again when they come back (a late echo would drop entries
    /// loaded since, costing a second lookup).
    origin: Arc<str>,
    redis: Option<(RedisLink, String)>,
    /// How long the cache is trusted without hearing the channel.
    trust: Duration,
    /// Invalidations not yet delivered to Redis, oldest first.
    undelivered: Arc<Mutex<VecDeque<String>>>,
    /// One delivery (and one heartbeat) at a time.
    delivering: Arc<AtomicBool>,
    beating: Arc<AtomicBool>,
}

impl Invalidator {
    pub fn new(
        cache: Arc<KeyCache>,
        redis: Option<RedisLink>,
        prefix: &str,
        trust: Duration,
    ) -> Self {
        Self {
            cache,
            origin: crate::auth::secrets::random_token(9).into(),
            redis: redis.map(|link| (link, format!("{prefix}{{registry}}:invalidate"))),
            trust,
            undelivered: Arc::default(),
            delivering: Arc::default(),
            beating: Arc::default(),
        }
    }

    /// Applies `what` here and tells every other replica (queued and retried until Redis takes
    /// it; never waited for).
    pub async fn publish(&self, what: Invalidation) {
        self.cache.apply(&what);
        if self.redis.is_none() {
            return;
        }
        self.lock()
            .push_back(format!("{}/{}", self.origin, what.encode()));
        self.spawn_delivery();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.undelivered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the queued invalidations in order, stopping at the first failure (retried at the
    /// next heartbeat).
    fn spawn_delivery(&self) {
        let Some((link, channel)) = self.redis.clone() else {
            return;
        };
        if self.delivering.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        actix_web::rt::spawn(async move {
            loop {
                let Some(message) = this.lock().front().cloned() else {
                    break;
                };
                if let Err(e) = send(&link, &channel, message).await {
                    tracing::error!(error = %e, "could not publish a key cache invalidation; retrying");
                    break;
                }
                this.lock().pop_front();
            }
            this.delivering.store(false, Ordering::Release);
        });
    }

    /// Publishes a heartbeat unless the previous one is still on its way.
    fn spawn_heartbeat(&self) {
        let Some((link, channel)) = self.redis.clone() else {
            return;
        };
        if self.beating.swap(true, Ordering::AcqRel) {
            return;
        }
        let beating = self.beating.clone();
        actix_web::rt::spawn(async move {
            let _ = send(&link, &channel, HEARTBEAT.to_owned()).await;
            beating.store(false, Ordering::Release);
        });
    }

    /// Keeps a subscription open (reconnecting), applying what arrives. The cache is live only
    /// while subscribed and hearing the channel.
    pub fn spawn_subscriber(&self) {
        let Some((link, channel)) = self.redis.clone() else {
            return;
        };
        let this = self.clone();
        let beat = (self.trust / 4).max(Duration::from_millis(20));
        actix_web::rt::spawn(async move {
            loop {
                match subscribe(&link, &channel).await {
                    Ok(mut pubsub) => {
                        this.cache.set_live(true);
                        tracing::info!("key cache: receiving invalidations");
                        this.listen(&mut pubsub, beat).await;
                        this.cache.set_live(false);
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

    /// Applies messages until the subscription ends; beats, retries undelivered invalidations,
    /// and turns the cache off while nothing is heard for longer than `trust`.
    async fn listen(&self, pubsub: &mut redis::aio::PubSub, beat: Duration) {
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(beat);
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(msg) = msg else { return };
                    heard = Instant::now();
                    if !self.cache.is_live() {
                        self.cache.set_live(true);
                        tracing::info!("key cache: Redis answers again; cache back on (emptied)");
                    }
                    let payload: String = msg.get_payload().unwrap_or_default();
                    if payload == HEARTBEAT {
                        continue;
                    }
                    // `<origin>/<invalidation>` (an untagged one is applied as it is).
                    let (origin, body) = payload.split_once('/').unwrap_or(("", &payload));
                    if origin == &*self.origin {
                        continue;
                    }
                    match Invalidation::decode(body) {
                        Some(what) => self.cache.apply(&what),
                        None => tracing::warn!(%payload, "unreadable invalidation"),
                    }
                }
                _ = tick.tick() => {
                    self.spawn_heartbeat();
                    if !self.lock().is_empty() {
                        self.spawn_delivery();
                    }
                    if heard.elapsed() > self.trust && self.cache.is_live() {
                        self.cache.set_live(false);
                        tracing::warn!(silent_for = ?heard.elapsed(), "key cache: Redis is silent; reading keys from the database");
                    }
                }
            }
        }
    }
}

async fn send(link: &RedisLink, channel: &str, message: String) -> anyhow::Result<()> {
    link.run(|mut c| async move {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async::<i64>(&mut c)
            .await
    })
    .await
    .map(drop)
}

async fn subscribe(link: &RedisLink, channel: &str) -> anyhow::Result<redis::aio::PubSub> {
    let mut pubsub = link.pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

//! In-process cache of API keys for the data plane, so a request needs no database round trip:
//! presented-secret hash → the key, its account and tenant status, the limits in force and its
//! first-line flood brake. Entries are dropped by push invalidation ([`Invalidation`]), never by
//! waiting for a TTL: every change to a key, plan, account or tenant publishes one (Redis pub/sub
//! with `REDIS_URL`, else applied in process). While the subscription is down the cache is bypassed,
//! so a missed message can never keep a revoked key alive. `max_age` is only a backstop.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::domain::{ApiKeyId, TenantId};
use crate::limits::Descriptor;
use crate::models::api_key::ApiKey;
use crate::models::plan::KeyContext;

/// A key as the data plane sees it.
pub struct KeyEntry {
    pub key: ApiKey,
    pub context: KeyContext,
    pub descriptors: Vec<Descriptor>,
    /// governor, per replica: the key's rpm as a GCRA with a full burst, which never refuses what
    /// the shared window would admit; without an rpm, `limits.first_line_per_key_per_sec`. Kept
    /// by the cache across invalidations (and while the cache is bypassed).
    pub first_line: Arc<DefaultDirectRateLimiter>,
    /// The rpm the brake was built from (`None`: the per-second flood default).
    pub first_line_rpm: Option<i64>,
    loaded: Instant,
    /// When this replica last recorded the key's use (seconds since the epoch).
    last_touch: AtomicI64,
}

impl KeyEntry {
    pub fn new(key: ApiKey, context: KeyContext, cache: &KeyCache) -> Self {
        let descriptors = context.descriptors(&key);
        let rpm = context.key_limits.rpm;
        Self {
            first_line: cache.brake(&key.id, rpm),
            context,
            descriptors,
            first_line_rpm: rpm,
            loaded: Instant::now(),
            last_touch: AtomicI64::new(key.last_used_at.map_or(0, |t| t.and_utc().timestamp())),
            key,
        }
    }

    /// Whether `last_used_at` should be written now (at most once a minute per key and replica).
    pub fn touch_due(&self, now: chrono::NaiveDateTime) -> bool {
        let now = now.and_utc().timestamp();
        let last = self.last_touch.load(Ordering::Acquire);
        now - last >= crate::models::api_key::LAST_USED_RESOLUTION_SECS
            && self
                .last_touch
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// What changed; every replica drops the matching entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    Key(ApiKeyId),
    /// A plan, account or the tenant itself changed: all of its keys.
    Tenant(TenantId),
}

impl Invalidation {
    pub fn encode(&self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Tenant(id) => format!("tenant:{id}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        match s.split_once(':')? {
            ("key", id) => ApiKeyId::parse(id).map(Self::Key),
            ("tenant", id) => TenantId::parse(id).map(Self::Tenant),
            _ => None,
        }
    }
}

/// A key's first-line brake and the rpm it was built for.
type Brake = (Option<i64>, Arc<DefaultDirectRateLimiter>);

pub struct KeyCache {
    entries: RwLock<HashMap<String, Arc<KeyEntry>>>,
    /// First-line brakes by key: they outlive cache entries, so a flood meets the same brake
    /// whether or not the key is cached right now. Replaced when the key's rpm changes.
    brakes: RwLock<HashMap<ApiKeyId, Brake>>,
    /// Whether invalidations are being received (always true without Redis).
    live: AtomicBool,
    /// Bumped by every invalidation; a load started before one is not cached.
    generation: AtomicU64,
    /// Database lookups in flight, by secret hash.
    flights: Mutex<HashMap<String, Flight>>,
    max_age: Duration,
    pub flood_per_sec: u32,
}

/// One database lookup of a secret hash that every concurrent miss on it waits for: a burst on a
/// key that is not cached (new, expired, invalidated) makes one lookup, not one per request.
pub type Flight = Arc<tokio::sync::OnceCell<Option<Arc<KeyEntry>>>>;

impl KeyCache {
    pub fn new(live: bool, max_age: Duration, flood_per_sec: u32) -> Self {
        Self {
            entries: RwLock::default(),
            brakes: RwLock::default(),
            live: AtomicBool::new(live),
            generation: AtomicU64::new(0),
            flights: Mutex::default(),
            max_age,
            flood_per_sec,
        }
    }

    /// The key's brake for `rpm` (a new one if the rpm changed).
    pub fn brake(&self, key: &ApiKeyId, rpm: Option<i64>) -> Arc<DefaultDirectRateLimiter> {
        if let Some((r, b)) = self
            .brakes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            && *r == rpm
        {
            return b.clone();
        }
        let quota = match rpm
            .and_then(|r| u32::try_from(r).ok())
            .and_then(NonZeroU32::new)
        {
            Some(r) => Quota::per_minute(r),
            None => {
                Quota::per_second(NonZeroU32::new(self.flood_per_sec.max(1)).expect("positive"))
            }
        };
        let mut brakes = self.brakes.write().unwrap_or_else(|p| p.into_inner());
        let (r, b) = brakes
            .entry(key.clone())
            .or_insert_with(|| (rpm, Arc::new(RateLimiter::direct(quota))));
        if *r != rpm {
            *r = rpm;
            *b = Arc::new(RateLimiter::direct(quota));
        }
        b.clone()
    }

    pub fn get(&self, hash: &str) -> Option<Arc<KeyEntry>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|e| e.loaded.elapsed() < self.max_age)
            .cloned()
    }

    /// The lookup of `hash` in flight, or a new one (the first caller to await it runs it). A
    /// finished lookup is never handed out: its result may be stale by now.
    pub fn flight(&self, hash: &str) -> Flight {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let flight = flights.entry(hash.to_owned()).or_default();
        if flight.initialized() {
            *flight = Flight::default();
        }
        flight.clone()
    }

    /// Forgets `flight` once it has an outcome (a later miss starts a new lookup; a cached result
    /// is found in the cache first).
    pub fn land(&self, hash: &str, flight: &Flight) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(hash).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(hash);
        }
    }

    /// The generation to pass to [`Self::insert`] after loading from the database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `entry` unless an invalidation arrived since `generation` was read.
    pub fn insert(&self, hash: String, entry: Arc<KeyEntry>, generation: u64) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            entries.insert(hash, entry);
        }
    }

    pub fn apply(&self, what: &Invalidation) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, e| match what {
            Invalidation::Key(id) => e.key.id != *id,
            Invalidation::Tenant(id) => e.key.tenant_id != *id,
        });
    }

    /// Subscription state; going live or dead both empty the cache (messages may have been missed).
    pub fn set_live(&self, live: bool) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.live.store(live, Ordering::Release);
    }

    /// Whether the cache is in use (invalidations are being heard).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidations_round_trip() {
        let key = Invalidation::Key(ApiKeyId::generate());
        let tenant = Invalidation::Tenant(TenantId::generate());
        assert_eq!(Invalidation::decode(&key.encode()), Some(key));
        assert_eq!(Invalidation::decode(&tenant.encode()), Some(tenant));
        assert_eq!(Invalidation::decode("key:not-a-uuid"), None);
        assert_eq!(Invalidation::decode("garbage"), None);
    }
}

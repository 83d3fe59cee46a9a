//! The limiter the data plane calls: the shared backend (Redis, or in process in the embedded
//! mode) behind a health switch. When Redis stops answering, the guard logs once, raises
//! `taogate_limiter_degraded` and either serves under this replica's own in-process limits
//! (`fail_open`) or refuses with 503 `limiter_unavailable` (`fail_closed`); a probe brings it back
//! as soon as Redis answers, replaying the settles (slot releases, token corrections) that could
//! not be delivered meanwhile, so no concurrency slot stays taken.
//!
//! On a Redis Cluster an outage is one slot's (its node down), and a tenant's keys all live in
//! one slot: a failure degrades that tenant only (`taogate_limiter_degraded_tenants`), probed and
//! brought back on its own; every other tenant keeps the shared limits.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::memory::MemoryBackend;
use super::response::RateInfo;
pub use super::shared::Shared;
use super::{Admission, Ask, Clock, Decision, Descriptor, Reading, Unavailable};
use crate::billing::holds::{BalanceReading, Capture, Hold, LedgerSync};
use crate::domain::{AccountId, TenantId};
use crate::metrics::GatewayMetrics;

/// Settles waiting for Redis beyond this many are dropped (their slots expire with the lease).
const MAX_PENDING: usize = 100_000;

/// A settle waiting for Redis: the admission, its actual tokens and what it captured.
type Parked = (Admission, i64, Option<Capture>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    FailOpen,
    FailClosed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub on_redis_down: FailMode,
    pub redis_timeout_ms: u64,
    pub probe_interval_ms: u64,
    pub concurrency_lease_secs: u64,
    pub first_line_per_key_per_sec: u32,
    pub key_cache_max_age_secs: u64,
    /// How long a replica trusts its key cache without hearing the invalidation channel (a
    /// heartbeat every quarter of it); past that, keys are read from the database.
    pub key_cache_trust_ms: u64,
    /// `fail_open` only: what this replica may reserve per account, in nano-units, while the shared
    /// balance cannot be checked (from the outage's start until Redis answers again). With N
    /// replicas an outage can overdraw an account by at most N × this, whatever its balance.
    pub outage_budget_nano: i64,
}

/// Which backend counted an admission (so settle goes to the same one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    Nothing,
    Shared,
    Local,
}

/// An admitted request; hand it back to [`Guard::settle`] when the request ends.
#[derive(Debug)]
pub struct Permit {
    admission: Admission,
    counted: Counted,
    pub info: RateInfo,
}

impl Permit {
    /// Tokens charged at admission.
    pub fn charged_tokens(&self) -> i64 {
        self.admission.ask.tokens
    }

    /// The balance hold taken at admission, if any.
    pub fn hold(&self) -> Option<&Hold> {
        self.admission.ask.hold.as_ref()
    }
}

/// A request the account's balance could not cover.
#[derive(Debug)]
pub struct Shortfall {
    pub hold: Hold,
    pub balance: BalanceReading,
    pub info: RateInfo,
}

/// Why a request was refused.
#[derive(Debug)]
pub struct Refusal {
    pub descriptor: Descriptor,
    pub reading: Reading,
    pub retry_after_ms: i64,
    pub at_ms: i64,
    pub tokens: i64,
    pub info: RateInfo,
}

#[derive(Debug)]
pub enum Verdict {
    Admitted(Permit),
    Refused(Refusal),
    /// The balance cannot cover the hold (402).
    Insufficient(Shortfall),
    /// The account's balance is not cached yet: [`Guard::sync`] it and ask again.
    Unsynced(Ask),
    /// Quota counters of the current period are missing: [`Guard::seed`] them from the usage
    /// records (for the period of `at_ms`) and ask again.
    Unseeded {
        ask: Ask,
        at_ms: i64,
        descriptors: Vec<Descriptor>,
    },
}

pub struct Guard {
    shared: Shared,
    local: MemoryBackend,
    config: LimitsConfig,
    degraded: AtomicBool,
    /// On a cluster: the tenants whose slot cannot be reached (and how many, read without the
    /// lock on every admission).
    tenants_down: Mutex<HashSet<TenantId>>,
    tenants_down_count: AtomicUsize,
    pending: Mutex<Vec<Parked>>,
    /// Settles on their way to the shared backend: whatever gathers while the scheduler runs the
    /// other ready tasks leaves in one round trip ([`Shared::settle_many`]).
    outbox: Mutex<Vec<Parked>>,
    /// Batches taken from the outbox and not yet answered, by batch number: sent again by
    /// [`Guard::flush`] if the task sending them ended with its thread (a server stopping).
    sending: Mutex<HashMap<u64, Arc<Vec<Parked>>>>,
    batches: AtomicU64,
    /// (tenant, account) of holds taken since the last [`Guard::take_touched`].
    touched: Mutex<HashSet<(TenantId, AccountId)>>,
    /// While degraded: what this replica reserved per account since the outage began.
    outage_spent: Mutex<HashMap<(TenantId, AccountId), i64>>,
    metrics: Arc<GatewayMetrics>,
}

impl Guard {
    pub fn new(
        shared: Shared,
        clock: Clock,
        config: LimitsConfig,
        metrics: Arc<GatewayMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared,
            local: MemoryBackend::new(clock),
            config,
            degraded: AtomicBool::new(false),
            tenants_down: Mutex::default(),
            tenants_down_count: AtomicUsize::new(0),
            pending: Mutex::default(),
            outbox: Mutex::default(),
            sending: Mutex::default(),
            batches: AtomicU64::new(0),
            touched: Mutex::default(),
            outage_spent: Mutex::default(),
            metrics,
        })
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.metrics
    }

    /// Whether the whole shared limiter is unreachable (one Redis node down).
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Whether `tenant`'s requests are served without the shared limiter now.
    fn is_down(&self, tenant: &TenantId) -> bool {
        self.is_degraded()
            || (self.tenants_down_count.load(Ordering::Acquire) > 0
                && self.down_tenants().contains(tenant))
    }

    fn down_tenants(&self) -> std::sync::MutexGuard<'_, HashSet<TenantId>> {
        self.tenants_down.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease_ms(&self) -> i64 {
        (self.config.concurrency_lease_secs * 1000) as i64
    }

    fn count(&self, backend: &str, outcome: &str) {
        self.metrics
            .limiter_decisions
            .with_label_values(&[backend, outcome])
            .inc();
    }

    /// Admits or refuses `ask` against every descriptor at once.
    pub async fn admit(self: &Arc<Self>, ask: Ask) -> Result<Verdict, Unavailable> {
        if ask.descriptors.is_empty() && ask.hold.is_none() {
            return Ok(Verdict::Admitted(Permit {
                admission: Admission { ask, at_ms: 0 },
                counted: Counted::Nothing,
                info: RateInfo::default(),
            }));
        }
        if !self.is_down(&ask.tenant) {
            let started = Instant::now();
            match self.shared.admit(&ask, self.lease_ms()).await {
                Ok(decision) => {
                    self.metrics
                        .admission_seconds
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(self.verdict(ask, decision, Counted::Shared, "shared"));
                }
                Err(e) => {
                    // A call that timed out may still run when Redis wakes up: release whatever
                    // slot it took once Redis answers again (windows age out by themselves).
                    let release = Admission {
                        ask: ask.clone(),
                        at_ms: 0,
                    };
                    self.park((release, ask.tokens, None));
                    self.degrade(&ask.tenant, &e);
                }
            }
        }
        match self.config.on_redis_down {
            FailMode::FailOpen => {
                let mut spent = self.outage_spent.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(hold) = &ask.hold {
                    let so_far = spent
                        .get(&(ask.tenant.clone(), hold.account.clone()))
                        .copied()
                        .unwrap_or(0);
                    if so_far.saturating_add(hold.amount.0) > self.config.outage_budget_nano {
                        self.count("local", "outage_budget");
                        return Err(Unavailable("outage budget spent".into()));
                    }
                }
                let decision = self.local.admit_now(&ask, self.lease_ms());
                if let (Decision::Admitted { .. }, Some(hold)) = (&decision, &ask.hold) {
                    *spent
                        .entry((ask.tenant.clone(), hold.account.clone()))
                        .or_default() += hold.amount.0;
                }
                drop(spent);
                Ok(self.verdict(ask, decision, Counted::Local, "local"))
            }
            FailMode::FailClosed => {
                self.count("shared", "unavailable");
                Err(Unavailable("fail_closed".into()))
            }
        }
    }

    fn verdict(&self, ask: Ask, decision: Decision, counted: Counted, backend: &str) -> Verdict {
        match decision {
            Decision::Admitted { at_ms, readings } => {
                self.count(backend, "admitted");
                if let Some(hold) = &ask.hold {
                    let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
                    touched.insert((ask.tenant.clone(), hold.account.clone()));
                    self.metrics.holds_in_flight.inc();
                }
                let info = RateInfo::new(&ask.descriptors, &readings);
                Verdict::Admitted(Permit {
                    admission: Admission { ask, at_ms },
                    counted,
                    info,
                })
            }
            Decision::Refused {
                at_ms,
                index,
                retry_after_ms,
                readings,
            } => {
                self.count(backend, "refused");
                if let Some(d) = ask.descriptors.get(index) {
                    self.metrics
                        .refusals
                        .with_label_values(&[d.scope.as_str(), d.kind.field()])
                        .inc();
                }
                Verdict::Refused(Refusal {
                    info: RateInfo::new(&ask.descriptors, &readings),
                    descriptor: ask.descriptors[index].clone(),
                    reading: readings[index],
                    retry_after_ms,
                    at_ms,
                    tokens: ask.tokens,
                })
            }
            Decision::Insufficient { balance, .. } => {
                self.count(backend, "insufficient");
                Verdict::Insufficient(Shortfall {
                    info: RateInfo::default(),
                    hold: ask.hold.expect("only a hold can be short"),
                    balance,
                })
            }
            Decision::Unsynced => Verdict::Unsynced(ask),
            Decision::Unseeded { at_ms, indexes } => Verdict::Unseeded {
                descriptors: indexes
                    .iter()
                    .filter_map(|i| ask.descriptors.get(*i).cloned())
                    .collect(),
                ask,
                at_ms,
            },
        }
    }

    /// Rebuilds quota counters (see [`Verdict::Unseeded`]) where admissions read them now.
    pub async fn seed(
        self: &Arc<Self>,
        tenant: &TenantId,
        seeds: &[(Descriptor, i64)],
        at_ms: i64,
    ) {
        if self.is_down(tenant) {
            self.local.seed_now(tenant, seeds, at_ms);
            return;
        }
        if let Err(e) = self.shared.seed(tenant, seeds, at_ms).await {
            self.degrade(tenant, &e);
            self.local.seed_now(tenant, seeds, at_ms);
        }
    }

    /// Releases the permit's slots and hold, corrects its token charge to `actual_tokens` and
    /// records what it captured, off the request path. Undeliverable settles wait for Redis.
    pub fn settle(self: &Arc<Self>, permit: Permit, actual_tokens: i64, capture: Option<Capture>) {
        if permit.hold().is_some() && permit.counted != Counted::Nothing {
            self.metrics.holds_in_flight.dec();
        }
        match permit.counted {
            Counted::Nothing => {}
            Counted::Local => {
                self.local
                    .settle_now(&permit.admission, actual_tokens, capture.as_ref())
            }
            Counted::Shared => {
                // In process there is no round trip to save: settled now, no task.
                if let Shared::Memory(backend) = &self.shared {
                    backend.settle_now(&permit.admission, actual_tokens, capture.as_ref());
                    return;
                }
                let first = {
                    let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
                    outbox.push((permit.admission, actual_tokens, capture));
                    outbox.len() == 1
                };
                if first {
                    actix_web::rt::spawn(self.clone().flush_settles());
                }
            }
        }
    }

    /// Sends the settles gathered in the outbox; the ones that could not be delivered wait for
    /// Redis (parked, their tenant — or, off a cluster, the replica — degraded).
    async fn flush_settles(self: Arc<Self>) {
        // The other tasks ready now (requests ending on this thread) join the batch first.
        tokio::task::yield_now().await;
        let batch = Arc::new(std::mem::take(
            &mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        // Shared with the sending map, not copied: a copy is made only of what failed.
        let number = self.batches.fetch_add(1, Ordering::Relaxed);
        self.in_sending().insert(number, batch.clone());
        let results = self.shared.settle_many(&batch).await;
        self.in_sending().remove(&number);
        for (parked, settled) in batch.iter().zip(results) {
            if let Err(e) = settled {
                self.park(parked.clone());
                self.degrade(&parked.0.ask.tenant, &e);
            }
        }
    }

    fn in_sending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Vec<Parked>>>> {
        self.sending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends, within `within`, the settles still on their way to the shared backend: the outbox,
    /// the batches being sent and the parked ones. For a server that has stopped: the tasks
    /// sending them ran on its worker threads and may have ended with them. A settle applies once however often it
    /// is sent, so one that did arrive is not applied twice.
    pub async fn flush(&self, within: Duration) {
        let mut batch = std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()));
        batch.extend(self.in_sending().values().flat_map(|b| b.iter().cloned()));
        // Parked ones too: Redis may answer again by now, and no probe will replay them.
        batch.extend(std::mem::take(
            &mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()),
        ));
        if batch.is_empty() {
            return;
        }
        let sent = tokio::time::timeout(within, self.shared.settle_many(&batch)).await;
        let failed = sent.map_or(batch.len(), |r| r.iter().filter(|r| r.is_err()).count());
        if failed > 0 {
            tracing::warn!(
                settles = failed,
                "shutdown: settles not delivered to Redis (their slots and holds end with their leases)"
            );
        }
    }

    fn park(&self, parked: Parked) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() < MAX_PENDING {
            pending.push(parked);
        }
    }

    /// The accounts that took holds since the last call.
    pub fn take_touched(&self) -> Vec<(TenantId, AccountId)> {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *touched).into_iter().collect()
    }

    /// Brings the account's cached balance (where admissions read it now) up to a ledger reading.
    pub async fn sync(self: &Arc<Self>, tenant: &TenantId, sync: &LedgerSync) {
        if self.is_down(tenant) {
            self.local.sync_now(tenant, sync);
            return;
        }
        if let Err(e) = self.shared.sync(tenant, sync).await {
            self.degrade(tenant, &e);
            self.local.sync_now(tenant, sync);
        }
    }

    /// The account's cached balance and pending usage events, where admissions read it now.
    pub async fn balance(
        self: &Arc<Self>,
        tenant: &TenantId,
        account: &AccountId,
    ) -> Result<Option<(BalanceReading, Vec<String>)>, Unavailable> {
        if self.is_down(tenant) {
            return Ok(self.local.balance_now(tenant, account));
        }
        self.shared.balance(tenant, account).await
    }

    /// Current readings (the shared view; this replica's own while degraded).
    pub async fn peek(
        &self,
        tenant: &TenantId,
        descriptors: &[Descriptor],
    ) -> Result<Vec<Reading>, Unavailable> {
        if descriptors.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_down(tenant) {
            return Ok(self.local.peek_now(tenant, descriptors));
        }
        self.shared.peek(tenant, descriptors).await
    }

    /// Loads the script at start, so the first admission is one `EVALSHA`; an unreachable Redis
    /// starts the replica degraded (a cluster's unreachable slots are found tenant by tenant).
    pub async fn warm_up(self: &Arc<Self>) {
        if let Err(e) = self.shared.ping().await {
            if self.shared.per_tenant() {
                tracing::warn!(error = %e, "Redis Cluster: the limiter script could not be loaded on every node yet");
            } else {
                self.degrade_all(&e);
            }
        }
    }

    fn degrade(self: &Arc<Self>, tenant: &TenantId, cause: &Unavailable) {
        if !self.shared.per_tenant() {
            return self.degrade_all(cause);
        }
        if !self.down_tenants().insert(tenant.clone()) {
            return;
        }
        self.tenants_down_count.fetch_add(1, Ordering::AcqRel);
        tracing::error!(error = %cause, tenant = %tenant.as_str(), mode = ?self.config.on_redis_down,
            "shared limiter unreachable for this tenant's slot: {}", self.fallback());
        self.metrics.limiter_degraded_tenants.inc();
        self.metrics
            .limiter_transitions
            .with_label_values(&["degraded"])
            .inc();
        let guard = self.clone();
        let tenant = tenant.clone();
        actix_web::rt::spawn(async move { guard.probe_tenant(tenant).await });
    }

    fn fallback(&self) -> &'static str {
        match self.config.on_redis_down {
            FailMode::FailOpen => "serving under this replica's local limits",
            FailMode::FailClosed => "refusing data-plane requests with 503",
        }
    }

    /// Brings `tenant` back once its slot answers and its parked settles are delivered.
    async fn probe_tenant(self: Arc<Self>, tenant: TenantId) {
        let every = Duration::from_millis(self.config.probe_interval_ms.max(10));
        loop {
            tokio::time::sleep(every).await;
            if self.shared.ping_tenant(&tenant).await.is_err() {
                continue;
            }
            let theirs: Vec<Parked> = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let (theirs, others) = std::mem::take(&mut *pending)
                    .into_iter()
                    .partition(|(a, _, _)| a.ask.tenant == tenant);
                *pending = others;
                theirs
            };
            if !self.replay(theirs).await {
                continue;
            }
            self.outage_spent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(t, _), _| *t != tenant);
            self.down_tenants().remove(&tenant);
            self.tenants_down_count.fetch_sub(1, Ordering::AcqRel);
            self.metrics.limiter_degraded_tenants.dec();
            self.metrics
                .limiter_transitions
                .with_label_values(&["recovered"])
                .inc();
            tracing::warn!(tenant = %tenant.as_str(), "shared limiter reachable again for this tenant");
            return;
        }
    }

    /// Delivers parked settles in order; those that fail (and all after) are parked again.
    async fn replay(&self, parked: Vec<Parked>) -> bool {
        let mut failed = false;
        for (admission, tokens, capture) in parked {
            if failed
                || self
                    .shared
                    .settle(&admission, tokens, capture.as_ref())
                    .await
                    .is_err()
            {
                failed = true;
                self.park((admission, tokens, capture));
            }
        }
        !failed
    }

    fn degrade_all(self: &Arc<Self>, cause: &Unavailable) {
        if self.degraded.swap(true, Ordering::AcqRel) {
            return;
        }
        // Balances cached from an earlier fallback are stale: start again from the ledger.
        self.local.forget_balances();
        tracing::error!(error = %cause, mode = ?self.config.on_redis_down,
        "shared limiter unreachable: {}", self.fallback());
        self.metrics.limiter_degraded.set(1);
        self.metrics
            .limiter_transitions
            .with_label_values(&["degraded"])
            .inc();
        let guard = self.clone();
        actix_web::rt::spawn(async move { guard.probe().await });
    }

    async fn probe(self: Arc<Self>) {
        let every = Duration::from_millis(self.config.probe_interval_ms.max(10));
        loop {
            tokio::time::sleep(every).await;
            if self.shared.ping().await.is_err() {
                continue;
            }
            let parked =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            let replayed = parked.len();
            if !self.replay(parked).await {
                continue;
            }
            self.degraded.store(false, Ordering::Release);
            self.outage_spent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            self.metrics.limiter_degraded.set(0);
            self.metrics
                .limiter_transitions
                .with_label_values(&["recovered"])
                .inc();
            tracing::warn!(
                replayed_settles = replayed,
                "shared limiter reachable again; shared limits resume"
            );
            return;
        }
    }
}

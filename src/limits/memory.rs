//! The in-process limiter backend: the embedded default, and the fail-open fallback of a replica
//! whose Redis is unreachable. Same algorithm and answers as the Lua script in [`super::redis`]
//! (the same test suite runs on both); state lives in one mutex-guarded map, pruned as it is read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{
    Admission, Ask, Backend, CELL_MS, Clock, Decision, Descriptor, Reading, Shape, Unavailable,
    WINDOW_CELLS, period,
};
use crate::billing::holds::{AccountBalance, BalanceReading, Capture, LedgerSync};
use crate::domain::{AccountId, TenantId};

/// Every this many operations, entries with nothing left in them are dropped.
const SWEEP_EVERY: u64 = 4096;

enum Entry {
    /// Window cells: cell index → count.
    Window(BTreeMap<i64, i64>),
    /// In-flight request ids → lease expiry (ms).
    Slots(HashMap<String, i64>),
    /// A quota counter for one period.
    Counter { period: i64, value: i64 },
    /// An account's cached spendable balance.
    Balance(AccountBalance),
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    ops: u64,
}

pub struct MemoryBackend {
    clock: Clock,
    state: Mutex<State>,
}

fn storage_key(tenant: &str, d: &Descriptor) -> String {
    format!("{tenant}/{}", d.name())
}

fn balance_key(tenant: &str, account: &str) -> String {
    format!("{tenant}/a:{account}:bal")
}

fn fresh(d: &Descriptor) -> Entry {
    match d.kind.shape() {
        Shape::Window => Entry::Window(BTreeMap::new()),
        Shape::Slots => Entry::Slots(HashMap::new()),
        // No period yet: seeded from the usage records on first use.
        Shape::Day | Shape::Month => Entry::Counter {
            period: -1,
            value: 0,
        },
    }
}

/// Drops what has aged out at `now` and returns the reading plus, when `cost` does not fit,
/// how long until it would.
fn read(entry: &mut Entry, d: &Descriptor, now: i64, cost: i64) -> (Reading, Option<i64>) {
    match entry {
        Entry::Window(cells) => {
            let cell = now.div_euclid(CELL_MS);
            cells.retain(|c, _| *c > cell - WINDOW_CELLS);
            let used: i64 = cells.values().sum();
            let leaves = |c: i64| (c + WINDOW_CELLS) * CELL_MS - now;
            let reset_ms = cells.keys().next().map_or(0, |c| leaves(*c));
            let retry = (used + cost > d.limit).then(|| {
                let excess = used + cost - d.limit;
                let mut freed = 0;
                cells
                    .iter()
                    .find_map(|(c, v)| {
                        freed += v;
                        (freed >= excess).then(|| leaves(*c))
                    })
                    .unwrap_or(WINDOW_CELLS * CELL_MS)
            });
            (Reading { used, reset_ms }, retry)
        }
        Entry::Slots(slots) => {
            slots.retain(|_, expiry| *expiry > now);
            let used = slots.len() as i64;
            let retry = (used + 1 > d.limit).then_some(CELL_MS);
            (Reading { used, reset_ms: 0 }, retry)
        }
        Entry::Counter { period: p, value } => {
            let (current, end) = period(d.kind.shape(), now);
            // Another period's counter reads as zero (admission seeds the current one first).
            let used = if *p == current { *value } else { 0 };
            let reading = Reading {
                used,
                reset_ms: end - now,
            };
            (reading, (used + cost > d.limit).then_some(end - now))
        }
        Entry::Balance(_) => (Reading::default(), None),
    }
}

impl MemoryBackend {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            state: Mutex::default(),
        }
    }

    fn sweep(state: &mut State, now: i64) {
        state.ops += 1;
        if !state.ops.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let cell = now.div_euclid(CELL_MS);
        state.entries.retain(|_, e| match e {
            Entry::Window(cells) => cells.keys().any(|c| *c > cell - WINDOW_CELLS),
            Entry::Slots(slots) => slots.values().any(|x| *x > now),
            Entry::Counter { .. } | Entry::Balance(_) => true,
        });
    }

    pub fn admit_now(&self, ask: &Ask, lease_ms: i64) -> Decision {
        let now = self.clock.now_ms();
        let mut state = self.state.lock().expect("limiter state");
        Self::sweep(&mut state, now);
        let mut readings = Vec::with_capacity(ask.descriptors.len());
        let mut refusal: Option<(usize, i64)> = None;
        let mut unseeded = Vec::new();
        for (i, d) in ask.descriptors.iter().enumerate() {
            let entry = state
                .entries
                .entry(storage_key(ask.tenant.as_str(), d))
                .or_insert_with(|| fresh(d));
            if let Entry::Counter { period: p, .. } = entry
                && *p != period(d.kind.shape(), now).0
            {
                unseeded.push(i);
            }
            let (reading, retry) = read(entry, d, now, d.cost(ask.tokens));
            readings.push(reading);
            if let Some(retry) = retry
                && refusal.is_none_or(|(_, r)| retry > r)
            {
                refusal = Some((i, retry));
            }
        }
        if !unseeded.is_empty() {
            return Decision::Unseeded {
                at_ms: now,
                indexes: unseeded,
            };
        }
        if let Some((index, retry_after_ms)) = refusal {
            return Decision::Refused {
                at_ms: now,
                index,
                retry_after_ms,
                readings,
            };
        }
        if let Some(hold) = &ask.hold {
            let Some(Entry::Balance(balance)) = state
                .entries
                .get_mut(&balance_key(ask.tenant.as_str(), hold.account.as_str()))
            else {
                return Decision::Unsynced;
            };
            if let Err(reading) = balance.check(hold, now) {
                return Decision::Insufficient {
                    at_ms: now,
                    balance: reading,
                };
            }
            balance.hold(&ask.admission_id, hold.amount, now + lease_ms);
        }
        for (d, reading) in ask.descriptors.iter().zip(readings.iter_mut()) {
            let cost = d.cost(ask.tokens);
            let entry = state
                .entries
                .get_mut(&storage_key(ask.tenant.as_str(), d))
                .expect("read above");
            match entry {
                Entry::Window(cells) => {
                    *cells.entry(now.div_euclid(CELL_MS)).or_insert(0) += cost;
                    reading.reset_ms = read(entry, d, now, 0).0.reset_ms;
                }
                Entry::Slots(slots) => {
                    slots.insert(ask.admission_id.clone(), now + lease_ms);
                }
                Entry::Counter { value, .. } => *value += cost,
                Entry::Balance(_) => {}
            }
            reading.used += if d.kind.shape() == Shape::Slots {
                1
            } else {
                cost
            };
        }
        Decision::Admitted {
            at_ms: now,
            readings,
        }
    }

    pub fn settle_now(&self, admission: &Admission, actual_tokens: i64, capture: Option<&Capture>) {
        let now = self.clock.now_ms();
        let at = admission.at_ms;
        let delta = actual_tokens - admission.ask.tokens;
        let mut state = self.state.lock().expect("limiter state");
        if let Some(hold) = &admission.ask.hold
            && let Some(Entry::Balance(balance)) = state.entries.get_mut(&balance_key(
                admission.ask.tenant.as_str(),
                hold.account.as_str(),
            ))
        {
            balance.release(&admission.ask.admission_id, capture);
        }
        for d in &admission.ask.descriptors {
            let Some(entry) = state
                .entries
                .get_mut(&storage_key(admission.ask.tenant.as_str(), d))
            else {
                continue;
            };
            match entry {
                Entry::Slots(slots) => {
                    slots.remove(&admission.ask.admission_id);
                }
                Entry::Window(cells) if delta != 0 && d.kind.counts_tokens() => {
                    let cell = at.div_euclid(CELL_MS);
                    if cell > now.div_euclid(CELL_MS) - WINDOW_CELLS {
                        *cells.entry(cell).or_insert(0) += delta;
                    }
                }
                Entry::Counter { period: p, value }
                    if delta != 0
                        && d.kind.counts_tokens()
                        && *p == period(d.kind.shape(), at).0 =>
                {
                    *value += delta;
                }
                _ => {}
            }
        }
    }

    pub fn sync_now(&self, tenant: &TenantId, sync: &LedgerSync) {
        let now = self.clock.now_ms();
        let mut state = self.state.lock().expect("limiter state");
        let entry = state
            .entries
            .entry(balance_key(tenant.as_str(), sync.account.as_str()))
            .or_insert_with(|| Entry::Balance(AccountBalance::default()));
        if let Entry::Balance(balance) = entry {
            balance.sync(sync, now);
        }
    }

    pub fn balance_now(
        &self,
        tenant: &TenantId,
        account: &AccountId,
    ) -> Option<(BalanceReading, Vec<String>)> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock().expect("limiter state");
        match state
            .entries
            .get_mut(&balance_key(tenant.as_str(), account.as_str()))
        {
            Some(Entry::Balance(b)) => Some((b.reading(now), b.pending_events())),
            _ => None,
        }
    }

    /// Forgets every cached balance (a replica falling back to this backend starts from the ledger).
    pub fn forget_balances(&self) {
        let mut state = self.state.lock().expect("limiter state");
        state.entries.retain(|_, e| !matches!(e, Entry::Balance(_)));
    }

    /// Sets the counters of the period of `at_ms` to at least the given values.
    pub fn seed_now(&self, tenant: &TenantId, seeds: &[(Descriptor, i64)], at_ms: i64) {
        let mut state = self.state.lock().expect("limiter state");
        for (d, seeded) in seeds {
            let current = period(d.kind.shape(), at_ms).0;
            let entry = state
                .entries
                .entry(storage_key(tenant.as_str(), d))
                .or_insert_with(|| fresh(d));
            if let Entry::Counter { period: p, value } = entry {
                if *p != current {
                    (*p, *value) = (current, *seeded);
                } else {
                    *value = (*value).max(*seeded);
                }
            }
        }
    }

    pub fn peek_now(&self, tenant: &TenantId, descriptors: &[Descriptor]) -> Vec<Reading> {
        let now = self.clock.now_ms();
        let mut state = self.state.lock().expect("limiter state");
        descriptors
            .iter()
            .map(
                |d| match state.entries.get_mut(&storage_key(tenant.as_str(), d)) {
                    Some(entry) => read(entry, d, now, 0).0,
                    None => read(&mut fresh(d), d, now, 0).0,
                },
            )
            .collect()
    }
}

impl Backend for MemoryBackend {
    async fn admit(&self, ask: &Ask, lease_ms: i64) -> Result<Decision, Unavailable> {
        Ok(self.admit_now(ask, lease_ms))
    }

    async fn settle(
        &self,
        admission: &Admission,
        actual_tokens: i64,
        capture: Option<&Capture>,
    ) -> Result<(), Unavailable> {
        self.settle_now(admission, actual_tokens, capture);
        Ok(())
    }

    async fn sync(&self, tenant: &TenantId, sync: &LedgerSync) -> Result<(), Unavailable> {
        self.sync_now(tenant, sync);
        Ok(())
    }

    async fn balance(
        &self,
        tenant: &TenantId,
        account: &AccountId,
    ) -> Result<Option<(BalanceReading, Vec<String>)>, Unavailable> {
        Ok(self.balance_now(tenant, account))
    }

    async fn seed(
        &self,
        tenant: &TenantId,
        seeds: &[(Descriptor, i64)],
        at_ms: i64,
    ) -> Result<(), Unavailable> {
        self.seed_now(tenant, seeds, at_ms);
        Ok(())
    }

    async fn peek(
        &self,
        tenant: &TenantId,
        descriptors: &[Descriptor],
    ) -> Result<Vec<Reading>, Unavailable> {
        Ok(self.peek_now(tenant, descriptors))
    }
}

//! Rate limits and quotas: what a limit set is, which descriptors apply to a request, and the
//! [`Limiter`] that admits or refuses it in one step, all-or-nothing.
//!
//! Two backends behave identically and pass the same suite: [`redis::RedisBackend`] (one Lua script,
//! one round trip, shared by every replica) and [`memory::MemoryBackend`] (the embedded default).
//! [`guard::Guard`] puts governor in front of them and falls back when Redis is unreachable.
//!
//! ## Algorithm
//! - **rpm / tpm — sliding window over fixed one-second cells.** A request is counted in the cell of
//!   the second it was admitted; the window sums the last 61 cells, so a request counts for between
//!   60 and 61 seconds and *no rolling 60-second interval ever holds more than the limit*. We chose
//!   this over GCRA because GCRA refills continuously: "100 per minute" with a burst of 100 admits
//!   ~101-102 when the burst is spread over a second, and a reseller's customer reads a limit as a
//!   count per window. Memory is bounded (≤ 61 cells per descriptor) and `Retry-After` is exact:
//!   the time until enough old cells leave the window.
//! - **Quotas** (per UTC day, per calendar month): one counter per period, keyed by the period,
//!   expiring after it ends; so they reset exactly at the boundary. A counter the backend does not
//!   have (the period's first request, or Redis restarted without persistence, or a new process)
//!   is rebuilt from the usage records before the request is decided ([`Decision::Unseeded`]), so
//!   a spent quota stays spent; what was in flight or not yet written at the loss (seconds of
//!   usage) is not in the records and is not counted.
//! - **Concurrency**: a set of in-flight request ids, each with a lease; released at settle, a
//!   leaked slot (crashed replica) expires with its lease.
//!
//! Tokens: the prompt estimate is charged at admission; settle adds the difference to the actual
//! total in the same cells, so the window ends up holding what was really used.
//!
//! Money: a priced request also reserves a [`crate::billing::holds::Hold`] against the account's spendable balance
//! in the same decision (see [`crate::billing::holds`]); settle captures what it cost and releases the rest.

pub mod guard;
pub mod memory;
pub mod quotas;
pub mod redis;
pub mod response;
pub mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::billing::holds::{BalanceReading, Capture, Hold, LedgerSync};
use crate::domain::{AccountId, TenantId};

/// Width of one window cell and the number of cells a window spans (see the module docs).
pub const CELL_MS: i64 = 1_000;
pub const WINDOW_CELLS: i64 = 61;
const DAY_MS: i64 = 86_400_000;

/// A set of limits; absent = unlimited. Stored as JSON text on plans, keys and tenants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    /// Requests per rolling minute.
    #[schema(minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<i64>,
    /// Tokens (prompt + completion) per rolling minute.
    #[schema(minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<i64>,
    /// Requests in flight at once.
    #[schema(minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i64>,
    /// Requests per UTC day.
    #[schema(minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<i64>,
    /// Tokens per UTC day.
    #[schema(minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<i64>,
    /// Requests per calendar month (UTC).
    #[schema(minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_month: Option<i64>,
    /// Tokens per calendar month (UTC).
    #[schema(minimum = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<i64>,
}

impl LimitSet {
    fn pairs(&self) -> [(Kind, Option<i64>); 7] {
        [
            (Kind::Rpm, self.rpm),
            (Kind::Tpm, self.tpm),
            (Kind::Concurrency, self.concurrency),
            (Kind::RequestsPerDay, self.requests_per_day),
            (Kind::TokensPerDay, self.tokens_per_day),
            (Kind::RequestsPerMonth, self.requests_per_month),
            (Kind::TokensPerMonth, self.tokens_per_month),
        ]
    }

    /// Parses stored JSON; a row that cannot be read counts as "no limits" and is logged.
    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::error!(error = %e, "unreadable stored limit set; treating as unlimited");
            Self::default()
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a limit set serialises")
    }

    /// The first field that is not a positive integer, for a 400 naming it.
    pub fn invalid_field(&self) -> Option<&'static str> {
        self.pairs()
            .into_iter()
            .find(|(_, v)| v.is_some_and(|v| v <= 0))
            .map(|(k, _)| k.field())
    }

    /// The first field where `self` is looser than `outer` (a key may only narrow its plan).
    pub fn loosens(&self, outer: &LimitSet) -> Option<&'static str> {
        self.pairs()
            .into_iter()
            .zip(outer.pairs())
            .find(|((_, mine), (_, theirs))| match (mine, theirs) {
                (Some(m), Some(t)) => m > t,
                _ => false,
            })
            .map(|((k, _), _)| k.field())
    }

    /// Field by field the tighter of the two.
    pub fn narrowed_by(&self, inner: &LimitSet) -> LimitSet {
        let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        LimitSet {
            rpm: min(self.rpm, inner.rpm),
            tpm: min(self.tpm, inner.tpm),
            concurrency: min(self.concurrency, inner.concurrency),
            requests_per_day: min(self.requests_per_day, inner.requests_per_day),
            tokens_per_day: min(self.tokens_per_day, inner.tokens_per_day),
            requests_per_month: min(self.requests_per_month, inner.requests_per_month),
            tokens_per_month: min(self.tokens_per_month, inner.tokens_per_month),
        }
    }

    /// One descriptor per limit that is set.
    pub fn descriptors(&self, scope: Scope, id: &str) -> impl Iterator<Item = Descriptor> + '_ {
        let id = id.to_owned();
        self.pairs().into_iter().filter_map(move |(kind, limit)| {
            limit.map(|limit| Descriptor {
                scope,
                id: id.clone(),
                kind,
                limit,
            })
        })
    }
}

/// Whose limit it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Key,
    Account,
    Tenant,
}

impl Scope {
    fn tag(self) -> &'static str {
        match self {
            Scope::Key => "k",
            Scope::Account => "a",
            Scope::Tenant => "t",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::Account => "account",
            Scope::Tenant => "tenant",
        }
    }
}

/// What a limit counts, and over which period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Rpm,
    Tpm,
    Concurrency,
    RequestsPerDay,
    TokensPerDay,
    RequestsPerMonth,
    TokensPerMonth,
}

/// How a kind is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Window,
    Slots,
    Day,
    Month,
}

impl Kind {
    /// Short name used in storage keys and the Lua script.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::Rpm => "rpm",
            Kind::Tpm => "tpm",
            Kind::Concurrency => "conc",
            Kind::RequestsPerDay => "rpd",
            Kind::TokensPerDay => "tpd",
            Kind::RequestsPerMonth => "rpmo",
            Kind::TokensPerMonth => "tpmo",
        }
    }

    /// The field name in a [`LimitSet`].
    pub fn field(self) -> &'static str {
        match self {
            Kind::Rpm => "rpm",
            Kind::Tpm => "tpm",
            Kind::Concurrency => "concurrency",
            Kind::RequestsPerDay => "requests_per_day",
            Kind::TokensPerDay => "tokens_per_day",
            Kind::RequestsPerMonth => "requests_per_month",
            Kind::TokensPerMonth => "tokens_per_month",
        }
    }

    pub fn shape(self) -> Shape {
        match self {
            Kind::Rpm | Kind::Tpm => Shape::Window,
            Kind::Concurrency => Shape::Slots,
            Kind::RequestsPerDay | Kind::TokensPerDay => Shape::Day,
            Kind::RequestsPerMonth | Kind::TokensPerMonth => Shape::Month,
        }
    }

    pub fn counts_tokens(self) -> bool {
        matches!(self, Kind::Tpm | Kind::TokensPerDay | Kind::TokensPerMonth)
    }

    /// Quotas answer `quota_exceeded`; windows and concurrency `rate_limit_exceeded`.
    pub fn is_quota(self) -> bool {
        matches!(self.shape(), Shape::Day | Shape::Month)
    }
}

/// One limit that applies to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub scope: Scope,
    pub id: String,
    pub kind: Kind,
    pub limit: i64,
}

impl Descriptor {
    /// Storage key below the tenant's hash tag, e.g. `k:<key id>:rpm`.
    pub fn name(&self) -> String {
        format!("{}:{}:{}", self.scope.tag(), self.id, self.kind.tag())
    }

    /// "key rpm", "account tokens_per_day": how a refusal names the limit that bit.
    pub fn label(&self) -> String {
        format!("{} {}", self.scope.as_str(), self.kind.field())
    }

    /// What one request costs against this descriptor.
    pub fn cost(&self, tokens: i64) -> i64 {
        if self.kind.counts_tokens() { tokens } else { 1 }
    }
}

/// A request asking to be admitted. All descriptors share `tenant` (the Redis Cluster hash tag).
#[derive(Clone, Debug)]
pub struct Ask {
    pub tenant: TenantId,
    /// Minted by the server for this admission (UUID v7), never taken from the client: the
    /// concurrency member, the hold id and the settle key.
    pub admission_id: String,
    pub descriptors: Vec<Descriptor>,
    /// Tokens charged at admission (the prompt estimate).
    pub tokens: i64,
    /// Money reserved against the account's balance, if the request is priced.
    pub hold: Option<Hold>,
}

/// The state of one descriptor after a decision: how much is used and when it next frees up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Reading {
    pub used: i64,
    /// Milliseconds until usage drops (window: oldest cell leaves; quota: period ends).
    pub reset_ms: i64,
}

/// What the backend answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted at `at_ms` (backend time); one reading per descriptor, in order.
    Admitted { at_ms: i64, readings: Vec<Reading> },
    /// Refused by descriptor `index`; nothing was counted.
    Refused {
        at_ms: i64,
        index: usize,
        retry_after_ms: i64,
        readings: Vec<Reading>,
    },
    /// Every limit allowed it, the balance did not; nothing was counted.
    Insufficient { at_ms: i64, balance: BalanceReading },
    /// The account's balance is not cached here yet: sync it from the ledger and ask again.
    Unsynced,
    /// These descriptors' quota counters for the current period are missing (first use of the
    /// period, or the backend lost them — a Redis restart, a new process): rebuild them from the
    /// usage records ([`Backend::seed`], at `at_ms`) and ask again. Nothing was counted.
    Unseeded { at_ms: i64, indexes: Vec<usize> },
}

/// What settle needs to release an admission.
#[derive(Clone, Debug)]
pub struct Admission {
    pub ask: Ask,
    pub at_ms: i64,
}

/// A backend error (Redis unreachable, timeout…): the guard decides fail-open or fail-closed.
#[derive(Debug, thiserror::Error)]
#[error("limiter backend unavailable: {0}")]
pub struct Unavailable(pub String);

/// The operations both backends implement with the same semantics.
pub trait Backend: Send + Sync {
    /// Checks every descriptor and, only if all allow it, counts the request in all of them.
    fn admit(
        &self,
        ask: &Ask,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Decision, Unavailable>> + Send;
    /// Releases concurrency slots and the hold, corrects token counts by
    /// `actual_tokens - ask.tokens` and records what the request captured as pending.
    fn settle(
        &self,
        admission: &Admission,
        actual_tokens: i64,
        capture: Option<&Capture>,
    ) -> impl Future<Output = Result<(), Unavailable>> + Send;
    /// Brings an account's cached balance up to a ledger reading (never back to an older one).
    fn sync(
        &self,
        tenant: &TenantId,
        sync: &LedgerSync,
    ) -> impl Future<Output = Result<(), Unavailable>> + Send;
    /// The account's cached balance and its pending usage event ids (`None`: not cached).
    fn balance(
        &self,
        tenant: &TenantId,
        account: &AccountId,
    ) -> impl Future<Output = Result<Option<(BalanceReading, Vec<String>)>, Unavailable>> + Send;
    /// Sets quota counters of the period of `at_ms` to at least the given values (the usage the
    /// records show for that period).
    fn seed(
        &self,
        tenant: &TenantId,
        seeds: &[(Descriptor, i64)],
        at_ms: i64,
    ) -> impl Future<Output = Result<(), Unavailable>> + Send;
    /// Current readings, counting nothing.
    fn peek(
        &self,
        tenant: &TenantId,
        descriptors: &[Descriptor],
    ) -> impl Future<Output = Result<Vec<Reading>, Unavailable>> + Send;
}

/// Where "now" comes from: the backend's own clock (Redis server time), or a manual clock in tests.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start_ms: i64) -> Self {
        Self::Manual(Arc::new(AtomicI64::new(start_ms)))
    }

    /// The injected time, if any.
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Clock::System => None,
            Clock::Manual(t) => Some(t.load(Ordering::SeqCst)),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.fixed()
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
    }

    pub fn set(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.store(ms, Ordering::SeqCst);
        }
    }
}

/// The period a quota counts in: its id and when it ends (ms since the epoch).
/// When the quota period of `shape` holding `now_ms` began (UTC midnight, or the 1st of the month).
pub fn period_start(shape: Shape, now_ms: i64) -> i64 {
    use chrono::{Datelike, NaiveDate};
    match shape {
        Shape::Month => {
            let date = chrono::DateTime::from_timestamp_millis(now_ms)
                .expect("time in range")
                .date_naive();
            NaiveDate::from_ymd_opt(date.year(), date.month(), 1)
                .expect("valid date")
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_millis()
        }
        _ => now_ms.div_euclid(DAY_MS) * DAY_MS,
    }
}

pub fn period(shape: Shape, now_ms: i64) -> (i64, i64) {
    use chrono::{Datelike, NaiveDate};
    let day = now_ms.div_euclid(DAY_MS);
    match shape {
        Shape::Month => {
            let date = chrono::DateTime::from_timestamp_millis(now_ms)
                .expect("time in range")
                .date_naive();
            let (y, m) = (date.year(), date.month());
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = NaiveDate::from_ymd_opt(ny, nm, 1).expect("valid date");
            let end = next
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_millis();
            (i64::from(y) * 100 + i64::from(m), end)
        }
        _ => (day, (day + 1) * DAY_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_and_validation() {
        let plan = LimitSet {
            rpm: Some(100),
            tpm: Some(1000),
            ..Default::default()
        };
        let key = LimitSet {
            rpm: Some(10),
            concurrency: Some(2),
            ..Default::default()
        };
        assert_eq!(key.loosens(&plan), None);
        assert_eq!(
            LimitSet {
                tpm: Some(1001),
                ..Default::default()
            }
            .loosens(&plan),
            Some("tpm")
        );
        let eff = plan.narrowed_by(&key);
        assert_eq!(
            (eff.rpm, eff.tpm, eff.concurrency),
            (Some(10), Some(1000), Some(2))
        );
        assert_eq!(
            LimitSet {
                tokens_per_day: Some(0),
                ..Default::default()
            }
            .invalid_field(),
            Some("tokens_per_day")
        );
        assert_eq!(LimitSet::from_json(&eff.to_json()), eff);
    }

    #[test]
    fn periods_end_exactly_at_utc_boundaries() {
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        let (_, end) = period(Shape::Day, ms("2026-11-25T23:59:59.999Z"));
        assert_eq!(end, ms("2026-11-26T00:00:00Z"));
        let (id, end) = period(Shape::Month, ms("2026-12-31T23:59:59.999Z"));
        assert_eq!((id, end), (202612, ms("2027-01-01T00:00:00Z")));
        let (id, end) = period(Shape::Month, ms("2028-02-29T12:00:00Z"));
        assert_eq!((id, end), (202802, ms("2028-03-01T00:00:00Z")));
    }
}

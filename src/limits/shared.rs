//! The shared limiter backend a replica is configured with — Redis (every replica sees the same
//! counts) or in process (the embedded mode) — behind one type, so the guard calls either the same
//! way.

use super::memory::MemoryBackend;
use super::redis::RedisBackend;
use super::{Admission, Ask, Backend, Decision, Descriptor, Reading, Unavailable};
use crate::billing::holds::{BalanceReading, Capture, LedgerSync};
use crate::domain::{AccountId, TenantId};

pub enum Shared {
    Redis(RedisBackend),
    Memory(MemoryBackend),
}

impl Shared {
    pub(super) async fn admit(&self, ask: &Ask, lease_ms: i64) -> Result<Decision, Unavailable> {
        match self {
            Shared::Redis(b) => b.admit(ask, lease_ms).await,
            Shared::Memory(b) => b.admit(ask, lease_ms).await,
        }
    }

    pub(super) async fn settle(
        &self,
        admission: &Admission,
        tokens: i64,
        capture: Option<&Capture>,
    ) -> Result<(), Unavailable> {
        match self {
            Shared::Redis(b) => b.settle(admission, tokens, capture).await,
            Shared::Memory(b) => b.settle(admission, tokens, capture).await,
        }
    }

    /// Several settles, in one round trip where the backend can; one result per settle.
    pub(super) async fn settle_many(
        &self,
        batch: &[(Admission, i64, Option<Capture>)],
    ) -> Vec<Result<(), Unavailable>> {
        match self {
            Shared::Redis(b) => b.settle_many(batch).await,
            Shared::Memory(b) => batch
                .iter()
                .map(|(admission, tokens, capture)| {
                    b.settle_now(admission, *tokens, capture.as_ref());
                    Ok(())
                })
                .collect(),
        }
    }

    pub(super) async fn sync(
        &self,
        tenant: &TenantId,
        sync: &LedgerSync,
    ) -> Result<(), Unavailable> {
        match self {
            Shared::Redis(b) => b.sync(tenant, sync).await,
            Shared::Memory(b) => b.sync(tenant, sync).await,
        }
    }

    pub(super) async fn balance(
        &self,
        tenant: &TenantId,
        account: &AccountId,
    ) -> Result<Option<(BalanceReading, Vec<String>)>, Unavailable> {
        match self {
            Shared::Redis(b) => b.balance(tenant, account).await,
            Shared::Memory(b) => b.balance(tenant, account).await,
        }
    }

    pub(super) async fn seed(
        &self,
        tenant: &TenantId,
        seeds: &[(Descriptor, i64)],
        at_ms: i64,
    ) -> Result<(), Unavailable> {
        match self {
            Shared::Redis(b) => b.seed(tenant, seeds, at_ms).await,
            Shared::Memory(b) => b.seed(tenant, seeds, at_ms).await,
        }
    }

    pub(super) async fn peek(
        &self,
        tenant: &TenantId,
        ds: &[Descriptor],
    ) -> Result<Vec<Reading>, Unavailable> {
        match self {
            Shared::Redis(b) => b.peek(tenant, ds).await,
            Shared::Memory(b) => b.peek(tenant, ds).await,
        }
    }

    /// Whether an outage is one tenant's (a Redis Cluster: one slot's node down) rather than all.
    pub(super) fn per_tenant(&self) -> bool {
        matches!(self, Shared::Redis(b) if b.is_cluster())
    }

    /// Whether `tenant`'s keys can be reached.
    pub(super) async fn ping_tenant(&self, tenant: &TenantId) -> Result<(), Unavailable> {
        match self {
            Shared::Redis(b) => b.ping_tenant(tenant).await,
            Shared::Memory(_) => Ok(()),
        }
    }

    pub(super) async fn ping(&self) -> Result<(), Unavailable> {
        match self {
            Shared::Redis(b) => b.load().await,
            Shared::Memory(_) => Ok(()),
        }
    }
}

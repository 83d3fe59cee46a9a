//! Quota counters rebuilt from the usage records. The limiter's daily and monthly counters live in
//! Redis (or in process), which may lose them — a Redis restart without persistence, a failover, a
//! new process. A counter missing for the current period is therefore rebuilt, before the request
//! is decided, from what the usage records of that period hold for its key, account or tenant
//! (requests, and prompt + completion tokens); a quota spent before the loss stays spent.

use std::sync::Arc;

use chrono::DateTime;

use super::guard::Guard;
use super::{Descriptor, Kind, Scope, period_start};
use crate::db::Db;
use crate::domain::TenantId;
use crate::error::ApiError;
use crate::models::usage::{QuotaScope, UsageRecord};

/// Seeds `descriptors` (missing quota counters of the period of `at_ms`) from the usage records.
pub async fn rebuild(
    db: &Db,
    limiter: &Arc<Guard>,
    tenant: &TenantId,
    descriptors: Vec<Descriptor>,
    at_ms: i64,
) -> Result<(), ApiError> {
    let tenant_id = tenant.clone();
    let wanted = descriptors.clone();
    let values = db
        .run(move |c| {
            wanted
                .iter()
                .map(|d| {
                    let since =
                        DateTime::from_timestamp_millis(period_start(d.kind.shape(), at_ms))
                            .expect("time in range")
                            .naive_utc();
                    let scope = match d.scope {
                        Scope::Key => QuotaScope::Key(&d.id),
                        Scope::Account => QuotaScope::Account(&d.id),
                        Scope::Tenant => QuotaScope::Tenant,
                    };
                    let (requests, tokens) = UsageRecord::quota_usage(c, &tenant_id, scope, since)?;
                    Ok(match d.kind {
                        Kind::TokensPerDay | Kind::TokensPerMonth => tokens,
                        _ => requests,
                    })
                })
                .collect::<Result<Vec<i64>, diesel::result::Error>>()
        })
        .await?;
    let seeds: Vec<(Descriptor, i64)> = descriptors.into_iter().zip(values).collect();
    limiter.seed(tenant, &seeds, at_ms).await;
    Ok(())
}

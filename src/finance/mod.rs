//! Finance: what finance people pull — usage exports ([`export`]), monthly statements per account
//! ([`statement`]) and revenue reports ([`revenue`]) — every figure read from the usage records and
//! the ledger, so that it ties to the ledger to the nano-unit (`taogate reconcile` checks it).

pub mod export;
pub mod pdf;
pub mod reconcile;
pub mod revenue;
pub mod statement;

use crate::db::DbConn;
use crate::domain::TenantId;
use crate::models::payment::ProviderSettings;

/// A tenant's ledger currency as finance shows it: its Stripe settings' currency, else its TAO
/// settings', else any other provider's (by name), else `usd`. (The ledger itself counts
/// nano-units; the currency is how a tenant's customers pay.)
pub fn currency_of(conn: &mut DbConn, tenant: &TenantId) -> diesel::QueryResult<String> {
    let mut found = ProviderSettings::currencies(conn, tenant)?;
    let rank = |p: &str| match p {
        "stripe" => 0,
        "tao" => 1,
        _ => 2,
    };
    found.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    Ok(found
        .into_iter()
        .next()
        .map_or_else(|| "usd".to_owned(), |(_, c)| c))
}

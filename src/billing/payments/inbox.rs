//! The inbound side of a provider: a notification for a tenant is verified against the tenant's
//! secrets, stored raw (committed before anything else happens, so a 2xx means it is durable), then
//! applied in a second transaction with its audit entries. A failure after storing answers 5xx:
//! the provider delivers again and the stored copy is applied then.

use std::sync::Arc;

use diesel::Connection;

use crate::auth::invalidation::Invalidator;
use crate::auth::key_cache::Invalidation;
use crate::billing::balance::resync;
use crate::db::Db;
use crate::error::ApiError;
use crate::limits::guard::Guard;
use crate::models::audit::{Actor, AuditEntry};
use crate::models::ledger::PostError;
use crate::models::payment::{Notification, ProviderSettings, Stored};
use crate::models::tenant::Tenant;

use super::Effect;
use super::apply::{Outcome, apply};
use super::notify;
use super::seal::Sealer;
use super::settings::unseal;
use super::{Provider, Refused};

/// What the caller needs besides the notification.
pub struct Inbox<'a> {
    pub db: &'a Db,
    pub sealer: Option<Sealer>,
    pub limiter: &'a Arc<Guard>,
    pub invalidator: &'a Invalidator,
    pub tolerance_secs: i64,
    pub request_id: String,
}

/// Where an effect came from (for the audit entry and the tenant's notification).
pub struct Source {
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    /// The stored notification, when it came as one.
    pub notification: Option<String>,
}

/// What receiving did, as answered to the provider.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Receipt {
    pub object: &'static str,
    pub event_id: String,
    /// `credited`, `debited`, `replayed`, `marked`, `ignored`, `foreign_account`,
    /// `unknown_payment`, `currency_mismatch`, `out_of_range` or `stale`.
    pub outcome: &'static str,
}

fn refused(e: Refused) -> ApiError {
    match e {
        Refused::Signature(e) => ApiError::bad_request("invalid_signature", e.to_string()),
        Refused::Unreadable(why) => ApiError::bad_request(
            "invalid_notification",
            format!("the notification cannot be read: {why}"),
        ),
    }
}

impl Inbox<'_> {
    /// Receives one notification for the tenant with `slug` from its provider named `provider`,
    /// read as `P` reads them.
    pub async fn receive<P: Provider>(
        &self,
        slug: &str,
        provider: &str,
        signature: Option<&str>,
        body: &[u8],
    ) -> Result<Receipt, ApiError> {
        let (slug_owned, name) = (slug.to_owned(), provider.to_owned());
        let found = self
            .db
            .run(move |c| {
                let tenant = match Tenant::find_by_slug(c, &slug_owned) {
                    Ok(t) => t,
                    Err(diesel::result::Error::NotFound) => return Ok(None),
                    Err(e) => return Err(e),
                };
                ProviderSettings::find(c, &tenant.id, &name)
            })
            .await?;
        let settings = found.ok_or(ApiError::NotFound {
            what: "payment endpoint",
        })?;
        let Some(sealer) = &self.sealer else {
            tracing::error!(tenant = %settings.tenant_id, "a webhook arrived but payments.encryption_key is not set");
            return Err(ApiError::Unavailable);
        };
        let secrets = unseal(&settings, sealer).map_err(|e| {
            tracing::error!(tenant = %settings.tenant_id, error = %e, "stored payment secrets do not open");
            ApiError::Unavailable
        })?;
        let signature = signature.ok_or_else(|| {
            ApiError::bad_request("invalid_signature", "the signature header is missing")
        })?;
        let keys: Vec<&str> = secrets.webhook_secrets.iter().map(String::as_str).collect();
        let now = chrono::Utc::now().timestamp();
        let inbound =
            P::verify(signature, body, &keys, now, self.tolerance_secs).map_err(refused)?;

        // 1. Stored, committed.
        let payload = String::from_utf8(body.to_vec()).map_err(|_| {
            ApiError::bad_request("invalid_notification", "the notification is not UTF-8")
        })?;
        let digest = crate::crypto::sha256_hex(body);
        let notification = Notification {
            id: uuid::Uuid::now_v7().to_string(),
            provider: provider.to_owned(),
            event_id: inbound.event_id.clone(),
            tenant_id: settings.tenant_id.clone(),
            event_type: inbound.event_type.clone(),
            payload,
            payload_sha256: digest.clone(),
            received_at: crate::db::now(),
            processed_at: None,
            outcome: None,
        };
        let stored = self
            .db
            .write(move |c| Ok::<_, ApiError>(notification.store(c)?))
            .await?;
        let stored = match stored {
            Stored::New(n) => n,
            Stored::Again(n) if n.tenant_id == settings.tenant_id && n.payload_sha256 == digest => {
                n
            }
            Stored::Again(n) => {
                tracing::warn!(event = %n.event_id, tenant = %settings.tenant_id,
                    "a notification reuses an event id stored with other content or for another tenant");
                return Err(ApiError::conflict(
                    "notification_conflict",
                    "this event id was received before with different content",
                ));
            }
        };

        // 2. Applied, with its audit trail, in one transaction.
        let source = Source {
            provider: provider.to_owned(),
            event_id: stored.event_id.clone(),
            event_type: stored.event_type.clone(),
            notification: Some(stored.id.clone()),
        };
        let applied = self
            .settle(settings, inbound.effect.clone(), source)
            .await?;
        self.limiter
            .metrics()
            .payment(provider, applied.outcome.as_str());
        Ok(Receipt {
            object: "webhook_receipt",
            event_id: inbound.event_id,
            outcome: applied.outcome.as_str(),
        })
    }
    /// Applies `effect` for the tenant, with its audit entry and tenant notification, in one
    /// transaction (recording the outcome on the stored notification, if any); then brings the
    /// account's cached balance up to date and, if a dispute suspended it, drops its keys.
    pub async fn settle(
        &self,
        settings: ProviderSettings,
        effect: Effect,
        source: Source,
    ) -> Result<super::apply::Applied, ApiError> {
        let tenant_id = settings.tenant_id.clone();
        let actor = Actor {
            user_id: None,
            role: None,
            ip: None,
            request_id: Some(self.request_id.clone()),
        };
        let event_id = source.event_id.clone();
        let applied = self
            .db
            .write(move |c| apply_recorded(c, &settings, &effect, &source, &actor))
            .await?;
        if applied.outcome.is_alert() {
            tracing::warn!(tenant = %tenant_id, event = %event_id,
                outcome = applied.outcome.as_str(), "a payment notification was stored but not applied");
        }
        if let Some(account) = &applied.account
            && applied.moved.0 != 0
        {
            resync(self.db, self.limiter, &tenant_id, account).await?;
            if applied.suspended {
                self.invalidator
                    .publish(Invalidation::Tenant(tenant_id.clone()))
                    .await;
            }
        }
        Ok(applied)
    }
}

/// Applies `effect` in the caller's transaction with everything that goes with it: the stored
/// notification's outcome, the audit entry and the tenant's notification.
pub fn apply_recorded(
    c: &mut crate::db::DbConn,
    settings: &ProviderSettings,
    effect: &Effect,
    source: &Source,
    actor: &Actor,
) -> Result<super::apply::Applied, ApiError> {
    let tenant = &settings.tenant_id;
    let applied = apply(c, settings, effect).map_err(|e| match e {
        PostError::Db(e) => ApiError::from(e),
        other => ApiError::internal_msg(other),
    })?;
    if let Some(id) = &source.notification {
        Notification::processed(c, id, applied.outcome.as_str())?;
    }
    let detail = serde_json::json!({
        "provider": source.provider,
        "event_id": source.event_id,
        "event_type": source.event_type,
        "outcome": applied.outcome.as_str(),
        "account_id": applied.account,
        "payment_id": applied.payment,
        "won": matches!(effect, Effect::DisputeClosed { won: true, .. }),
        "amount_nano": applied.moved,
        "suspended": applied.suspended,
    });
    let action = match applied.outcome {
        o if o.is_alert() => Some("payment.alert"),
        Outcome::Credited | Outcome::Debited | Outcome::Marked => Some("payment.event"),
        _ => None,
    };
    if let Some(kind) = notice(effect, applied.outcome) {
        notify::enqueue(c, tenant, kind, detail.clone())?;
    }
    if let Some(action) = action {
        let target = match (&applied.account, &source.notification) {
            (Some(a), _) => ("account", a.as_str()),
            (None, Some(n)) => ("notification", n.as_str()),
            (None, None) => ("tenant", tenant.as_str()),
        };
        AuditEntry::record(c, actor, Some(tenant), action, target, detail)?;
    }
    Ok(applied)
}

/// Applies the notifications that were stored but never applied (a crash between storing
/// and applying, and no redelivery), received more than a minute ago; how many (`taogate
/// reconcile`). They were verified when stored.
pub fn apply_stored(c: &mut crate::db::DbConn) -> Result<usize, ApiError> {
    let cutoff = crate::db::now() - chrono::Duration::seconds(60);
    let mut applied = 0;
    for n in Notification::unprocessed(c, cutoff)? {
        let Some(settings) = ProviderSettings::find(c, &n.tenant_id, &n.provider)? else {
            continue;
        };
        let read = if n.provider.starts_with(super::CUSTOM_PREFIX) {
            super::custom::Custom::read(n.payload.as_bytes())
        } else if n.provider == super::btcpay::NAME {
            super::btcpay::BtcPay::read(n.payload.as_bytes())
        } else if n.provider == super::coinbase::NAME {
            super::coinbase::Coinbase::read(n.payload.as_bytes())
        } else {
            super::stripe::Stripe::read(n.payload.as_bytes())
        };
        let effect = read.map_or(Effect::Ignored, |inbound| inbound.effect);
        let source = Source {
            provider: n.provider.clone(),
            event_id: n.event_id.clone(),
            event_type: n.event_type.clone(),
            notification: Some(n.id.clone()),
        };
        let actor = Actor {
            user_id: None,
            role: None,
            ip: None,
            request_id: None,
        };
        c.transaction(|c| apply_recorded(c, &settings, &effect, &source, &actor))?;
        applied += 1;
    }
    Ok(applied)
}

/// The notification a tenant gets for what a notification did, if any.
fn notice(effect: &Effect, outcome: Outcome) -> Option<&'static str> {
    if outcome.is_alert() {
        return Some("payment.alert");
    }
    match (effect, outcome) {
        (Effect::Paid { .. }, Outcome::Credited) => Some("topup.succeeded"),
        (Effect::Failed { .. }, Outcome::Marked) => Some("topup.failed"),
        (Effect::Refunded { .. }, Outcome::Debited) => Some("refund.created"),
        (Effect::DisputeOpened { .. }, Outcome::Debited | Outcome::Marked) => {
            Some("dispute.created")
        }
        (Effect::DisputeClosed { .. }, Outcome::Credited | Outcome::Marked) => {
            Some("dispute.closed")
        }
        _ => None,
    }
}

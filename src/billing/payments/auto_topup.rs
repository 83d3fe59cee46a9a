//! Automatic top-ups (per account: a threshold and an amount). Every
//! `payments.auto_topup_every_ms`, each replica looks at the enabled rules whose back-off has
//! passed; an account whose spendable balance (ledger balance minus holds and pending usage) is
//! below its threshold gets one off-session PaymentIntent on its saved card, in the tenant's own
//! Stripe account. The payment is recorded pending first — a partial unique index allows one
//! pending automatic top-up per account, so two replicas (or two ticks) never charge twice — and
//! it is credited, like every payment, only by Stripe's signed webhook (`payment_intent.succeeded`,
//! keyed by the PaymentIntent). A refused charge (no saved card, declined, needs the customer's
//! authentication) marks the payment failed, audits it and backs off: 1 min, 2, 4 … up to 6 h;
//! a success clears the back-off.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::billing::amount::{self, Sign};
use crate::db::Db;
use crate::domain::{AccountId, ActiveStatus, Nano, PaymentId, PaymentKind, PaymentState};
use crate::error::{ApiError, ApiResult};
use crate::limits::guard::Guard;
use crate::models::account::Account;
use crate::models::audit::AuditEntry;
use crate::models::ledger::LedgerAccount;
use crate::models::payment::{AutoTopup, Payment, ProviderSettings};

use super::notify::{self, system};
use super::stripe_api::OffSessionCharge;
use super::{PaymentsConfig, nano_to_minor, stripe, stripe_account};

/// Longest back-off after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// How long to wait after the `failures`-th failure in a row.
pub fn backoff(failures: i32) -> Duration {
    let exp = failures.clamp(1, 16) as u32 - 1;
    Duration::from_secs(60u64 << exp).min(MAX_BACKOFF)
}

/// When the next attempt may run after `failures` failures.
pub fn retry_at(failures: i32) -> NaiveDateTime {
    crate::db::now()
        + chrono::Duration::from_std(backoff(failures)).unwrap_or(chrono::Duration::hours(6))
}

/// `PUT /api/v1/accounts/{id}/auto-topup`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoTopupInput {
    pub enabled: bool,
    /// Top up when the spendable balance is below this, nano-units.
    #[schema(value_type = i64, minimum = 0, maximum = 1_000_000_000_000_000_000_i64)]
    pub threshold_nano: Nano,
    /// How much to charge and credit each time, nano-units (within the tenant's top-up bounds,
    /// a whole number of the currency's minor units).
    #[schema(value_type = i64, minimum = 1)]
    pub amount_nano: Nano,
}

#[derive(Serialize, ToSchema)]
pub struct AutoTopupView {
    pub object: &'static str,
    pub account_id: AccountId,
    pub enabled: bool,
    #[schema(value_type = i64)]
    pub threshold_nano: Nano,
    #[schema(value_type = i64)]
    pub amount_nano: Nano,
    /// Failed attempts in a row (0 after a success).
    pub failures: i32,
    /// No attempt before this (back-off after failures).
    pub next_attempt_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
}

impl From<AutoTopup> for AutoTopupView {
    fn from(r: AutoTopup) -> Self {
        Self {
            object: "auto_topup",
            account_id: r.account_id,
            enabled: r.enabled,
            threshold_nano: r.threshold_nano,
            amount_nano: r.amount_nano,
            failures: r.failures,
            next_attempt_at: r.next_attempt_at.map(crate::models::utc),
            last_error: r.last_error,
        }
    }
}

impl AutoTopupInput {
    /// Checks the rule against the tenant's Stripe settings.
    pub fn rule(self, account: &Account, settings: &ProviderSettings) -> ApiResult<AutoTopup> {
        let threshold = amount::input("threshold_nano", self.threshold_nano, Sign::NonNegative)?;
        let amount = amount::input("amount_nano", self.amount_nano, Sign::Positive)?;
        super::topup::payable(settings, "amount_nano", amount)?;
        let now = crate::db::now();
        Ok(AutoTopup {
            account_id: account.id.clone(),
            tenant_id: account.tenant_id.clone(),
            enabled: self.enabled,
            threshold_nano: threshold,
            amount_nano: amount,
            failures: 0,
            next_attempt_at: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        })
    }
}

/// Runs the checker on this replica.
pub fn spawn(db: Db, config: PaymentsConfig, limiter: Arc<Guard>) {
    let every = Duration::from_millis(config.auto_topup_every_ms);
    actix_web::rt::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = run_once(&db, &config, &limiter).await {
                tracing::warn!(error = %e, "automatic top-ups could not be checked");
            }
            if let Err(e) = notify::check_balances(&db, &limiter).await {
                tracing::warn!(error = %e, "low balances could not be checked");
            }
        }
    });
}

/// One pass over the due rules; how many charges it started.
pub async fn run_once(db: &Db, config: &PaymentsConfig, limiter: &Arc<Guard>) -> ApiResult<usize> {
    let rules = db.run(|c| AutoTopup::due(c, crate::db::now())).await?;
    let mut started = 0;
    for rule in rules {
        match attempt(db, config, limiter, &rule).await {
            Ok(true) => started += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(account = %rule.account_id, error = %e, "automatic top-up"),
        }
    }
    Ok(started)
}

/// Charges the rule's account if its spendable balance is below the threshold.
async fn attempt(
    db: &Db,
    config: &PaymentsConfig,
    limiter: &Arc<Guard>,
    rule: &AutoTopup,
) -> ApiResult<bool> {
    let id = rule.account_id.clone();
    let (balance, _) = db
        .run(move |c| LedgerAccount::customer_state(c, &id))
        .await?;
    if notify::spendable(limiter, &rule.tenant_id, &rule.account_id, balance.0).await
        >= rule.threshold_nano.0
    {
        return Ok(false);
    }
    let (tenant, id) = (rule.tenant_id.clone(), rule.account_id.clone());
    let account = db
        .run(move |c| Account::find_in_tenant(c, &tenant, &id))
        .await?;
    if account.status != ActiveStatus::Active {
        return Ok(false);
    }
    let (settings, api) = stripe_account::client(db, config, &rule.tenant_id).await?;
    let Some(minor) = nano_to_minor(rule.amount_nano, &settings.currency, settings.nano_per_unit)
    else {
        fail(
            db,
            rule,
            None,
            "the amount is not a whole number of the currency's minor units",
        )
        .await?;
        return Ok(false);
    };
    let now = crate::db::now();
    let payment = Payment {
        id: PaymentId::generate(),
        tenant_id: rule.tenant_id.clone(),
        account_id: rule.account_id.clone(),
        provider: stripe::NAME.to_owned(),
        kind: PaymentKind::AutoTopup,
        reference: None,
        session_id: None,
        state: PaymentState::Pending,
        currency: settings.currency.clone(),
        requested_minor: minor,
        paid_minor: 0,
        refunded_minor: 0,
        credited_nano: Nano(0),
        created_by: None,
        created_at: now,
        updated_at: now,
    };
    let p = payment.clone();
    if !db
        .write(move |c| Ok::<_, ApiError>(p.insert_unless_pending(c)?))
        .await?
    {
        return Ok(false); // one is already pending
    }
    let customer = match stripe_account::customer(db, &api, &account).await {
        Ok(c) => c,
        Err(e) => {
            fail(db, rule, Some(&payment.id), &e.to_string()).await?;
            return Ok(false);
        }
    };
    let (pid, aid, tid) = (
        payment.id.to_string(),
        account.id.to_string(),
        account.tenant_id.to_string(),
    );
    let metadata = [
        ("taogate_payment_id", pid.as_str()),
        ("taogate_account_id", aid.as_str()),
        ("taogate_tenant_id", tid.as_str()),
        ("taogate_kind", "auto_topup"),
    ];
    let charged = api
        .charge_saved_card(&OffSessionCharge {
            customer: &customer,
            amount_minor: minor,
            currency: &settings.currency,
            metadata: &metadata,
            idempotency_key: &format!("auto_topup:{}", payment.id),
        })
        .await;
    match charged {
        Ok(intent) if matches!(intent.status.as_str(), "succeeded" | "processing") => {
            let (id, reference, t, a) = (
                payment.id.clone(),
                intent.id.clone(),
                rule.tenant_id.clone(),
                rule.account_id.clone(),
            );
            db.write(move |c| {
                Payment::started(c, &id, None, Some(&reference))?;
                AuditEntry::record(c, &system(), Some(&t), "payment.auto_topup", ("account", a.as_str()),
                    serde_json::json!({"payment_id": id, "payment_intent": reference, "amount_minor": minor}))?;
                Ok::<_, ApiError>(())
            })
            .await?;
            Ok(true)
        }
        Ok(intent) => {
            fail(
                db,
                rule,
                Some(&payment.id),
                &format!(
                    "the PaymentIntent is {} (the card needs the customer)",
                    intent.status
                ),
            )
            .await?;
            Ok(false)
        }
        Err(e) => {
            fail(db, rule, Some(&payment.id), &e.to_string()).await?;
            Ok(false)
        }
    }
}

/// A failed attempt: the payment (if started) is failed, the rule backs off, the tenant's audit
/// log says why.
async fn fail(db: &Db, rule: &AutoTopup, payment: Option<&PaymentId>, why: &str) -> ApiResult<()> {
    tracing::warn!(account = %rule.account_id, error = why, "automatic top-up failed");
    let (rule, payment, why) = (rule.clone(), payment.cloned(), why.to_owned());
    db.write(move |c| {
        if let Some(p) = &payment {
            Payment::abandon(c, p)?;
        }
        AutoTopup::failed(c, &rule.account_id, &why, retry_at(rule.failures + 1))?;
        let data = serde_json::json!({"account_id": rule.account_id, "payment_id": payment,
            "kind": "auto_topup", "error": why});
        AuditEntry::record(
            c,
            &system(),
            Some(&rule.tenant_id),
            "payment.auto_topup_failed",
            ("account", rule.account_id.as_str()),
            data.clone(),
        )?;
        notify::enqueue(c, &rule.tenant_id, "topup.failed", data)?;
        Ok::<_, ApiError>(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_up_to_six_hours() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(5), Duration::from_secs(960));
        assert_eq!(backoff(40), MAX_BACKOFF);
        assert_eq!(backoff(0), Duration::from_secs(60));
    }
}

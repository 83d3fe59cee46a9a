//! Starting a top-up with a provider: the amount is checked against the tenant's rules (its
//! bounds, a whole number of the currency's minor units), the payment is recorded `pending`, the
//! provider starts it ([`Provider::start`]: Stripe makes a Checkout Session), and what the provider
//! answered is recorded with an audit entry. A provider that fails leaves the payment `failed`
//! (nothing was charged) and answers its error.

use crate::db::Db;
use crate::domain::{Nano, PaymentId, PaymentKind, PaymentState};
use crate::error::{ApiError, ApiResult};
use crate::models::account::Account;
use crate::models::audit::{Actor, AuditEntry};
use crate::models::payment::{Payment, ProviderSettings};

use super::{Payer, Provider, nano_to_minor};

/// The minor units for `amount`, if the tenant's rules allow it (400 naming `field` if not).
pub fn payable(settings: &ProviderSettings, field: &str, amount: Nano) -> ApiResult<i64> {
    if amount < settings.min_topup_nano || amount > settings.max_topup_nano {
        return Err(ApiError::BadRequest {
            code: "amount_out_of_range",
            message: format!(
                "{field} must be between {} and {}",
                settings.min_topup_nano.0, settings.max_topup_nano.0
            ),
            param: Some(field.into()),
        });
    }
    nano_to_minor(amount, &settings.currency, settings.nano_per_unit).ok_or_else(|| {
        ApiError::BadRequest {
            code: "amount_not_payable",
            message: format!(
                "{field} must be a whole number of {} minor units",
                settings.currency
            ),
            param: Some(field.into()),
        }
    })
}

/// A started top-up: its record and where the payer goes.
pub struct Started {
    pub payment: Payment,
    pub url: String,
}

/// Starts a top-up of `amount` into `account` with `provider`.
pub async fn start<P: Provider>(
    db: &Db,
    provider: &P,
    settings: &ProviderSettings,
    account: &Account,
    amount: Nano,
    actor: Actor,
    payer: &Payer,
) -> ApiResult<Started> {
    let minor = payable(settings, "amount_nano", amount)?;
    let now = crate::db::now();
    let mut payment = Payment {
        id: PaymentId::generate(),
        tenant_id: account.tenant_id.clone(),
        account_id: account.id.clone(),
        provider: P::NAME.to_owned(),
        kind: PaymentKind::Checkout,
        reference: None,
        session_id: None,
        state: PaymentState::Pending,
        currency: settings.currency.clone(),
        requested_minor: minor,
        paid_minor: 0,
        refunded_minor: 0,
        credited_nano: Nano(0),
        created_by: actor.user_id.as_ref().map(ToString::to_string),
        created_at: now,
        updated_at: now,
    };
    let p = payment.clone();
    db.write(move |c| Ok::<_, ApiError>(p.insert(c)?)).await?;
    let started = match provider.start(&payment, account, payer).await {
        Ok(s) => s,
        Err(e) => {
            let id = payment.id.clone();
            db.write(move |c| Ok::<_, ApiError>(Payment::abandon(c, &id)?))
                .await?;
            return Err(e);
        }
    };
    payment.session_id = started.session.clone();
    payment.reference = started.reference.clone();
    let p = payment.clone();
    db.write(move |c| {
        Payment::started(c, &p.id, p.session_id.as_deref(), p.reference.as_deref())?;
        AuditEntry::record(c, &actor, Some(&p.tenant_id), "billing.checkout", ("account", p.account_id.as_str()),
            serde_json::json!({"payment_id": p.id, "provider": p.provider, "checkout_session_id": p.session_id,
                "amount_minor": p.requested_minor, "currency": p.currency}))?;
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(Started {
        payment,
        url: started.url,
    })
}

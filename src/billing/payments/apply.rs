//! Applying a notification's [`Effect`] to a payment: the forward-only state machine and the
//! ledger transactions, in the caller's database transaction. Each movement of money is one
//! ledger transaction between the account's balance and the tenant's `payment_clearing` account,
//! keyed by the provider's reference — `stripe:<payment_intent>` for the credit,
//! `stripe:<pi>:refunded:<cumulative minor units>` for refunds, `stripe:dispute:<dp>` and
//! `stripe:dispute_won:<dp>` for a dispute and its reversal — so replays, concurrent deliveries
//! and any order of events move money once. Concurrent notifications about one payment are
//! serialised on the payment's row ([`Payment::lock`]).
//!
//! What is credited: what was paid, but never more than the top-up asked for (a session whose
//! total includes tax credits the requested amount), converted at the tenant's rate and rounded
//! down. A refund or dispute debits at most what the payment credited.

use crate::db::DbConn;
use crate::domain::{
    AccountId, ActiveStatus, DisputePolicy, LedgerPurpose, MovementKind, Nano, PaymentId,
    PaymentKind, PaymentState, TenantId, TransactionKind,
};
use crate::models::account::{Account, AccountChanges};
use crate::models::ledger::{LedgerAccount, NewTransaction, PostError, Posted, Posting};
use crate::models::payment::{AutoTopup, Movement, Payment, PaymentRef, ProviderSettings};

use super::Effect;

/// What applying a notification did (stored as the notification's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Credited,
    Debited,
    /// The money had already moved (a repeat or a sibling event).
    Replayed,
    /// The payment's state changed; no money moved.
    Marked,
    Ignored,
    /// The event names an account that is not this tenant's (or none): stored, not credited.
    ForeignAccount,
    /// Not a payment this tenant has, or cannot have (refund of an unknown payment).
    UnknownPayment,
    CurrencyMismatch,
    OutOfRange,
    /// The payment is past the state this event would move it to.
    Stale,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credited => "credited",
            Self::Debited => "debited",
            Self::Replayed => "replayed",
            Self::Marked => "marked",
            Self::Ignored => "ignored",
            Self::ForeignAccount => "foreign_account",
            Self::UnknownPayment => "unknown_payment",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::OutOfRange => "out_of_range",
            Self::Stale => "stale",
        }
    }

    /// Whether the operator and tenant should hear of it.
    pub fn is_alert(self) -> bool {
        matches!(
            self,
            Self::ForeignAccount | Self::UnknownPayment | Self::CurrencyMismatch | Self::OutOfRange
        )
    }
}

/// The result of [`apply`].
#[derive(Debug)]
pub struct Applied {
    pub outcome: Outcome,
    /// The account whose balance changed (its cached balance must follow) or whose payment it is.
    pub account: Option<AccountId>,
    pub payment: Option<PaymentId>,
    /// Nano-units moved on the account (+ credit, − debit).
    pub moved: Nano,
    /// A dispute suspended the account (its keys must stop at once).
    pub suspended: bool,
}

impl Applied {
    fn just(outcome: Outcome, payment: Option<&Payment>) -> Self {
        Self {
            outcome,
            account: payment.map(|p| p.account_id.clone()),
            payment: payment.map(|p| p.id.clone()),
            moved: Nano(0),
            suspended: false,
        }
    }
}

/// Applies `effect` for the tenant whose `settings` verified it.
pub fn apply(
    conn: &mut DbConn,
    settings: &ProviderSettings,
    effect: &Effect,
) -> Result<Applied, PostError> {
    let provider = settings.provider.as_str();
    match effect {
        Effect::Ignored => Ok(Applied::just(Outcome::Ignored, None)),
        Effect::Paid {
            reference,
            session,
            payment_hint,
            account_hint,
            amount_minor,
            currency,
        } => {
            // Empty: the provider did not say (BTCPay's "settled"): the payment's own currency.
            if !currency.is_empty() && *currency != settings.currency {
                return Ok(Applied::just(Outcome::CurrencyMismatch, None));
            }
            let found = find(
                conn,
                settings,
                payment_hint.as_deref(),
                session.as_deref(),
                Some(reference),
            )?;
            let payment = match found {
                Some(p) => p,
                None => {
                    // A payment we did not start (the tenant's dashboard, a payment link): it
                    // must say what was paid and name one of this tenant's accounts.
                    let Some(amount_minor) = amount_minor else {
                        return Ok(Applied::just(Outcome::UnknownPayment, None));
                    };
                    let Some(account) =
                        own_account(conn, &settings.tenant_id, account_hint.as_deref())?
                    else {
                        return Ok(Applied::just(Outcome::ForeignAccount, None));
                    };
                    let now = crate::db::now();
                    Payment {
                        id: PaymentId::generate(),
                        tenant_id: settings.tenant_id.clone(),
                        account_id: account,
                        provider: provider.to_owned(),
                        kind: PaymentKind::External,
                        reference: Some(reference.clone()),
                        session_id: session.clone(),
                        state: PaymentState::Pending,
                        currency: currency.clone(),
                        requested_minor: *amount_minor,
                        paid_minor: 0,
                        refunded_minor: 0,
                        credited_nano: Nano(0),
                        created_by: None,
                        created_at: now,
                        updated_at: now,
                    }
                    .insert_or_find(conn)?
                }
            };
            if payment.tenant_id != settings.tenant_id
                || account_hint
                    .as_ref()
                    .is_some_and(|a| a != payment.account_id.as_str())
            {
                return Ok(Applied::just(Outcome::ForeignAccount, Some(&payment)));
            }
            let mut payment = Payment::lock(conn, &payment.id)?;
            if payment.state != PaymentState::Pending {
                let outcome = if payment.reference.as_deref() == Some(reference.as_str()) {
                    Outcome::Replayed
                } else {
                    Outcome::Stale
                };
                return Ok(Applied::just(outcome, Some(&payment)));
            }
            let paid_minor = amount_minor.unwrap_or(payment.requested_minor);
            let credit_minor = match payment.kind {
                PaymentKind::External => paid_minor,
                _ => paid_minor.min(payment.requested_minor),
            };
            let Some(nano) = settings.to_nano(credit_minor) else {
                return Ok(Applied::just(Outcome::OutOfRange, Some(&payment)));
            };
            let key = format!("{provider}:{reference}");
            let memo = format!("{provider} payment {reference}");
            let posted = if nano.0 > 0 {
                Some(post(conn, &payment, &key, nano, &memo)?)
            } else {
                None
            };
            payment.state = PaymentState::Succeeded;
            payment.reference = Some(reference.clone());
            if payment.session_id.is_none() {
                payment.session_id = session.clone();
            }
            payment.paid_minor = paid_minor;
            payment.credited_nano = nano;
            payment.save_progress(conn)?;
            if payment.kind == PaymentKind::AutoTopup {
                AutoTopup::succeeded(conn, &payment.account_id)?;
            }
            settled(
                conn,
                &payment,
                posted,
                MovementKind::Credit,
                reference,
                credit_minor,
                nano,
                false,
            )
        }
        Effect::Failed {
            session,
            reference,
            payment_hint,
            expired,
        } => {
            let Some(payment) = find(
                conn,
                settings,
                payment_hint.as_deref(),
                session.as_deref(),
                reference.as_deref(),
            )?
            else {
                return Ok(Applied::just(Outcome::UnknownPayment, None));
            };
            let mut payment = Payment::lock(conn, &payment.id)?;
            let next = if *expired {
                PaymentState::Expired
            } else {
                PaymentState::Failed
            };
            if !payment.state.may_become(next) {
                return Ok(Applied::just(Outcome::Stale, Some(&payment)));
            }
            payment.state = next;
            payment.save_progress(conn)?;
            if payment.kind == PaymentKind::AutoTopup
                && let Some(rule) = AutoTopup::find(conn, &payment.account_id)?
            {
                AutoTopup::failed(
                    conn,
                    &payment.account_id,
                    "the card payment failed",
                    super::auto_topup::retry_at(rule.failures + 1),
                )?;
            }
            Ok(Applied::just(Outcome::Marked, Some(&payment)))
        }
        Effect::Refunded {
            reference,
            refunded_total_minor,
            currency,
            refund_ids,
        } => {
            let Some(payment) = find(conn, settings, None, None, Some(reference))? else {
                return Ok(Applied::just(Outcome::UnknownPayment, None));
            };
            let mut payment = Payment::lock(conn, &payment.id)?;
            if *currency != payment.currency {
                return Ok(Applied::just(Outcome::CurrencyMismatch, Some(&payment)));
            }
            let target = (*refunded_total_minor).min(payment.paid_minor);
            if target <= payment.refunded_minor {
                return Ok(Applied::just(Outcome::Replayed, Some(&payment)));
            }
            // Nano-units refunded so far, and what the cumulative refund comes to (all of the
            // credit when the whole payment is refunded; never more than was credited).
            let before = -moved_of(conn, &payment.id, MovementKind::Refund)?;
            let total = if target == payment.paid_minor {
                payment.credited_nano.0
            } else {
                settings
                    .to_nano(target)
                    .map_or(payment.credited_nano.0, |n| {
                        n.0.min(payment.credited_nano.0)
                    })
            };
            let nano = Nano(total - before);
            let delta_minor = target - payment.refunded_minor;
            let key = format!("{provider}:{reference}:refunded:{target}");
            let memo = match refund_ids.as_slice() {
                [] => format!("{provider} refund of {reference}"),
                ids => format!("{provider} refund of {reference} ({})", ids.join(", ")),
            };
            let refund_ref = refund_ids
                .last()
                .cloned()
                .unwrap_or_else(|| reference.clone());
            let posted = if nano.0 > 0 {
                Some(post(conn, &payment, &key, Nano(-nano.0), &memo)?)
            } else {
                None
            };
            payment.refunded_minor = target;
            let next = if target == payment.paid_minor {
                PaymentState::Refunded
            } else {
                PaymentState::PartiallyRefunded
            };
            if payment.state.may_become(next) {
                payment.state = next;
            }
            payment.save_progress(conn)?;
            settled(
                conn,
                &payment,
                posted,
                MovementKind::Refund,
                &refund_ref,
                delta_minor,
                Nano(-nano.0),
                false,
            )
        }
        Effect::DisputeOpened {
            reference,
            dispute,
            amount_minor,
            currency,
        } => {
            let Some(payment) = find(conn, settings, None, None, Some(reference))? else {
                return Ok(Applied::just(Outcome::UnknownPayment, None));
            };
            let mut payment = Payment::lock(conn, &payment.id)?;
            if *currency != payment.currency {
                return Ok(Applied::just(Outcome::CurrencyMismatch, Some(&payment)));
            }
            // At most what the payment still has credited after refunds.
            let refunded = -moved_of(conn, &payment.id, MovementKind::Refund)?;
            let left = payment.credited_nano.0 - refunded;
            let asked = settings.to_nano(*amount_minor).map_or(left, |n| n.0);
            let nano = asked.min(left).max(0);
            let key = format!("{provider}:dispute:{dispute}");
            let posted = if nano > 0 {
                Some(post(
                    conn,
                    &payment,
                    &key,
                    Nano(-nano),
                    &format!("{provider} dispute {dispute}"),
                )?)
            } else {
                None
            };
            if payment.state.may_become(PaymentState::Disputed) {
                payment.state = PaymentState::Disputed;
                payment.save_progress(conn)?;
            }
            let mut suspended = false;
            if matches!(posted, Some(Posted::New(_)))
                && settings.dispute_policy == DisputePolicy::DebitAndSuspend
            {
                Account::update(
                    conn,
                    &payment.tenant_id,
                    &payment.account_id,
                    AccountChanges {
                        status: Some(ActiveStatus::Suspended),
                        ..Default::default()
                    },
                )?;
                suspended = true;
            }
            settled(
                conn,
                &payment,
                posted,
                MovementKind::Dispute,
                dispute,
                *amount_minor,
                Nano(-nano),
                suspended,
            )
        }
        Effect::DisputeClosed {
            reference,
            dispute,
            won,
        } => {
            let Some(payment) = find(conn, settings, None, None, Some(reference))? else {
                return Ok(Applied::just(Outcome::UnknownPayment, None));
            };
            let mut payment = Payment::lock(conn, &payment.id)?;
            let next = if *won {
                PaymentState::DisputeWon
            } else {
                PaymentState::DisputeLost
            };
            if payment.state.may_become(next) {
                payment.state = next;
                payment.save_progress(conn)?;
            }
            if !won {
                return Ok(Applied::just(Outcome::Marked, Some(&payment)));
            }
            // Won: what the dispute debited comes back, once.
            let debited = Movement::of_payment(conn, &payment.id)?
                .into_iter()
                .find(|m| m.kind == MovementKind::Dispute && m.provider_ref == *dispute);
            let Some(debited) = debited else {
                return Ok(Applied::just(Outcome::Marked, Some(&payment)));
            };
            let nano = Nano(-debited.amount_nano.0);
            let key = format!("{provider}:dispute_won:{dispute}");
            let posted = post(
                conn,
                &payment,
                &key,
                nano,
                &format!("{provider} dispute {dispute} won"),
            )?;
            settled(
                conn,
                &payment,
                Some(posted),
                MovementKind::DisputeReversal,
                dispute,
                debited.amount_minor,
                nano,
                false,
            )
        }
    }
}

/// The payment a notification is about: by our id (metadata), its session, or its reference.
fn find(
    conn: &mut DbConn,
    settings: &ProviderSettings,
    payment_hint: Option<&str>,
    session: Option<&str>,
    reference: Option<&str>,
) -> Result<Option<Payment>, PostError> {
    if let Some(id) = payment_hint.and_then(PaymentId::parse)
        && let Some(p) = Payment::find_in_tenant(conn, &settings.tenant_id, &id)?
    {
        return Ok(Some(p));
    }
    for by in [
        session.map(PaymentRef::Session),
        reference.map(PaymentRef::Reference),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(p) = Payment::find(conn, &settings.provider, by)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// The account named by a notification, if it is one of `tenant`'s.
fn own_account(
    conn: &mut DbConn,
    tenant: &TenantId,
    hint: Option<&str>,
) -> Result<Option<AccountId>, PostError> {
    let Some(id) = hint.and_then(AccountId::parse) else {
        return Ok(None);
    };
    match Account::find_in_tenant(conn, tenant, &id) {
        Ok(a) => Ok(Some(a.id)),
        Err(diesel::result::Error::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Posts `amount` (+ credit, − debit) on the payment's account against the tenant's clearing
/// account, once per `key`.
fn post(
    conn: &mut DbConn,
    payment: &Payment,
    key: &str,
    amount: Nano,
    memo: &str,
) -> Result<Posted, PostError> {
    let customer = LedgerAccount::customer(conn, &payment.tenant_id, &payment.account_id)?;
    let clearing =
        LedgerAccount::of_tenant(conn, &payment.tenant_id, LedgerPurpose::PaymentClearing)?;
    let negated = amount.0.checked_neg().ok_or(PostError::OutOfRange)?;
    NewTransaction {
        tenant_id: Some(payment.tenant_id.clone()),
        idempotency_key: key.to_owned(),
        kind: TransactionKind::Topup,
        reference: Some(payment.id.to_string()),
        memo: Some(memo.to_owned()),
        postings: vec![
            Posting {
                account: customer.id,
                amount,
            },
            Posting {
                account: clearing.id,
                amount: Nano(negated),
            },
        ],
    }
    .post(conn)
}

/// Records the payment's movement if `posted` moved money now (+ credit, − debit); what
/// happened either way.
#[allow(clippy::too_many_arguments)]
fn settled(
    conn: &mut DbConn,
    payment: &Payment,
    posted: Option<Posted>,
    kind: MovementKind,
    provider_ref: &str,
    amount_minor: i64,
    amount_nano: Nano,
    suspended: bool,
) -> Result<Applied, PostError> {
    let txn = match posted {
        Some(Posted::New(txn)) => txn,
        Some(Posted::Replayed(_)) => return Ok(Applied::just(Outcome::Replayed, Some(payment))),
        None => return Ok(Applied::just(Outcome::Marked, Some(payment))),
    };
    Movement {
        id: uuid::Uuid::now_v7().to_string(),
        payment_id: payment.id.clone(),
        kind,
        transaction_id: txn.id,
        provider_ref: provider_ref.to_owned(),
        amount_minor,
        amount_nano,
        created_at: crate::db::now(),
    }
    .insert(conn)?;
    let outcome = if amount_nano.0 > 0 {
        Outcome::Credited
    } else {
        Outcome::Debited
    };
    Ok(Applied {
        moved: amount_nano,
        suspended,
        ..Applied::just(outcome, Some(payment))
    })
}

/// Nano-units a payment's movements of `kind` moved so far (signed).
fn moved_of(conn: &mut DbConn, payment: &PaymentId, kind: MovementKind) -> Result<i64, PostError> {
    Ok(Movement::of_payment(conn, payment)?
        .iter()
        .filter(|m| m.kind == kind)
        .map(|m| m.amount_nano.0)
        .sum())
}

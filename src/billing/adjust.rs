//! Manual credits and debits: a balanced transaction between the account's balance and the
//! tenant's `adjustments` account, posted once per (account, caller, `Idempotency-Key`) — the key is
//! scoped to whoever sent it, so another user's reuse of a key posts (and answers) on its own.

use crate::db::DbConn;
use crate::domain::{AccountId, LedgerPurpose, Nano, TenantId, TransactionKind, UserId};
use crate::models::ledger::{
    LedgerAccount, LedgerEntry, NewTransaction, PostError, Posted, Posting,
};

/// A manual adjustment to post.
pub struct Adjustment<'a> {
    pub tenant: &'a TenantId,
    pub account: &'a AccountId,
    /// Who asks (their id scopes the idempotency key).
    pub by: Option<&'a UserId>,
    /// The client's `Idempotency-Key`, or a fresh one.
    pub key: &'a str,
    /// In range already (`billing::amount::input`, non-zero).
    pub amount: Nano,
    pub reason: &'a str,
}

/// What posting an adjustment did.
pub struct Adjusted {
    pub posted: Posted,
    /// What the (first) transaction moved on the account: on a replay, the original amount.
    pub amount: Nano,
    /// The account's balance afterwards.
    pub balance: Nano,
}

impl Adjustment<'_> {
    /// Posts it once; a replay returns the first posting and moves nothing. A balance that would
    /// leave its range is [`PostError::OutOfRange`].
    pub fn post(self, conn: &mut DbConn) -> Result<Adjusted, PostError> {
        let customer = LedgerAccount::customer(conn, self.tenant, self.account)?;
        let counter = LedgerAccount::of_tenant(conn, self.tenant, LedgerPurpose::Adjustments)?;
        let negated = self.amount.0.checked_neg().ok_or(PostError::OutOfRange)?;
        let by = self.by.map_or("system", UserId::as_str);
        let posted = NewTransaction {
            tenant_id: Some(self.tenant.clone()),
            idempotency_key: format!("adjustment:{}:{by}:{}", self.account, self.key),
            kind: TransactionKind::Adjustment,
            reference: self.by.map(|u| u.to_string()),
            memo: Some(self.reason.to_owned()),
            postings: vec![
                Posting {
                    account: customer.id.clone(),
                    amount: self.amount,
                },
                Posting {
                    account: counter.id,
                    amount: Nano(negated),
                },
            ],
        }
        .post(conn)?;
        let amount = match &posted {
            Posted::New(_) => self.amount,
            Posted::Replayed(t) => LedgerEntry::amount_in(conn, &t.id, &customer.id)?,
        };
        let balance = LedgerAccount::balance(conn, &customer.id)?;
        Ok(Adjusted {
            posted,
            amount,
            balance,
        })
    }
}

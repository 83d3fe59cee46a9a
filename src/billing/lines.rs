//! The ledger lines of a charge — built in one place, whichever writer posts them: the per-row
//! writer ([`post_usage`], SQLite and the fallback) and the set-based PostgreSQL writer
//! (`metering::bulk`) both take their lines from [`usage_lines`].
//!
//! A usage record posts once, under `usage:<record id>`: the account pays its plan's retail price
//! to the tenant (`customer_balance` → `tenant_revenue`), the tenant owes the operator the
//! wholesale price (`tenant_payable` → `operator_revenue`). A free request posts nothing.

use diesel::QueryableByName;
use diesel::sql_types::Text;

use crate::db::DbConn;
use crate::domain::{
    AccountId, LedgerAccountId, LedgerOwner, LedgerPurpose, Nano, TenantId, TransactionKind,
};
use crate::models::ledger::{LedgerAccount, NewTransaction, OPERATOR, PostError, Posted, Posting};
use crate::models::usage::UsageRecord;

/// Which ledger account a line moves: its owner and purpose (unique together).
#[derive(Clone, Debug, PartialEq, Eq, Hash, QueryableByName)]
pub struct LedgerRef {
    #[diesel(sql_type = Text, column_name = owner_kind)]
    pub owner: LedgerOwner,
    #[diesel(sql_type = Text)]
    pub owner_id: String,
    #[diesel(sql_type = Text)]
    pub purpose: LedgerPurpose,
}

impl LedgerRef {
    pub fn customer(account: &AccountId) -> Self {
        Self::new(
            LedgerOwner::Account,
            account.as_str(),
            LedgerPurpose::CustomerBalance,
        )
    }

    pub fn tenant(tenant: &TenantId, purpose: LedgerPurpose) -> Self {
        Self::new(LedgerOwner::Tenant, tenant.as_str(), purpose)
    }

    pub fn operator() -> Self {
        Self::new(
            LedgerOwner::Operator,
            OPERATOR,
            LedgerPurpose::OperatorRevenue,
        )
    }

    fn new(owner: LedgerOwner, owner_id: &str, purpose: LedgerPurpose) -> Self {
        Self {
            owner,
            owner_id: owner_id.to_owned(),
            purpose,
        }
    }

    /// The tenant a new ledger account of this kind belongs to (none for the operator's).
    pub fn tenant_of(&self, charged: &TenantId) -> Option<TenantId> {
        (self.owner != LedgerOwner::Operator).then(|| charged.clone())
    }

    /// The ledger account, created on first use.
    fn resolve(
        &self,
        conn: &mut DbConn,
        tenant: &TenantId,
    ) -> diesel::QueryResult<LedgerAccountId> {
        LedgerAccount::ensure(
            conn,
            self.tenant_of(tenant).as_ref(),
            self.owner,
            &self.owner_id,
            self.purpose,
        )
        .map(|a| a.id)
    }
}

/// The lines of one usage record's charge (none for a free request); they sum to zero.
pub fn usage_lines(record: &UsageRecord) -> Result<Vec<(LedgerRef, Nano)>, PostError> {
    let pair = |amount: Nano| {
        amount
            .0
            .checked_neg()
            .map(|neg| (Nano(neg), amount))
            .ok_or(PostError::OutOfRange)
    };
    let tenant = &record.tenant_id;
    let mut lines = Vec::with_capacity(4);
    if record.charged_nano.0 != 0 {
        let (debit, credit) = pair(record.charged_nano)?;
        lines.push((LedgerRef::customer(&record.account_id), debit));
        lines.push((
            LedgerRef::tenant(tenant, LedgerPurpose::TenantRevenue),
            credit,
        ));
    }
    if record.tenant_charged_nano.0 != 0 {
        let (debit, credit) = pair(record.tenant_charged_nano)?;
        lines.push((
            LedgerRef::tenant(tenant, LedgerPurpose::TenantPayable),
            debit,
        ));
        lines.push((LedgerRef::operator(), credit));
    }
    Ok(lines)
}

/// The idempotency key of a usage record's posting.
pub fn usage_key(record_id: &str) -> String {
    format!("usage:{record_id}")
}

/// Posts what a usage record charged, once (see the module docs), record by record.
pub fn post_usage(conn: &mut DbConn, record: &UsageRecord) -> Result<Option<Posted>, PostError> {
    let lines = usage_lines(record)?;
    if lines.is_empty() {
        return Ok(None);
    }
    let postings = lines
        .into_iter()
        .map(|(ledger, amount)| {
            Ok(Posting {
                account: ledger.resolve(conn, &record.tenant_id)?,
                amount,
            })
        })
        .collect::<Result<Vec<_>, PostError>>()?;
    NewTransaction {
        tenant_id: Some(record.tenant_id.clone()),
        idempotency_key: usage_key(&record.id),
        kind: TransactionKind::Usage,
        reference: Some(record.id.clone()),
        memo: Some(record.model.clone()),
        postings,
    }
    .post(conn)
    .map(Some)
}

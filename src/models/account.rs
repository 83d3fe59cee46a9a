//! Accounts: a tenant's customers. Keys and developers belong to one account.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::accounts;
use crate::domain::{AccountId, ActiveStatus, BillingMode, Nano, PlanId, TenantId};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: AccountId,
    pub tenant_id: TenantId,
    pub name: String,
    pub billing_mode: BillingMode,
    pub credit_limit_nano: Nano,
    pub status: ActiveStatus,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// `None`: the tenant's default plan.
    pub plan_id: Option<PlanId>,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = accounts)]
pub struct AccountChanges {
    pub name: Option<String>,
    pub billing_mode: Option<BillingMode>,
    pub credit_limit_nano: Option<Nano>,
    pub status: Option<ActiveStatus>,
    pub updated_at: Option<NaiveDateTime>,
    /// `Some(None)` puts the account back on the tenant's default plan.
    pub plan_id: Option<Option<PlanId>>,
}

impl Account {
    pub fn new(
        tenant_id: TenantId,
        name: String,
        billing_mode: BillingMode,
        credit_limit: Nano,
    ) -> Self {
        let now = crate::db::now();
        Self {
            id: AccountId::generate(),
            tenant_id,
            name,
            billing_mode,
            credit_limit_nano: credit_limit,
            status: ActiveStatus::Active,
            created_at: now,
            updated_at: now,
            plan_id: None,
        }
    }

    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(accounts::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    /// The account only if it belongs to `tenant`: other tenants' accounts are "not found".
    pub fn find_in_tenant(
        conn: &mut DbConn,
        tenant: &TenantId,
        id: &AccountId,
    ) -> QueryResult<Self> {
        accounts::table
            .filter(accounts::id.eq(id).and(accounts::tenant_id.eq(tenant)))
            .select(Self::as_select())
            .first(conn)
    }

    pub fn list(
        conn: &mut DbConn,
        tenant: &TenantId,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        accounts::table
            .filter(accounts::tenant_id.eq(tenant).and(accounts::id.gt(after)))
            .order(accounts::id.asc())
            .limit(limit + 1)
            .select(Self::as_select())
            .load(conn)
    }

    pub fn update(
        conn: &mut DbConn,
        tenant: &TenantId,
        id: &AccountId,
        mut changes: AccountChanges,
    ) -> QueryResult<Self> {
        changes.updated_at = Some(crate::db::now());
        let n = diesel::update(
            accounts::table.filter(accounts::id.eq(id).and(accounts::tenant_id.eq(tenant))),
        )
        .set(&changes)
        .execute(conn)?;
        if n == 0 {
            return Err(diesel::result::Error::NotFound);
        }
        Self::find_in_tenant(conn, tenant, id)
    }
}

//! Plans: a tenant's tiers. `key_limits` bind each key of an account on the plan (a key may only
//! narrow them with its own `limits`), `account_limits` the account as a whole. An account without
//! a plan is on the tenant's default plan, if it has one. Also resolves the limits in force for a key.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::billing::prices::{PriceBook, Unusable};
use crate::db::DbConn;
use crate::db::schema::{accounts, plans, tenants};
use crate::domain::{AccountId, ActiveStatus, BillingMode, Nano, PlanId, TenantId};
use crate::limits::{Descriptor, LimitSet, Scope};
use crate::models::api_key::ApiKey;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = plans)]
pub struct Plan {
    pub id: PlanId,
    pub tenant_id: TenantId,
    pub name: String,
    pub key_limits: String,
    pub account_limits: String,
    pub is_default: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Retail prices to the accounts on the plan (JSON [`PriceBook`]).
    pub prices: String,
    /// The most one request may hold against an account's balance at admission.
    pub hold_cap_nano: Option<Nano>,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = plans)]
pub struct PlanChanges {
    pub name: Option<String>,
    pub key_limits: Option<String>,
    pub account_limits: Option<String>,
    pub is_default: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
    pub prices: Option<String>,
    pub hold_cap_nano: Option<Option<Nano>>,
}

/// What the data plane needs about a key beyond the key itself: statuses and every limit in force.
#[derive(Debug, Clone)]
pub struct KeyContext {
    pub account_status: ActiveStatus,
    pub tenant_status: ActiveStatus,
    /// The key's own limits narrowed by its plan's key limits.
    pub key_limits: LimitSet,
    pub account_limits: LimitSet,
    pub tenant_limits: LimitSet,
    /// The plan's retail prices (what the account pays); unusable if the stored book is broken.
    pub retail: Result<PriceBook, Unusable>,
    /// The operator's wholesale prices to the tenant; unusable if the stored book is broken.
    pub wholesale: Result<PriceBook, Unusable>,
    pub billing_mode: BillingMode,
    pub credit_limit: Nano,
    /// The plan's cap on one request's balance hold.
    pub hold_cap: Option<Nano>,
    /// The tenant opted in to prompt logging.
    pub log_prompts: bool,
}

impl KeyContext {
    /// The lowest an account's spendable balance may go: zero prepaid, minus the credit limit postpaid.
    pub fn balance_floor(&self) -> Nano {
        match self.billing_mode {
            BillingMode::Prepaid => Nano(0),
            // In range: a credit limit is at most 10^18 (`billing::amount`).
            BillingMode::Postpaid => Nano(-self.credit_limit.0),
        }
    }

    /// What a request priced `worst_case` reserves: the worst case, capped by the plan.
    pub fn hold_amount(&self, worst_case: Nano) -> Nano {
        self.hold_cap.map_or(worst_case, |cap| worst_case.min(cap))
    }

    /// Every descriptor that applies to a request with this key: key, then account, then tenant.
    pub fn descriptors(&self, key: &ApiKey) -> Vec<Descriptor> {
        self.key_limits
            .descriptors(Scope::Key, key.id.as_str())
            .chain(
                self.account_limits
                    .descriptors(Scope::Account, key.account_id.as_str()),
            )
            .chain(
                self.tenant_limits
                    .descriptors(Scope::Tenant, key.tenant_id.as_str()),
            )
            .collect()
    }
}

impl Plan {
    pub fn new(
        tenant_id: TenantId,
        name: String,
        (key, account): (LimitSet, LimitSet),
        prices: &PriceBook,
    ) -> Self {
        let now = crate::db::now();
        Self {
            id: PlanId::generate(),
            tenant_id,
            name,
            key_limits: key.to_json(),
            account_limits: account.to_json(),
            is_default: false,
            created_at: now,
            updated_at: now,
            prices: prices.to_json(),
            hold_cap_nano: None,
        }
    }

    pub fn key_limits(&self) -> LimitSet {
        LimitSet::from_json(&self.key_limits)
    }

    pub fn account_limits(&self) -> LimitSet {
        LimitSet::from_json(&self.account_limits)
    }

    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(plans::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    pub fn find_in_tenant(conn: &mut DbConn, tenant: &TenantId, id: &PlanId) -> QueryResult<Self> {
        plans::table
            .filter(plans::id.eq(id).and(plans::tenant_id.eq(tenant)))
            .select(Self::as_select())
            .first(conn)
    }

    pub fn list(
        conn: &mut DbConn,
        tenant: &TenantId,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        plans::table
            .filter(plans::tenant_id.eq(tenant).and(plans::id.gt(after)))
            .order(plans::id.asc())
            .limit(limit + 1)
            .select(Self::as_select())
            .load(conn)
    }

    /// Makes `id` the tenant's only default plan.
    pub fn make_default(conn: &mut DbConn, tenant: &TenantId, id: &PlanId) -> QueryResult<()> {
        diesel::update(
            plans::table.filter(plans::tenant_id.eq(tenant).and(plans::is_default.eq(true))),
        )
        .set(plans::is_default.eq(false))
        .execute(conn)?;
        diesel::update(plans::table.filter(plans::id.eq(id).and(plans::tenant_id.eq(tenant))))
            .set(plans::is_default.eq(true))
            .execute(conn)
            .map(drop)
    }

    pub fn update(
        conn: &mut DbConn,
        tenant: &TenantId,
        id: &PlanId,
        mut changes: PlanChanges,
    ) -> QueryResult<Self> {
        changes.updated_at = Some(crate::db::now());
        let n =
            diesel::update(plans::table.filter(plans::id.eq(id).and(plans::tenant_id.eq(tenant))))
                .set(&changes)
                .execute(conn)?;
        if n == 0 {
            return Err(diesel::result::Error::NotFound);
        }
        Self::find_in_tenant(conn, tenant, id)
    }

    /// The plan an account is on: its own, else the tenant's default, else none.
    pub fn for_account(
        conn: &mut DbConn,
        tenant: &TenantId,
        account: &AccountId,
    ) -> QueryResult<Option<Self>> {
        let plan_id: Option<Option<PlanId>> = accounts::table
            .filter(accounts::id.eq(account).and(accounts::tenant_id.eq(tenant)))
            .select(accounts::plan_id)
            .first(conn)
            .optional()?;
        let query = plans::table
            .filter(plans::tenant_id.eq(tenant))
            .select(Self::as_select());
        match plan_id.flatten() {
            Some(id) => query.filter(plans::id.eq(id)).first(conn).optional(),
            None => query
                .filter(plans::is_default.eq(true))
                .first(conn)
                .optional(),
        }
    }

    /// Statuses and limits in force for `key`.
    pub fn context_for(conn: &mut DbConn, key: &ApiKey) -> QueryResult<KeyContext> {
        let (account_status, billing_mode, credit_limit) = accounts::table
            .find(&key.account_id)
            .select((
                accounts::status,
                accounts::billing_mode,
                accounts::credit_limit_nano,
            ))
            .first::<(ActiveStatus, BillingMode, Nano)>(conn)?;
        let (tenant_status, tenant_limits, wholesale, log_prompts) = tenants::table
            .find(&key.tenant_id)
            .select((
                tenants::status,
                tenants::limits,
                tenants::wholesale_prices,
                tenants::log_prompts,
            ))
            .first::<(ActiveStatus, String, String, bool)>(conn)?;
        let plan = Self::for_account(conn, &key.tenant_id, &key.account_id)?;
        let (plan_key, plan_account, retail, hold_cap) = plan
            .map(|p| {
                (
                    p.key_limits(),
                    p.account_limits(),
                    PriceBook::parse(&p.prices),
                    p.hold_cap_nano,
                )
            })
            .unwrap_or_else(|| {
                (
                    LimitSet::default(),
                    LimitSet::default(),
                    Ok(PriceBook::default()),
                    None,
                )
            });
        Ok(KeyContext {
            account_status,
            tenant_status,
            key_limits: plan_key.narrowed_by(&key.limits()),
            account_limits: plan_account,
            tenant_limits: LimitSet::from_json(&tenant_limits),
            retail,
            wholesale: PriceBook::parse(&wholesale),
            billing_mode,
            credit_limit,
            hold_cap,
            log_prompts,
        })
    }
}

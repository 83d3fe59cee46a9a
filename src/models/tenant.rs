//! Tenants: businesses reselling access. Managed by the operator.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::tenants;
use crate::domain::{ActiveStatus, TenantId};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenants)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub allow_signup: bool,
    pub status: ActiveStatus,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Caps on the whole tenant (JSON [`crate::limits::LimitSet`]), set by the operator.
    pub limits: String,
    /// The operator's prices to this tenant (JSON [`crate::billing::prices::PriceBook`]).
    pub wholesale_prices: String,
    /// The tenant opted in to having its requests' prompts logged.
    pub log_prompts: bool,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = tenants)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub allow_signup: Option<bool>,
    pub status: Option<ActiveStatus>,
    pub updated_at: Option<NaiveDateTime>,
    pub limits: Option<String>,
    pub wholesale_prices: Option<String>,
    pub log_prompts: Option<bool>,
}

impl Tenant {
    pub fn new(name: String, slug: String, allow_signup: bool) -> Self {
        let now = crate::db::now();
        Self {
            id: TenantId::generate(),
            name,
            slug,
            allow_signup,
            status: ActiveStatus::Active,
            created_at: now,
            updated_at: now,
            limits: "{}".into(),
            wholesale_prices: "{}".into(),
            log_prompts: false,
        }
    }

    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(tenants::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    pub fn find(conn: &mut DbConn, id: &TenantId) -> QueryResult<Self> {
        tenants::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
    }

    pub fn find_by_slug(conn: &mut DbConn, slug: &str) -> QueryResult<Self> {
        tenants::table
            .filter(tenants::slug.eq(slug))
            .select(Self::as_select())
            .first(conn)
    }

    pub fn list(conn: &mut DbConn, after: &str, limit: i64) -> QueryResult<Vec<Self>> {
        tenants::table
            .filter(tenants::id.gt(after))
            .order(tenants::id.asc())
            .limit(limit + 1)
            .select(Self::as_select())
            .load(conn)
    }

    pub fn update(
        conn: &mut DbConn,
        id: &TenantId,
        mut changes: TenantChanges,
    ) -> QueryResult<Self> {
        changes.updated_at = Some(crate::db::now());
        diesel::update(tenants::table.find(id))
            .set(&changes)
            .execute(conn)?;
        Self::find(conn, id)
    }
}

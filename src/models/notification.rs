//! What taogate tells a tenant: its webhook endpoint (secret sealed), the outbox of notifications
//! to deliver, and the per-account low-balance alerts.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{balance_alerts, tenant_notifications, tenant_webhooks};
use crate::domain::{AccountId, Nano, TenantId};

/// A tenant's endpoint for taogate's notifications.
#[derive(Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tenant_webhooks)]
pub struct TenantWebhook {
    pub tenant_id: TenantId,
    pub url: String,
    pub secret_sealed: String,
    pub secret_hint: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl TenantWebhook {
    pub fn find(conn: &mut DbConn, tenant: &TenantId) -> QueryResult<Option<Self>> {
        tenant_webhooks::table
            .find(tenant)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    pub fn save(mut self, conn: &mut DbConn) -> QueryResult<Self> {
        if let Some(old) = Self::find(conn, &self.tenant_id)? {
            self.created_at = old.created_at;
            diesel::update(tenant_webhooks::table.find(&self.tenant_id))
                .set(&self)
                .execute(conn)?;
        } else {
            diesel::insert_into(tenant_webhooks::table)
                .values(&self)
                .execute(conn)?;
        }
        Ok(self)
    }
}

/// One notification in the outbox.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenant_notifications)]
pub struct TenantNotification {
    pub id: String,
    pub tenant_id: TenantId,
    pub event_type: String,
    pub payload: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
    pub done: bool,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
}

impl TenantNotification {
    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(tenant_notifications::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    /// Up to `limit` notifications due at `now`.
    pub fn due(conn: &mut DbConn, now: NaiveDateTime, limit: i64) -> QueryResult<Vec<Self>> {
        tenant_notifications::table
            .filter(
                tenant_notifications::done
                    .eq(false)
                    .and(tenant_notifications::next_attempt_at.le(now)),
            )
            .order(tenant_notifications::next_attempt_at.asc())
            .limit(limit)
            .select(Self::as_select())
            .load(conn)
    }

    /// Claims a due notification for one delivery attempt (no other replica takes it before
    /// `lease_until`); whether this caller got it.
    pub fn claim(
        conn: &mut DbConn,
        id: &str,
        now: NaiveDateTime,
        lease_until: NaiveDateTime,
    ) -> QueryResult<bool> {
        diesel::update(
            tenant_notifications::table.find(id).filter(
                tenant_notifications::done
                    .eq(false)
                    .and(tenant_notifications::next_attempt_at.le(now)),
            ),
        )
        .set(tenant_notifications::next_attempt_at.eq(lease_until))
        .execute(conn)
        .map(|n| n == 1)
    }

    pub fn delivered(conn: &mut DbConn, id: &str) -> QueryResult<()> {
        diesel::update(tenant_notifications::table.find(id))
            .set((
                tenant_notifications::delivered_at.eq(Some(crate::db::now())),
                tenant_notifications::done.eq(true),
                tenant_notifications::attempts.eq(tenant_notifications::attempts + 1),
                tenant_notifications::last_error.eq(None::<String>),
            ))
            .execute(conn)
            .map(drop)
    }

    /// A failed attempt: retried at `retry_at`, or given up (`retry_at` None).
    pub fn failed(
        conn: &mut DbConn,
        id: &str,
        error: &str,
        retry_at: Option<NaiveDateTime>,
    ) -> QueryResult<()> {
        diesel::update(tenant_notifications::table.find(id))
            .set((
                tenant_notifications::attempts.eq(tenant_notifications::attempts + 1),
                tenant_notifications::last_error.eq(Some(error)),
                tenant_notifications::done.eq(retry_at.is_none()),
                tenant_notifications::next_attempt_at.eq(retry_at.unwrap_or_else(crate::db::now)),
            ))
            .execute(conn)
            .map(drop)
    }
}

/// An account's low-balance alert.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = balance_alerts)]
pub struct BalanceAlert {
    pub account_id: AccountId,
    pub tenant_id: TenantId,
    pub threshold_nano: Nano,
    pub below: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl BalanceAlert {
    pub fn find(conn: &mut DbConn, account: &AccountId) -> QueryResult<Option<Self>> {
        balance_alerts::table
            .find(account)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    pub fn all(conn: &mut DbConn) -> QueryResult<Vec<Self>> {
        balance_alerts::table.select(Self::as_select()).load(conn)
    }

    pub fn save(mut self, conn: &mut DbConn) -> QueryResult<Self> {
        if let Some(old) = Self::find(conn, &self.account_id)? {
            self.created_at = old.created_at;
            diesel::update(balance_alerts::table.find(&self.account_id))
                .set(&self)
                .execute(conn)?;
        } else {
            diesel::insert_into(balance_alerts::table)
                .values(&self)
                .execute(conn)?;
        }
        Ok(self)
    }

    /// Moves the alert to `below`; whether it changed (only one replica sees the crossing).
    pub fn cross(conn: &mut DbConn, account: &AccountId, below: bool) -> QueryResult<bool> {
        diesel::update(
            balance_alerts::table
                .find(account)
                .filter(balance_alerts::below.eq(!below)),
        )
        .set((
            balance_alerts::below.eq(below),
            balance_alerts::updated_at.eq(crate::db::now()),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }
}

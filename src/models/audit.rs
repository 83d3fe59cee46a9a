//! The audit log: append-only (database triggers refuse UPDATE and DELETE). Every change made
//! through the management plane or the admin CLI records who, what, when and from where.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::audit_log;
use crate::domain::{Role, TenantId, UserId};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    pub id: String,
    pub tenant_id: Option<TenantId>,
    pub actor_user_id: Option<UserId>,
    pub actor_role: Option<Role>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub detail: String,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub created_at: NaiveDateTime,
}

/// Who acts and from where; built per request (or by the CLI with no ip/request id).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<UserId>,
    pub role: Option<Role>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl AuditEntry {
    /// Appends one entry. `detail` must never hold secrets.
    pub fn record(
        conn: &mut DbConn,
        actor: &Actor,
        tenant: Option<&TenantId>,
        action: &str,
        target: (&str, &str),
        detail: serde_json::Value,
    ) -> QueryResult<()> {
        let entry = Self {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant.cloned(),
            actor_user_id: actor.user_id.clone(),
            actor_role: actor.role,
            action: action.to_owned(),
            target_type: target.0.to_owned(),
            target_id: target.1.to_owned(),
            detail: detail.to_string(),
            ip: actor.ip.clone(),
            request_id: actor.request_id.clone(),
            created_at: crate::db::now(),
        };
        diesel::insert_into(audit_log::table)
            .values(&entry)
            .execute(conn)
            .map(drop)
    }

    /// A tenant's entries, or with `None` every entry (operator).
    pub fn list(
        conn: &mut DbConn,
        tenant: Option<&TenantId>,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        let mut query = audit_log::table
            .filter(audit_log::id.gt(after))
            .order(audit_log::id.asc())
            .limit(limit + 1)
            .select(Self::as_select())
            .into_boxed();
        if let Some(t) = tenant {
            query = query.filter(audit_log::tenant_id.eq(t));
        }
        query.load(conn)
    }
}

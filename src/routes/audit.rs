//! `audit-log`: read-only view of the append-only audit log (tenant owners and admins see their
//! tenant's entries; the operator sees all).

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::caller::Caller;
use crate::domain::{Role, TenantId, UserId};
use crate::error::ApiResult;
use crate::models::audit::AuditEntry;
use crate::models::{List, Page, utc};
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub object: &'static str,
    pub tenant_id: Option<TenantId>,
    pub actor_user_id: Option<UserId>,
    pub actor_role: Option<Role>,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<AuditEntry> for AuditView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id,
            object: "audit_entry",
            tenant_id: e.tenant_id,
            actor_user_id: e.actor_user_id,
            actor_role: e.actor_role,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
            ip: e.ip,
            request_id: e.request_id,
            created_at: utc(e.created_at),
        }
    }
}

/// Audit entries, oldest first (owner, admin; the operator sees every tenant's).
#[utoipa::path(tag = "audit", params(Page), responses((status = 200, body = List<AuditView>)), security(("jwt" = [])))]
#[get("/audit-log")]
pub async fn list_audit_log(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<Page>,
) -> ApiResult<web::Json<List<AuditView>>> {
    let tenant = match caller.role {
        Role::Operator => None,
        _ => Some(caller.managed_tenant()?.clone()),
    };
    let (after, limit) = (page.after()?, page.limit()?);
    let rows = state
        .db
        .run(move |c| AuditEntry::list(c, tenant.as_ref(), &after, limit))
        .await?;
    Ok(web::Json(List::from_rows(rows, limit, AuditView::from)))
}

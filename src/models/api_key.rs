//! API keys: belong to one account of one tenant. Stored by peppered hash only. Rotation keeps the
//! id and settings, swaps the hash, and may keep the old hash valid for a grace period.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::auth::api_key::NewSecret;
use crate::db::DbConn;
use crate::db::schema::api_keys;
use crate::domain::{AccountId, ApiKeyId, KeyStatus, TenantId, UserId};
use crate::limits::LimitSet;

/// `last_used_at` is written at most this often per key, to keep the hot path mostly read-only.
pub const LAST_USED_RESOLUTION_SECS: i64 = 60;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub account_id: AccountId,
    pub created_by: Option<UserId>,
    pub name: String,
    pub prefix: String,
    pub last4: String,
    pub secret_hash: String,
    pub previous_secret_hash: Option<String>,
    pub previous_valid_until: Option<NaiveDateTime>,
    pub scopes: String,
    pub status: KeyStatus,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub expires_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    pub rotated_at: Option<NaiveDateTime>,
    /// The key's own limits (JSON [`LimitSet`]); they may only narrow its plan's key limits.
    pub limits: String,
}

/// What a key is right now, as shown to users and enforced on the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Revoked,
    Expired,
}

pub struct NewKey {
    pub tenant_id: TenantId,
    pub account_id: AccountId,
    pub created_by: Option<UserId>,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<NaiveDateTime>,
    pub limits: LimitSet,
}

impl ApiKey {
    pub fn new(new: NewKey, secret: &NewSecret) -> Self {
        let now = crate::db::now();
        Self {
            id: ApiKeyId::generate(),
            tenant_id: new.tenant_id,
            account_id: new.account_id,
            created_by: new.created_by,
            name: new.name,
            prefix: secret.prefix.clone(),
            last4: secret.last4.clone(),
            secret_hash: secret.hash.clone(),
            previous_secret_hash: None,
            previous_valid_until: None,
            scopes: new.scopes.join(" "),
            status: KeyStatus::Active,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            expires_at: new.expires_at,
            revoked_at: None,
            rotated_at: None,
            limits: new.limits.to_json(),
        }
    }

    pub fn state(&self, now: NaiveDateTime) -> KeyState {
        match (self.status, self.expires_at) {
            (KeyStatus::Revoked, _) => KeyState::Revoked,
            (_, Some(exp)) if exp <= now => KeyState::Expired,
            _ => KeyState::Active,
        }
    }

    pub fn limits(&self) -> LimitSet {
        LimitSet::from_json(&self.limits)
    }

    /// Renames the key and/or replaces its own limits.
    pub fn update(
        conn: &mut DbConn,
        id: &ApiKeyId,
        name: Option<&str>,
        limits: Option<&LimitSet>,
    ) -> QueryResult<Self> {
        diesel::update(api_keys::table.find(id))
            .set((
                name.map(|n| api_keys::name.eq(n.to_owned())),
                limits.map(|l| api_keys::limits.eq(l.to_json())),
                api_keys::updated_at.eq(crate::db::now()),
            ))
            .execute(conn)?;
        api_keys::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
    }

    pub fn scope_list(&self) -> Vec<String> {
        self.scopes.split_whitespace().map(str::to_owned).collect()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.split_whitespace().any(|s| s == scope)
    }

    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(api_keys::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    /// Keys of `tenant` only; with `account`, only that account's.
    pub fn find_in_tenant(
        conn: &mut DbConn,
        tenant: &TenantId,
        account: Option<&AccountId>,
        id: &ApiKeyId,
    ) -> QueryResult<Self> {
        let mut query = api_keys::table
            .filter(api_keys::id.eq(id).and(api_keys::tenant_id.eq(tenant)))
            .select(Self::as_select())
            .into_boxed();
        if let Some(account) = account {
            query = query.filter(api_keys::account_id.eq(account));
        }
        query.first(conn)
    }

    pub fn list(
        conn: &mut DbConn,
        tenant: &TenantId,
        account: Option<&AccountId>,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        let mut query = api_keys::table
            .filter(api_keys::tenant_id.eq(tenant).and(api_keys::id.gt(after)))
            .order(api_keys::id.asc())
            .limit(limit + 1)
            .select(Self::as_select())
            .into_boxed();
        if let Some(account) = account {
            query = query.filter(api_keys::account_id.eq(account));
        }
        query.load(conn)
    }

    /// The key a presented secret hash belongs to: its current hash, or its previous one while the
    /// rotation grace period lasts.
    pub fn find_by_hash(
        conn: &mut DbConn,
        hash: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<Self>> {
        api_keys::table
            .filter(
                api_keys::secret_hash
                    .eq(hash)
                    .or(api_keys::previous_secret_hash
                        .eq(hash)
                        .and(api_keys::previous_valid_until.gt(now))),
            )
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// New secret, same id and settings. The old secret stays valid until `grace_until` (or not at all).
    pub fn rotate(
        conn: &mut DbConn,
        key: &Self,
        secret: &NewSecret,
        grace_until: Option<NaiveDateTime>,
    ) -> QueryResult<Self> {
        let now = crate::db::now();
        diesel::update(api_keys::table.find(&key.id))
            .set((
                api_keys::secret_hash.eq(&secret.hash),
                api_keys::prefix.eq(&secret.prefix),
                api_keys::last4.eq(&secret.last4),
                api_keys::previous_secret_hash.eq(grace_until.map(|_| key.secret_hash.clone())),
                api_keys::previous_valid_until.eq(grace_until),
                api_keys::rotated_at.eq(now),
                api_keys::updated_at.eq(now),
            ))
            .execute(conn)?;
        api_keys::table
            .find(&key.id)
            .select(Self::as_select())
            .first(conn)
    }

    /// Revokes at once, including any secret still in its rotation grace period.
    pub fn revoke(conn: &mut DbConn, key: &Self) -> QueryResult<Self> {
        let now = crate::db::now();
        diesel::update(api_keys::table.find(&key.id))
            .set((
                api_keys::status.eq(KeyStatus::Revoked),
                api_keys::revoked_at.eq(key.revoked_at.unwrap_or(now)),
                api_keys::previous_secret_hash.eq(None::<String>),
                api_keys::previous_valid_until.eq(None::<NaiveDateTime>),
                api_keys::updated_at.eq(now),
            ))
            .execute(conn)?;
        api_keys::table
            .find(&key.id)
            .select(Self::as_select())
            .first(conn)
    }

    /// Records use, at most once per [`LAST_USED_RESOLUTION_SECS`].
    pub fn touch_used(conn: &mut DbConn, id: &ApiKeyId, now: NaiveDateTime) -> QueryResult<()> {
        let stale = now - chrono::Duration::seconds(LAST_USED_RESOLUTION_SECS);
        diesel::update(
            api_keys::table.find(id).filter(
                api_keys::last_used_at
                    .is_null()
                    .or(api_keys::last_used_at.lt(stale)),
            ),
        )
        .set(api_keys::last_used_at.eq(now))
        .execute(conn)
        .map(drop)
    }
}

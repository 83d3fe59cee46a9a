//! Users of the dashboard API. Emails are stored lowercased; unique per tenant (operators: globally).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::users;
use crate::domain::{AccountId, BillingMode, Nano, Role, TenantId, UserId, UserStatus};
use crate::models::account::Account;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: UserId,
    pub tenant_id: Option<TenantId>,
    pub account_id: Option<AccountId>,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub last_login_at: Option<NaiveDateTime>,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = users)]
pub struct UserChanges {
    pub role: Option<Role>,
    pub account_id: Option<Option<AccountId>>,
    pub status: Option<UserStatus>,
    pub password_hash: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
}

impl User {
    pub fn new(
        tenant_id: Option<TenantId>,
        account_id: Option<AccountId>,
        email: &str,
        password_hash: String,
        role: Role,
    ) -> Self {
        let now = crate::db::now();
        Self {
            id: UserId::generate(),
            tenant_id,
            account_id,
            email: crate::domain::normalize_email(email),
            password_hash,
            role,
            status: UserStatus::Active,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        }
    }

    pub fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(users::table)
            .values(self)
            .execute(conn)
            .map(drop)
    }

    pub fn find(conn: &mut DbConn, id: &UserId) -> QueryResult<Self> {
        users::table.find(id).select(Self::as_select()).first(conn)
    }

    pub fn find_in_tenant(conn: &mut DbConn, tenant: &TenantId, id: &UserId) -> QueryResult<Self> {
        users::table
            .filter(users::id.eq(id).and(users::tenant_id.eq(tenant)))
            .select(Self::as_select())
            .first(conn)
    }

    /// The login candidate: in `tenant`, or among operators when `tenant` is `None`.
    pub fn find_for_login(
        conn: &mut DbConn,
        tenant: Option<&TenantId>,
        email: &str,
    ) -> QueryResult<Option<Self>> {
        let email = crate::domain::normalize_email(email);
        let query = users::table
            .filter(users::email.eq(email))
            .select(Self::as_select());
        match tenant {
            Some(t) => query.filter(users::tenant_id.eq(t)).first(conn).optional(),
            None => query
                .filter(users::tenant_id.is_null())
                .first(conn)
                .optional(),
        }
    }

    pub fn list(
        conn: &mut DbConn,
        tenant: &TenantId,
        after: &str,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        users::table
            .filter(users::tenant_id.eq(tenant).and(users::id.gt(after)))
            .order(users::id.asc())
            .limit(limit + 1)
            .select(Self::as_select())
            .load(conn)
    }

    pub fn update(
        conn: &mut DbConn,
        tenant: &TenantId,
        id: &UserId,
        mut changes: UserChanges,
    ) -> QueryResult<Self> {
        changes.updated_at = Some(crate::db::now());
        let n =
            diesel::update(users::table.filter(users::id.eq(id).and(users::tenant_id.eq(tenant))))
                .set(&changes)
                .execute(conn)?;
        if n == 0 {
            return Err(diesel::result::Error::NotFound);
        }
        Self::find_in_tenant(conn, tenant, id)
    }

    /// Replaces the user's password hash (any user, operators included).
    pub fn set_password(conn: &mut DbConn, id: &UserId, hash: &str) -> QueryResult<Self> {
        diesel::update(users::table.find(id))
            .set((
                users::password_hash.eq(hash),
                users::updated_at.eq(crate::db::now()),
            ))
            .execute(conn)?;
        Self::find(conn, id)
    }

    pub fn touch_login(conn: &mut DbConn, id: &UserId) -> QueryResult<()> {
        diesel::update(users::table.find(id))
            .set(users::last_login_at.eq(crate::db::now()))
            .execute(conn)
            .map(drop)
    }

    pub fn count_operators(conn: &mut DbConn) -> QueryResult<i64> {
        users::table
            .filter(users::tenant_id.is_null())
            .count()
            .get_result(conn)
    }

    /// Self-serve shape: a new prepaid account and its developer, in the caller's transaction.
    pub fn create_developer_with_account(
        conn: &mut DbConn,
        tenant: &TenantId,
        account_name: String,
        email: &str,
        password_hash: String,
    ) -> QueryResult<(Account, User)> {
        let account = Account::new(tenant.clone(), account_name, BillingMode::Prepaid, Nano(0));
        account.insert(conn)?;
        let user = User::new(
            Some(tenant.clone()),
            Some(account.id.clone()),
            email,
            password_hash,
            Role::Developer,
        );
        user.insert(conn)?;
        Ok((account, user))
    }
}

//! Refresh tokens: opaque random strings stored by peppered hash, grouped in families (one per
//! login). Each use rotates the token; presenting a used token again means it leaked, so the whole
//! family is revoked. Logout revokes the family.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::auth::secrets;
use crate::db::DbConn;
use crate::db::schema::refresh_tokens;
use crate::domain::UserId;

const TOKEN_BYTES: usize = 32;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshToken {
    pub id: String,
    pub user_id: UserId,
    pub family_id: String,
    pub token_hash: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

/// Outcome of presenting a refresh token.
pub enum Consumed {
    /// Live and now spent: issue the next one in `family_id`.
    Fresh { user_id: UserId, family_id: String },
    /// Already spent: it leaked, so the family has been revoked.
    Reused,
    /// Unknown, expired, or revoked without being spent (signed out, user disabled).
    Invalid,
}

impl RefreshToken {
    /// Issues a token in `family` (a new family when `None`); returns the secret.
    pub fn issue(
        conn: &mut DbConn,
        pepper: &[u8],
        user: &UserId,
        family: Option<String>,
        ttl_secs: u64,
    ) -> QueryResult<String> {
        let secret = format!("rt_{}", secrets::random_token(TOKEN_BYTES));
        let now = crate::db::now();
        let row = Self {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.clone(),
            family_id: family.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            token_hash: secrets::peppered_hash(pepper, &secret),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(ttl_secs as i64),
            used_at: None,
            revoked_at: None,
        };
        diesel::insert_into(refresh_tokens::table)
            .values(&row)
            .execute(conn)?;
        Ok(secret)
    }

    /// Spends a presented token. The conditional update makes two concurrent uses of one token
    /// count as reuse for one of them.
    pub fn consume(conn: &mut DbConn, pepper: &[u8], secret: &str) -> QueryResult<Consumed> {
        let hash = secrets::peppered_hash(pepper, secret);
        let now = crate::db::now();
        let Some(token) = refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(&hash))
            .select(Self::as_select())
            .first(conn)
            .optional()?
        else {
            return Ok(Consumed::Invalid);
        };
        if token.used_at.is_none() && (token.expires_at <= now || token.revoked_at.is_some()) {
            return Ok(Consumed::Invalid);
        }
        let spent = diesel::update(
            refresh_tokens::table
                .find(&token.id)
                .filter(refresh_tokens::used_at.is_null())
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set(refresh_tokens::used_at.eq(now))
        .execute(conn)?;
        if spent == 1 {
            Ok(Consumed::Fresh {
                user_id: token.user_id,
                family_id: token.family_id,
            })
        } else {
            Self::revoke_family(conn, &token.family_id)?;
            Ok(Consumed::Reused)
        }
    }

    /// Revokes the family of a presented token (logout). Unknown tokens are ignored.
    pub fn revoke_by_secret(
        conn: &mut DbConn,
        pepper: &[u8],
        secret: &str,
    ) -> QueryResult<Option<UserId>> {
        let hash = secrets::peppered_hash(pepper, secret);
        let token = refresh_tokens::table
            .filter(refresh_tokens::token_hash.eq(&hash))
            .select(Self::as_select())
            .first(conn)
            .optional()?;
        match token {
            Some(t) => {
                Self::revoke_family(conn, &t.family_id)?;
                Ok(Some(t.user_id))
            }
            None => Ok(None),
        }
    }

    pub fn revoke_family(conn: &mut DbConn, family: &str) -> QueryResult<usize> {
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::family_id.eq(family))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set(refresh_tokens::revoked_at.eq(crate::db::now()))
        .execute(conn)
    }

    /// Revokes every session of a user (disabled, password changed).
    pub fn revoke_user(conn: &mut DbConn, user: &UserId) -> QueryResult<usize> {
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::user_id.eq(user))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set(refresh_tokens::revoked_at.eq(crate::db::now()))
        .execute(conn)
    }
}

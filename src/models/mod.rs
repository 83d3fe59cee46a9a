//! Database models: each struct owns its queries. Functions take `&mut DbConn` so they compose
//! inside one transaction ([`crate::db::Db::write`]); none of them checks permissions (handlers do).

pub mod account;
pub mod api_key;
pub mod audit;
pub mod finance;
pub mod idempotency;
pub mod ledger;
pub mod notification;
pub mod payment;
pub mod plan;
pub mod refresh_token;
pub mod server_setting;
pub mod tao;
pub mod tenant;
pub mod usage;
pub mod user;

use serde::Serialize;
use utoipa::ToSchema;

/// Page size bounds of every list endpoint.
pub const DEFAULT_PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 200;

/// `?limit=&after=` keyset pagination over time-ordered (UUIDv7) ids.
#[derive(Debug, Clone, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// 1–200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Return objects created after the one with this id.
    #[param(pattern = "^[!-~]{1,100}$")]
    pub after: Option<String>,
}

impl Page {
    /// The page size; outside 1–200 is a 400 naming `limit` (never silently clamped).
    pub fn limit(&self) -> crate::error::ApiResult<i64> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(crate::error::ApiError::invalid_param(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            )),
        }
    }

    /// The cursor: an object id (printable ASCII, at most 100 characters); anything else is a
    /// 400 naming `after` (a NUL byte would otherwise reach the database).
    pub fn after(&self) -> crate::error::ApiResult<String> {
        match &self.after {
            None => Ok(String::new()),
            Some(a) if (1..=100).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(a.clone())
            }
            Some(_) => Err(crate::error::ApiError::invalid_param(
                "after",
                "after must be the id of an object of the previous page",
            )),
        }
    }
}

/// `{"object":"list","data":[…],"has_more":…}`.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> List<T> {
    /// Builds a page from up to `limit + 1` rows (the extra row only signals `has_more`).
    pub fn from_rows<R>(mut rows: Vec<R>, limit: i64, view: impl Fn(R) -> T) -> Self {
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Self {
            object: "list",
            data: rows.into_iter().map(view).collect(),
            has_more,
        }
    }
}

/// Serialises a stored UTC timestamp as RFC 3339 (`2026-11-25T20:00:00.123456Z`).
pub fn utc(t: chrono::NaiveDateTime) -> chrono::DateTime<chrono::Utc> {
    t.and_utc()
}

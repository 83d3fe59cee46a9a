//! Idempotency records for creating POSTs (`Idempotency-Key`): claimed before the handler runs,
//! completed with the (encrypted) response, released when the handler failed with a 5xx.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::idempotency_records;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_records)]
pub struct IdempotencyRecord {
    pub id: String,
    pub fingerprint: String,
    pub status: String,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    pub created_at: NaiveDateTime,
}

pub enum Claim {
    /// First use: run the handler, then [`IdempotencyRecord::complete`] or `release`.
    New,
    /// Done before with the same request: replay this response.
    Replay { status: u16, body: String },
    /// The first request with this key has not finished.
    InFlight,
    /// Same key, different request.
    Mismatch,
}

impl IdempotencyRecord {
    /// Claims `id` for a request with `fingerprint`. Records older than `ttl_secs` are forgotten.
    pub fn claim(
        conn: &mut DbConn,
        id: &str,
        fingerprint: &str,
        ttl_secs: u64,
    ) -> QueryResult<Claim> {
        let now = crate::db::now();
        let existing = idempotency_records::table
            .find(id)
            .select(Self::as_select())
            .first(conn)
            .optional()?;
        if let Some(rec) = existing {
            if rec.created_at + chrono::Duration::seconds(ttl_secs as i64) > now {
                return Ok(if rec.fingerprint != fingerprint {
                    Claim::Mismatch
                } else if let (Some(status), Some(body)) = (rec.response_status, rec.response_body)
                {
                    Claim::Replay {
                        status: status as u16,
                        body,
                    }
                } else {
                    Claim::InFlight
                });
            }
            diesel::delete(idempotency_records::table.find(id)).execute(conn)?;
        }
        let rec = Self {
            id: id.to_owned(),
            fingerprint: fingerprint.to_owned(),
            status: "in_flight".into(),
            response_status: None,
            response_body: None,
            created_at: now,
        };
        diesel::insert_into(idempotency_records::table)
            .values(&rec)
            .execute(conn)?;
        Ok(Claim::New)
    }

    pub fn complete(conn: &mut DbConn, id: &str, status: u16, body: &str) -> QueryResult<()> {
        diesel::update(idempotency_records::table.find(id))
            .set((
                idempotency_records::status.eq("done"),
                idempotency_records::response_status.eq(Some(i32::from(status))),
                idempotency_records::response_body.eq(Some(body)),
            ))
            .execute(conn)
            .map(drop)
    }

    pub fn release(conn: &mut DbConn, id: &str) -> QueryResult<()> {
        diesel::delete(idempotency_records::table.find(id))
            .execute(conn)
            .map(drop)
    }
}

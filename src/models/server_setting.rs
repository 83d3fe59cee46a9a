//! Facts about this deployment kept in the database (`server_settings`): written once, read at
//! start.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::server_settings;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = server_settings)]
pub struct ServerSetting {
    pub name: String,
    pub value: String,
    pub updated_at: NaiveDateTime,
}

impl ServerSetting {
    /// The stored value of `name`, or `value` stored as it (the first writer wins).
    pub fn get_or_set(conn: &mut DbConn, name: &str, value: &str) -> QueryResult<String> {
        let row = Self {
            name: name.to_owned(),
            value: value.to_owned(),
            updated_at: crate::db::now(),
        };
        match diesel::insert_into(server_settings::table)
            .values(&row)
            .execute(conn)
        {
            Ok(_) => {}
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {}
            Err(e) => return Err(e),
        }
        server_settings::table
            .find(name)
            .select(server_settings::value)
            .first(conn)
    }
}

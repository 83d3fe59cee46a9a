//! A scratch PostgreSQL database for a benchmark, dropped (with FORCE) when the guard goes.

use diesel::{Connection, PgConnection, RunQueryDsl};

/// A scratch database, dropped with the guard.
pub struct Scratch {
    admin: String,
    name: String,
    pub url: String,
}

impl Scratch {
    pub fn create(admin: &str, prefix: &str) -> Self {
        let name = format!(
            "{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut conn = PgConnection::establish(admin).expect("PostgreSQL reachable");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .unwrap();
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        let url = format!("{base}/{name}");
        Self {
            admin: admin.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&self.admin) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

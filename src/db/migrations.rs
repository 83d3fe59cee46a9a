//! Embedded migrations, one tree per backend (`migrations/postgres`, `migrations/sqlite`), kept in
//! step: every change is written for both. Applied by `taogate migrate` and automatically by `dev`.

use anyhow::anyhow;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{Backend, Db, DbConn};

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

fn source(backend: Backend) -> EmbeddedMigrations {
    match backend {
        Backend::Postgres => POSTGRES,
        Backend::Sqlite => SQLITE,
    }
}

/// Applies pending migrations; returns the versions applied.
pub fn run_pending(db: &Db) -> anyhow::Result<Vec<String>> {
    let mut conn = db.get()?;
    let conn: &mut DbConn = &mut conn;
    let applied = conn
        .run_pending_migrations(source(db.backend()))
        .map_err(|e| anyhow!("migrate: {e}"))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// Reverts every applied migration (tests and `migrate --revert-all`).
pub fn revert_all(db: &Db) -> anyhow::Result<Vec<String>> {
    let mut conn = db.get()?;
    let conn: &mut DbConn = &mut conn;
    let reverted = conn
        .revert_all_migrations(source(db.backend()))
        .map_err(|e| anyhow!("revert: {e}"))?;
    Ok(reverted.iter().map(|v| v.to_string()).collect())
}

/// True when the database has migrations not yet applied.
pub fn has_pending(db: &Db) -> anyhow::Result<bool> {
    let mut conn = db.get()?;
    let conn: &mut DbConn = &mut conn;
    let pending = conn
        .has_pending_migration(source(db.backend()))
        .map_err(|e| anyhow!("migrate: {e}"))?;
    Ok(pending)
}

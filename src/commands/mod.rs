//! The CLI subcommands. Each loads and validates the config, then does one job.

pub mod admin;
pub mod dev;
pub mod export;
pub mod reconcile;
pub mod serve;
pub mod worker;

use crate::config::Config;
use crate::db::{Db, migrations};

/// Connects to the configured database; `migrate` applies pending migrations first.
pub fn open_db(config: &Config, migrate: bool) -> anyhow::Result<Db> {
    let url = config.database_url();
    if url.starts_with("sqlite://")
        && let Some(parent) = std::path::Path::new(url.trim_start_matches("sqlite://")).parent()
    {
        std::fs::create_dir_all(parent)?;
    }
    let db = Db::connect(&url, config.database.pool_size)?;
    if migrate {
        for version in migrations::run_pending(&db)? {
            tracing::info!(migration = %version, "applied migration {version}");
        }
    } else if migrations::has_pending(&db)? {
        anyhow::bail!(
            "the database has pending migrations: run `taogate migrate` (or set database.auto_migrate = true)"
        );
    }
    Ok(db)
}

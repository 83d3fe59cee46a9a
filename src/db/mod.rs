//! Storage: one diesel codebase over PostgreSQL (production) and SQLite (embedded default), chosen by
//! the URL scheme. Queries are written once against [`DbConn`], a `MultiConnection`, over column types
//! both backends share: ids are `TEXT` (UUIDv7), timestamps `TIMESTAMP` (UTC), money `BIGINT` nano-units.
//!
//! diesel is synchronous, so every query runs on the blocking pool ([`Db::run`]), never on the async
//! executor. SQLite allows one writer at a time; [`Db::write`] serialises write transactions in
//! process so that concurrent requests wait instead of failing with `database is locked`.

pub mod migrations;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};

#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(diesel::pg::PgConnection),
    Sqlite(diesel::sqlite::SqliteConnection),
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    #[error("database pool: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("blocking task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A pool of connections to one database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<ConnectionManager<DbConn>>,
    backend: Backend,
    /// Held for the span of a write transaction on SQLite (single writer); unused on PostgreSQL.
    write_lock: Arc<std::sync::Mutex<()>>,
}

#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<DbConn, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut DbConn) -> Result<(), diesel::r2d2::Error> {
        // busy_timeout first, so the others wait for a lock instead of failing.
        conn.batch_execute(
            "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl Db {
    /// Connects a pool to `url` (`postgres://…` or `sqlite://path`).
    pub fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let (backend, target) = parse_url(url)?;
        let manager = ConnectionManager::<DbConn>::new(target.clone());
        // No idle minimum: r2d2 would replenish it from a background thread after every checkout,
        // and a process exiting while that thread is inside libpq crashes (SIGSEGV at exit, seen
        // in ~5% of `taogate reconcile` runs). Connections are opened on demand and kept pooled.
        let mut builder = Pool::builder()
            .max_size(pool_size.max(2))
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(5));
        if backend == Backend::Sqlite {
            // WAL is a property of the file: set it once, from one connection, before the pool opens more.
            let mut first = DbConn::establish(&target)
                .map_err(|e| anyhow::anyhow!("cannot open SQLite database: {e}"))?;
            first.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")?;
            builder = builder.connection_customizer(Box::new(SqlitePragmas));
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "cannot connect to the {backend:?} database: {}",
                redact(&e.to_string())
            )
        };
        let pool = builder.build(manager).map_err(|e| unreachable(&e))?;
        // Fail at start, not at the first request, when the database cannot be reached.
        drop(pool.get().map_err(|e| unreachable(&e))?);
        Ok(Self {
            pool,
            backend,
            write_lock: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs `f` with a pooled connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, diesel::result::Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .inspect_err(|_| crate::metrics::backend_error("database"))?;
            Ok(f(&mut conn).inspect_err(count_db_error)?)
        })
        .await?
    }

    /// Runs `f` inside one write transaction: all of it commits or none of it does.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        let pool = self.pool.clone();
        let lock = (self.backend == Backend::Sqlite).then(|| self.write_lock.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .inspect_err(|_| crate::metrics::backend_error("database"))
                .map_err(DbError::from)?;
            let _guard = lock
                .as_ref()
                .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
            conn.transaction(|c| f(c))
        })
        .await
        .map_err(DbError::from)?
    }

    /// Synchronous connection for CLI commands and migrations.
    pub fn get(
        &self,
    ) -> Result<diesel::r2d2::PooledConnection<ConnectionManager<DbConn>>, DbError> {
        Ok(self.pool.get()?)
    }
}

/// Counts a failure of the database itself (not an outcome a query expects: no row, a unique or
/// check constraint) in `taogate_backend_errors_total{backend="database"}`.
fn count_db_error(e: &diesel::result::Error) {
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    let expected = match e {
        E::NotFound | E::RollbackTransaction => true,
        E::DatabaseError(kind, _) => matches!(
            kind,
            K::UniqueViolation | K::ForeignKeyViolation | K::CheckViolation | K::NotNullViolation
        ),
        _ => false,
    };
    if !expected {
        crate::metrics::backend_error("database");
    }
}

fn parse_url(url: &str) -> anyhow::Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, url.to_owned()))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            anyhow::bail!("database_url: sqlite:// needs a file path");
        }
        Ok((Backend::Sqlite, path.to_owned()))
    } else {
        anyhow::bail!("database_url: unsupported scheme (use postgres:// or sqlite://)")
    }
}

/// Removes a password from anything that looks like a connection URL before it is shown.
fn redact(text: &str) -> String {
    text.split_whitespace()
        .map(|word| match (word.find("://"), word.find('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://***{}", &word[..s], &word[at..]),
            _ => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Current time as stored: UTC, microsecond precision (what PostgreSQL keeps).
pub fn now() -> chrono::NaiveDateTime {
    use chrono::SubsecRound;
    chrono::Utc::now().naive_utc().trunc_subsecs(6)
}

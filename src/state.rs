//! Process-wide state shared by every handler: the database pool, typed config, token signer,
//! login limiter and the API key pepper.

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::auth::jwt::Sessions;
use crate::auth::login_limit::LoginLimiter;
use crate::config::Config;
use crate::db::Db;
use crate::metering::Meter;
use crate::pool::Pool;
use crate::pool::registry::Registry;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub sessions: Sessions,
    pub login_limiter: LoginLimiter,
    pub pool: Arc<Pool>,
    /// Where workers announce themselves (Redis, or in process).
    pub registry: Registry,
    pub meter: Meter,
    pepper: Arc<[u8]>,
}

impl AppState {
    pub fn new(db: Db, config: Config, registry: Registry) -> anyhow::Result<Self> {
        let pepper: Arc<[u8]> = config.auth.api_key_pepper.expose_secret().as_bytes().into();
        Ok(Self {
            pool: Pool::new(config.pool.clone())?,
            registry,
            meter: Meter::new(db.clone()),
            db,
            sessions: Sessions::new(&config.auth),
            login_limiter: LoginLimiter::new(&config.auth),
            config: Arc::new(config),
            pepper,
        })
    }

    /// Key for every peppered hash (API keys, refresh tokens, idempotency records).
    pub fn pepper(&self) -> &[u8] {
        &self.pepper
    }
}

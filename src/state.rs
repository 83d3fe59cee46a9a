//! Process-wide state shared by every handler: the database pool, typed config, token signer,
//! login limiter and the API key pepper.

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::auth::jwt::Sessions;
use crate::auth::login_limit::LoginLimiter;
use crate::config::Config;
use crate::db::Db;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub sessions: Sessions,
    pub login_limiter: LoginLimiter,
    pepper: Arc<[u8]>,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Self {
        let pepper: Arc<[u8]> = config.auth.api_key_pepper.expose_secret().as_bytes().into();
        Self {
            db,
            sessions: Sessions::new(&config.auth),
            login_limiter: LoginLimiter::new(&config.auth),
            config: Arc::new(config),
            pepper,
        }
    }

    /// Key for every peppered hash (API keys, refresh tokens, idempotency records).
    pub fn pepper(&self) -> &[u8] {
        &self.pepper
    }
}

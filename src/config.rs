//! Typed configuration, loaded with figment: built-in defaults (`deploy/taogate.default.toml`, which
//! documents every key) → the `--config` file → `TAOGATE_*` env (nested keys joined by `__`) → plain
//! `DATABASE_URL` / `REDIS_URL`. [`Config::validate`] runs before anything binds or connects and names
//! the offending key in its error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("../deploy/taogate.default.toml");

/// `TAOGATE_*` variables that are not config keys: CLI inputs, and `TAOGATE_TEST_*` of the tests.
const NOT_CONFIG: &[&str] = &[
    "config",
    "log_format",
    "operator_password",
    "owner_password",
];

fn is_config_var(key: &figment::value::UncasedStr) -> bool {
    let key = key.as_str().to_ascii_lowercase();
    !key.starts_with("test_") && !NOT_CONFIG.contains(&key.as_str())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub database: DatabaseConfig,
    pub metrics: MetricsConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub idempotency: IdempotencyConfig,
    pub limits: crate::limits::guard::LimitsConfig,
    pub billing: crate::billing::BillingConfig,
    pub payments: crate::billing::payments::PaymentsConfig,
    pub pool: crate::pool::PoolConfig,
    pub worker: crate::worker::config::WorkerConfig,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Per-tenant request counts (`taogate_tenant_requests_total{tenant,status}`).
    pub tenant_labels: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub pool_size: u32,
    pub usage_writer_lanes: usize,
    pub auto_migrate: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub trust_forwarded_for: bool,
    /// Browser origins (`https://dash.example.com`) allowed to call the API (CORS); empty: off.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt_secret: SecretString,
    pub api_key_pepper: SecretString,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub login_per_ip_per_minute: u32,
    pub login_per_email_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub id: String,
    pub owned_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
}

/// Minimum secret length, in bytes, for HS256 and the key pepper (RFC 7518 §3.2: ≥ the hash size).
const MIN_SECRET_BYTES: usize = 32;
/// Minimum length of the gateway ↔ worker shared secret.
const MIN_WORKER_SECRET: usize = 16;

impl Config {
    /// Layers every source. `overrides` (from CLI flags) win over everything.
    pub fn load(file: Option<&Path>, overrides: Figment) -> anyhow::Result<Self> {
        let mut fig = Figment::new().merge(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(Env::prefixed("TAOGATE_").filter(is_config_var).split("__"));
        for (var, key) in [("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url")] {
            if let Ok(value) = std::env::var(var) {
                fig = fig.merge(Serialized::default(key, value));
            }
        }
        fig = fig.merge(overrides);
        let config: Config = fig.extract().map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: {}",
                e.to_string().replace('\n', "; ")
            )
        })?;
        Ok(config)
    }

    /// Checks what types alone cannot. `need_secrets` is false for commands that never sign.
    pub fn validate(&self, need_secrets: bool) -> anyhow::Result<()> {
        let url = self.database_url();
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite://"))
        {
            bail!(
                "config key `database_url`: must start with postgres://, postgresql:// or sqlite://"
            );
        }
        if !self.redis_url.is_empty()
            && let Err(e) = crate::redis_link::parse(&self.redis_url)
        {
            bail!("config key `redis_url`: {e:#}");
        }
        if self.database.pool_size == 0 {
            bail!("config key `database.pool_size`: must be at least 1");
        }
        let lanes = self.database.usage_writer_lanes;
        if lanes == 0 || lanes >= self.database.pool_size as usize {
            bail!(
                "config key `database.usage_writer_lanes`: must be at least 1 and less than `database.pool_size`"
            );
        }
        let l = &self.limits;
        if !(20..=600_000).contains(&l.key_cache_trust_ms) {
            bail!("config key `limits.key_cache_trust_ms`: must be between 20 and 600000");
        }
        if l.redis_timeout_ms == 0 || l.probe_interval_ms == 0 || l.concurrency_lease_secs == 0 {
            bail!(
                "config key `limits`: redis_timeout_ms, probe_interval_ms and concurrency_lease_secs must be at least 1"
            );
        }
        if !(0..=crate::billing::amount::MAX_AMOUNT_NANO).contains(&l.outage_budget_nano) {
            bail!("config key `limits.outage_budget_nano`: must be between 0 and 10^18");
        }
        if l.first_line_per_key_per_sec == 0 {
            bail!("config key `limits.first_line_per_key_per_sec`: must be at least 1");
        }
        self.billing.validate()?;
        self.payments.validate()?;
        for origin in &self.http.cors_allowed_origins {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && !origin.ends_with('/')
                    && u.username().is_empty()
            });
            if !ok {
                bail!(
                    "config key `http.cors_allowed_origins`: {origin:?} is not an origin (scheme://host[:port], no path)"
                );
            }
        }
        if self.http.max_body_bytes < 1024 {
            bail!("config key `http.max_body_bytes`: must be at least 1024");
        }
        if self.auth.access_token_ttl_secs == 0 || self.auth.access_token_ttl_secs > 86_400 {
            bail!("config key `auth.access_token_ttl_secs`: must be between 1 and 86400");
        }
        if self.auth.refresh_token_ttl_secs < self.auth.access_token_ttl_secs {
            bail!(
                "config key `auth.refresh_token_ttl_secs`: must be at least the access token TTL"
            );
        }
        if self.auth.login_per_ip_per_minute == 0 || self.auth.login_per_email_per_minute == 0 {
            bail!(
                "config key `auth.login_per_ip_per_minute` / `auth.login_per_email_per_minute`: must be at least 1"
            );
        }
        if need_secrets {
            for (key, secret) in [
                ("auth.jwt_secret", &self.auth.jwt_secret),
                ("auth.api_key_pepper", &self.auth.api_key_pepper),
            ] {
                if secret.expose_secret().len() < MIN_SECRET_BYTES {
                    bail!(
                        "config key `{key}`: must be at least {MIN_SECRET_BYTES} bytes (set TAOGATE_{})",
                        key.to_uppercase().replace('.', "__")
                    );
                }
            }
        }
        for (i, model) in self.models.iter().enumerate() {
            if model.id.trim().is_empty() {
                bail!("config key `models[{i}].id`: must not be empty");
            }
            if model.max_tokens.is_some_and(|n| n < 1) {
                bail!("config key `models[{i}].max_tokens`: must be at least 1");
            }
        }
        if !self.pool.workers.is_empty()
            && self.pool.worker_secret.expose_secret().len() < MIN_WORKER_SECRET
        {
            bail!(
                "config key `pool.worker_secret`: must be at least {MIN_WORKER_SECRET} bytes when pool.workers is set"
            );
        }
        if self.pool.max_attempts == 0 || self.pool.max_in_flight == 0 {
            bail!("config key `pool.max_attempts` / `pool.max_in_flight`: must be at least 1");
        }
        Ok(())
    }

    /// Checks the `[worker]` section (for `taogate worker`).
    pub fn validate_worker(&self) -> anyhow::Result<()> {
        if self.worker.secret.expose_secret().len() < MIN_WORKER_SECRET {
            bail!(
                "config key `worker.secret`: must be at least {MIN_WORKER_SECRET} bytes (set TAOGATE_WORKER__SECRET)"
            );
        }
        if self.worker.routes.is_empty() {
            bail!("config key `worker.routes`: a worker needs at least one route");
        }
        for (i, route) in self.worker.routes.iter().enumerate() {
            if route.upstreams.is_empty() {
                bail!(
                    "config key `worker.routes[{i}].upstreams`: route `{}` has no upstream",
                    route.model
                );
            }
        }
        Ok(())
    }

    /// The effective database URL: the configured one, or SQLite in the data dir.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("taogate.db").display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn ensure_data_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating data dir {}", self.data_dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use figment::value::Value;

    use super::*;

    fn load(overrides: Figment) -> anyhow::Result<Config> {
        Config::load(None, overrides)
    }

    #[test]
    fn defaults_load_and_point_at_sqlite_in_the_data_dir() {
        let config = load(Figment::new().merge(Serialized::default("database_url", ""))).unwrap();
        config.validate(false).unwrap();
        assert!(config.database_url().starts_with("sqlite://"));
        assert!(config.database_url().ends_with("taogate.db"));
        let err = config.validate(true).unwrap_err().to_string();
        assert!(err.contains("auth.jwt_secret"), "{err}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/taogate.example.toml"
        ));
        let config = Config::load(Some(path), Figment::new()).unwrap();
        config.validate(false).unwrap();
        assert_eq!(config.database.pool_size, 32);
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            ("database_url", "mysql://x", "database_url"),
            ("redis_url", "http://x", "redis_url"),
            ("http.max_body_bytes", "10", "http.max_body_bytes"),
            (
                "auth.access_token_ttl_secs",
                "0",
                "auth.access_token_ttl_secs",
            ),
            (
                "database.usage_writer_lanes",
                "0",
                "database.usage_writer_lanes",
            ),
            (
                "database.usage_writer_lanes",
                "16",
                "database.usage_writer_lanes",
            ),
        ];
        for (key, value, named) in cases {
            let value: Value = value
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| value.into());
            let result = load(Figment::new().merge(Serialized::default(key, value)))
                .and_then(|c| c.validate(false));
            let err = result.expect_err(key).to_string();
            assert!(err.contains(named), "{key}: {err}");
        }
        let err = load(Figment::new().merge(Serialized::default("listen", "not an address")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }
}

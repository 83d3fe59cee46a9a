//! Who is calling: dashboard users (argon2 passwords, JWT access tokens, rotating refresh tokens)
//! and applications (API keys). The extractors here are the only way handlers learn the caller.

pub mod api_key;
pub mod caller;
pub mod invalidation;
pub mod jwt;
pub mod key_cache;
pub mod login_limit;
pub mod password;
pub mod pepper;
pub mod secrets;

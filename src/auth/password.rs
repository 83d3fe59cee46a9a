//! Password hashing with argon2id, off the async executor.
//!
//! Parameters (OWASP 2024 minimum for argon2id): m = 19 MiB, t = 2 passes, p = 1 lane, 32-byte
//! output, 16-byte random salt, stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`), so they
//! can be raised later without invalidating existing hashes. Hashing takes tens of milliseconds on
//! purpose and therefore runs on the blocking pool.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

use crate::error::{ApiError, ApiResult};

const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// Shortest and longest accepted password, in characters.
pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 256;

fn argon2() -> ApiResult<Argon2<'static>> {
    let params =
        Params::new(MEMORY_KIB, PASSES, LANES, Some(32)).map_err(ApiError::internal_msg)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Rejects passwords that are too short or long before any work is done.
pub fn check_policy(password: &str) -> ApiResult<()> {
    let len = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(ApiError::invalid_param(
            "password",
            format!("password must be {MIN_LEN} to {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

pub async fn hash(password: String) -> ApiResult<String> {
    actix_web::web::block(move || {
        argon2()?
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(ApiError::internal_msg)
    })
    .await?
}

/// Verifies `password` against `stored`. With no stored hash (unknown user) a dummy hash is still
/// verified, so response time does not reveal whether an account exists.
pub async fn verify(password: String, stored: Option<String>) -> ApiResult<bool> {
    actix_web::web::block(move || {
        let argon = argon2()?;
        let hash = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
        Ok(argon
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
            && hash != DUMMY_HASH)
    })
    .await?
}

/// argon2id hash of a random string nobody knows, with the same parameters as real hashes.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3mGX9dTCxYF0zpIqHOMG5v3Ge8uNg6wBuLoGJvI5hzE";

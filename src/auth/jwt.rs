//! JWT access tokens for the management plane: HS256 only (pinned: `alg: none` and every other
//! algorithm are refused), issuer and audience checked, short expiry (`auth.access_token_ttl_secs`).
//! A token names its user; every management request then reads the user as they stand now
//! ([`crate::auth::caller::Caller`]), so disabling, demoting or moving a user takes effect on the
//! next request. The role, tenant and account claims only describe the user at sign-in.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::domain::{AccountId, Role, TenantId, UserId};
use crate::error::{ApiError, ApiResult};

const ISSUER: &str = "taogate";
const AUDIENCE: &str = "taogate-api";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub role: Role,
    pub tid: Option<TenantId>,
    pub aid: Option<AccountId>,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's credential stamp at sign-in ([`credential_stamp`]): a token issued before a
    /// password change no longer matches the user and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwd: Option<String>,
}

/// A short fingerprint of a user's stored password hash (a hash of the hash: it reveals nothing).
pub fn credential_stamp(password_hash: &str) -> String {
    crate::crypto::sha256_hex(password_hash.as_bytes())[..16].to_owned()
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct Sessions {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
}

impl Sessions {
    pub fn new(cfg: &AuthConfig) -> Self {
        let secret = cfg.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl_secs: cfg.access_token_ttl_secs,
            refresh_ttl_secs: cfg.refresh_token_ttl_secs,
        }
    }

    pub fn issue(
        &self,
        (user, stamp): (UserId, String),
        role: Role,
        tenant: Option<TenantId>,
        account: Option<AccountId>,
    ) -> ApiResult<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            role,
            tid: tenant,
            aid: account,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + self.access_ttl_secs as i64,
            pwd: Some(stamp),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal_msg)
    }

    /// Checks signature, algorithm, expiry, issuer and audience.
    pub fn verify(&self, token: &str) -> ApiResult<Claims> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized(
                    "token_expired",
                    "the access token has expired; refresh it",
                ),
                _ => ApiError::unauthorized("invalid_token", "the access token is not valid"),
            })
    }
}

//! The API-key pepper's fingerprint. API keys are stored as peppered hashes, so a gateway started
//! with another pepper than the one the keys were made with would refuse every key, silently. The
//! first start stores a fingerprint of the pepper (`server_settings`, HMAC-SHA256 of a fixed label
//! keyed by the pepper: it reveals no more about the pepper than the key hashes already do); every
//! later start compares and refuses to run on a mismatch.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::db::DbConn;
use crate::models::server_setting::ServerSetting;

/// Its name in `server_settings`.
pub const SETTING: &str = "api_key_pepper_fingerprint";

/// The fingerprint of `pepper`.
pub fn fingerprint(pepper: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper).expect("HMAC takes any key");
    mac.update(b"taogate api-key pepper fingerprint v1");
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Stores the fingerprint on first use; refuses a pepper that does not match the stored one.
pub fn check(conn: &mut DbConn, pepper: &[u8]) -> anyhow::Result<()> {
    let mine = fingerprint(pepper);
    let stored = ServerSetting::get_or_set(conn, SETTING, &mine)?;
    if stored != mine {
        anyhow::bail!(
            "auth.api_key_pepper is not the pepper this database's API keys were made with \
             (fingerprint {mine}, stored {stored}): every existing key would be refused. Start with \
             the previous pepper (the persisted .env / TAOGATE_AUTH__API_KEY_PEPPER); to start over \
             on purpose, delete the `{SETTING}` row of server_settings and reissue every key"
        );
    }
    Ok(())
}

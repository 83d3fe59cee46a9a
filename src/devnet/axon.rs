//! A local stand-in for a legacy bt.Axon (bittensor ≤ 10) serving one synapse, checking requests
//! in the real axon's order: route (404), blacklist (403), signature and nonce (401: per
//! `hotkey:uuid` strictly increasing; a first-seen uuid must be newer than now − 4 s − timeout),
//! then body integrity (500 on a hash mismatch). A streaming synapse answers raw UTF-8 text, a
//! plain one its JSON with `completion`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

use crate::worker::axon::SynapseMapping;
use crate::worker::hotkey::{Hotkey, verify_hex};

/// The axon's freshness allowance for a first-seen uuid, on top of the request timeout.
const ALLOWED_DELTA_NS: i128 = 4_000_000_000;

pub struct AxonStandIn {
    pub label: String,
    pub hotkey: Arc<Hotkey>,
    pub validators: Vec<String>,
    pub mapping: SynapseMapping,
    pub delay: Duration,
    pub nonces: Mutex<HashMap<String, u64>>,
}

fn refuse(status: u16, message: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .json(json!({"message": message}))
}

impl AxonStandIn {
    /// Blacklist, signature, nonce: `Err((status, message))` as the axon would answer.
    fn check(&self, header: impl Fn(&str) -> Option<String>) -> Result<(), (u16, String)> {
        let hotkey = header("bt_header_dendrite_hotkey")
            .ok_or((401, "Missing dendrite hotkey".to_owned()))?;
        if !self.validators.contains(&hotkey) {
            return Err((
                403,
                "Forbidden. Key is blacklisted: not a validator.".into(),
            ));
        }
        let nonce: u64 = header("bt_header_dendrite_nonce")
            .and_then(|n| n.parse().ok())
            .ok_or((401, "Missing Nonce".to_owned()))?;
        let uuid = header("bt_header_dendrite_uuid").unwrap_or_default();
        let signature =
            header("bt_header_dendrite_signature").ok_or((401, "Missing Signature".to_owned()))?;
        let body_hash = header("computed_body_hash").unwrap_or_default();
        let message = format!("{nonce}.{hotkey}.{}.{uuid}.{body_hash}", self.hotkey.ss58);
        if !verify_hex(&hotkey, message.as_bytes(), &signature) {
            return Err((
                401,
                format!("Not Verified with error: Signature mismatch with {message}"),
            ));
        }
        let timeout_ns = (header("timeout")
            .and_then(|t| t.parse::<f64>().ok())
            .unwrap_or(12.0)
            * 1e9) as i128;
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as i128;
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{hotkey}:{uuid}");
        match nonces.get(&key) {
            Some(last) if nonce <= *last => {
                return Err((
                    401,
                    "Nonce is too old, a newer one was last processed".into(),
                ));
            }
            None if (nonce as i128) <= now - ALLOWED_DELTA_NS - timeout_ns => {
                return Err((401, "Nonce is too old: outside the acceptable delta".into()));
            }
            _ => {}
        }
        nonces.insert(key, nonce);
        Ok(())
    }
}

/// The axon's answer to a call of synapse `name`: checks the dendrite's headers, nonce and body
/// hash as bt.Axon does, then answers (streamed in pieces with the delay when the synapse streams).
pub(crate) fn answer(
    state: &AxonStandIn,
    name: &str,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    if name != state.mapping.synapse {
        return refuse(
            404,
            &format!(
                "Synapse name '{name}' not found. Available synapses ['{}']",
                state.mapping.synapse
            ),
        );
    }
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Err((status, message)) = state.check(header) {
        return refuse(status, &message);
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) else {
        return refuse(500, "Internal Server Error");
    };
    if Some(state.mapping.body_hash(&fields)) != header("computed_body_hash") {
        return refuse(500, "Internal Server Error");
    }
    let asked = fields
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = format!("Hello from {}. You said: {asked}", state.label);
    if !state.mapping.streaming {
        let mut answer = fields.clone();
        answer.insert("completion".into(), Value::String(text));
        return HttpResponse::Ok().json(answer);
    }
    let delay = state.delay;
    let pieces: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let body = stream::iter(pieces).then(move |p| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, actix_web::Error>(Bytes::from(p))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_nonces_like_the_axon() {
        let own = Arc::new(Hotkey::generate());
        let validator = Hotkey::generate();
        let mapping = SynapseMapping::default();
        let axon = AxonStandIn {
            label: "a".into(),
            hotkey: own.clone(),
            validators: vec![validator.ss58.clone()],
            mapping: mapping.clone(),
            delay: Duration::ZERO,
            nonces: Mutex::default(),
        };
        let body = mapping.body(vec!["user".into()], vec!["hi".into()]);
        let hash = mapping.body_hash(&body);
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64;
        let check = |nonce: u64, uuid: &str, signer: &Hotkey| {
            let h = mapping.headers(signer, ("127.0.0.1", 1, &own.ss58), &hash, nonce, uuid);
            axon.check(|n| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
                .map_err(|e| e.0)
        };
        assert_eq!(check(now, "u1", &validator), Ok(()));
        assert_eq!(check(now, "u1", &validator), Err(401), "replayed nonce");
        assert_eq!(check(now + 1, "u1", &validator), Ok(()));
        assert_eq!(
            check(now - 30_000_000_000, "u2", &validator),
            Err(401),
            "stale first nonce"
        );
        assert_eq!(
            check(now, "u3", &Hotkey::generate()),
            Err(403),
            "not a validator"
        );
    }
}

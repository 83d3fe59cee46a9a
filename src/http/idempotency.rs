//! `Idempotency-Key` on creating POSTs (draft-ietf-httpapi-idempotency-key-header): the first
//! request runs; a retry with the same key and body gets the stored response (with
//! `idempotent-replayed: true`); the same key with another body gets 422; a retry while the first
//! is still running gets 409. Keys are scoped to the caller (the JWT subject) and the route (method
//! and path), and remembered for `idempotency.ttl_secs`. A 5xx is not stored, so the request can be retried.
//!
//! Stored responses may hold secrets (a new API key is shown once), so they are sealed with
//! AES-256-GCM under a key derived from the pepper and the client's Idempotency-Key, which is
//! itself stored only as a hash: a database dump alone reveals nothing.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse, ResponseError, web};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::auth::secrets;
use crate::error::ApiError;
use crate::models::idempotency::{Claim, IdempotencyRecord};
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 255;
/// POSTs that create nothing and must never be replayed (they mint or spend session tokens).
pub const EXCLUDED: [&str; 3] = [
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/logout",
];

fn header_key(req: &ServiceRequest) -> Option<Result<String, ApiError>> {
    let raw = req.headers().get(HEADER)?;
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 printable ASCII characters",
        )
    };
    let Ok(text) = raw.to_str() else {
        return Some(Err(bad()));
    };
    // A structured-field string is quoted; a bare token is accepted too.
    let key = text.trim().trim_matches('"');
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| (0x20..0x7f).contains(&b));
    Some(if ok { Ok(key.to_owned()) } else { Err(bad()) })
}

/// The caller the key is scoped to: the JWT subject, or `anonymous` for signup.
fn scope(req: &ServiceRequest, state: &AppState) -> Option<String> {
    match req.headers().get(header::AUTHORIZATION) {
        None => Some("anonymous".into()),
        Some(value) => {
            let token = value.to_str().ok()?.split_once(' ')?.1.trim();
            state
                .sessions
                .verify(token)
                .ok()
                .map(|c| format!("user:{}", c.sub))
        }
    }
}

fn seal_key(state: &AppState, idem_key: &str) -> LessSafeKey {
    let derived = hex::decode(secrets::peppered_hash(
        state.pepper(),
        &format!("idempotency-seal:{idem_key}"),
    ))
    .unwrap_or_default();
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &derived).expect("32-byte key for AES-256"))
}

fn seal(key: &LessSafeKey, plain: &[u8]) -> Result<String, ApiError> {
    let nonce_bytes: [u8; NONCE_LEN] = secrets::random_bytes(NONCE_LEN)
        .try_into()
        .expect("nonce length");
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::empty(),
        &mut buf,
    )
    .map_err(|_| ApiError::internal_msg("seal failed"))?;
    Ok(format!("{}{}", hex::encode(nonce_bytes), hex::encode(buf)))
}

fn open(key: &LessSafeKey, sealed: &str) -> Result<Vec<u8>, ApiError> {
    let fail = || ApiError::internal_msg("stored idempotent response cannot be opened");
    let bytes = hex::decode(sealed).map_err(|_| fail())?;
    if bytes.len() < NONCE_LEN {
        return Err(fail());
    }
    let (nonce, rest) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
    let mut buf = rest.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| fail())?;
    Ok(plain.to_vec())
}

pub async fn handle(
    mut req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    if req.method() != Method::POST || EXCLUDED.contains(&req.path()) {
        return next.call(req).await;
    }
    let idem_key = match header_key(&req) {
        None => return next.call(req).await,
        Some(Err(e)) => return Ok(req.into_response(e.error_response())),
        Some(Ok(k)) => k,
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await;
    };
    // An invalid token: let the handler answer 401 without touching idempotency state.
    let Some(scope) = scope(&req, &state) else {
        return next.call(req).await;
    };

    let limit = state.config.http.max_body_bytes;
    let body = match req.extract::<web::Bytes>().await {
        Ok(b) if b.len() <= limit => b,
        Ok(_) => return Ok(req.into_response(ApiError::PayloadTooLarge { limit }.error_response())),
        Err(e) if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Ok(req.into_response(ApiError::PayloadTooLarge { limit }.error_response()));
        }
        Err(_) => {
            return Ok(req.into_response(
                ApiError::bad_request("invalid_json", "could not read the request body")
                    .error_response(),
            ));
        }
    };
    req.set_payload(actix_web::dev::Payload::from(body.clone()));

    // Scoped to the caller and the route: another user's (or another route's) use of the same key
    // is a request of its own, never a replay of someone else's response.
    let record_id = secrets::sha256_hex(
        format!("{scope}\n{} {}\n{idem_key}", req.method(), req.path()).as_bytes(),
    );
    let fingerprint = secrets::sha256_hex(
        &[
            req.path().as_bytes(),
            b"\n",
            req.query_string().as_bytes(),
            b"\n",
            &body,
        ]
        .concat(),
    );
    let ttl = state.config.idempotency.ttl_secs;
    let (rid, fp) = (record_id.clone(), fingerprint);
    let claim = state
        .db
        .write(move |c| IdempotencyRecord::claim(c, &rid, &fp, ttl).map_err(ApiError::from))
        .await;
    let sealer = seal_key(&state, &idem_key);
    match claim {
        Ok(Claim::New) => {}
        Ok(Claim::Replay { status, body }) => {
            let plain = match open(&sealer, &body) {
                Ok(p) => p,
                Err(e) => return Ok(req.into_response(e.error_response())),
            };
            let res = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
                .insert_header((header::CONTENT_TYPE, "application/json"))
                .insert_header(("idempotent-replayed", "true"))
                .body(plain);
            return Ok(req.into_response(res));
        }
        Ok(Claim::InFlight) | Err(ApiError::Conflict { .. }) => {
            let e = ApiError::conflict(
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed",
            );
            return Ok(req.into_response(e.error_response()));
        }
        Ok(Claim::Mismatch) => {
            let e = ApiError::Unprocessable {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used with a different request".into(),
            };
            return Ok(req.into_response(e.error_response()));
        }
        Err(e) => return Ok(req.into_response(e.error_response())),
    }

    let res = next.call(req).await?;
    let status = res.status();
    let db = state.db.clone();
    if status.is_server_error() {
        let rid = record_id.clone();
        let _ = db
            .write(move |c| IdempotencyRecord::release(c, &rid).map_err(ApiError::from))
            .await;
        return Ok(res);
    }
    let (http_req, res) = res.into_parts();
    let (res, body) = res.into_parts();
    let stored = async {
        let bytes = actix_web::body::to_bytes(body)
            .await
            .map_err(|_| ApiError::internal_msg("response body"))?;
        let sealed = seal(&sealer, &bytes)?;
        let rid = record_id.clone();
        db.write(move |c| {
            IdempotencyRecord::complete(c, &rid, status.as_u16(), &sealed).map_err(ApiError::from)
        })
        .await?;
        Ok::<_, ApiError>(bytes)
    }
    .await;
    match stored {
        Ok(bytes) => Ok(ServiceResponse::new(http_req, res.set_body(bytes.boxed()))),
        Err(e) => {
            let _ = db
                .write(move |c| IdempotencyRecord::release(c, &record_id).map_err(ApiError::from))
                .await;
            Ok(ServiceResponse::new(http_req, e.error_response()))
        }
    }
}

//! Request bodies and extractor failures: [`Json`] reads a body that must be a JSON object, and
//! actix's own failures (oversize body, bad query or path, unknown route) map into [`ApiError`],
//! so that every error has the same OpenAI shape.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::{PathError, PayloadError, QueryPayloadError};
use actix_web::mime;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// A request body that must be a JSON object (`Content-Type: application/json`). serde alone would
/// also read a struct from an array (`["x", null]`), so the first character is checked.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Parses `body` as a JSON object of type `T` (415 unless the request says JSON; 400 otherwise).
pub fn object<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> ApiResult<T> {
    let is_json = matches!(req.mime_type(), Ok(Some(m))
        if m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    // Management bodies end up in database text, which cannot hold NUL (PostgreSQL refuses it).
    if req.path().starts_with("/api/") && escapes_nul(body) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "strings must not contain NUL characters",
        ));
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the request body is empty",
            ));
        }
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "the request body must be a JSON object",
            ));
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_json",
                "request body is not valid JSON",
            ));
        }
    }
    serde_json::from_slice(body)
        .or_else(|e| {
            if let Some(read) = with_integral_floats::<T>(body, &e) {
                return Ok(read);
            }
            Err(e)
        })
        .map_err(|e| {
            if e.is_data() {
                located::<T>(body).unwrap_or_else(|| {
                    ApiError::bad_request("invalid_request", format!("invalid request body: {e}"))
                })
            } else {
                ApiError::bad_request(
                    "invalid_json",
                    format!("request body is not valid JSON: {e}"),
                )
            }
        })
}

/// Whether a JSON text holds an escaped NUL (`\u0000`, not an escaped backslash before `u0000`).
fn escapes_nul(body: &[u8]) -> bool {
    body.windows(6).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(b"\\u0000")
            && body[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    })
}

/// JSON Schema counts `5.0` as an integer; serde does not. A body refused for a float where an
/// integer belongs is read again with each integral float (at most 2^53 in magnitude, where every
/// integer is exact) as that integer. Anything with a fraction stays refused.
fn with_integral_floats<T: DeserializeOwned>(body: &[u8], e: &serde_json::Error) -> Option<T> {
    if !e.is_data() || !e.to_string().contains("floating point") {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    integral_floats_to_ints(&mut value);
    serde_json::from_value(value).ok()
}

fn integral_floats_to_ints(v: &mut serde_json::Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() <= EXACT)
            {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats_to_ints),
        serde_json::Value::Object(map) => map.values_mut().for_each(integral_floats_to_ints),
        _ => {}
    }
}

/// The field a body that failed to deserialize got wrong, as `param` (`messages[0].role`; for a
/// missing field, its own name). Run only on failure, so a good body is parsed once.
fn located<T: DeserializeOwned>(body: &[u8]) -> Option<ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let e = serde_path_to_error::deserialize::<_, T>(&mut de).err()?;
    let message = e.inner().to_string();
    let path = e.path().to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let param = match (path.as_str(), missing) {
        (".", Some(field)) => field.to_owned(),
        (parent, Some(field)) => format!("{parent}.{field}"),
        (at, None) => at.to_owned(),
    };
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => &message,
    };
    Some(ApiError::invalid_param(
        &param,
        format!("{param}: {message}"),
    ))
}

/// The body's bytes within the configured limit (413 beyond it).
pub async fn bytes(req: &HttpRequest, payload: &mut Payload) -> ApiResult<web::Bytes> {
    let limit = req
        .app_data::<web::Data<crate::state::AppState>>()
        .map_or(0, |s| s.config.http.max_body_bytes);
    web::Bytes::from_request(req, payload)
        .await
        .map_err(|e| match e.as_error::<PayloadError>() {
            Some(PayloadError::Overflow) => ApiError::PayloadTooLarge { limit },
            _ if e.as_response_error().status_code()
                == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge { limit }
            }
            _ => ApiError::bad_request("invalid_json", "could not read the request body"),
        })
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = ApiResult<Self>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (req, mut payload) = (req.clone(), payload.take());
        Box::pin(async move {
            let body = bytes(&req, &mut payload).await?;
            object(&req, &body).map(Json)
        })
    }
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        let QueryPayloadError::Deserialize(e) = err else {
            return ApiError::bad_request("invalid_request", "invalid query string").into();
        };
        ApiError::bad_request("invalid_request", format!("invalid query string: {e}")).into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|_: PathError, _| ApiError::NotFound { what: "object" }.into())
}

/// Unknown routes (404) and known routes asked with another method (405 with `Allow`).
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let allowed = req
        .app_data::<web::Data<super::methods::Methods>>()
        .and_then(|m| m.allowed(req.path()));
    match allowed {
        Some(allow) => ApiError::MethodNotAllowed {
            allow: allow.to_owned(),
        }
        .error_response(),
        None => ApiError::NotFound { what: "route" }.error_response(),
    }
}

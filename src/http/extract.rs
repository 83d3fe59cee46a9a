//! Maps actix's own extractor failures (bad JSON, wrong content type, oversize body, bad query or
//! path, unknown route) into [`ApiError`], so that every error has the same OpenAI shape.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::error::ApiError;

fn json_error(err: JsonPayloadError, _req: &HttpRequest, limit: usize) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::bad_request("invalid_request", format!("invalid request body: {e}"))
        }
        JsonPayloadError::Deserialize(e) => ApiError::bad_request(
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        ),
        JsonPayloadError::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::PayloadTooLarge { limit }
        }
        _ => ApiError::bad_request("invalid_json", "could not read the request body"),
    }
}

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, req| json_error(err, req, limit).into())
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

/// Unknown routes and methods.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let _ = req;
    ApiError::NotFound { what: "route" }.error_response()
}

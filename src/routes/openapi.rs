//! What the OpenAPI document says about every operation beyond its own annotations: the error
//! statuses the shared machinery can answer (authentication, roles, body and query parsing,
//! idempotency, an unavailable database), each with the OpenAI error schema. Applied to the whole
//! document once the routes are in ([`crate::app::openapi_document`]).

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{OpenApi, Ref, RefOr, ResponseBuilder};

/// Adds, to every operation, the error statuses it can return and does not list yet.
pub fn document_errors(doc: &mut OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (&mut item.get, "GET"),
            (&mut item.post, "POST"),
            (&mut item.put, "PUT"),
            (&mut item.patch, "PATCH"),
            (&mut item.delete, "DELETE"),
        ];
        for (op, method) in ops {
            if let Some(op) = op {
                add_errors(path, op, method);
            }
        }
    }
}

fn add_errors(path: &str, op: &mut Operation, method: &str) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has = |place: ParameterIn| {
        op.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let (in_path, in_query) = (has(ParameterIn::Path), has(ParameterIn::Query));
    let body = op.request_body.is_some();
    let management = path.starts_with("/api/v1/");
    let data_plane = path.starts_with("/v1/");
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error(description));
    };
    if body || in_query || in_path {
        add(
            "400",
            "invalid_request or invalid_json; `param` names the field",
        );
    }
    if secured {
        add("401", "missing, invalid or expired credentials");
        add(
            "403",
            "the caller's role, scope or account does not allow this",
        );
    }
    if in_path || (secured && management) {
        add(
            "404",
            "not_found: no such object in the caller's tenant (other tenants' objects too)",
        );
    }
    if body {
        add("413", "payload_too_large");
        add(
            "415",
            "unsupported_media_type: send Content-Type: application/json",
        );
    }
    let idempotent = method == "POST" && !crate::http::idempotency::EXCLUDED.contains(&path);
    if management && (idempotent || (method != "GET" && secured)) {
        add("409", "a conflict, or idempotency_key_in_flight");
    }
    if management && idempotent {
        add(
            "422",
            "idempotency_key_reused: the same Idempotency-Key with another body",
        );
    }
    if data_plane && secured {
        add(
            "429",
            "rate_limit_exceeded or quota_exceeded; `limit` names the limit",
        );
    }
    if management || data_plane {
        add(
            "503",
            "service_unavailable: the database (or Redis, fail_closed) cannot be reached",
        );
    }
}

fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

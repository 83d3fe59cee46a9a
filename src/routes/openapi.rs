//! What the OpenAPI document says beyond each operation's own annotations: the error statuses the
//! shared machinery can answer (authentication, roles, body and query parsing, idempotency, an
//! unavailable database), each with the OpenAI error schema; and the text rules every request
//! field of a kind shares (names, slugs, emails: [`crate::validate`]'s patterns), so a client can
//! check a body before sending it. Applied once the routes are in ([`crate::app::openapi_document`]).

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr, ResponseBuilder};

use crate::billing::amount::MAX_AMOUNT_NANO;
use crate::validate::{EMAIL_PATTERN, NAME_PATTERN, NO_NUL_PATTERN, SLUG_PATTERN, UUID_PATTERN};

/// Request bodies whose fields get the shared text rules.
const REQUESTS: [&str; 28] = [
    "ChangePassword",
    "StripeSettingsInput",
    "CustomProviderInput",
    "BtcPaySettingsInput",
    "CoinbaseSettingsInput",
    "TaoSettingsInput",
    "CreateCheckout",
    "AutoTopupInput",
    "TenantWebhookInput",
    "BalanceAlertInput",
    "RefreshRequest",
    "PriceBook",
    "LimitSet",
    "CreateAccount",
    "UpdateAccount",
    "SignupRequest",
    "LoginRequest",
    "CreateKey",
    "UpdateKey",
    "CreatePlan",
    "UpdatePlan",
    "CreateTenant",
    "UpdateTenant",
    "UpdateTenantSettings",
    "CreateUser",
    "UpdateUser",
    "CreateAdjustment",
    "RotateKey",
];

/// The rule of a request field, by name.
fn pattern_of(field: &str) -> Option<&'static str> {
    match field {
        "name" | "reason" | "account_name" => Some(NAME_PATTERN),
        "slug" | "tenant" => Some(SLUG_PATTERN),
        "email" | "owner_email" => Some(EMAIL_PATTERN),
        _ => None,
    }
}

/// Sets the shared text rules on the request schemas (every other request string: no NUL, which
/// the server refuses in management bodies), `amount_nano`'s "not zero", and the id form of the
/// `account_id` query parameter.
pub fn document_inputs(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            for param in op.parameters.iter_mut().flatten() {
                if let RefOr::T(p) = param
                    && p.name == "account_id"
                    && let Some(RefOr::T(Schema::Object(text))) = p.schema.as_mut()
                {
                    text.pattern = Some(UUID_PATTERN.to_owned());
                }
            }
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in REQUESTS {
        let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) else {
            continue;
        };
        if let Some(names) = object.property_names.as_mut()
            && let Schema::Object(names) = names.as_mut()
        {
            names.pattern = Some(NO_NUL_PATTERN.to_owned());
        }
        for (field, schema) in object.properties.iter_mut() {
            if field == "amount_nano" {
                *schema = nonzero_amount();
                continue;
            }
            match schema {
                RefOr::T(Schema::Object(text)) if is_text(text) => {
                    text.pattern = Some(pattern_of(field).unwrap_or(NO_NUL_PATTERN).to_owned());
                }
                RefOr::T(Schema::Array(list)) => {
                    if let utoipa::openapi::schema::ArrayItems::RefOrSchema(item) = &mut list.items
                        && let RefOr::T(Schema::Object(text)) = item.as_mut()
                        && is_text(text)
                    {
                        text.pattern = Some(NO_NUL_PATTERN.to_owned());
                    }
                }
                _ => {}
            }
        }
    }
}

fn is_text(object: &Object) -> bool {
    match &object.schema_type {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(types) => types.contains(&Type::String),
        SchemaType::AnyValue => false,
    }
}

/// An amount in nano-units: `±1 ..= ±10^18`.
fn nonzero_amount() -> RefOr<Schema> {
    let range = |min: i64, max: i64| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(range(1, MAX_AMOUNT_NANO))
            .item(range(-MAX_AMOUNT_NANO, -1))
            .description(Some(
                "Nano-units to credit (positive) or debit (negative); not zero.",
            ))
            .build(),
    ))
}

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
    if path == "/api/v1/auth/signup" || path == "/api/v1/auth/login" {
        add(
            "429",
            "rate_limit_exceeded: too many attempts from this address or for this email",
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

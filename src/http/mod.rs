//! Cross-cutting HTTP plumbing: request ids, extractor error mapping, idempotency.

pub mod extract;
pub mod idempotency;
pub mod request_id;

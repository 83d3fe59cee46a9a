//! Durable usage: every settled request is journaled on local disk ([`journal`]) before its hold
//! is captured, then written to the database with its ledger posting by the batch writer
//! ([`writer`]; set-based on PostgreSQL, [`bulk`]). Idempotent by record id and posting key.

pub mod bulk;
pub mod journal;
pub mod writer;

//! taogate: sell metered, multi-tenant access to Bittensor subnet inference behind an
//! OpenAI-compatible API. See `docs/architecture.md` for the map of modules.

pub mod app;
pub mod auth;
pub mod billing;
pub mod breaker;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod db;
pub mod devnet;
pub mod domain;
pub mod error;
pub mod finance;
pub mod hop;
pub mod http;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod outbound;
pub mod pool;
pub mod proxy;
pub mod redis_link;
pub mod routes;
pub mod state;
pub mod substrate;
pub mod validate;
pub mod worker;

//! Black-box API suite: every test runs against a real server on port 0, once on SQLite and once
//! on PostgreSQL (`TAOGATE_TEST_PG`, default postgres://postgres@127.0.0.1:5432/postgres).

mod helpers;

mod auth;
mod bad_input;
mod bounds;
mod bulk;
mod chain;
mod chat;
mod coinbase;
mod durable;
mod epistula;
mod finance;
mod holds;
mod idempotency;
mod isolation;
mod keys;
mod ledger;
mod limits;
mod management;
mod migrations;
mod money;
mod ops;
mod outside;
mod payments;
mod pool;
mod procs;
mod protocols;
mod redis_cluster;
mod replicas;
mod shutdown;
mod steering;
mod tao;

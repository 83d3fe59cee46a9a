//! Payments: money coming in from providers (Stripe first, then crypto) through the ledger, each
//! payment credited exactly once. Built so far: [`signature`], the Stripe-style webhook signature
//! scheme — verifying what Stripe sends and signing what taogate will send its tenants.

pub mod signature;

//! Runbase's domain: the types every other crate speaks (runs, accounts, keys, money), the
//! table of public error codes, the model catalogue with its schemas and prices, the traits that
//! storage, providers and rate limiters implement, and the service functions that the HTTP API,
//! the CLI and the worker all call.
//!
//! Nothing here knows about HTTP frameworks or database drivers.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

pub mod account;
pub mod admission;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod events;
pub mod files;
pub mod idempotency;
pub mod identities;
pub mod ids;
pub mod inflight;
pub mod ip;
pub mod metrics;
pub mod money;
pub mod password;
pub mod payments;
pub mod provider;
pub mod ratelimit;
pub mod run;
pub mod schema;
pub mod secret;
pub mod service;
pub mod sessions;
pub mod store;
pub mod time;
pub mod uploads;
pub mod webhooks;

pub use error::{ApiError, ErrorCode};
pub use money::Millicents;

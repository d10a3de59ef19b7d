//! The library every proxy-metrics Lambda shares: domain logic (pure),
//! storage (every DynamoDB key and transaction), authentication, and the
//! HTTP handlers the functions' `main.rs` files hand requests to.

pub mod aggregate;
pub mod auth;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod export;
pub mod handlers;
pub mod http;
pub mod ratelimit;
pub mod storage;

pub use http::App;

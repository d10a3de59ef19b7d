//! The library every proxy-metrics Lambda shares: domain logic (pure),
//! storage (every DynamoDB key and transaction), the scheduled aggregation,
//! and — with the `http` feature, for the API functions — authentication and
//! the HTTP handlers the functions' `main.rs` files hand requests to.

pub mod aggregate;
pub mod alerts;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod ratelimit;
pub mod storage;

#[cfg(feature = "http")]
pub mod api;
#[cfg(feature = "http")]
pub mod app;
#[cfg(feature = "http")]
pub mod auth;
#[cfg(feature = "http")]
pub mod export;
#[cfg(feature = "http")]
pub mod handlers;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "otlp")]
pub mod otlp;

#[cfg(feature = "http")]
pub use app::App;

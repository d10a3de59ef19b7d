//! OTLP/HTTP metrics ingestion (contract v3, "OTLP/HTTP ingestion"):
//! proxies and OpenTelemetry SDKs export `ExportMetricsServiceRequest`s
//! (protobuf or JSON, optionally gzip), which become the same events — and
//! the same chunks — as `record`'s.
//!
//! - [`proto`]: the OTLP messages, declared with `prost`'s derives. They
//!   follow the OpenTelemetry protocol definitions
//!   (<https://github.com/open-telemetry/opentelemetry-proto>, © The
//!   OpenTelemetry Authors, Apache License 2.0) and `google/rpc/status.proto`
//!   (© Google LLC, Apache License 2.0); only the messages and fields the
//!   service reads are declared. No OpenTelemetry crate is linked.
//! - [`json`]: OTLP/JSON by the OTLP specification's rules.
//! - [`body`]: content type, `Content-Encoding: gzip` and the size limits
//!   (checked while decompressing).
//! - [`map`]: the mapping to events and the per-series state (pure; with
//!   `attributes`, `state` and `events`).
//!
//! The handler is `handlers::export_otlp_metrics`; the state items are
//! written by `storage::otlp`.

mod attributes;
pub mod body;
mod events;
pub mod json;
pub mod map;
pub mod proto;
mod state;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_wire;

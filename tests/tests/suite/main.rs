//! The in-process suite, one test binary: the handlers, the storage and the
//! aggregation against dynoxide, through the real SDK. Each module was its own
//! `tests/*.rs` binary once; linked apart, the 32 of them took ~2.3 GB of disk
//! and a link each, and a clean CI machine ran out of space building them.
//! Filter by module as before: `cargo test -p integration-tests --test suite cost::`.

#[path = "../common/mod.rs"]
mod common;

mod aggregation;
mod aggregation_faults;
mod alerts;
mod api_document;
mod auth_keys;
mod auth_scopes;
mod breakdown;
mod breakdown_props;
mod clock_edges;
mod cost;
mod counters;
mod exports;
mod faults;
mod hardening;
mod hostile_input;
mod json_keys;
mod limits;
mod local_front;
mod migration;
mod otlp;
mod otlp_tenants;
mod owner_tier;
mod pressure;
mod proxies_and_daily;
mod read_exactness;
mod reading;
mod record_idempotency;
mod record_validation;
mod record_values;
mod routes;
mod sequencing;
mod series;
mod series_limits;
mod series_support;

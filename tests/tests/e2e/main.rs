//! The end-to-end tests, one binary: each module needs something outside the
//! process (a local stack, Debian's nginx or Prometheus, the OpenTelemetry
//! SDK), so every test is `#[ignore]`d and `scripts/test` runs one module at a
//! time, by filter, once its tools are in place:
//! `cargo test -p integration-tests --test e2e -- --ignored http::`.
//! Linked apart, the twelve of them took ~850 MB of disk and a link each.

#[path = "../agent_support/mod.rs"]
mod agent_support;
#[path = "../common/mod.rs"]
mod common;

/// The proxy agent against a local stack: faults, restarts, several logs,
/// its token, catching up, beside a real nginx.
mod agent;
mod agent_catchup;
mod agent_multi;
mod agent_nginx;
mod agent_nginx_routes;
mod agent_restart;
mod agent_token;
/// Over HTTP against a running local stack (`E2E_API_URL`).
mod http;
/// A real OpenTelemetry SDK exporting to the OTLP routes.
mod otlp;
/// A real Prometheus scraping `/metrics`.
mod prometheus;
/// The local stack itself, started on free ports.
mod stack;

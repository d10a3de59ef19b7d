//! The read model in formats other than the API's JSON, for tools that do
//! not speak it: CSV for spreadsheets, the Prometheus text exposition for
//! scrapers. Pure (no I/O); each format is an optional cargo feature, so
//! only the function that serves it links its encoder.

#[cfg(feature = "csv")]
pub mod csv;
#[cfg(feature = "prometheus")]
pub mod prometheus;

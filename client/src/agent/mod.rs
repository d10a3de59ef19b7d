//! The pieces of the `proxy-metrics-agent` binary that deserve tests of
//! their own: log parsing and log following.

pub mod parse;
pub mod tail;

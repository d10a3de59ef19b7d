//! The pieces of the `proxy-metrics-agent` binary that deserve tests of
//! their own: log parsing, log following, and where it stands in a log.

pub mod parse;
pub mod position;
pub mod tail;

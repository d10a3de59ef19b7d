//! The pieces of the `proxy-metrics-agent` binary that deserve tests of
//! their own: log parsing, log following, where it stands in a log, and
//! where the lines go.

pub mod check;
pub mod feed;
pub mod nginx_format;
pub mod parse;
pub mod paths;
pub mod position;
pub mod route;
pub mod serve;
pub mod tail;
pub mod tailers;

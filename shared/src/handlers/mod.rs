//! One handler per Lambda. Each takes the app and an API Gateway request and
//! always returns a response: errors become the contract's error body.

mod proxies;
mod read;
mod record;

pub use proxies::{list_proxies, register_proxy};
pub use read::{get_aggregation, get_daily_metrics, get_daily_range, get_summary};
pub use record::record_metrics;

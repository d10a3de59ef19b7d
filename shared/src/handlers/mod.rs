//! One handler per Lambda. Each takes the app and an API Gateway request and
//! always returns a response: errors become the contract's error body.

mod alerts;
mod breakdown;
#[cfg(feature = "dashboard")]
mod dashboard;
#[cfg(feature = "prometheus")]
mod metrics;
#[cfg(feature = "otlp")]
mod otlp;
mod proxies;
mod read;
mod record;
mod series;

pub use alerts::{create_alert, delete_alert, list_alerts, list_deliveries, test_alert};
pub use breakdown::{BreakdownResponse, BreakdownValue, OtherSummary, get_breakdown};
#[cfg(feature = "dashboard")]
pub use dashboard::{CONTENT_SECURITY_POLICY, DASHBOARD_ASSETS, DashboardAsset, get_dashboard};
#[cfg(feature = "prometheus")]
pub use metrics::get_prometheus_metrics;
#[cfg(feature = "otlp")]
pub use otlp::{export_otlp_metrics, export_otlp_token_metrics};
pub use proxies::{list_proxies, register_proxy};
pub use read::{get_aggregation, get_daily_metrics, get_daily_range, get_summary};
pub use record::record_metrics;
pub use series::get_series;

//! The contract's JSON bodies, as types: the compiler checks every field
//! name, `domain/rollup/` keeps only the arithmetic, and `tests/tests/suite/api_document.rs`
//! checks every field against `infra/openapi.yaml`. The envelope
//! (`timestamp`, `tier`) is added by `http::success`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::domain::rollup::{Rollup, Stats, days_inclusive};
use crate::storage::Proxy;

/// The daily metrics object's fields, in the contract's order (the CSV
/// export's columns, `topErrors` left out).
pub const DAILY_FIELDS: [&str; 20] = [
    "date",
    "eventCount",
    "requestCount",
    "successCount",
    "errorCount",
    "statusCounts",
    "successRate",
    "averageLatencyMs",
    "minLatencyMs",
    "maxLatencyMs",
    "p50LatencyMs",
    "p95LatencyMs",
    "p99LatencyMs",
    "dataTransferredBytes",
    "dataReceivedBytes",
    "connectionCount",
    "peakConcurrentConnections",
    "averageConcurrentConnections",
    "uptimePercentage",
    "topErrors",
];

pub fn day_str(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

pub fn instant_str(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

mod series;
pub use series::{SeriesPoint, SeriesResponse, SortedSeriesBody};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopError {
    pub message: String,
    pub count: u64,
}

/// The success rate and latency figures a day and a period share.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyFigures {
    pub success_rate: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub min_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
}

impl LatencyFigures {
    pub fn of(stats: &Stats) -> Self {
        Self {
            success_rate: stats.success_rate(),
            average_latency_ms: stats.average_latency_ms(),
            min_latency_ms: stats.min_latency_ms,
            max_latency_ms: stats.max_latency_ms,
            p50_latency_ms: stats.percentile(0.50),
            p95_latency_ms: stats.percentile(0.95),
            p99_latency_ms: stats.percentile(0.99),
        }
    }
}

/// Requests by status class, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StatusCountsJson {
    #[serde(rename = "1xx")]
    pub s1xx: u64,
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
}

impl StatusCountsJson {
    pub fn of(counts: &crate::domain::dimensions::StatusCounts) -> Self {
        let [s1xx, s2xx, s3xx, s4xx, s5xx] = *counts;
        Self {
            s1xx,
            s2xx,
            s3xx,
            s4xx,
            s5xx,
        }
    }
}

/// One UTC day (contract: "Daily metrics object").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyMetrics {
    pub date: String,
    pub event_count: u64,
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub status_counts: StatusCountsJson,
    /// `successRate` to `p99LatencyMs`, in the contract's order.
    #[serde(flatten)]
    pub latency: LatencyFigures,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub connection_count: u64,
    pub peak_concurrent_connections: u64,
    pub average_concurrent_connections: Option<f64>,
    pub uptime_percentage: Option<f64>,
    pub top_errors: Vec<TopError>,
}

impl DailyMetrics {
    pub fn of(
        rollup: &Rollup,
        day: NaiveDate,
        registered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let s = &rollup.stats;
        Self {
            date: day_str(day),
            event_count: s.event_count,
            request_count: s.request_count,
            success_count: s.success_count,
            error_count: s.error_count,
            status_counts: StatusCountsJson::of(&rollup.status),
            latency: LatencyFigures::of(s),
            data_transferred_bytes: s.data_transferred_bytes,
            data_received_bytes: s.data_received_bytes,
            connection_count: s.connection_count,
            peak_concurrent_connections: s.peak_concurrent.unwrap_or(0),
            average_concurrent_connections: s.average_concurrent(),
            uptime_percentage: rollup
                .uptime_buckets(day, registered_at, now)
                .map(|(healthy, observed)| healthy as f64 / observed as f64 * 100.0),
            top_errors: rollup
                .top_errors()
                .into_iter()
                .map(|(message, count)| TopError { message, count })
                .collect(),
        }
    }
}

/// Any period of days (contract: the aggregation endpoint's `metrics`).
/// Percentiles come from the merged sketches, never from daily percentiles;
/// uptime is weighted by observed buckets, averages by what they average.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedMetrics {
    pub days_with_data: u64,
    pub total_request_count: u64,
    pub total_success_count: u64,
    pub total_error_count: u64,
    /// `successRate` to `p99LatencyMs`, in the contract's order.
    #[serde(flatten)]
    pub latency: LatencyFigures,
    pub total_data_transferred_bytes: u64,
    pub total_data_received_bytes: u64,
    pub total_connection_count: u64,
    pub peak_concurrent_connections: u64,
    pub average_concurrent_connections: Option<f64>,
    pub average_uptime_percentage: Option<f64>,
}

impl AggregatedMetrics {
    /// Over `[start, end]`, both inclusive.
    pub fn of(
        days: &BTreeMap<NaiveDate, Rollup>,
        start: NaiveDate,
        end: NaiveDate,
        registered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        let empty = Rollup::default();
        let mut total = Stats::default();
        let (mut healthy, mut observed) = (0u64, 0u64);
        let mut days_with_data = 0u64;
        for day in days_inclusive(start, end) {
            let rollup = days.get(&day).unwrap_or(&empty);
            if rollup.stats.event_count > 0 {
                days_with_data += 1;
                total.merge(&rollup.stats);
            }
            if let Some((h, o)) = rollup.uptime_buckets(day, registered_at, now) {
                healthy += h;
                observed += o;
            }
        }
        Self {
            days_with_data,
            total_request_count: total.request_count,
            total_success_count: total.success_count,
            total_error_count: total.error_count,
            latency: LatencyFigures::of(&total),
            total_data_transferred_bytes: total.data_transferred_bytes,
            total_data_received_bytes: total.data_received_bytes,
            total_connection_count: total.connection_count,
            peak_concurrent_connections: total.peak_concurrent.unwrap_or(0),
            average_concurrent_connections: total.average_concurrent(),
            average_uptime_percentage: (observed > 0)
                .then(|| healthy as f64 / observed as f64 * 100.0),
        }
    }
}

/// One window of the summary (`lastHour`, `last24Hours`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryWindow {
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub success_rate: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
}

impl SummaryWindow {
    pub fn of(stats: &Stats) -> Self {
        Self {
            request_count: stats.request_count,
            success_count: stats.success_count,
            error_count: stats.error_count,
            success_rate: stats.success_rate(),
            average_latency_ms: stats.average_latency_ms(),
            p95_latency_ms: stats.percentile(0.95),
            data_transferred_bytes: stats.data_transferred_bytes,
            data_received_bytes: stats.data_received_bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyBody {
    pub proxy_id: String,
    pub name: Option<String>,
    pub owner_id: String,
    pub registered_at: String,
}

impl ProxyBody {
    pub fn of(proxy: &Proxy) -> Self {
        Self {
            proxy_id: proxy.proxy_id.clone(),
            name: proxy.name.clone(),
            owner_id: proxy.owner_id.clone(),
            registered_at: instant_str(proxy.registered_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegisterProxyResponse {
    pub proxy: ProxyBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListProxiesResponse {
    pub proxies: Vec<ProxyBody>,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventOutcome {
    pub event_id: String,
    /// `recorded` or `duplicate`.
    pub status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordResponse {
    pub proxy_id: String,
    pub recorded: usize,
    pub duplicates: usize,
    pub events: Vec<EventOutcome>,
    pub message: &'static str,
    /// A single-event body's type and id, at the top level too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyMetricsResponse {
    pub proxy_id: String,
    pub date: String,
    pub metrics: DailyMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyRangeResponse {
    pub proxy_id: String,
    pub start_date: String,
    pub end_date: String,
    pub metrics: Vec<DailyMetrics>,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregationResponse {
    pub proxy_id: String,
    pub period_start: String,
    pub period_end: String,
    pub metrics: AggregatedMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryResponse {
    pub proxy_id: String,
    pub last_hour: SummaryWindow,
    pub last_24_hours: SummaryWindow,
    pub concurrent_connections: Option<u64>,
    pub last_event_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 1, 15).unwrap()
    }

    #[test]
    fn an_empty_day_has_no_ratios_and_no_made_up_uptime() {
        let end_of_day = DateTime::parse_from_rfc3339("2024-01-16T00:05:00Z")
            .unwrap()
            .to_utc();
        let json = serde_json::to_value(DailyMetrics::of(
            &Rollup::default(),
            day(),
            None,
            end_of_day,
        ))
        .unwrap();
        assert_eq!(json["uptimePercentage"], serde_json::Value::Null);
        assert_eq!(json["successRate"], serde_json::Value::Null);
        assert_eq!(json["requestCount"], 0);
    }

    #[test]
    fn daily_fields_name_every_field_of_the_daily_object_in_order() {
        let at = DateTime::parse_from_rfc3339("2024-01-15T12:00:00Z")
            .unwrap()
            .to_utc();
        let json =
            serde_json::to_string(&DailyMetrics::of(&Rollup::default(), day(), None, at)).unwrap();
        // serialised in declaration order: the contract's order
        let mut last = 0;
        for field in DAILY_FIELDS {
            let at = json
                .find(&format!("\"{field}\":"))
                .unwrap_or_else(|| panic!("{field}"));
            assert!(at >= last, "{field} out of order");
            last = at;
        }
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value.as_object().unwrap().len(), DAILY_FIELDS.len());
    }
}

// ---------------------------------------------------------------- alerts

/// A rule as the API shows it: every field with its default, and its state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertBody {
    pub alert_id: String,
    pub proxy_id: String,
    #[serde(flatten)]
    pub spec: crate::domain::alert::RuleSpec,
    pub state: &'static str,
    pub state_since: String,
    pub last_value: Option<f64>,
    pub last_evaluated_at: Option<String>,
    pub webhook_disabled: bool,
    pub created_at: String,
}

impl AlertBody {
    pub fn of(rule: &crate::storage::alerts::AlertRule) -> Self {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        Self {
            alert_id: rule.alert_id.clone(),
            proxy_id: rule.proxy_id.clone(),
            spec: rule.spec.clone(),
            state: rule.state.as_str(),
            state_since: at(rule.state_since),
            last_value: rule.last_value,
            last_evaluated_at: rule.last_evaluated_at.map(at),
            webhook_disabled: rule.webhook_disabled,
            created_at: at(rule.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CreateAlertResponse {
    pub alert: AlertBody,
    /// Shown once: only a sealed copy is stored.
    pub secret: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListAlertsResponse {
    pub proxy_id: String,
    pub alerts: Vec<AlertBody>,
    pub count: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestAlertResponse {
    pub alert_id: String,
    pub webhook_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryBody {
    pub webhook_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub attempt: u32,
    pub at: String,
    pub status: String,
    pub next_attempt_at: Option<String>,
}

impl DeliveryBody {
    pub fn of(d: &crate::storage::alerts::DeliveryAttempt) -> Self {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        Self {
            webhook_id: d.webhook_id.clone(),
            event_type: d.event_type.clone(),
            attempt: d.attempt,
            at: at(d.at),
            status: d.status.clone(),
            next_attempt_at: d.next_attempt_at.map(at),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListDeliveriesResponse {
    pub alert_id: String,
    pub deliveries: Vec<DeliveryBody>,
    pub count: usize,
}

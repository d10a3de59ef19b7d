//! The series endpoint's body (contract v3, "Time series and breakdowns").

use chrono::DateTime;
use serde::Serialize;

use super::instant_str;
use crate::domain::series::Point;

/// One step of a series: the daily object's figures over the step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    pub start: String,
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub success_rate: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub peak_concurrent_connections: u64,
    pub uptime_percentage: Option<f64>,
}

impl SeriesPoint {
    pub fn of(point: &Point) -> Self {
        let s = &point.stats;
        Self {
            start: instant_str(DateTime::from_timestamp_millis(point.start_ms).unwrap_or_default()),
            request_count: s.request_count,
            success_count: s.success_count,
            error_count: s.error_count,
            success_rate: s.success_rate(),
            average_latency_ms: s.average_latency_ms(),
            p50_latency_ms: s.percentile(0.50),
            p95_latency_ms: s.percentile(0.95),
            p99_latency_ms: s.percentile(0.99),
            data_transferred_bytes: s.data_transferred_bytes,
            data_received_bytes: s.data_received_bytes,
            peak_concurrent_connections: s.peak_concurrent.unwrap_or(0),
            uptime_percentage: point.uptime_percentage(),
        }
    }
}

/// `GET /proxy/metrics/{proxyId}/series`: `from` is the first point's start
/// (the asked `from` rounded down to its step), `to` as asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesResponse {
    pub proxy_id: String,
    pub from: String,
    pub to: String,
    pub step: &'static str,
    pub points: Vec<SeriesPoint>,
    pub count: usize,
}

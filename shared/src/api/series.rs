//! The series endpoint's body (contract v3, "Time series and breakdowns").

use chrono::DateTime;
use serde::Serialize;

use super::instant_str;
use crate::domain::series::Point;

/// One step of a series: the daily object's figures over the step. The
/// fields are in the order of their names (as a `serde_json::Value` sorts
/// them): [`SortedSeriesBody`] serializes them as they are.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    pub average_latency_ms: Option<f64>,
    pub data_received_bytes: u64,
    pub data_transferred_bytes: u64,
    pub error_count: u64,
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    pub peak_concurrent_connections: u64,
    pub request_count: u64,
    pub start: String,
    pub success_count: u64,
    pub success_rate: Option<f64>,
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

/// The series' answer as `http::success` makes it of a [`SeriesResponse`]
/// (`timestamp` and `tier` added, every object's keys in sorted order, as
/// a `serde_json::Value` holds them), serialized directly: the same bytes
/// without building a `Value` of every point, which was most of a 289-point
/// series' cold first response (BENCHMARKS.md, "Cold start and size").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SortedSeriesBody<'a> {
    pub count: usize,
    pub from: &'a str,
    pub points: &'a [SeriesPoint],
    pub proxy_id: &'a str,
    pub step: &'a str,
    pub tier: &'a str,
    pub timestamp: &'a str,
    pub to: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The direct body is byte for byte what `success` makes of the
    /// response through a `Value`.
    #[test]
    fn the_sorted_body_is_what_a_value_makes_of_the_response() {
        let point = |i: u64, empty: bool| SeriesPoint {
            average_latency_ms: (!empty).then_some(12.5 + i as f64),
            data_received_bytes: 7 * i,
            data_transferred_bytes: 11 * i,
            error_count: i,
            p50_latency_ms: (!empty).then_some(10.1),
            p95_latency_ms: (!empty).then_some(f64::NAN),
            p99_latency_ms: (!empty).then_some(1e21),
            peak_concurrent_connections: 3,
            request_count: 10 * i,
            start: format!("2026-12-03T00:{:02}:00.000Z", 5 * i),
            success_count: 9 * i,
            success_rate: (!empty).then_some(0.9),
            uptime_percentage: (!empty).then_some(100.0 / 3.0),
        };
        let points: Vec<SeriesPoint> = (0..5).map(|i| point(i, i % 2 == 0)).collect();
        let response = SeriesResponse {
            proxy_id: "edge-1".into(),
            from: "2026-12-03T00:00:00.000Z".into(),
            to: "2026-12-03T00:25:00.000Z".into(),
            step: "5m",
            count: points.len(),
            points: points.clone(),
        };
        let mut value = serde_json::to_value(&response).unwrap();
        let Value::Object(map) = &mut value else {
            panic!("an object")
        };
        map.insert("timestamp".into(), "2026-12-03T00:26:01.123Z".into());
        map.insert("tier".into(), "pro".into());
        let direct = SortedSeriesBody {
            count: points.len(),
            from: &response.from,
            points: &points,
            proxy_id: &response.proxy_id,
            step: response.step,
            tier: "pro",
            timestamp: "2026-12-03T00:26:01.123Z",
            to: &response.to,
        };
        assert_eq!(serde_json::to_string(&direct).unwrap(), value.to_string());
    }
}

//! `GET /proxy/metrics/{proxyId}/breakdown` (contract v3): a range of days
//! split by route, upstream or status class.

use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Serialize;

use super::read::{check_range, query_day, reader};
use crate::api::day_str;
use crate::domain::dimensions::{
    DimensionKey, KeyValues, OTHER_VALUE, STATUS_CLASSES, StatusCounts, add_status,
};
use crate::domain::rollup::Stats;
use crate::error::ApiError;
use crate::http::{App, owned_proxy, query_param, respond, success};
use crate::storage::StorageError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// What to split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Key(DimensionKey),
    Status,
}

/// The order of the values (all descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Requests,
    Errors,
    ErrorRate,
    P95,
    P99,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakdownValue {
    pub value: String,
    pub request_count: u64,
    pub success_count: Option<u64>,
    pub error_count: Option<u64>,
    pub success_rate: Option<f64>,
    pub average_latency_ms: Option<f64>,
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    pub data_transferred_bytes: Option<u64>,
}

impl BreakdownValue {
    fn of(value: &str, s: &Stats) -> Self {
        Self {
            value: value.to_string(),
            request_count: s.request_count,
            success_count: Some(s.success_count),
            error_count: Some(s.error_count),
            success_rate: s.success_rate(),
            average_latency_ms: s.average_latency_ms(),
            p50_latency_ms: s.percentile(0.50),
            p95_latency_ms: s.percentile(0.95),
            p99_latency_ms: s.percentile(0.99),
            data_transferred_bytes: Some(s.data_transferred_bytes),
        }
    }

    /// A status class: only its requests are known.
    fn of_class(class: &str, requests: u64) -> Self {
        Self {
            value: class.to_string(),
            request_count: requests,
            success_count: None,
            error_count: None,
            success_rate: None,
            average_latency_ms: None,
            p50_latency_ms: None,
            p95_latency_ms: None,
            p99_latency_ms: None,
            data_transferred_bytes: None,
        }
    }

    fn error_rate(&self) -> Option<f64> {
        let errors = self.error_count?;
        (self.request_count > 0).then(|| errors as f64 / self.request_count as f64)
    }

    fn key(&self, sort: Sort) -> Option<f64> {
        match sort {
            Sort::Requests => Some(self.request_count as f64),
            Sort::Errors => self.error_count.map(|e| e as f64),
            Sort::ErrorRate => self.error_rate(),
            Sort::P95 => self.p95_latency_ms,
            Sort::P99 => self.p99_latency_ms,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OtherSummary {
    pub event_count: u64,
    pub distinct_values: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakdownResponse {
    pub proxy_id: String,
    pub by: &'static str,
    pub start_date: String,
    pub end_date: String,
    pub values: Vec<BreakdownValue>,
    pub other: OtherSummary,
    pub count: usize,
}

fn parse_by(request: &Request) -> Result<By, ApiError> {
    match query_param(request, "by").as_deref() {
        Some("route") => Ok(By::Key(DimensionKey::Route)),
        Some("upstream") => Ok(By::Key(DimensionKey::Upstream)),
        Some("status") => Ok(By::Status),
        None => Err(ApiError::invalid(
            "The query parameter 'by' (route, upstream or status) is required.",
        )),
        Some(other) => Err(ApiError::invalid(format!(
            "The query parameter 'by' must be route, upstream or status, not '{}'.",
            crate::domain::excerpt(other)
        ))),
    }
}

fn parse_sort(request: &Request) -> Result<Sort, ApiError> {
    match query_param(request, "sort").as_deref() {
        None | Some("requests") => Ok(Sort::Requests),
        Some("errors") => Ok(Sort::Errors),
        Some("errorRate") => Ok(Sort::ErrorRate),
        Some("p95") => Ok(Sort::P95),
        Some("p99") => Ok(Sort::P99),
        Some(other) => Err(ApiError::invalid(format!(
            "The query parameter 'sort' must be requests, errors, errorRate, p95 or p99, not '{}'.",
            crate::domain::excerpt(other)
        ))),
    }
}

fn parse_limit(request: &Request) -> Result<usize, ApiError> {
    let Some(raw) = query_param(request, "limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    raw.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n) && raw.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "The query parameter 'limit' must be a whole number from 1 to {MAX_LIMIT}, not '{}'.",
                crate::domain::excerpt(&raw)
            ))
        })
}

/// Descending by `sort`, values without a figure last, ties by name.
fn sort_values(values: &mut [BreakdownValue], sort: Sort) {
    values.sort_by(|a, b| {
        let (ka, kb) = (a.key(sort), b.key(sort));
        match (ka, kb) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
        .then_with(|| a.value.cmp(&b.value))
    });
}

/// The values of a key, the `__other__` summary included.
fn key_values(values: &KeyValues) -> (Vec<BreakdownValue>, OtherSummary) {
    let other = OtherSummary {
        event_count: values.values.get(OTHER_VALUE).map_or(0, |s| s.event_count),
        distinct_values: values.other_hashes.len() as u64,
    };
    let rows = values
        .values
        .iter()
        .filter(|(_, s)| s.event_count > 0)
        .map(|(value, stats)| BreakdownValue::of(value, stats))
        .collect();
    (rows, other)
}

/// `GET /proxy/metrics/{proxyId}/breakdown?by=&startDate=&endDate=[&sort=&limit=]`
pub async fn get_breakdown(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, proxy_id) = reader(app, &request).await?;
        let by = parse_by(&request)?;
        let start = query_day(&request, "startDate")?;
        let end = query_day(&request, "endDate")?;
        check_range(&caller, start, end, ("startDate", "endDate"))?;
        let sort = parse_sort(&request)?;
        let limit = parse_limit(&request)?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let (mut values, other, by_name) = match by {
            By::Key(key) => {
                let merged = app
                    .store
                    .read_breakdown(&proxy, key, start, end)
                    .await
                    .map_err(|e| match e {
                        StorageError::TooLarge(message) => ApiError::RangeTooLarge(message),
                        e => e.into(),
                    })?;
                let (values, other) = key_values(&merged);
                (values, other, key.as_str())
            }
            By::Status => {
                let mut status: StatusCounts = [0; 5];
                for rollup in app.store.read_days(&proxy, start, end).await?.values() {
                    add_status(&mut status, &rollup.status);
                }
                let values = STATUS_CLASSES
                    .iter()
                    .zip(status)
                    .map(|(class, n)| BreakdownValue::of_class(class, n))
                    .collect();
                let other = OtherSummary {
                    event_count: 0,
                    distinct_values: 0,
                };
                (values, other, "status")
            }
        };
        sort_values(&mut values, sort);
        values.truncate(limit);
        let response = BreakdownResponse {
            proxy_id: proxy.proxy_id.clone(),
            by: by_name,
            start_date: day_str(start),
            end_date: day_str(end),
            count: values.len(),
            values,
            other,
        };
        success(app, StatusCode::OK, &caller, &response)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: &str, requests: u64, errors: u64, p95: Option<f64>) -> BreakdownValue {
        BreakdownValue {
            error_count: Some(errors),
            p95_latency_ms: p95,
            ..BreakdownValue::of_class(value, requests)
        }
    }

    #[test]
    fn values_sort_descending_nulls_last_ties_by_name() {
        let mut values = vec![
            row("/b", 10, 1, None),
            row("/a", 10, 5, Some(3.0)),
            row("/c", 20, 0, Some(1.0)),
        ];
        sort_values(&mut values, Sort::Requests);
        let names: Vec<&str> = values.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(names, ["/c", "/a", "/b"]);
        sort_values(&mut values, Sort::ErrorRate);
        let names: Vec<&str> = values.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(names, ["/a", "/b", "/c"]);
        sort_values(&mut values, Sort::P95);
        let names: Vec<&str> = values.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(names, ["/a", "/c", "/b"]);
    }
}

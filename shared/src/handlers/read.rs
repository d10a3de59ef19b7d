use chrono::{DateTime, Duration, NaiveDate, Utc};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde_json::Value;

use crate::api::{
    AggregatedMetrics, AggregationResponse, DailyMetrics, DailyMetricsResponse, DailyRangeResponse,
    SummaryResponse, SummaryWindow, day_str, instant_str,
};
use crate::auth::{Caller, Scope};
use crate::domain::rollup::{Rollup, SummaryWindows};
use crate::domain::{parse_day, validate_proxy_id};
use crate::error::ApiError;
use crate::http::{
    App, authenticate, header, owned_proxy, path_param, query_param, respond, success,
};
use crate::storage::Recent;

/// The order of every read: the token, its scope, then the input (the
/// proxy id here, dates in the handler) — all before any storage call — and
/// last the caller's own limit and the ownership read ([`owned_proxy`]).
pub(super) async fn reader(app: &App, request: &Request) -> Result<(Caller, String), ApiError> {
    let caller = authenticate(app, request).await?;
    caller.require_scope(Scope::MetricsRead)?;
    let proxy_id = path_param(request, "proxyId")?;
    validate_proxy_id(&proxy_id)?;
    caller.require_proxy(&proxy_id)?;
    Ok((caller, proxy_id))
}

/// A required `YYYY-MM-DD` query parameter.
fn query_day(request: &Request, name: &str) -> Result<NaiveDate, ApiError> {
    let value = query_param(request, name).ok_or_else(|| {
        ApiError::invalid(format!(
            "The query parameter '{name}' (YYYY-MM-DD) is required."
        ))
    })?;
    Ok(parse_day(name, &value)?)
}

/// Checks a range's order and the caller's tier limit (both ends inclusive).
fn check_range(
    caller: &Caller,
    start: NaiveDate,
    end: NaiveDate,
    names: (&str, &str),
) -> Result<(), ApiError> {
    if end < start {
        return Err(ApiError::invalid(format!(
            "{} is before {}.",
            names.1, names.0
        )));
    }
    let days = (end - start).num_days() + 1;
    let limit = caller.tier.max_range_days();
    if days > limit {
        return Err(ApiError::RangeTooLarge(format!(
            "The range covers {days} days; the {} tier allows at most {limit}.",
            caller.tier.as_str()
        )));
    }
    Ok(())
}

/// `GET /proxy/metrics/{proxyId}/daily/{date}`
pub async fn get_daily_metrics(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, proxy_id) = reader(app, &request).await?;
        let day = parse_day("date", &path_param(&request, "date")?)?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let days = app.store.read_days(&proxy, day, day).await?;
        let empty = Rollup::default();
        let rollup = days.get(&day).unwrap_or(&empty);
        let metrics = DailyMetrics::of(rollup, day, Some(proxy.registered_at), app.clock.now());
        success(
            app,
            StatusCode::OK,
            &caller,
            &DailyMetricsResponse {
                proxy_id: proxy.proxy_id,
                date: day_str(day),
                metrics,
            },
        )
    })
    .await
}

/// What a range is answered in: the `format` query parameter (`json` or
/// `csv`), else `Accept` (CSV when it names `text/csv` and does not prefer
/// `application/json`), else JSON. Errors are JSON whatever is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeFormat {
    Json,
    Csv,
}

impl RangeFormat {
    fn of(request: &Request) -> Result<Self, ApiError> {
        match query_param(request, "format") {
            Some(f) if f.eq_ignore_ascii_case("json") => Ok(Self::Json),
            Some(f) if f.eq_ignore_ascii_case("csv") => Ok(Self::Csv),
            Some(f) => {
                let shown: String = f.chars().take(32).collect();
                Err(ApiError::invalid(format!(
                    "The query parameter 'format' must be 'json' or 'csv', not '{shown}'."
                )))
            }
            // An unreadable Accept header asks for nothing in particular.
            None => Ok(match header(request, "accept").ok().flatten() {
                Some(accept) if prefers_csv(&accept) => Self::Csv,
                _ => Self::Json,
            }),
        }
    }
}

/// Whether an `Accept` header asks for `text/csv` at least as much as for
/// `application/json` (wildcards ask for neither in particular).
fn prefers_csv(accept: &str) -> bool {
    let mut csv: Option<f32> = None;
    let mut json: Option<f32> = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "text/csv" => &mut csv,
            "application/json" => &mut json,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |s| s.max(q)));
    }
    csv.is_some_and(|c| c > 0.0 && c >= json.unwrap_or(0.0))
}

/// The CSV answer: one header row, one row per day (`topErrors` left out),
/// offered as a file named after the proxy and the range.
#[cfg(feature = "csv")]
fn csv_range(
    proxy_id: &str,
    start: NaiveDate,
    end: NaiveDate,
    metrics: &[Value],
) -> Result<Response<Body>, ApiError> {
    use crate::export::csv::{CSV_CONTENT_TYPE, daily_csv};
    let bytes = daily_csv(metrics).map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ApiError::Internal(format!("CSV is not UTF-8: {e}")))?;
    // proxyId is [A-Za-z0-9._-]: safe inside the quoted file name.
    let disposition = format!(
        "attachment; filename=\"{proxy_id}-{}-{}.csv\"",
        day_str(start),
        day_str(end)
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", CSV_CONTENT_TYPE)
        .header("content-disposition", disposition)
        .header("vary", "Accept")
        .body(Body::Text(text))
        .map_err(|e| ApiError::Internal(format!("building response: {e}")))
}

#[cfg(not(feature = "csv"))]
fn csv_range(
    _proxy_id: &str,
    _start: NaiveDate,
    _end: NaiveDate,
    _metrics: &[Value],
) -> Result<Response<Body>, ApiError> {
    Err(ApiError::Internal(
        "this function was built without CSV export (cargo feature `csv` of proxy-metrics)".into(),
    ))
}

/// `GET /proxy/metrics/{proxyId}/daily?startDate=&endDate=[&format=json|csv]`
pub async fn get_daily_range(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, proxy_id) = reader(app, &request).await?;
        let format = RangeFormat::of(&request)?;
        let start = query_day(&request, "startDate")?;
        let end = query_day(&request, "endDate")?;
        check_range(&caller, start, end, ("startDate", "endDate"))?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let now = app.clock.now();
        // Each day becomes its daily object as it is read (memory follows the
        // answer, not the stored days), and the answer must fit a response.
        let mut sink = RangeSink {
            start,
            next: start,
            end,
            registered_at: proxy.registered_at,
            now,
            metrics: Vec::new(),
            bytes: 0,
        };
        match app.store.read_days_into(&proxy, start, end, &mut sink).await {
            Err(crate::storage::StorageError::TooLarge(_)) => {
                return Err(ApiError::RangeTooLarge(format!(
                    "The {} days from {} would make a response over {} MB, more than a response may \
                     carry; ask for a shorter range (the days before {} fit).",
                    (end - start).num_days() + 1,
                    day_str(start),
                    MAX_RESPONSE_BYTES / 1_000_000,
                    day_str(sink.next),
                )));
            }
            other => other?,
        }
        sink.fill_to(end + Duration::days(1));
        let metrics = sink.metrics;
        if format == RangeFormat::Csv {
            let rows: Vec<Value> = metrics
                .iter()
                .map(|m| serde_json::to_value(m).unwrap_or_default())
                .collect();
            return csv_range(&proxy.proxy_id, start, end, &rows);
        }
        let mut response = success(
            app,
            StatusCode::OK,
            &caller,
            &DailyRangeResponse {
                proxy_id: proxy.proxy_id,
                start_date: day_str(start),
                end_date: day_str(end),
                count: metrics.len(),
                metrics,
            },
        )?;
        response.headers_mut().insert(
            "vary",
            lambda_http::http::HeaderValue::from_static("Accept"),
        );
        Ok(response)
    })
    .await
}

/// `GET /proxy/metrics/{proxyId}/aggregation?periodStart=&periodEnd=`
pub async fn get_aggregation(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, proxy_id) = reader(app, &request).await?;
        let start = query_day(&request, "periodStart")?;
        let end = query_day(&request, "periodEnd")?;
        check_range(&caller, start, end, ("periodStart", "periodEnd"))?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        // Without their error counts (a period shows none): a long period's
        // days take little memory.
        let mut days = WithoutErrors::default();
        app.store
            .read_days_into(&proxy, start, end, &mut days)
            .await?;
        let days = days.0;
        let metrics = AggregatedMetrics::of(
            &days,
            start,
            end,
            Some(proxy.registered_at),
            app.clock.now(),
        );
        success(
            app,
            StatusCode::OK,
            &caller,
            &AggregationResponse {
                proxy_id: proxy.proxy_id,
                period_start: day_str(start),
                period_end: day_str(end),
                metrics,
            },
        )
    })
    .await
}

/// What a JSON response may carry: Lambda's limit is 6 MB, less the envelope.
const MAX_RESPONSE_BYTES: usize = 5_500_000;

/// The range's daily objects, made as the days are read.
struct RangeSink {
    start: NaiveDate,
    next: NaiveDate,
    end: NaiveDate,
    registered_at: DateTime<Utc>,
    now: DateTime<Utc>,
    metrics: Vec<DailyMetrics>,
    bytes: usize,
}

impl RangeSink {
    fn push(
        &mut self,
        day: NaiveDate,
        rollup: &Rollup,
    ) -> Result<(), crate::storage::StorageError> {
        let metrics = DailyMetrics::of(rollup, day, Some(self.registered_at), self.now);
        self.bytes += serde_json::to_vec(&metrics).map_or(0, |b| b.len() + 1);
        if self.bytes > MAX_RESPONSE_BYTES {
            return Err(crate::storage::StorageError::TooLarge(String::new()));
        }
        self.metrics.push(metrics);
        self.next = day + Duration::days(1);
        Ok(())
    }

    /// Empty days up to (not including) `until`.
    fn fill_to(&mut self, until: NaiveDate) {
        let empty = Rollup::default();
        while self.next < until && self.next <= self.end {
            if self.push(self.next, &empty).is_err() {
                return;
            }
        }
    }
}

impl crate::storage::DaySink for RangeSink {
    fn reset(&mut self) {
        self.metrics.clear();
        self.bytes = 0;
        self.next = self.start;
    }

    fn day(&mut self, day: NaiveDate, rollup: Rollup) -> Result<(), crate::storage::StorageError> {
        let empty = Rollup::default();
        while self.next < day {
            self.push(self.next, &empty)?;
        }
        self.push(day, &rollup)
    }
}

/// Days without their error counts.
#[derive(Default)]
struct WithoutErrors(std::collections::BTreeMap<NaiveDate, Rollup>);

impl crate::storage::DaySink for WithoutErrors {
    fn reset(&mut self) {
        self.0.clear();
    }

    fn day(
        &mut self,
        day: NaiveDate,
        mut rollup: Rollup,
    ) -> Result<(), crate::storage::StorageError> {
        rollup.errors.clear();
        self.0.insert(day, rollup);
        Ok(())
    }
}

/// How far back the summary looks for the latest event and concurrency
/// when the last 24 hours hold none (contract: the latest reported value).
pub const LATEST_LOOKBACK_DAYS: i64 = 7;

/// `GET /proxy/metrics/{proxyId}/summary`
pub async fn get_summary(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, proxy_id) = reader(app, &request).await?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let now = app.clock.now();
        let windows = SummaryWindows::at(now);
        let from = DateTime::from_timestamp_millis(windows.last_day_from_ms).unwrap_or(now);
        let to = DateTime::from_timestamp_millis(windows.to_ms).unwrap_or(now);
        // The latest event and concurrency: from the last 24 hours, else
        // from the days of the last week (read with the buckets' one pending
        // query, and only then).
        let wants_week = |recent: &Recent| {
            let (_, day) = windows.fold(&recent.buckets);
            day.last_event_ms.is_none() || day.latest_concurrent.is_none()
        };
        let recent = app
            .store
            .read_summary(
                &proxy,
                now.date_naive(),
                from,
                to,
                LATEST_LOOKBACK_DAYS - 1,
                &wants_week,
            )
            .await?;
        let (last_hour, last_24_hours) = windows.fold(&recent.buckets);
        let mut latest = last_24_hours.clone();
        for day in recent.days.values() {
            latest.merge(&day.stats);
        }
        success(
            app,
            StatusCode::OK,
            &caller,
            &SummaryResponse {
                proxy_id: proxy.proxy_id,
                last_hour: SummaryWindow::of(&last_hour),
                last_24_hours: SummaryWindow::of(&last_24_hours),
                concurrent_connections: latest.latest_concurrent.map(|(_, c)| c),
                last_event_at: latest
                    .last_event_ms
                    .and_then(DateTime::from_timestamp_millis)
                    .map(instant_str),
            },
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::prefers_csv;

    #[test]
    fn accept_asks_for_csv_only_when_it_names_it_first_or_equal() {
        assert!(prefers_csv("text/csv"));
        assert!(prefers_csv("text/csv;q=0.9, application/json;q=0.5"));
        assert!(prefers_csv("application/json, TEXT/CSV"));
        assert!(!prefers_csv("application/json, text/csv;q=0.5"));
        assert!(!prefers_csv("text/csv;q=0"));
        assert!(!prefers_csv("*/*"));
        assert!(!prefers_csv("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(!prefers_csv(""));
    }
}

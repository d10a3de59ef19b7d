//! `GET /proxy/metrics/{proxyId}/series?from=&to=&step=` (contract v3).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use lambda_http::{Body, Request, Response, http::StatusCode};

use super::read::reader;
use crate::api::{SeriesPoint, SortedSeriesBody, instant_str};
use crate::auth::Caller;
use crate::domain::rollup::{Rollup, day_start_ms};
use crate::domain::series::{
    Span, SpanError, Step, parse_series_instant, points_from_buckets, points_from_days,
};
use crate::error::ApiError;
use crate::http::{App, owned_proxy, query_param, respond, response_timestamp, success_serialized};
use crate::storage::{DaySink, Proxy, StorageError};

/// A required query parameter.
fn required(request: &Request, name: &str, shape: &str) -> Result<String, ApiError> {
    query_param(request, name).ok_or_else(|| {
        ApiError::invalid(format!(
            "The query parameter '{name}' ({shape}) is required."
        ))
    })
}

/// The span asked for, checked against everything that does not need the
/// proxy: the instants, the step, their order, the number of points and,
/// for daily steps, the caller's tier range limit (as for `daily`).
fn span_of(request: &Request, caller: &Caller) -> Result<(Span, DateTime<Utc>), ApiError> {
    let instant = "an RFC 3339 instant";
    let from = parse_series_instant("from", &required(request, "from", instant)?)?;
    let to = parse_series_instant("to", &required(request, "to", instant)?)?;
    let step = Step::parse(&required(request, "step", "5m, 1h or 1d")?)?;
    let span = Span::new(from, to, step).map_err(|e| match e {
        SpanError::Empty => ApiError::invalid(format!(
            "'from' ({}) must be before 'to' ({}).",
            instant_str(from),
            instant_str(to)
        )),
        too_many @ SpanError::TooManyPoints { .. } => ApiError::RangeTooLarge(too_many.to_string()),
    })?;
    let limit = caller.tier.max_range_days();
    if step == Step::Day && span.points > limit {
        return Err(ApiError::RangeTooLarge(format!(
            "The series covers {} days; the {} tier allows at most {limit}.",
            span.points,
            caller.tier.as_str()
        )));
    }
    Ok((span, to))
}

/// How far back five-minute buckets are kept for this proxy (days): its
/// owner's raw retention, or less while an upgrade has not yet extended the
/// buckets written under the former tier.
fn bucket_retention_days(proxy: &Proxy) -> i64 {
    let tier = proxy.tier.raw_retention_days();
    proxy.bucket_retention.map_or(tier, |kept| kept.min(tier))
}

/// The earliest instant a `5m` or `1h` series may start at: the start of the
/// UTC day `retention` days ago (that day's buckets are kept a full
/// retention after its end).
fn earliest_bucket(proxy: &Proxy, now: DateTime<Utc>) -> DateTime<Utc> {
    let day = (now - Duration::days(bucket_retention_days(proxy))).date_naive();
    DateTime::from_timestamp_millis(day_start_ms(day)).unwrap_or(now)
}

/// `GET /proxy/metrics/{proxyId}/series?from=&to=&step=`
pub async fn get_series(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let (caller, proxy_id) = reader(app, &request).await?;
        let (span, to) = span_of(&request, &caller)?;
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        let now = app.clock.now();
        let registered = Some(proxy.registered_at);
        let points = match span.step {
            Step::FiveMinutes | Step::Hour => {
                let earliest = earliest_bucket(&proxy, now);
                if span.start() < earliest {
                    return Err(ApiError::RangeTooLarge(format!(
                        "A {} series reaches back to {} at the earliest ({} days of raw retention \
                         for this proxy's owner's {} tier); use step 1d for earlier days.",
                        span.step.as_str(),
                        instant_str(earliest),
                        bucket_retention_days(&proxy),
                        proxy.tier.as_str()
                    )));
                }
                let last = DateTime::from_timestamp_millis(span.last_bucket_ms()).unwrap_or(now);
                let buckets = app.store.read_buckets(&proxy, span.start(), last).await?;
                points_from_buckets(&span, &buckets, registered, now)
            }
            Step::Day => {
                let (first, last) = span.days();
                let mut days = DaysWithoutErrors::default();
                app.store
                    .read_days_into(&proxy, first, last, &mut days)
                    .await?;
                points_from_days(&span, &days.0, registered, now)
            }
        };
        let points: Vec<SeriesPoint> = points.iter().map(SeriesPoint::of).collect();
        // What `success` makes of a `SeriesResponse`, byte for byte,
        // without a `Value` of every point.
        success_serialized(
            StatusCode::OK,
            &SortedSeriesBody {
                count: points.len(),
                from: &instant_str(span.start()),
                points: &points,
                proxy_id: &proxy.proxy_id,
                step: span.step.as_str(),
                tier: caller.tier.as_str(),
                timestamp: &response_timestamp(app),
                to: &instant_str(to),
            },
        )
    })
    .await
}

/// Days without their error counts (a point shows none): a long daily
/// series takes little memory.
#[derive(Default)]
struct DaysWithoutErrors(BTreeMap<NaiveDate, Rollup>);

impl DaySink for DaysWithoutErrors {
    fn reset(&mut self) {
        self.0.clear();
    }

    fn day(&mut self, day: NaiveDate, mut rollup: Rollup) -> Result<(), StorageError> {
        rollup.errors.clear();
        self.0.insert(day, rollup);
        Ok(())
    }
}

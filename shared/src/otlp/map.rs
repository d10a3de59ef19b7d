//! From OTLP metrics to the service's events: pure, no I/O.
//!
//! 1. [`extract`] walks an export and keeps the points of the metrics the
//!    service maps (OpenTelemetry's HTTP server semantic conventions),
//!    grouped by resource + scope (one state item each), each point tagged
//!    with its series (resource + scope + metric + point attributes). The
//!    other metrics are named, never counted as rejected.
//! 2. [`apply`] runs a group's points against the group's per-series state:
//!    a point at or before the last accepted one of its series is a
//!    duplicate; a cumulative point becomes the delta against the last
//!    accepted one (a new `startTimeUnixNano`, or counts going down, is a
//!    reset: the point counts in full, as the first point of a series
//!    does); every accepted point becomes one [`Event`] dated at its
//!    `timeUnixNano`, the same events `record` folds into chunks.
//!
//! # Percentiles
//!
//! A histogram point's buckets go into the event's latency sketch, each
//! bucket's count at one value inside the bucket:
//!
//! - explicit bounds `(l, u]`: the geometric midpoint `√(l·u)` (the
//!   arithmetic one when `l = 0`), the bucket narrowed to `[min, max]` when a
//!   delta point gives them; the open last bucket answers `max` (or its lower
//!   bound). A percentile is then within the bucket it falls in (plus the
//!   sketch's 1 %): the error of an explicit-bucket histogram is its bucket's
//!   width.
//! - exponential, bucket `k` of scale `s` = `(b^k, b^(k+1)]` with
//!   `b = 2^(2^-s)`: the value `2·b^(k+1)/(1 + b)`, within
//!   `(b − 1)/(b + 1)` of every value of the bucket (the contract's bound;
//!   the log-midpoint `b^(k+½)` would miss it by a little), on top of which
//!   the sketch adds its own 1 %. Zero and negative buckets count at 0.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::attributes::{Fnv, route_of, status_class_of, to_ms};
pub use super::events::{explicit_sketch, exponential_error, exponential_sketch};
use super::proto::{
    ExportMetricsServiceRequest, FLAG_NO_RECORDED_VALUE, HistogramDataPoint, KeyValue, Metric,
    TEMPORALITY_CUMULATIVE, TEMPORALITY_DELTA, metric, number_data_point,
};
pub use super::state::{Applied, GroupState, Last, Limits, SeriesState, apply};
use crate::domain::event::MAX_COUNT;

pub const REQUEST_DURATION: &str = "http.server.request.duration";
pub const ACTIVE_REQUESTS: &str = "http.server.active_requests";
pub const RESPONSE_BODY_SIZE: &str = "http.server.response.body.size";
pub const REQUEST_BODY_SIZE: &str = "http.server.request.body.size";
pub const ROUTE_ATTRIBUTE: &str = "http.route";
pub const STATUS_ATTRIBUTE: &str = "http.response.status_code";
/// Exponential histogram scales OTLP allows.
const MIN_SCALE: i32 = -10;
const MAX_SCALE: i32 = 20;
/// Metric names listed in a response's message (the rest are counted).
const NAMED_AT_MOST: usize = 20;

/// What a mapped metric stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Requests, status classes, latency.
    Duration,
    /// Concurrent connections (a level, not a count).
    Active,
    /// Bytes sent (`dataTransferredBytes`).
    ResponseBytes,
    /// Bytes received (`dataReceivedBytes`).
    RequestBytes,
}

impl Kind {
    pub fn of(name: &str) -> Option<Self> {
        match name {
            REQUEST_DURATION => Some(Self::Duration),
            ACTIVE_REQUESTS => Some(Self::Active),
            RESPONSE_BODY_SIZE => Some(Self::ResponseBytes),
            REQUEST_BODY_SIZE => Some(Self::RequestBytes),
            _ => None,
        }
    }
}

/// A point's figures, as exported (cumulative or delta).
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Explicit buckets: `counts[i]` in `(bounds[i-1], bounds[i]]`.
    Explicit {
        count: u64,
        sum: Option<f64>,
        bounds: Vec<f64>,
        counts: Vec<u64>,
        min: Option<f64>,
        max: Option<f64>,
    },
    /// Exponential buckets; negative buckets are folded into `zero`.
    Exponential {
        count: u64,
        sum: Option<f64>,
        scale: i32,
        zero: u64,
        offset: i32,
        counts: Vec<u64>,
        min: Option<f64>,
        max: Option<f64>,
    },
    /// A gauge's or an up-down counter's value.
    Level(f64),
}

/// One point of a mapped metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub series: u64,
    pub kind: Kind,
    pub cumulative: bool,
    pub start_ns: u64,
    pub time_ns: u64,
    pub route: Option<String>,
    /// 0 = 1xx … 4 = 5xx.
    pub status_class: Option<usize>,
    /// Multiplies a duration's value into milliseconds.
    pub to_ms: f64,
    pub data: Data,
}

/// The points of one resource + scope: one state item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub key: u64,
    pub points: Vec<Point>,
}

/// Why points were refused, and how many per reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub rejected: u64,
    pub reasons: BTreeMap<String, u64>,
    /// Metrics the service does not map (named, not counted as rejected).
    pub ignored: BTreeSet<String>,
}

impl Report {
    pub fn reject(&mut self, points: u64, reason: impl Into<String>) {
        if points == 0 {
            return;
        }
        self.rejected += points;
        *self.reasons.entry(reason.into()).or_default() += points;
    }

    pub fn merge(&mut self, other: Report) {
        self.rejected += other.rejected;
        for (reason, n) in other.reasons {
            *self.reasons.entry(reason).or_default() += n;
        }
        self.ignored.extend(other.ignored);
    }

    /// `errorMessage` of the partial success; `None` when all was taken.
    pub fn message(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.rejected > 0 {
            let reasons: Vec<String> = self
                .reasons
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            parts.push(format!(
                "{} data points rejected: {}.",
                self.rejected,
                reasons.join("; ")
            ));
        }
        if !self.ignored.is_empty() {
            let named: Vec<&str> = self
                .ignored
                .iter()
                .take(NAMED_AT_MOST)
                .map(String::as_str)
                .collect();
            let more = self.ignored.len().saturating_sub(NAMED_AT_MOST);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            parts.push(format!(
                "Metrics not mapped by this service, ignored: {}{tail}.",
                named.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// An export's mapped points by group, and what was refused or ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub groups: Vec<Group>,
    pub report: Report,
}

impl Extracted {
    pub fn points(&self) -> usize {
        self.groups.iter().map(|g| g.points.len()).sum()
    }
}

pub(super) const REASON_WINDOW: &str =
    "dated outside the accepted window (7 days back, 5 minutes ahead)";
pub(super) const REASON_NO_TIME: &str = "without timeUnixNano";
pub(super) const REASON_TEMPORALITY: &str = "of a histogram or sum without aggregationTemporality";
pub(super) const REASON_BUCKETS: &str =
    "whose bucket counts do not match their bounds or their count";
pub(super) const REASON_SCALE: &str = "with an exponential scale outside [-10, 20]";
pub(super) const REASON_UNIT: &str =
    "of http.server.request.duration in a unit other than s, ms, us or ns";
pub(super) const REASON_VALUE: &str = "with a missing, negative or non-finite value";
pub const REASON_STATE_FULL: &str = "past this resource's series-state limit (350 KB: send fewer attribute combinations or buckets)";

pub(super) fn explicit(p: &HistogramDataPoint) -> Result<Data, &'static str> {
    let finite = |v: Option<f64>| v.filter(|f| f.is_finite());
    let (min, max) = (finite(p.min), finite(p.max));
    if p.sum.is_some_and(|s| !s.is_finite() || s < 0.0) {
        return Err(REASON_VALUE);
    }
    let (bounds, counts) = if p.bucket_counts.is_empty() {
        (Vec::new(), vec![p.count])
    } else {
        if p.bucket_counts.len() != p.explicit_bounds.len() + 1
            || p.explicit_bounds.iter().any(|b| !b.is_finite())
            || p.explicit_bounds.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(REASON_BUCKETS);
        }
        (p.explicit_bounds.clone(), p.bucket_counts.clone())
    };
    let total = counts.iter().try_fold(0u64, |a, c| a.checked_add(*c));
    if total != Some(p.count) || p.count > MAX_COUNT {
        return Err(REASON_BUCKETS);
    }
    Ok(Data::Explicit {
        count: p.count,
        sum: p.sum,
        bounds,
        counts,
        min,
        max,
    })
}

pub(super) fn exponential(
    p: &super::proto::ExponentialHistogramDataPoint,
) -> Result<Data, &'static str> {
    if !(MIN_SCALE..=MAX_SCALE).contains(&p.scale) {
        return Err(REASON_SCALE);
    }
    if p.sum.is_some_and(|s| !s.is_finite()) {
        return Err(REASON_VALUE);
    }
    let positive = p.positive.clone().unwrap_or_default();
    let negative: u64 = p
        .negative
        .as_ref()
        .map(|n| {
            n.bucket_counts
                .iter()
                .fold(0u64, |a, c| a.saturating_add(*c))
        })
        .unwrap_or(0);
    let zero = p.zero_count.saturating_add(negative);
    let total = positive
        .bucket_counts
        .iter()
        .try_fold(zero, |a, c| a.checked_add(*c));
    if total != Some(p.count) || p.count > MAX_COUNT {
        return Err(REASON_BUCKETS);
    }
    let finite = |v: Option<f64>| v.filter(|f| f.is_finite());
    Ok(Data::Exponential {
        count: p.count,
        sum: p.sum.map(|s| s.max(0.0)),
        scale: p.scale,
        zero,
        offset: positive.offset,
        counts: positive.bucket_counts,
        min: finite(p.min),
        max: finite(p.max),
    })
}

/// The mapped points of an export, by resource + scope.
pub fn extract(request: &ExportMetricsServiceRequest) -> Extracted {
    let mut out = Extracted::default();
    let mut groups: BTreeMap<u64, Vec<Point>> = BTreeMap::new();
    for rm in &request.resource_metrics {
        let resource = Fnv::new().attributes(
            rm.resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default(),
        );
        for sm in &rm.scope_metrics {
            let scope = sm.scope.clone().unwrap_or_default();
            let group = resource
                .field(scope.name.as_bytes())
                .field(scope.version.as_bytes())
                .attributes(&scope.attributes);
            for m in &sm.metrics {
                let points = groups.entry(group.0).or_default();
                map_metric(m, group, points, &mut out.report);
            }
        }
    }
    out.groups = groups
        .into_iter()
        .filter(|(_, points)| !points.is_empty())
        .map(|(key, points)| Group { key, points })
        .collect();
    out
}

/// Points of a data type the metric's name does not fit, and metrics of
/// other names, are ignored (named, not rejected).
pub(super) fn map_metric(m: &Metric, group: Fnv, points: &mut Vec<Point>, report: &mut Report) {
    let Some(kind) = Kind::of(&m.name) else {
        if m.data.is_some() {
            report.ignored.insert(crate::domain::excerpt(&m.name));
        }
        return;
    };
    let series = group.field(m.name.as_bytes());
    let temporality = |t: i32| match t {
        TEMPORALITY_DELTA => Some(false),
        TEMPORALITY_CUMULATIVE => Some(true),
        _ => None,
    };
    let mut push = |attributes: &[KeyValue],
                    start_ns: u64,
                    time_ns: u64,
                    flags: u32,
                    cumulative: Option<bool>,
                    to_ms: f64,
                    data: Result<Data, &'static str>| {
        if flags & FLAG_NO_RECORDED_VALUE != 0 {
            return;
        }
        if time_ns == 0 {
            return report.reject(1, REASON_NO_TIME);
        }
        let Some(cumulative) = cumulative else {
            return report.reject(1, REASON_TEMPORALITY);
        };
        match data {
            Err(reason) => report.reject(1, reason),
            Ok(data) => points.push(Point {
                series: series.attributes(attributes).0,
                kind,
                cumulative,
                start_ns,
                time_ns,
                route: route_of(attributes),
                status_class: status_class_of(attributes),
                to_ms,
                data,
            }),
        }
    };
    let number = |p: &super::proto::NumberDataPoint| -> Result<Data, &'static str> {
        let v = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => return Err(REASON_VALUE),
        };
        if v.is_finite() {
            Ok(Data::Level(v))
        } else {
            Err(REASON_VALUE)
        }
    };
    match (&m.data, kind) {
        (Some(metric::Data::Histogram(h)), Kind::Duration) => {
            let Some(factor) = to_ms(&m.unit) else {
                return report.reject(h.data_points.len() as u64, REASON_UNIT);
            };
            let c = temporality(h.aggregation_temporality);
            for p in &h.data_points {
                let (a, s, t, f) = (
                    &p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                );
                push(a, s, t, f, c, factor, explicit(p));
            }
        }
        (Some(metric::Data::ExponentialHistogram(h)), Kind::Duration) => {
            let Some(factor) = to_ms(&m.unit) else {
                return report.reject(h.data_points.len() as u64, REASON_UNIT);
            };
            let c = temporality(h.aggregation_temporality);
            for p in &h.data_points {
                let (a, s, t, f) = (
                    &p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                );
                push(a, s, t, f, c, factor, exponential(p));
            }
        }
        (Some(metric::Data::Histogram(h)), Kind::ResponseBytes | Kind::RequestBytes) => {
            let c = temporality(h.aggregation_temporality);
            for p in &h.data_points {
                let (a, s, t, f) = (
                    &p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                );
                push(a, s, t, f, c, 1.0, explicit(p));
            }
        }
        (Some(metric::Data::ExponentialHistogram(h)), Kind::ResponseBytes | Kind::RequestBytes) => {
            let c = temporality(h.aggregation_temporality);
            for p in &h.data_points {
                let (a, s, t, f) = (
                    &p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                );
                push(a, s, t, f, c, 1.0, exponential(p));
            }
        }
        (Some(metric::Data::Sum(sum)), Kind::Active) => {
            let c = temporality(sum.aggregation_temporality);
            for p in &sum.data_points {
                let (a, s, t, f) = (
                    &p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                );
                push(a, s, t, f, c, 1.0, number(p));
            }
        }
        (Some(metric::Data::Gauge(g)), Kind::Active) => {
            for p in &g.data_points {
                let (a, s, t, f) = (
                    &p.attributes,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                    p.flags,
                );
                // A gauge is a level at its time: "cumulative" (no delta).
                push(a, s, t, f, Some(true), 1.0, number(p));
            }
        }
        (None, _) => {}
        // The right name with a data type the conventions do not give it.
        (Some(_), _) => {
            report
                .ignored
                .insert(format!("{} (unexpected data type)", m.name));
        }
    }
}

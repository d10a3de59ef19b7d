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

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::proto::{
    AnyValue, ExportMetricsServiceRequest, FLAG_NO_RECORDED_VALUE, HistogramDataPoint, KeyValue,
    Metric, TEMPORALITY_CUMULATIVE, TEMPORALITY_DELTA, any_value, metric, number_data_point,
};
use crate::domain::dimensions::{Dimensions, MAX_DIMENSION_VALUE_CHARS};
use crate::domain::event::{Event, EventType, FUTURE_TOLERANCE, LATE_WINDOW, MAX_COUNT};
use crate::domain::sketch::LatencySketch;

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

/// A stable 64-bit FNV-1a hash (the same in every process and release).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
    /// A length-prefixed field: `("ab", "c")` and `("a", "bc")` differ.
    fn field(self, bytes: &[u8]) -> Self {
        self.bytes(&(bytes.len() as u64).to_le_bytes()).bytes(bytes)
    }
    fn value(self, value: Option<&AnyValue>) -> Self {
        use any_value::Value as V;
        match value.and_then(|v| v.value.as_ref()) {
            None => self.field(b"n"),
            Some(V::StringValue(s)) => self.field(b"s").field(s.as_bytes()),
            Some(V::BoolValue(b)) => self.field(b"b").field(&[u8::from(*b)]),
            Some(V::IntValue(i)) => self.field(b"i").field(&i.to_le_bytes()),
            Some(V::DoubleValue(d)) => self.field(b"d").field(&d.to_bits().to_le_bytes()),
            Some(V::BytesValue(b)) => self.field(b"y").field(b),
            Some(V::ArrayValue(a)) => a.values.iter().fold(
                self.field(b"a")
                    .field(&(a.values.len() as u64).to_le_bytes()),
                |h, v| h.value(Some(v)),
            ),
            Some(V::KvlistValue(l)) => self.field(b"k").attributes(&l.values),
        }
    }
    /// Attributes in key order: the same set in another order is the same series.
    fn attributes(self, attributes: &[KeyValue]) -> Self {
        let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        sorted.into_iter().fold(
            self.field(&(attributes.len() as u64).to_le_bytes()),
            |h, kv| h.field(kv.key.as_bytes()).value(kv.value.as_ref()),
        )
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// `http.route` as a dimension value: printable, at most 256 characters.
fn route_of(attributes: &[KeyValue]) -> Option<String> {
    let Some(any_value::Value::StringValue(route)) =
        attribute(attributes, ROUTE_ATTRIBUTE).and_then(|v| v.value.as_ref())
    else {
        return None;
    };
    let clean: String = route
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DIMENSION_VALUE_CHARS)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// `http.response.status_code` (an int, or a string of one) as its class.
fn status_class_of(attributes: &[KeyValue]) -> Option<usize> {
    let code = match attribute(attributes, STATUS_ATTRIBUTE).and_then(|v| v.value.as_ref())? {
        any_value::Value::IntValue(i) => *i,
        any_value::Value::StringValue(s) => s.trim().parse().ok()?,
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 => *d as i64,
        _ => return None,
    };
    (100..600)
        .contains(&code)
        .then(|| (code / 100 - 1) as usize)
}

/// Milliseconds per unit of a duration histogram (UCUM, as the semantic
/// conventions write it; none given means seconds, the convention's unit).
fn to_ms(unit: &str) -> Option<f64> {
    match unit {
        "s" | "" => Some(1000.0),
        "ms" => Some(1.0),
        "us" | "µs" => Some(0.001),
        "ns" => Some(0.000_001),
        _ => None,
    }
}

const REASON_WINDOW: &str = "dated outside the accepted window (7 days back, 5 minutes ahead)";
const REASON_NO_TIME: &str = "without timeUnixNano";
const REASON_TEMPORALITY: &str = "of a histogram or sum without aggregationTemporality";
const REASON_BUCKETS: &str = "whose bucket counts do not match their bounds or their count";
const REASON_SCALE: &str = "with an exponential scale outside [-10, 20]";
const REASON_UNIT: &str = "of http.server.request.duration in a unit other than s, ms, us or ns";
const REASON_VALUE: &str = "with a missing, negative or non-finite value";
pub const REASON_STATE_FULL: &str = "past this resource's series-state limit (350 KB: send fewer attribute combinations or buckets)";

fn explicit(p: &HistogramDataPoint) -> Result<Data, &'static str> {
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

fn exponential(p: &super::proto::ExponentialHistogramDataPoint) -> Result<Data, &'static str> {
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
fn map_metric(m: &Metric, group: Fnv, points: &mut Vec<Point>, report: &mut Report) {
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

// ------------------------------------------------------------------ state

/// What a series remembers to turn its next point into a delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Last {
    /// A delta series: its time is all it needs.
    Nothing,
    /// A cumulative histogram's counts (no buckets for byte sizes: only
    /// their sums are used).
    Counts {
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
    /// A cumulative exponential histogram's counts.
    Exponential {
        count: u64,
        sum: f64,
        scale: i32,
        zero: u64,
        offset: i32,
        buckets: Vec<u64>,
    },
    /// A level (concurrent requests).
    Level(f64),
}

/// One series' state: its start and the last point accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub start_ns: u64,
    pub last_ns: u64,
    pub last: Last,
}

/// Every series of one resource + scope (one item, postcard-encoded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub series: BTreeMap<u64, SeriesState>,
}

impl GroupState {
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// Bounds of [`apply`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The encoded state may not grow past this by new series.
    pub max_state_bytes: usize,
    /// Series not updated for this long are forgotten.
    pub retention: Duration,
}

/// What a group's points became.
#[derive(Debug, Default)]
pub struct Applied {
    pub events: Vec<Event>,
    pub accepted: u64,
    pub duplicates: u64,
    pub report: Report,
    /// The state differs from the one read (it must be written).
    pub changed: bool,
}

/// Runs `group`'s points against `state` (updated in place).
pub fn apply(state: &mut GroupState, group: &Group, now: DateTime<Utc>, limits: Limits) -> Applied {
    let mut out = Applied::default();
    let forget_before = (now - limits.retention)
        .timestamp_nanos_opt()
        .unwrap_or(0)
        .max(0) as u64;
    let before = state.series.len();
    state.series.retain(|_, s| s.last_ns >= forget_before);
    out.changed = state.series.len() != before;
    let earliest = (now - LATE_WINDOW).timestamp_millis();
    let latest = (now + FUTURE_TOLERANCE).timestamp_millis();
    let mut size = state.encoded_len();
    // A series' points in time order: an earlier one must not be taken for
    // a duplicate of a later one of the same export.
    let mut order: Vec<&Point> = group.points.iter().collect();
    order.sort_by_key(|p| (p.series, p.time_ns));
    for point in order {
        let previous = state.series.get(&point.series);
        if previous.is_some_and(|s| point.time_ns <= s.last_ns) {
            out.duplicates += 1;
            continue;
        }
        let time_ms = (point.time_ns / 1_000_000) as i64;
        if time_ms < earliest || time_ms > latest {
            out.report.reject(1, REASON_WINDOW);
            continue;
        }
        let (delta, last) = delta_of(point, previous);
        let next = SeriesState {
            start_ns: point.start_ns,
            last_ns: point.time_ns,
            last,
        };
        // The state may not outgrow its bound: not by a new series, nor by
        // a known one whose buckets multiplied (that point is refused, the
        // series keeps its last state).
        let entry = |s: &SeriesState| {
            postcard::experimental::serialized_size(&(point.series, s)).unwrap_or(usize::MAX)
        };
        let was = previous.map_or(0, entry);
        let will = size.saturating_sub(was).saturating_add(entry(&next));
        if will > limits.max_state_bytes {
            out.report.reject(1, REASON_STATE_FULL);
            continue;
        }
        size = will;
        state.series.insert(point.series, next);
        out.changed = true;
        out.accepted += 1;
        if let Some(event) = event_of(point, delta, time_ms) {
            out.events.push(event);
        }
    }
    out
}

/// The figures a point adds (its delta), and what its series keeps.
fn delta_of(point: &Point, previous: Option<&SeriesState>) -> (Data, Last) {
    // The last point of the same run (same start), if any.
    let same_run = previous.filter(|s| point.cumulative && s.start_ns == point.start_ns);
    match &point.data {
        Data::Level(v) => {
            let level = if point.cumulative {
                *v
            } else {
                // A delta up-down counter: its level is the running sum.
                match previous.map(|s| &s.last) {
                    Some(Last::Level(l)) => l + v,
                    _ => *v,
                }
            };
            (Data::Level(level), Last::Level(level))
        }
        Data::Explicit {
            count,
            sum,
            bounds,
            counts,
            min,
            max,
        } => {
            if !point.cumulative {
                return (point.data.clone(), Last::Nothing);
            }
            let keep = if point.kind == Kind::Duration {
                counts.clone()
            } else {
                Vec::new()
            };
            let last = Last::Counts {
                count: *count,
                sum: sum.unwrap_or(0.0),
                buckets: keep,
            };
            let delta = match same_run.map(|s| &s.last) {
                Some(Last::Counts {
                    count: c0,
                    sum: s0,
                    buckets: b0,
                }) if count >= c0
                    && sum.unwrap_or(0.0) >= *s0
                    && (point.kind != Kind::Duration
                        || (b0.len() == counts.len()
                            && counts.iter().zip(b0).all(|(c, p)| c >= p))) =>
                {
                    let (bounds, counts) = if point.kind == Kind::Duration {
                        let diff = counts.iter().zip(b0).map(|(c, p)| c - p).collect();
                        (bounds.clone(), diff)
                    } else {
                        // Only the sum is used: one bucket of the delta count.
                        (Vec::new(), vec![count - c0])
                    };
                    Data::Explicit {
                        count: count - c0,
                        sum: sum.map(|s| s - s0),
                        bounds,
                        counts,
                        // A cumulative min/max is not the delta's.
                        min: None,
                        max: None,
                    }
                }
                // First point of the series or of a new run (a reset): in full.
                _ => Data::Explicit {
                    count: *count,
                    sum: *sum,
                    bounds: bounds.clone(),
                    counts: counts.clone(),
                    min: *min,
                    max: *max,
                },
            };
            (delta, last)
        }
        Data::Exponential {
            count,
            sum,
            scale,
            zero,
            offset,
            counts,
            min,
            max,
        } => {
            if !point.cumulative {
                return (point.data.clone(), Last::Nothing);
            }
            let last = Last::Exponential {
                count: *count,
                sum: sum.unwrap_or(0.0),
                scale: *scale,
                zero: *zero,
                offset: *offset,
                buckets: counts.clone(),
            };
            let delta = match same_run.map(|s| &s.last) {
                Some(Last::Exponential {
                    count: c0,
                    sum: s0,
                    scale: scale0,
                    zero: z0,
                    offset: o0,
                    buckets: b0,
                }) if count >= c0 && zero >= z0 => {
                    // Both at the coarser scale (an SDK only ever lowers it).
                    let common = (*scale).min(*scale0);
                    let now_b = downscale(*offset, counts, scale - common);
                    let then_b = downscale(*o0, b0, scale0 - common);
                    match subtract(&now_b, &then_b) {
                        Some((off, diff)) => Data::Exponential {
                            count: count - c0,
                            sum: sum.map(|s| (s - s0).max(0.0)),
                            scale: common,
                            zero: zero - z0,
                            offset: off,
                            counts: diff,
                            min: None,
                            max: None,
                        },
                        None => point.data.clone(),
                    }
                }
                _ => Data::Exponential {
                    count: *count,
                    sum: *sum,
                    scale: *scale,
                    zero: *zero,
                    offset: *offset,
                    counts: counts.clone(),
                    min: *min,
                    max: *max,
                },
            };
            (delta, last)
        }
    }
}

/// Buckets `(offset, counts)` lowered by `by` scales (each merges pairs).
fn downscale(offset: i32, counts: &[u64], by: i32) -> (i32, Vec<u64>) {
    if by <= 0 || counts.is_empty() {
        return (offset, counts.to_vec());
    }
    let by = by.min(62);
    let new_offset = offset >> by;
    let mut out: Vec<u64> = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        let index = ((offset + i as i32) >> by) - new_offset;
        let index = index.max(0) as usize;
        if out.len() <= index {
            out.resize(index + 1, 0);
        }
        out[index] = out[index].saturating_add(*c);
    }
    (new_offset, out)
}

/// `now − then` bucket by bucket, `None` if any bucket went down (a reset).
fn subtract(now: &(i32, Vec<u64>), then: &(i32, Vec<u64>)) -> Option<(i32, Vec<u64>)> {
    let (o1, c1) = now;
    let (o0, c0) = then;
    let at = |offset: i32, counts: &[u64], k: i32| -> u64 {
        let i = k - offset;
        if i < 0 {
            0
        } else {
            counts.get(i as usize).copied().unwrap_or(0)
        }
    };
    // Every index of `then` must still be there in `now`, at least as large.
    for (i, c) in c0.iter().enumerate() {
        if *c > at(*o1, c1, o0 + i as i32) {
            return None;
        }
    }
    let diff = c1
        .iter()
        .enumerate()
        .map(|(i, c)| c - at(*o0, c0, o1 + i as i32))
        .collect();
    Some((*o1, diff))
}

/// The event of an accepted point (`None`: it adds nothing).
fn event_of(point: &Point, delta: Data, time_ms: i64) -> Option<Event> {
    let mut event = Event {
        event_id: format!("otlp:{:016x}:{}", point.series, point.time_ns),
        event_type: EventType::Request,
        timestamp_ms: time_ms,
        healthy: true,
        request_count: 0,
        success_count: 0,
        error_count: 0,
        total_latency_ms: None,
        min_latency_ms: None,
        max_latency_ms: None,
        latency_sketch: None,
        data_transferred_bytes: 0,
        data_received_bytes: 0,
        connection_count: 0,
        concurrent_connections: None,
        error_message: None,
        dimensions: Dimensions {
            route: point.route.clone(),
            upstream: None,
            overflow: [None; 2],
        },
        status_counts: None,
    };
    match (point.kind, delta) {
        (Kind::Active, Data::Level(level)) => {
            event.event_type = EventType::Connection;
            event.concurrent_connections = Some(level.max(0.0).round() as u64);
        }
        (Kind::Duration, data) => {
            let (count, sum, sketch, min, max) = match data {
                Data::Explicit {
                    count,
                    sum,
                    bounds,
                    counts,
                    min,
                    max,
                } => (
                    count,
                    sum,
                    match sum {
                        // No buckets at all: the mean stands for each request.
                        Some(sum) if bounds.is_empty() && count > 0 => {
                            let mut sketch = LatencySketch::new();
                            let mean = (sum / count as f64)
                                .max(min.unwrap_or(0.0))
                                .min(max.unwrap_or(f64::MAX));
                            sketch.add_many(mean.max(0.0) * point.to_ms, count);
                            sketch
                        }
                        _ => explicit_sketch(&bounds, &counts, min, max, point.to_ms),
                    },
                    min,
                    max,
                ),
                Data::Exponential {
                    count,
                    sum,
                    scale,
                    zero,
                    offset,
                    counts,
                    min,
                    max,
                } => (
                    count,
                    sum,
                    exponential_sketch(scale, zero, offset, &counts, min, max, point.to_ms),
                    min,
                    max,
                ),
                Data::Level(_) => return None,
            };
            if count == 0 {
                return None;
            }
            event.request_count = count;
            match point.status_class {
                Some(class) => {
                    let mut classes = [0; 5];
                    classes[class] = count;
                    event.status_counts = Some(classes);
                    if class == 4 {
                        event.error_count = count;
                    } else {
                        event.success_count = count;
                    }
                }
                None => event.success_count = count,
            }
            event.total_latency_ms = sum.map(|s| s.max(0.0) * point.to_ms);
            event.min_latency_ms = min.map(|m| m.max(0.0) * point.to_ms);
            event.max_latency_ms = max.map(|m| m.max(0.0) * point.to_ms);
            event.latency_sketch = Some(sketch);
        }
        (Kind::ResponseBytes | Kind::RequestBytes, data) => {
            let sum = match data {
                Data::Explicit { sum, .. } | Data::Exponential { sum, .. } => sum?,
                Data::Level(_) => return None,
            };
            let bytes = sum.max(0.0).round().min(MAX_COUNT as f64) as u64;
            if bytes == 0 {
                return None;
            }
            if point.kind == Kind::ResponseBytes {
                event.data_transferred_bytes = bytes;
            } else {
                event.data_received_bytes = bytes;
            }
        }
        (Kind::Active, _) => return None,
    }
    Some(event)
}

/// Each explicit bucket's count at one value inside it (module docs).
pub fn explicit_sketch(
    bounds: &[f64],
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
    to_ms: f64,
) -> LatencySketch {
    let mut sketch = LatencySketch::new();
    let n = bounds.len();
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let mut lower = if i == 0 { 0.0 } else { bounds[i - 1].max(0.0) };
        let mut upper = if i == n {
            max.filter(|m| *m > lower).unwrap_or(lower)
        } else {
            bounds[i].max(0.0)
        };
        if let Some(min) = min {
            lower = lower.max(min);
        }
        if let Some(max) = max {
            upper = upper.min(max);
        }
        if upper < lower {
            upper = lower;
        }
        let value = if lower > 0.0 {
            (lower * upper).sqrt()
        } else {
            (lower + upper) / 2.0
        };
        sketch.add_many(value.clamp(lower, upper) * to_ms, c);
    }
    sketch
}

/// Each exponential bucket's count at `2·b^(k+1)/(1 + b)` (module docs).
pub fn exponential_sketch(
    scale: i32,
    zero: u64,
    offset: i32,
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
    to_ms: f64,
) -> LatencySketch {
    let mut sketch = LatencySketch::new();
    sketch.add_many(0.0, zero);
    let step = (-f64::from(scale)).exp2() * std::f64::consts::LN_2; // ln b
    let base = step.exp();
    let factor = 2.0 * base / (1.0 + base);
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let k = f64::from(offset) + i as f64;
        let mut value = (k * step).exp() * factor;
        if let Some(min) = min.filter(|m| *m > 0.0) {
            value = value.max(min);
        }
        if let Some(max) = max.filter(|m| *m > 0.0) {
            value = value.min(max);
        }
        sketch.add_many(value * to_ms, c);
    }
    sketch
}

/// The contract's bound on an exponential bucket's representative value.
pub fn exponential_error(scale: i32) -> f64 {
    let base = (-f64::from(scale)).exp2().exp2();
    (base - 1.0) / (base + 1.0)
}

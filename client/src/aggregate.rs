//! Pre-aggregation: observations folded into one contract event per
//! 10-second interval.
//!
//! Choices (all within the contract's validation rules, so the server never
//! rejects what is built here):
//!
//! - An interval is `[start, start + 10 s)` in UTC, keyed by the observation's
//!   own time; the event's `timestamp` is the interval start.
//! - Observations are grouped by (interval, route, upstream): one event per
//!   pair seen in the interval, carrying its `dimensions` (a key the
//!   observation did not give is omitted: the server counts it as
//!   `(none)`). More distinct pairs mean more events; the batch limits
//!   (500 events, 1 MB) hold as before.
//! - Every event with requests carries `statusCounts`, summing to its
//!   `requestCount` (see [`Observation::status`](crate::Observation::status)
//!   for requests without a status).
//! - Observations with a latency and those without are kept apart (two events
//!   for the interval when both occur): the server's mean latency is
//!   Σ totalLatencyMs / Σ requestCount over events that report latency, so a
//!   request without a latency must not sit in an event that has one.
//! - Counts and bytes add; `successCount + errorCount = requestCount` always.
//!   An interval whose sums would pass 2^53 is closed and a new one opened for
//!   the same period (the server sums them again).
//! - `minLatencyMs`/`maxLatencyMs` are over every latency; `latencySamplesMs`
//!   is a **uniform reservoir sample** (Vitter's algorithm R) of at most
//!   `sample_cap` latencies, so samples always lie within [min, max] and a
//!   busy interval's percentiles are not biased to its first requests.
//!   Latencies are rounded to the microsecond first (shorter JSON; min, max
//!   and samples are rounded alike, so the bounds still hold exactly).
//! - `concurrentConnections` is the last value recorded in the interval.
//! - `healthy` is false if any observation in the interval was unhealthy.
//! - `errorMessage` is the most frequent message of the interval, counted
//!   with the Space-Saving algorithm over 16 slots: exact while an interval
//!   has at most 16 distinct messages, and any message seen in more than 1/16
//!   of the interval's messages is guaranteed a slot; ties go to the message
//!   seen first.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use rand::rngs::SmallRng;
use serde::Serialize;

/// Length of an aggregation interval.
pub const INTERVAL_MS: i64 = 10_000;
/// The server's largest count (JSON numbers are exact up to 2^53).
pub const MAX_COUNT: u64 = 1 << 53;
/// The server's limit on samples in one event.
pub const MAX_SAMPLES_PER_EVENT: usize = 10_000;
/// The server's limit on `errorMessage`, in characters.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1024;
/// The server's limit on a dimension value, in characters.
pub const MAX_DIMENSION_CHARS: usize = 256;
/// Latencies above this (about 31 years) are treated as garbage: they could
/// only come from a broken clock and would overflow the interval's sum.
const MAX_LATENCY_MS: f64 = 1e12;
const TOP_ERROR_SLOTS: usize = 16;

/// Start (epoch milliseconds) of the interval holding `at_ms`.
pub fn interval_start(at_ms: i64) -> i64 {
    at_ms.div_euclid(INTERVAL_MS) * INTERVAL_MS
}

/// An observation cleaned up for aggregation: values the server would refuse
/// (non-finite or negative latencies, counts above 2^53, long messages) are
/// made acceptable here, once, so that every event built later is valid.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Clean {
    pub at_ms: i64,
    pub error: bool,
    pub latency_ms: Option<f64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub new_connections: u64,
    pub concurrent_connections: Option<u64>,
    pub healthy: bool,
    pub error_message: Option<String>,
    /// Index of the status class: 0 = 1xx … 4 = 5xx.
    pub status_class: usize,
    pub route: Option<String>,
    pub upstream: Option<String>,
}

/// The class of a status (0 = 1xx … 4 = 5xx); see [`crate::Observation::status`]
/// for requests without one.
fn status_class(status: Option<u16>, error: bool) -> usize {
    match status {
        Some(s @ 100..=599) => usize::from(s / 100 - 1),
        Some(0) if !error => 3,
        _ if error => 4,
        _ => 1,
    }
}

/// A value the server takes as a dimension: control characters replaced by
/// `?`, at most 256 characters (cut on a character boundary), not blank.
pub fn dimension_value(s: &str) -> Option<String> {
    let v: String = s
        .chars()
        .take(MAX_DIMENSION_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    (!v.trim().is_empty()).then_some(v)
}

impl Clean {
    pub fn new(o: crate::Observation, at: DateTime<Utc>) -> Self {
        let latency_ms = o
            .latency_ms
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| (v.min(MAX_LATENCY_MS) * 1000.0).round() / 1000.0);
        let error_message = o
            .error_message
            .filter(|m| !m.is_empty())
            .map(|m| truncate_chars(m, MAX_ERROR_MESSAGE_CHARS));
        Self {
            at_ms: at.timestamp_millis(),
            error: o.error,
            latency_ms,
            bytes_sent: o.bytes_sent.min(MAX_COUNT),
            bytes_received: o.bytes_received.min(MAX_COUNT),
            new_connections: o.new_connections.min(MAX_COUNT),
            concurrent_connections: o.concurrent_connections.map(|c| c.min(MAX_COUNT)),
            healthy: o.healthy,
            error_message,
            status_class: status_class(o.status, o.error),
            route: o.route.as_deref().and_then(dimension_value),
            upstream: o.upstream.as_deref().and_then(dimension_value),
        }
    }
}

fn truncate_chars(mut s: String, max: usize) -> String {
    if let Some((byte, _)) = s.char_indices().nth(max) {
        s.truncate(byte);
    }
    s
}

/// Which aggregate an observation belongs to: its interval, its route and
/// upstream, and whether it carries a latency (see the module docs). The
/// interval comes first: the oldest aggregates sort first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub start_ms: i64,
    pub route: Option<String>,
    pub upstream: Option<String>,
    pub with_latency: bool,
}

#[derive(Clone, Debug)]
struct Latency {
    total: f64,
    min: f64,
    max: f64,
    /// Latencies seen, for the reservoir.
    seen: u64,
    samples: Vec<f64>,
}

/// The running aggregate of one interval.
#[derive(Clone, Debug)]
pub(crate) struct Interval {
    pub key: Key,
    /// Observations folded in (the unit of the reporter's counters).
    pub observations: u64,
    requests: u64,
    errors: u64,
    status_counts: [u64; 5],
    latency: Option<Latency>,
    bytes_sent: u64,
    bytes_received: u64,
    connections: u64,
    concurrent: Option<u64>,
    unhealthy: bool,
    top_errors: Vec<(String, u64)>,
}

impl Interval {
    fn new(key: Key) -> Self {
        Self {
            key,
            observations: 0,
            requests: 0,
            errors: 0,
            status_counts: [0; 5],
            latency: None,
            bytes_sent: 0,
            bytes_received: 0,
            connections: 0,
            concurrent: None,
            unhealthy: false,
            top_errors: Vec::new(),
        }
    }

    /// An event with no requests: a healthy heartbeat for an idle proxy.
    pub fn heartbeat(start_ms: i64) -> Self {
        Self::new(Key {
            start_ms,
            route: None,
            upstream: None,
            with_latency: false,
        })
    }

    /// Whether `o` can be added without a sum passing 2^53.
    fn fits(&self, o: &Clean) -> bool {
        self.requests < MAX_COUNT
            && self.bytes_sent + o.bytes_sent <= MAX_COUNT
            && self.bytes_received + o.bytes_received <= MAX_COUNT
            && self.connections + o.new_connections <= MAX_COUNT
    }

    fn add(&mut self, o: Clean, sample_cap: usize, rng: &mut SmallRng) {
        self.observations += 1;
        self.requests += 1;
        if o.error {
            self.errors += 1;
        }
        self.status_counts[o.status_class] += 1;
        if let Some(v) = o.latency_ms {
            match &mut self.latency {
                None => {
                    let mut samples = Vec::new();
                    if sample_cap > 0 {
                        samples.push(v);
                    }
                    self.latency = Some(Latency {
                        total: v,
                        min: v,
                        max: v,
                        seen: 1,
                        samples,
                    });
                }
                Some(l) => {
                    l.total += v;
                    l.min = l.min.min(v);
                    l.max = l.max.max(v);
                    l.seen += 1;
                    if l.samples.len() < sample_cap {
                        l.samples.push(v);
                    } else {
                        // Algorithm R: the n-th latency replaces a random
                        // slot with probability cap / n, which keeps every
                        // latency seen equally likely to be in the sample.
                        let j = rng.random_range(0..l.seen);
                        if let Ok(j) = usize::try_from(j)
                            && j < l.samples.len()
                        {
                            l.samples[j] = v;
                        }
                    }
                }
            }
        }
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.connections += o.new_connections;
        if o.concurrent_connections.is_some() {
            self.concurrent = o.concurrent_connections;
        }
        if !o.healthy {
            self.unhealthy = true;
        }
        if let Some(m) = o.error_message {
            self.note_error(m);
        }
    }

    /// Space-Saving: a known message counts up; a new one takes a free slot,
    /// or else replaces the least counted one, inheriting its count + 1.
    fn note_error(&mut self, message: String) {
        if let Some(slot) = self.top_errors.iter_mut().find(|(m, _)| *m == message) {
            slot.1 += 1;
        } else if self.top_errors.len() < TOP_ERROR_SLOTS {
            self.top_errors.push((message, 1));
        } else if let Some(slot) = self.top_errors.iter_mut().min_by_key(|(_, n)| *n) {
            *slot = (message, slot.1 + 1);
        }
    }

    fn most_frequent_error(&self) -> Option<&str> {
        let mut best: Option<&(String, u64)> = None;
        for slot in &self.top_errors {
            if best.is_none_or(|b| slot.1 > b.1) {
                best = Some(slot);
            }
        }
        best.map(|(m, _)| m.as_str())
    }

    /// The contract event for this interval.
    pub fn to_event(&self, event_id: Option<String>) -> Event {
        let timestamp = DateTime::from_timestamp_millis(self.key.start_ms)
            .unwrap_or(DateTime::UNIX_EPOCH)
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        let latency = self.latency.as_ref();
        let dimensions =
            (self.key.route.is_some() || self.key.upstream.is_some()).then(|| EventDimensions {
                route: self.key.route.clone(),
                upstream: self.key.upstream.clone(),
            });
        Event {
            event_type: "request",
            event_id,
            timestamp,
            healthy: !self.unhealthy,
            dimensions,
            metrics: Metrics {
                request_count: self.requests,
                success_count: self.requests - self.errors,
                error_count: self.errors,
                total_latency_ms: latency.map(|l| l.total),
                min_latency_ms: latency.map(|l| l.min),
                max_latency_ms: latency.map(|l| l.max),
                latency_samples_ms: latency.map(|l| l.samples.clone()).unwrap_or_default(),
                data_transferred_bytes: self.bytes_sent,
                data_received_bytes: self.bytes_received,
                connection_count: self.connections,
                concurrent_connections: self.concurrent,
                error_message: self.most_frequent_error().map(str::to_owned),
                status_counts: (self.requests > 0).then_some(StatusCounts(self.status_counts)),
            },
        }
    }
}

/// One event exactly as the contract's record endpoint takes it (only
/// contract fields: the server rejects unknown ones).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub timestamp: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<EventDimensions>,
    pub metrics: Metrics,
}

/// Where an event's counts belong (contract v3); a key not known is left
/// out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventDimensions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// Requests by status class, 1xx … 5xx; serialised as the contract's
/// object without its zero classes (absent means 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusCounts(pub [u64; 5]);

impl Serialize for StatusCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let set = self.0.iter().filter(|n| **n > 0).count();
        let mut map = serializer.serialize_map(Some(set))?;
        for (class, n) in CLASSES.iter().zip(self.0) {
            if n > 0 {
                map.serialize_entry(class, &n)?;
            }
        }
        map.end()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_samples_ms: Vec<f64>,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub connection_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_counts: Option<StatusCounts>,
}

/// The open intervals. Bounded: at most `max_open` aggregates are open (the
/// oldest is closed early when a new one would pass that), and each holds at
/// most `sample_cap` samples and 16 error messages.
#[derive(Debug)]
pub(crate) struct Aggregator {
    open: BTreeMap<Key, Interval>,
    max_open: usize,
    sample_cap: usize,
    rng: SmallRng,
}

impl Aggregator {
    pub fn new(max_open: usize, sample_cap: usize, rng: SmallRng) -> Self {
        Self {
            open: BTreeMap::new(),
            max_open: max_open.max(1),
            sample_cap: sample_cap.min(MAX_SAMPLES_PER_EVENT),
            rng,
        }
    }

    /// Folds `o` into its interval. Returns an aggregate that had to be
    /// closed early to make room (too many open intervals, or a sum about to
    /// pass 2^53); the caller queues it like any closed interval.
    pub fn add(&mut self, mut o: Clean) -> Option<Interval> {
        let key = Key {
            start_ms: interval_start(o.at_ms),
            route: o.route.take(),
            upstream: o.upstream.take(),
            with_latency: o.latency_ms.is_some(),
        };
        let mut closed = None;
        if let Some(current) = self.open.get(&key)
            && !current.fits(&o)
        {
            closed = self.open.remove(&key);
        } else if !self.open.contains_key(&key) && self.open.len() >= self.max_open {
            closed = self.open.pop_first().map(|(_, i)| i);
        }
        let sample_cap = self.sample_cap;
        self.open
            .entry(key)
            .or_insert_with_key(|key| Interval::new(key.clone()))
            .add(o, sample_cap, &mut self.rng);
        closed
    }

    /// Closes every interval that ended at least `grace_ms` before `now_ms`,
    /// oldest first. The grace lets slightly late observations (a log line
    /// written a moment after its timestamp) still join their interval.
    pub fn close_due(&mut self, now_ms: i64, grace_ms: i64) -> Vec<Interval> {
        let due: Vec<Key> = self
            .open
            .keys()
            .filter(|k| k.start_ms + INTERVAL_MS + grace_ms <= now_ms)
            .cloned()
            .collect();
        due.iter().filter_map(|k| self.open.remove(k)).collect()
    }

    /// Closes everything (shutdown), oldest first.
    pub fn close_all(&mut self) -> Vec<Interval> {
        std::mem::take(&mut self.open).into_values().collect()
    }

    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    pub fn pending_observations(&self) -> u64 {
        self.open.values().map(|i| i.observations).sum()
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "aggregate_dims_tests.rs"]
mod dims_tests;

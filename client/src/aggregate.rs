//! Pre-aggregation: observations folded into one contract event per
//! 10-second interval.
//!
//! Choices (all within the contract's validation rules, so the server never
//! rejects what is built here):
//!
//! - An interval is `[start, start + 10 s)` in UTC, keyed by the observation's
//!   own time; the event's `timestamp` is the interval start.
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
        }
    }
}

fn truncate_chars(mut s: String, max: usize) -> String {
    if let Some((byte, _)) = s.char_indices().nth(max) {
        s.truncate(byte);
    }
    s
}

/// Which aggregate an observation belongs to: its interval, and whether it
/// carries a latency (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub start_ms: i64,
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
        Event {
            event_type: "request",
            event_id,
            timestamp,
            healthy: !self.unhealthy,
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
    pub metrics: Metrics,
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
    pub fn add(&mut self, o: Clean) -> Option<Interval> {
        let key = Key {
            start_ms: interval_start(o.at_ms),
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
            .or_insert_with(|| Interval::new(key))
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
            .copied()
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
mod tests {
    use super::*;
    use crate::Observation;
    use chrono::TimeZone;
    use rand::SeedableRng;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 15, 10, 4, 0).unwrap()
    }

    fn at(ms: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::milliseconds(ms)
    }

    fn agg(sample_cap: usize) -> Aggregator {
        Aggregator::new(64, sample_cap, SmallRng::seed_from_u64(7))
    }

    fn add(a: &mut Aggregator, o: Observation, ms: i64) -> Option<Interval> {
        a.add(Clean::new(o, at(ms)))
    }

    fn json(i: &Interval) -> serde_json::Value {
        serde_json::to_value(i.to_event(None)).unwrap()
    }

    #[test]
    fn one_event_per_interval_with_counts_bytes_and_latency_folded() {
        let mut a = agg(1000);
        add(
            &mut a,
            Observation::success()
                .latency_ms(10.0)
                .bytes_sent(100)
                .bytes_received(7),
            0,
        );
        add(
            &mut a,
            Observation::success()
                .latency_ms(30.5)
                .bytes_sent(50)
                .new_connections(1),
            4_000,
        );
        add(
            &mut a,
            Observation::failure(Some("upstream timeout".into()))
                .latency_ms(500.0)
                .concurrent_connections(9),
            9_999,
        );
        // next interval
        add(&mut a, Observation::success().latency_ms(1.0), 10_000);
        let closed = a.close_due(at(19_999).timestamp_millis(), 0);
        assert_eq!(closed.len(), 1, "only the first interval has ended");
        let e = json(&closed[0]);
        assert_eq!(e["eventType"], "request");
        assert_eq!(e["timestamp"], "2024-01-15T10:04:00Z");
        assert_eq!(e["healthy"], true);
        let m = &e["metrics"];
        assert_eq!(m["requestCount"], 3);
        assert_eq!(m["successCount"], 2);
        assert_eq!(m["errorCount"], 1);
        assert_eq!(m["totalLatencyMs"], 540.5);
        assert_eq!(m["minLatencyMs"], 10.0);
        assert_eq!(m["maxLatencyMs"], 500.0);
        assert_eq!(
            m["latencySamplesMs"],
            serde_json::json!([10.0, 30.5, 500.0])
        );
        assert_eq!(m["dataTransferredBytes"], 150);
        assert_eq!(m["dataReceivedBytes"], 7);
        assert_eq!(m["connectionCount"], 1);
        assert_eq!(m["concurrentConnections"], 9);
        assert_eq!(m["errorMessage"], "upstream timeout");
        let rest = a.close_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(json(&rest[0])["timestamp"], "2024-01-15T10:04:10Z");
    }

    #[test]
    fn only_contract_fields_and_no_absent_latency_or_concurrency() {
        let mut a = agg(1000);
        add(&mut a, Observation::success().bytes_sent(3), 0);
        let e = json(&a.close_all()[0]);
        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["eventType", "healthy", "metrics", "timestamp"]);
        let m = e["metrics"].as_object().unwrap();
        let mut mk: Vec<&str> = m.keys().map(String::as_str).collect();
        mk.sort();
        assert_eq!(
            mk,
            [
                "connectionCount",
                "dataReceivedBytes",
                "dataTransferredBytes",
                "errorCount",
                "requestCount",
                "successCount"
            ]
        );
    }

    #[test]
    fn requests_with_and_without_latency_become_separate_events() {
        let mut a = agg(1000);
        add(&mut a, Observation::success().latency_ms(20.0), 1_000);
        add(&mut a, Observation::success(), 2_000);
        add(&mut a, Observation::success(), 3_000);
        let closed = a.close_all();
        assert_eq!(closed.len(), 2);
        let without = json(&closed[0]);
        let with = json(&closed[1]);
        assert_eq!(without["metrics"]["requestCount"], 2);
        assert!(without["metrics"].get("totalLatencyMs").is_none());
        assert_eq!(with["metrics"]["requestCount"], 1);
        assert_eq!(with["metrics"]["totalLatencyMs"], 20.0);
        assert_eq!(with["timestamp"], without["timestamp"]);
    }

    #[test]
    fn unhealthy_once_means_unhealthy_interval_and_latest_concurrency_wins() {
        let mut a = agg(1000);
        add(&mut a, Observation::success().concurrent_connections(5), 0);
        add(
            &mut a,
            Observation::success()
                .healthy(false)
                .concurrent_connections(8),
            1,
        );
        add(&mut a, Observation::success().concurrent_connections(3), 2);
        add(&mut a, Observation::success(), 3);
        let e = json(&a.close_all()[0]);
        assert_eq!(e["healthy"], false);
        assert_eq!(e["metrics"]["concurrentConnections"], 3);
    }

    #[test]
    fn the_most_frequent_error_message_wins_ties_to_the_first() {
        let mut a = agg(1000);
        for m in ["a", "b", "b", "c", "a", "b"] {
            add(&mut a, Observation::failure(Some(m.into())), 0);
        }
        assert_eq!(json(&a.close_all()[0])["metrics"]["errorMessage"], "b");
        for m in ["x", "y", "y", "x"] {
            add(&mut a, Observation::failure(Some(m.into())), 0);
        }
        assert_eq!(json(&a.close_all()[0])["metrics"]["errorMessage"], "x");
    }

    #[test]
    fn a_frequent_message_survives_many_distinct_rare_ones() {
        let mut a = agg(1000);
        for i in 0..200 {
            add(&mut a, Observation::failure(Some(format!("rare {i}"))), 0);
            if i % 4 == 0 {
                add(&mut a, Observation::failure(Some("hot".into())), 0);
            }
        }
        assert_eq!(json(&a.close_all()[0])["metrics"]["errorMessage"], "hot");
    }

    #[test]
    fn samples_are_a_bounded_reservoir_within_min_and_max() {
        let mut a = agg(100);
        for i in 0..10_000 {
            add(
                &mut a,
                Observation::success().latency_ms(f64::from(i) / 7.0),
                0,
            );
        }
        let e = json(&a.close_all()[0]);
        let m = &e["metrics"];
        let samples = m["latencySamplesMs"].as_array().unwrap();
        assert_eq!(samples.len(), 100);
        let (min, max) = (
            m["minLatencyMs"].as_f64().unwrap(),
            m["maxLatencyMs"].as_f64().unwrap(),
        );
        assert_eq!(min, 0.0);
        assert_eq!(max, 1428.429);
        assert!(
            samples
                .iter()
                .all(|s| (min..=max).contains(&s.as_f64().unwrap()))
        );
        // uniform over the interval, not its first 100 requests
        let late = samples
            .iter()
            .filter(|s| s.as_f64().unwrap() > 700.0)
            .count();
        assert!(
            (20..=80).contains(&late),
            "{late} of 100 samples from the second half"
        );
        assert_eq!(m["requestCount"], 10_000);
    }

    #[test]
    fn garbage_is_made_acceptable_before_it_is_folded() {
        let mut a = agg(1000);
        let long = "é".repeat(2000);
        let mut o = Observation::failure(Some(long)).bytes_sent(u64::MAX);
        o.latency_ms = Some(f64::NAN);
        add(&mut a, o, 0);
        let mut o = Observation::success();
        o.latency_ms = Some(-1.0);
        add(&mut a, o, 0);
        add(&mut a, Observation::failure(Some(String::new())), 0);
        let closed = a.close_all();
        assert_eq!(closed.len(), 1, "no latency was valid");
        let e = json(&closed[0]);
        let m = &e["metrics"];
        assert!(m.get("totalLatencyMs").is_none());
        assert_eq!(m["errorMessage"].as_str().unwrap().chars().count(), 1024);
        assert_eq!(m["dataTransferredBytes"].as_u64().unwrap(), MAX_COUNT);
    }

    #[test]
    fn sums_never_pass_2_pow_53_a_full_interval_is_closed_and_reopened() {
        let mut a = agg(1000);
        assert!(add(&mut a, Observation::success().bytes_sent(MAX_COUNT - 1), 0).is_none());
        let closed = add(&mut a, Observation::success().bytes_sent(2), 1).expect("closed early");
        assert_eq!(
            json(&closed)["metrics"]["dataTransferredBytes"].as_u64(),
            Some(MAX_COUNT - 1)
        );
        let rest = a.close_all();
        assert_eq!(json(&rest[0])["metrics"]["dataTransferredBytes"], 2);
    }

    #[test]
    fn open_intervals_are_bounded_the_oldest_closes_early() {
        let mut a = Aggregator::new(3, 10, SmallRng::seed_from_u64(1));
        for i in 0..3 {
            assert!(add(&mut a, Observation::success(), i * INTERVAL_MS).is_none());
        }
        let closed = add(&mut a, Observation::success(), 3 * INTERVAL_MS).expect("oldest closed");
        assert_eq!(closed.key.start_ms, t0().timestamp_millis());
        assert_eq!(a.open_len(), 3);
        assert_eq!(a.pending_observations(), 3);
    }

    #[test]
    fn intervals_close_after_their_end_plus_grace() {
        let mut a = agg(10);
        add(&mut a, Observation::success(), 9_000);
        let end = at(10_000).timestamp_millis();
        assert!(a.close_due(end + 1_999, 2_000).is_empty());
        assert_eq!(a.close_due(end + 2_000, 2_000).len(), 1);
    }

    #[test]
    fn interval_start_floors_also_before_the_epoch() {
        assert_eq!(interval_start(19_999), 10_000);
        assert_eq!(interval_start(-1), -10_000);
    }
}

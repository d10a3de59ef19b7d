//! Daily rollups: folding events into one UTC day's figures, merging days,
//! and rendering the contract's daily object. Pure: no I/O, `now` is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::event::Event;
use super::sketch::LatencySketch;

pub const BUCKETS_PER_DAY: usize = 288;
const BUCKET_MS: i64 = 5 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// How many distinct error messages a day keeps counts for. The contract
/// shows ten; keeping more makes the top ten right when messages compete.
const ERROR_MESSAGES_KEPT: usize = 100;
const TOP_ERRORS_SHOWN: usize = 10;

/// Everything a day's figures are computed from. Mergeable, so a day can be
/// built from events one chunk at a time, and periods from days.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rollup {
    pub event_count: u64,
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    /// Σ latency totals of the events that reported latency.
    pub latency_total_ms: f64,
    /// Σ requestCount of those events (the weight of the average).
    pub latency_weight: u64,
    pub min_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub sketch: LatencySketch,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub connection_count: u64,
    pub peak_concurrent: Option<u64>,
    pub concurrent_sum: u64,
    pub concurrent_reports: u64,
    /// One bit per five-minute bucket of the day holding a healthy event.
    pub healthy_buckets: Vec<u64>,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    /// `concurrentConnections` of the latest event that reported it.
    pub latest_concurrent: Option<(i64, u64)>,
    /// errorMessage → number of events carrying it (bounded).
    pub errors: BTreeMap<String, u64>,
}

fn opt_min(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

fn opt_max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

impl Rollup {
    /// Adds one event. `day_start_ms` is the start of the event's UTC day.
    pub fn add(&mut self, event: &Event, day_start_ms: i64) {
        self.event_count += 1;
        self.request_count += event.request_count;
        self.success_count += event.success_count;
        self.error_count += event.error_count;
        self.data_transferred_bytes += event.data_transferred_bytes;
        self.data_received_bytes += event.data_received_bytes;
        self.connection_count += event.connection_count;

        let sample_count = event
            .latency_sketch
            .as_ref()
            .map_or(0, LatencySketch::count);
        if event.total_latency_ms.is_some() || sample_count > 0 {
            // The average is request-weighted; an event reporting latency
            // without a request count stands for its samples (or for one).
            let weight = if event.request_count > 0 {
                event.request_count
            } else {
                sample_count.max(1)
            };
            let total = match (event.total_latency_ms, &event.latency_sketch) {
                (Some(total), _) => total,
                (None, Some(s)) => s.sum().unwrap_or(0.0) / sample_count as f64 * weight as f64,
                (None, None) => 0.0,
            };
            self.latency_total_ms += total;
            self.latency_weight += weight;
            match &event.latency_sketch {
                Some(s) => self.sketch.merge(s),
                // Without samples, requestCount observations at the mean.
                None => self
                    .sketch
                    .add_many(total / weight as f64, event.request_count),
            }
        }
        let sketch = event.latency_sketch.as_ref();
        self.min_latency_ms = opt_min(
            self.min_latency_ms,
            event
                .min_latency_ms
                .or_else(|| sketch.and_then(LatencySketch::min)),
        );
        self.max_latency_ms = opt_max(
            self.max_latency_ms,
            event
                .max_latency_ms
                .or_else(|| sketch.and_then(LatencySketch::max)),
        );
        if let Some(c) = event.concurrent_connections {
            self.peak_concurrent = Some(self.peak_concurrent.map_or(c, |p| p.max(c)));
            self.concurrent_sum = self.concurrent_sum.saturating_add(c);
            self.concurrent_reports += 1;
            if self
                .latest_concurrent
                .is_none_or(|(t, _)| event.timestamp_ms >= t)
            {
                self.latest_concurrent = Some((event.timestamp_ms, c));
            }
        }
        if event.healthy {
            let bucket = (event.timestamp_ms - day_start_ms).div_euclid(BUCKET_MS);
            if (0..BUCKETS_PER_DAY as i64).contains(&bucket) {
                self.set_healthy(bucket as usize);
            }
        }
        self.first_event_ms = Some(
            self.first_event_ms
                .map_or(event.timestamp_ms, |f| f.min(event.timestamp_ms)),
        );
        self.last_event_ms = Some(
            self.last_event_ms
                .map_or(event.timestamp_ms, |l| l.max(event.timestamp_ms)),
        );
        if let Some(message) = &event.error_message {
            self.count_error(message, 1);
        }
    }

    fn set_healthy(&mut self, bucket: usize) {
        if self.healthy_buckets.len() < BUCKETS_PER_DAY.div_ceil(64) {
            self.healthy_buckets.resize(BUCKETS_PER_DAY.div_ceil(64), 0);
        }
        self.healthy_buckets[bucket / 64] |= 1 << (bucket % 64);
    }

    fn is_healthy(&self, bucket: usize) -> bool {
        self.healthy_buckets
            .get(bucket / 64)
            .is_some_and(|w| w & (1 << (bucket % 64)) != 0)
    }

    fn count_error(&mut self, message: &str, n: u64) {
        if let Some(c) = self.errors.get_mut(message) {
            *c += n;
            return;
        }
        self.errors.insert(message.to_string(), n);
        if self.errors.len() > ERROR_MESSAGES_KEPT {
            // Drop the rarest (ties: the last by text) to stay bounded.
            if let Some(rarest) = self
                .errors
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(k, _)| k.clone())
            {
                self.errors.remove(&rarest);
            }
        }
    }

    /// Merges another rollup of the same day (bucket bitmaps are OR-ed).
    pub fn merge(&mut self, other: &Rollup) {
        self.event_count += other.event_count;
        self.request_count += other.request_count;
        self.success_count += other.success_count;
        self.error_count += other.error_count;
        self.latency_total_ms += other.latency_total_ms;
        self.latency_weight += other.latency_weight;
        self.min_latency_ms = opt_min(self.min_latency_ms, other.min_latency_ms);
        self.max_latency_ms = opt_max(self.max_latency_ms, other.max_latency_ms);
        self.sketch.merge(&other.sketch);
        self.data_transferred_bytes += other.data_transferred_bytes;
        self.data_received_bytes += other.data_received_bytes;
        self.connection_count += other.connection_count;
        self.peak_concurrent = match (self.peak_concurrent, other.peak_concurrent) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.concurrent_sum = self.concurrent_sum.saturating_add(other.concurrent_sum);
        self.concurrent_reports += other.concurrent_reports;
        for bucket in 0..BUCKETS_PER_DAY {
            if other.is_healthy(bucket) {
                self.set_healthy(bucket);
            }
        }
        self.first_event_ms = match (self.first_event_ms, other.first_event_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_event_ms = match (self.last_event_ms, other.last_event_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.latest_concurrent = match (self.latest_concurrent, other.latest_concurrent) {
            (Some(a), Some(b)) => Some(if b.0 >= a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        for (message, n) in &other.errors {
            self.count_error(message, *n);
        }
    }

    pub fn success_rate(&self) -> Option<f64> {
        (self.request_count > 0).then(|| self.success_count as f64 / self.request_count as f64)
    }

    pub fn average_latency_ms(&self) -> Option<f64> {
        (self.latency_weight > 0).then(|| self.latency_total_ms / self.latency_weight as f64)
    }

    pub fn percentile(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q)
    }

    pub fn average_concurrent(&self) -> Option<f64> {
        (self.concurrent_reports > 0)
            .then(|| self.concurrent_sum as f64 / self.concurrent_reports as f64)
    }

    /// (buckets holding a healthy event, buckets observed) for `day`, or
    /// `None` when the observed window is empty. See the contract's Uptime.
    pub fn uptime_buckets(
        &self,
        day: NaiveDate,
        registered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<(u64, u64)> {
        let day_start = day_start_ms(day);
        let day_end = day_start + DAY_MS;
        let observed_from = match (
            registered_at.map(|r| r.timestamp_millis()),
            self.first_event_ms,
        ) {
            (Some(r), Some(f)) => r.min(f),
            (r, f) => r.or(f)?,
        };
        let start = observed_from.max(day_start);
        let end = now.timestamp_millis().min(day_end);
        if end <= start {
            return None;
        }
        let first = ((start - day_start) / BUCKET_MS) as usize;
        let last = ((end - day_start - 1) / BUCKET_MS) as usize;
        let observed = (last - first + 1) as u64;
        let healthy = (first..=last).filter(|b| self.is_healthy(*b)).count() as u64;
        Some((healthy, observed))
    }

    /// The most frequent error messages, most frequent first (ties by text).
    pub fn top_errors(&self) -> Vec<(String, u64)> {
        let mut all: Vec<_> = self.errors.iter().map(|(m, n)| (m.clone(), *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(TOP_ERRORS_SHOWN);
        all
    }

    /// The contract's daily metrics object.
    pub fn daily_json(
        &self,
        day: NaiveDate,
        registered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Value {
        let uptime = self
            .uptime_buckets(day, registered_at, now)
            .map(|(healthy, observed)| healthy as f64 / observed as f64 * 100.0);
        json!({
            "date": day.format("%Y-%m-%d").to_string(),
            "eventCount": self.event_count,
            "requestCount": self.request_count,
            "successCount": self.success_count,
            "errorCount": self.error_count,
            "successRate": self.success_rate(),
            "averageLatencyMs": self.average_latency_ms(),
            "minLatencyMs": self.min_latency_ms,
            "maxLatencyMs": self.max_latency_ms,
            "p50LatencyMs": self.percentile(0.50),
            "p95LatencyMs": self.percentile(0.95),
            "p99LatencyMs": self.percentile(0.99),
            "dataTransferredBytes": self.data_transferred_bytes,
            "dataReceivedBytes": self.data_received_bytes,
            "connectionCount": self.connection_count,
            "peakConcurrentConnections": self.peak_concurrent.unwrap_or(0),
            "averageConcurrentConnections": self.average_concurrent(),
            "uptimePercentage": uptime,
            "topErrors": self.top_errors().into_iter()
                .map(|(message, count)| json!({"message": message, "count": count}))
                .collect::<Vec<_>>(),
        })
    }

    /// Folds events of one day.
    pub fn of_events<'a>(day: NaiveDate, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let start = day_start_ms(day);
        let mut rollup = Self::default();
        for e in events {
            rollup.add(e, start);
        }
        rollup
    }
}

pub fn day_start_ms(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default()
}

/// Days from `start` to `end`, both inclusive.
pub fn days_inclusive(start: NaiveDate, end: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    let n = (end - start).num_days().max(-1) + 1;
    (0..n).filter_map(move |i| start.checked_add_signed(TimeDelta::days(i)))
}

//! [`Stats`]: counts, sums, extremes and a latency sketch, mergeable in any order.

use serde::{Deserialize, Serialize};

use crate::domain::event::Event;
use crate::domain::sketch::LatencySketch;

/// Mergeable figures of a set of events: a five-minute bucket, a day, a
/// window or a period.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
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
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    /// `concurrentConnections` of the latest event that reported it.
    pub latest_concurrent: Option<(i64, u64)>,
}

/// Latency sums stay finite: each value is finite, but enough huge ones
/// would overflow to infinity and turn the average into `null`.
fn saturating_sum(a: f64, b: f64) -> f64 {
    (a + b).min(f64::MAX)
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

impl Stats {
    /// Adds one event.
    pub fn add(&mut self, event: &Event) {
        // Counts are capped at 2^53 per event; sums saturate rather than wrap.
        self.event_count += 1;
        self.request_count = self.request_count.saturating_add(event.request_count);
        self.success_count = self.success_count.saturating_add(event.success_count);
        self.error_count = self.error_count.saturating_add(event.error_count);
        self.data_transferred_bytes = self
            .data_transferred_bytes
            .saturating_add(event.data_transferred_bytes);
        self.data_received_bytes = self
            .data_received_bytes
            .saturating_add(event.data_received_bytes);
        self.connection_count = self.connection_count.saturating_add(event.connection_count);

        let sample_count = event
            .latency_sketch
            .as_ref()
            .map_or(0, LatencySketch::count);
        if event.total_latency_ms.is_some() || sample_count > 0 {
            // The contract's average: Σ totalLatencyMs / Σ requestCount over
            // the events that report latency, so an event weighs its
            // requests (an event of 0 requests adds to no denominator; its
            // samples still count in the percentiles). Without a total, the
            // samples' mean stands for each request.
            let weight = event.request_count;
            let total = match (event.total_latency_ms, &event.latency_sketch) {
                (Some(total), _) => total,
                (None, Some(s)) => s.sum().unwrap_or(0.0) / sample_count as f64 * weight as f64,
                (None, None) => 0.0,
            };
            self.latency_total_ms = saturating_sum(self.latency_total_ms, total);
            self.latency_weight = self.latency_weight.saturating_add(weight);
            match &event.latency_sketch {
                Some(s) => self.sketch.merge(s),
                // Without samples, requestCount observations at the mean.
                None if weight > 0 => self.sketch.add_many(total / weight as f64, weight),
                None => {}
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
        self.first_event_ms = Some(
            self.first_event_ms
                .map_or(event.timestamp_ms, |f| f.min(event.timestamp_ms)),
        );
        self.last_event_ms = Some(
            self.last_event_ms
                .map_or(event.timestamp_ms, |l| l.max(event.timestamp_ms)),
        );
    }

    /// Merges the figures of another set of events.
    pub fn merge(&mut self, other: &Stats) {
        self.event_count += other.event_count;
        self.request_count = self.request_count.saturating_add(other.request_count);
        self.success_count = self.success_count.saturating_add(other.success_count);
        self.error_count = self.error_count.saturating_add(other.error_count);
        self.latency_total_ms = saturating_sum(self.latency_total_ms, other.latency_total_ms);
        self.latency_weight = self.latency_weight.saturating_add(other.latency_weight);
        self.min_latency_ms = opt_min(self.min_latency_ms, other.min_latency_ms);
        self.max_latency_ms = opt_max(self.max_latency_ms, other.max_latency_ms);
        self.sketch.merge(&other.sketch);
        self.data_transferred_bytes = self
            .data_transferred_bytes
            .saturating_add(other.data_transferred_bytes);
        self.data_received_bytes = self
            .data_received_bytes
            .saturating_add(other.data_received_bytes);
        self.connection_count = self.connection_count.saturating_add(other.connection_count);
        self.peak_concurrent = match (self.peak_concurrent, other.peak_concurrent) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.concurrent_sum = self.concurrent_sum.saturating_add(other.concurrent_sum);
        self.concurrent_reports += other.concurrent_reports;
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
    }

    /// The figures of the events of `self` that are not in `part` (a
    /// subset of them): the additive figures exactly (saturating at zero),
    /// the sketch bin by bin. Min, max, peaks and times, which do not
    /// subtract, are left out.
    pub fn without(&self, part: &Stats) -> Stats {
        Stats {
            event_count: self.event_count.saturating_sub(part.event_count),
            request_count: self.request_count.saturating_sub(part.request_count),
            success_count: self.success_count.saturating_sub(part.success_count),
            error_count: self.error_count.saturating_sub(part.error_count),
            latency_total_ms: (self.latency_total_ms - part.latency_total_ms).max(0.0),
            latency_weight: self.latency_weight.saturating_sub(part.latency_weight),
            sketch: self.sketch.without(&part.sketch),
            data_transferred_bytes: self
                .data_transferred_bytes
                .saturating_sub(part.data_transferred_bytes),
            data_received_bytes: self
                .data_received_bytes
                .saturating_sub(part.data_received_bytes),
            connection_count: self.connection_count.saturating_sub(part.connection_count),
            concurrent_sum: self.concurrent_sum.saturating_sub(part.concurrent_sum),
            concurrent_reports: self
                .concurrent_reports
                .saturating_sub(part.concurrent_reports),
            ..Stats::default()
        }
    }

    /// Bytes held on the heap (the sketch's bins); the inline part is
    /// `size_of::<Stats>()`.
    pub fn heap_bytes(&self) -> usize {
        self.sketch.heap_bytes()
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
}

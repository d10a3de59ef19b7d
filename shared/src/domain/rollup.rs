//! Rollups: the mergeable state every read is computed from.
//!
//! Nothing reads events one by one after they are recorded. A request's
//! events are folded at ingestion into one [`DayPart`] per UTC day they fall
//! on (per five-minute bucket: counts, sums, a latency sketch, health; per
//! day: error-message counts), and everything downstream only merges:
//! parts into a day's [`Rollup`] and into its five-minute [`Bucket`]s, days
//! into periods, buckets into the summary's windows. Pure: no I/O, `now` is
//! passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::event::Event;
use super::sketch::LatencySketch;

pub const BUCKETS_PER_DAY: usize = 288;
pub const BUCKET_MS: i64 = 5 * 60 * 1000;
pub const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// How many distinct error messages a day keeps counts for. The contract
/// shows ten; keeping more keeps the top ten right when messages compete.
pub const ERROR_MESSAGES_KEPT: usize = 100;
/// ... and at most this much message text (a stored item is at most 400 KB).
pub const ERROR_TEXT_KEPT_BYTES: usize = 48 * 1024;
const TOP_ERRORS_SHOWN: usize = 10;
const HEALTHY_WORDS: usize = BUCKETS_PER_DAY.div_ceil(64);

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

/// One five-minute bucket of one proxy's day.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub stats: Stats,
    /// At least one event in the bucket reported the proxy healthy.
    pub healthy: bool,
}

impl Bucket {
    pub fn merge(&mut self, other: &Bucket) {
        self.stats.merge(&other.stats);
        self.healthy |= other.healthy;
    }
}

/// What one request's events add to one UTC day, pre-folded: this is what a
/// recorded request stores instead of its events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DayPart {
    /// Five-minute bucket of the day (0..288) → its figures.
    pub buckets: BTreeMap<u16, Bucket>,
    /// errorMessage → number of events carrying it (bounded, see [`bound_errors`]).
    pub errors: BTreeMap<String, u64>,
}

impl DayPart {
    /// Adds one event of the day starting at `day_start_ms`.
    pub fn add(&mut self, event: &Event, day_start_ms: i64) {
        let index = (event.timestamp_ms - day_start_ms)
            .div_euclid(BUCKET_MS)
            .clamp(0, BUCKETS_PER_DAY as i64 - 1) as u16;
        let bucket = self.buckets.entry(index).or_default();
        bucket.stats.add(event);
        bucket.healthy |= event.healthy;
        if let Some(message) = &event.error_message {
            count_error(&mut self.errors, message, 1);
        }
    }

    pub fn event_count(&self) -> u64 {
        self.buckets.values().map(|b| b.stats.event_count).sum()
    }

    pub fn merge(&mut self, other: &DayPart) {
        for (index, bucket) in &other.buckets {
            self.buckets.entry(*index).or_default().merge(bucket);
        }
        for (message, n) in &other.errors {
            count_error(&mut self.errors, message, *n);
        }
        bound_errors(&mut self.errors);
    }
}

/// Folds validated events into one [`DayPart`] per UTC day they fall on.
pub fn fold_events<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> BTreeMap<NaiveDate, DayPart> {
    let mut days: BTreeMap<NaiveDate, DayPart> = BTreeMap::new();
    for event in events {
        let day = event.day();
        days.entry(day).or_default().add(event, day_start_ms(day));
    }
    for part in days.values_mut() {
        bound_errors(&mut part.errors);
    }
    days
}

fn count_error(errors: &mut BTreeMap<String, u64>, message: &str, n: u64) {
    match errors.get_mut(message) {
        Some(c) => *c = c.saturating_add(n),
        None => {
            errors.insert(message.to_string(), n);
        }
    }
}

/// Keeps the most frequent messages only (at most [`ERROR_MESSAGES_KEPT`] and
/// [`ERROR_TEXT_KEPT_BYTES`] of text), so stored state stays small. Counts
/// are exact while a day has fewer distinct messages than that; beyond, the
/// least frequent are dropped each time state is merged, so a message can
/// only lose counts it had while it was outside the kept ones.
pub fn bound_errors(errors: &mut BTreeMap<String, u64>) {
    let text: usize = errors.keys().map(String::len).sum();
    if errors.len() <= ERROR_MESSAGES_KEPT && text <= ERROR_TEXT_KEPT_BYTES {
        return;
    }
    let mut all: Vec<(String, u64)> = std::mem::take(errors).into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut bytes = 0;
    for (message, n) in all.into_iter().take(ERROR_MESSAGES_KEPT) {
        bytes += message.len();
        if bytes > ERROR_TEXT_KEPT_BYTES {
            break;
        }
        errors.insert(message, n);
    }
}

/// Everything a day's figures are computed from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollup {
    pub stats: Stats,
    /// One bit per five-minute bucket of the day holding a healthy event.
    pub healthy_buckets: Vec<u64>,
    /// errorMessage → number of events carrying it (bounded).
    pub errors: BTreeMap<String, u64>,
}

impl Rollup {
    /// Adds what one request added to this day.
    pub fn merge_part(&mut self, part: &DayPart) {
        for (index, bucket) in &part.buckets {
            self.stats.merge(&bucket.stats);
            if bucket.healthy {
                self.set_healthy(usize::from(*index));
            }
        }
        for (message, n) in &part.errors {
            count_error(&mut self.errors, message, *n);
        }
        bound_errors(&mut self.errors);
    }

    /// Merges another rollup (another day of a period, or the same day).
    pub fn merge(&mut self, other: &Rollup) {
        self.stats.merge(&other.stats);
        for (word, bits) in other.healthy_buckets.iter().enumerate() {
            if *bits != 0 {
                self.healthy_words()[word] |= bits;
            }
        }
        for (message, n) in &other.errors {
            count_error(&mut self.errors, message, *n);
        }
        bound_errors(&mut self.errors);
    }

    fn healthy_words(&mut self) -> &mut Vec<u64> {
        if self.healthy_buckets.len() < HEALTHY_WORDS {
            self.healthy_buckets.resize(HEALTHY_WORDS, 0);
        }
        &mut self.healthy_buckets
    }

    fn set_healthy(&mut self, bucket: usize) {
        if bucket < BUCKETS_PER_DAY {
            self.healthy_words()[bucket / 64] |= 1 << (bucket % 64);
        }
    }

    pub fn is_healthy(&self, bucket: usize) -> bool {
        self.healthy_buckets
            .get(bucket / 64)
            .is_some_and(|w| w & (1 << (bucket % 64)) != 0)
    }

    pub fn event_count(&self) -> u64 {
        self.stats.event_count
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
            self.stats.first_event_ms,
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

    /// Folds events of one day (tests and tools; the service folds requests
    /// into [`DayPart`]s and merges those).
    pub fn of_events<'a>(day: NaiveDate, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let start = day_start_ms(day);
        let mut part = DayPart::default();
        for e in events {
            part.add(e, start);
        }
        bound_errors(&mut part.errors);
        let mut rollup = Self::default();
        rollup.merge_part(&part);
        rollup
    }
}

pub fn day_start_ms(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or_default()
}

/// The instant a bucket of a day starts at.
pub fn bucket_start_ms(day: NaiveDate, index: u16) -> i64 {
    day_start_ms(day) + i64::from(index) * BUCKET_MS
}

/// Days from `start` to `end`, both inclusive.
pub fn days_inclusive(start: NaiveDate, end: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    let n = (end - start).num_days().max(-1) + 1;
    (0..n).filter_map(move |i| start.checked_add_signed(TimeDelta::days(i)))
}

/// The summary's windows, in whole five-minute buckets: the last hour is
/// the 12 buckets up to and including the current one, the last 24 hours
/// the 288 such buckets, and both also take the next bucket, where events
/// dated up to 5 minutes ahead (a proxy's clock running fast) fall. So the
/// last hour reaches back between 55 and 60 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryWindows {
    /// Start of the oldest bucket of the last hour (ms).
    pub last_hour_from_ms: i64,
    /// Start of the oldest bucket of the last 24 hours (ms).
    pub last_day_from_ms: i64,
    /// Start of the newest bucket of both (ms).
    pub to_ms: i64,
}

impl SummaryWindows {
    pub fn at(now: DateTime<Utc>) -> Self {
        let current = now.timestamp_millis().div_euclid(BUCKET_MS) * BUCKET_MS;
        Self {
            last_hour_from_ms: current - 11 * BUCKET_MS,
            last_day_from_ms: current - (BUCKETS_PER_DAY as i64 - 1) * BUCKET_MS,
            to_ms: current + BUCKET_MS,
        }
    }

    /// (last hour, last 24 hours) from buckets keyed by their start (ms).
    pub fn fold(&self, buckets: &BTreeMap<i64, Bucket>) -> (Stats, Stats) {
        let mut hour = Stats::default();
        let mut day = Stats::default();
        for (start, bucket) in buckets.range(self.last_day_from_ms..=self.to_ms) {
            day.merge(&bucket.stats);
            if *start >= self.last_hour_from_ms {
                hour.merge(&bucket.stats);
            }
        }
        (hour, day)
    }

    /// Uptime over the last 24 hours as (buckets holding a healthy event,
    /// buckets observed): the contract's uptime rule applied to this
    /// window instead of a day. The observed window starts at the later of
    /// the window's start and the earlier of (the proxy's registration, the
    /// window's first event), and ends at `now`; the bucket in progress
    /// counts. `None` when the observed window is empty. `buckets` are keyed
    /// by their start (ms).
    pub fn uptime_buckets(
        &self,
        buckets: &BTreeMap<i64, Bucket>,
        registered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<(u64, u64)> {
        let now_ms = now.timestamp_millis();
        let first_event = buckets
            .range(self.last_day_from_ms..now_ms)
            .find_map(|(_, b)| b.stats.first_event_ms);
        let observed_from = match (registered_at.map(|r| r.timestamp_millis()), first_event) {
            (Some(r), Some(f)) => r.min(f),
            (r, f) => r.or(f)?,
        };
        let start = observed_from.max(self.last_day_from_ms);
        if now_ms <= start {
            return None;
        }
        let first = start.div_euclid(BUCKET_MS) * BUCKET_MS;
        let last = (now_ms - 1).div_euclid(BUCKET_MS) * BUCKET_MS;
        let observed = ((last - first) / BUCKET_MS + 1) as u64;
        let healthy = buckets
            .range(first..=last)
            .filter(|(_, b)| b.healthy)
            .count() as u64;
        Some((healthy, observed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{Event, EventType};
    use chrono::TimeZone;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 1, 15).unwrap()
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 15, h, m, 0).unwrap()
    }

    fn event(ts: DateTime<Utc>, healthy: bool) -> Event {
        Event {
            event_id: format!("e{}", ts.timestamp_millis()),
            event_type: EventType::Request,
            timestamp_ms: ts.timestamp_millis(),
            healthy,
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
        }
    }

    fn with_samples(ts: DateTime<Utc>, samples: &[f64]) -> Event {
        let mut e = event(ts, true);
        let mut s = LatencySketch::new();
        samples.iter().for_each(|v| s.add(*v));
        e.request_count = samples.len() as u64;
        e.success_count = samples.len() as u64;
        e.latency_sketch = Some(s);
        e
    }

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
    }

    fn distributions() -> Vec<(&'static str, Vec<f64>)> {
        let mut rng = StdRng::seed_from_u64(7);
        let normal = |rng: &mut StdRng| {
            let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
        };
        let n = 50_000;
        vec![
            (
                "uniform",
                (0..n).map(|_| rng.random_range(1.0..1000.0)).collect(),
            ),
            (
                "log-normal",
                (0..n)
                    .map(|_| (3.0 + 0.8 * normal(&mut rng)).exp())
                    .collect(),
            ),
            (
                "bimodal",
                (0..n)
                    .map(|i| {
                        if i % 5 == 0 {
                            800.0 + 50.0 * normal(&mut rng).abs()
                        } else {
                            20.0 + 5.0 * normal(&mut rng).abs()
                        }
                    })
                    .collect(),
            ),
            (
                "heavy-tailed (Pareto a=1.2)",
                (0..n)
                    .map(|_| 5.0 / rng.random_range(1e-9..1.0f64).powf(1.0 / 1.2))
                    .collect(),
            ),
        ]
    }

    #[test]
    fn percentiles_are_within_one_percent_for_a_day_and_merged_days() {
        for (name, samples) in distributions() {
            // One day: events of 500 samples each.
            let events: Vec<Event> = samples
                .chunks(500)
                .enumerate()
                .map(|(i, c)| with_samples(at(0, 0) + chrono::Duration::seconds(i as i64), c))
                .collect();
            let day_rollup = Rollup::of_events(day(), &events);
            // Merged period: the same samples spread over 10 days, merged.
            let mut period = Rollup::default();
            for (d, chunk) in samples.chunks(samples.len() / 10).enumerate() {
                let date = day() + chrono::Duration::days(d as i64);
                let ts = date.and_hms_opt(12, 0, 0).unwrap().and_utc();
                period.merge(&Rollup::of_events(date, &[with_samples(ts, chunk)]));
            }
            let mut sorted = samples.clone();
            sorted.sort_by(f64::total_cmp);
            for q in [0.5, 0.95, 0.99] {
                let truth = exact(&sorted, q);
                for (what, got) in [
                    ("day", day_rollup.stats.percentile(q)),
                    ("period", period.stats.percentile(q)),
                ] {
                    let got = got.unwrap();
                    let err = (got - truth).abs() / truth;
                    assert!(
                        err <= 0.01,
                        "{name} {what} p{q}: got {got}, exact {truth}, error {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn mean_of_daily_p95s_is_not_the_period_p95() {
        // A quiet fast day and a busy slow day: the period's p95 is the slow one.
        let fast: Vec<f64> = (0..100).map(|i| 10.0 + (i % 10) as f64).collect();
        let slow: Vec<f64> = (0..10_000).map(|i| 500.0 + (i % 100) as f64).collect();
        let d1 = Rollup::of_events(day(), &[with_samples(at(1, 0), &fast)]);
        let d2 = Rollup::of_events(day(), &[with_samples(at(2, 0), &slow)]);
        let mean_of_p95s =
            (d1.stats.percentile(0.95).unwrap() + d2.stats.percentile(0.95).unwrap()) / 2.0;
        let mut merged = d1.clone();
        merged.merge(&d2);
        let mut all: Vec<f64> = fast.iter().chain(&slow).copied().collect();
        all.sort_by(f64::total_cmp);
        let truth = exact(&all, 0.95);
        let merged_p95 = merged.stats.percentile(0.95).unwrap();
        assert!((merged_p95 - truth).abs() / truth <= 0.01);
        assert!(
            (mean_of_p95s - truth).abs() / truth > 0.3,
            "the averaging mistake would be {mean_of_p95s} vs {truth}"
        );
    }

    #[test]
    fn average_latency_is_request_weighted() {
        let mut a = event(at(1, 0), true);
        a.request_count = 1;
        a.total_latency_ms = Some(1000.0);
        let mut b = event(at(1, 1), true);
        b.request_count = 99;
        b.total_latency_ms = Some(990.0);
        let no_latency = {
            let mut e = event(at(1, 2), true);
            e.request_count = 1000;
            e
        };
        let r = Rollup::of_events(day(), &[a, b, no_latency]);
        assert_eq!(r.stats.average_latency_ms(), Some(19.9));
        assert_eq!(r.stats.request_count, 1100);
        assert_eq!(r.stats.min_latency_ms, None);
    }

    #[test]
    fn uptime_counts_from_registration_and_to_now() {
        let r = Rollup::of_events(day(), &[event(at(12, 2), true), event(at(12, 7), false)]);
        // registered at noon, day over: 144 buckets from noon, one healthy
        let end_of_day = at(23, 59) + chrono::Duration::minutes(5);
        assert_eq!(
            r.uptime_buckets(day(), Some(at(12, 0)), end_of_day),
            Some((1, 144))
        );
        // now = 12:11: buckets 12:00, 12:05, 12:10 (in progress) observed
        assert_eq!(
            r.uptime_buckets(day(), Some(at(12, 0)), at(12, 11)),
            Some((1, 3))
        );
        // now = 12:10:00 exactly: the 12:10 bucket has not begun
        assert_eq!(
            r.uptime_buckets(day(), Some(at(12, 0)), at(12, 10)),
            Some((1, 2))
        );
        // an unhealthy-only bucket is down
        let sick = Rollup::of_events(day(), &[event(at(12, 7), false)]);
        assert_eq!(
            sick.uptime_buckets(day(), Some(at(12, 5)), at(12, 9)),
            Some((0, 1))
        );
        // registered the day before: the whole day is observed
        let before = at(0, 0) - chrono::Duration::hours(3);
        assert_eq!(
            r.uptime_buckets(day(), Some(before), end_of_day),
            Some((1, 288))
        );
        // an event before registration opens the window earlier
        let early = Rollup::of_events(day(), &[event(at(6, 0), true)]);
        assert_eq!(
            early.uptime_buckets(day(), Some(at(12, 0)), end_of_day),
            Some((1, 216))
        );
    }

    #[test]
    fn uptime_without_data() {
        let empty = Rollup::default();
        let end_of_day = at(23, 59) + chrono::Duration::minutes(5);
        // registered, silent all day: 0, not null
        assert_eq!(
            empty.uptime_buckets(
                day(),
                Some(at(0, 0) - chrono::Duration::days(1)),
                end_of_day
            ),
            Some((0, 288))
        );
        // registered after the day: no observed window
        assert_eq!(
            empty.uptime_buckets(
                day(),
                Some(at(0, 0) + chrono::Duration::days(2)),
                end_of_day
            ),
            None
        );
        // a day in the future
        assert_eq!(
            empty.uptime_buckets(
                day(),
                Some(at(0, 0) - chrono::Duration::days(1)),
                at(0, 0) - chrono::Duration::hours(1)
            ),
            None
        );
    }

    #[test]
    fn last_24_hours_uptime_follows_the_contract_rule() {
        let now = at(12, 2);
        let windows = SummaryWindows::at(now);
        let bucket = |h: u32, m: u32, healthy: bool| {
            let e = event(at(h, m), healthy);
            let mut b = Bucket {
                healthy,
                ..Bucket::default()
            };
            b.stats.add(&e);
            (e.timestamp_ms.div_euclid(BUCKET_MS) * BUCKET_MS, b)
        };
        let buckets: BTreeMap<i64, Bucket> = [
            bucket(11, 0, true),
            bucket(11, 5, false),
            bucket(12, 1, true),
        ]
        .into_iter()
        .collect();
        // registered long ago: the 288 buckets up to the one in progress
        let long_ago = Some(at(0, 0) - chrono::Duration::days(3));
        assert_eq!(
            windows.uptime_buckets(&buckets, long_ago, now),
            Some((2, 288))
        );
        // registered at 11:00: 11:00 … 12:00 is 13 buckets, 2 healthy
        assert_eq!(
            windows.uptime_buckets(&buckets, Some(at(11, 0)), now),
            Some((2, 13))
        );
        // an event before the registration opens the window earlier
        assert_eq!(
            windows.uptime_buckets(&buckets, Some(at(11, 30)), now),
            Some((2, 13))
        );
        // registered, silent: 0, not None
        assert_eq!(
            windows.uptime_buckets(&BTreeMap::new(), Some(at(11, 58)), now),
            Some((0, 2))
        );
        // registered now: nothing observed yet
        assert_eq!(
            windows.uptime_buckets(&BTreeMap::new(), Some(now), now),
            None
        );
        // exactly on a bucket's start, the new bucket has not begun
        assert_eq!(
            SummaryWindows::at(at(12, 5)).uptime_buckets(&buckets, Some(at(11, 0)), at(12, 5)),
            Some((2, 13))
        );
    }

    #[test]
    fn top_errors_are_bounded_and_ordered() {
        let mut events = Vec::new();
        for i in 0..40u32 {
            for _ in 0..=i {
                let mut e = event(at(3, 0), true);
                e.error_message = Some(format!("error {i:02}"));
                events.push(e);
            }
        }
        let r = Rollup::of_events(day(), &events);
        let top = r.top_errors();
        assert_eq!(top.len(), 10);
        assert_eq!(top[0], ("error 39".to_string(), 40));
        assert_eq!(top[9], ("error 30".to_string(), 31));
    }

    #[test]
    fn rollups_round_trip_compactly() {
        let samples: Vec<f64> = (0..10_000).map(|i| 1.0 + (i as f64).sqrt() * 7.0).collect();
        let r = Rollup::of_events(day(), &[with_samples(at(5, 0), &samples)]);
        let bytes = crate::storage::encode_body(&r).unwrap();
        assert!(bytes.len() < 2_000, "rollup is {} bytes", bytes.len());
        let back: Rollup = crate::storage::decode_body(&bytes).unwrap();
        assert_eq!(back.stats.percentile(0.99), r.stats.percentile(0.99));
        assert_eq!(
            back.uptime_buckets(day(), None, at(23, 0)),
            r.uptime_buckets(day(), None, at(23, 0))
        );
    }
}

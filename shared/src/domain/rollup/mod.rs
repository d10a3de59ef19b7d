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

mod memory;
mod part;
mod stats;
#[cfg(test)]
mod tests;
mod windows;

pub use memory::btree_heap_bytes;
pub use part::{Bucket, DayPart, PartDims, bound_errors, fold_events, is_other};
pub use stats::Stats;
pub use windows::SummaryWindows;

use super::dimensions::{StatusCounts, add_status};
use super::event::Event;
use part::count_error;

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

/// Everything a day's figures are computed from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rollup {
    pub stats: Stats,
    /// One bit per five-minute bucket of the day holding a healthy event.
    pub healthy_buckets: Vec<u64>,
    /// errorMessage → number of events carrying it (bounded).
    pub errors: BTreeMap<String, u64>,
    /// Requests by status class (v3). Stored after the fields above (see
    /// `storage::codec`), so days written before v3 still decode.
    #[serde(skip)]
    pub status: StatusCounts,
}

impl Rollup {
    /// Adds what one request added to this day.
    pub fn merge_part(&mut self, part: &DayPart) {
        add_status(&mut self.status, &part.dims.status);
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
        add_status(&mut self.status, &other.status);
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

    /// Bytes held on the heap (an estimate within a small factor); the
    /// inline part is `size_of::<Rollup>()`.
    pub fn heap_bytes(&self) -> usize {
        self.stats.heap_bytes()
            + self.healthy_buckets.capacity() * std::mem::size_of::<u64>()
            + memory::errors_heap_bytes(&self.errors)
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
        let events: Vec<&Event> = events.into_iter().collect();
        let keys = part::keys_given(&events);
        let mut part = DayPart::default();
        for e in events {
            part.add(e, start, &keys);
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

//! What one request adds to a day: five-minute [`Bucket`]s and error counts.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::memory::{btree_heap_bytes, errors_heap_bytes};
use super::{
    BUCKET_MS, BUCKETS_PER_DAY, ERROR_MESSAGES_KEPT, ERROR_TEXT_KEPT_BYTES, Stats, day_start_ms,
};
use crate::domain::event::Event;

/// One five-minute bucket of one proxy's day.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub stats: Stats,
    /// At least one event in the bucket reported the proxy healthy.
    pub healthy: bool,
}

impl Bucket {
    /// Bytes held on the heap; the inline part is `size_of::<Bucket>()`.
    pub fn heap_bytes(&self) -> usize {
        self.stats.heap_bytes()
    }

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

    /// Bytes held on the heap (an estimate within a small factor: the map
    /// nodes are estimated, see [`btree_heap_bytes`]); the inline part is
    /// `size_of::<DayPart>()`.
    pub fn heap_bytes(&self) -> usize {
        btree_heap_bytes::<u16, Bucket>(self.buckets.len())
            + self.buckets.values().map(Bucket::heap_bytes).sum::<usize>()
            + errors_heap_bytes(&self.errors)
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

pub(super) fn count_error(errors: &mut BTreeMap<String, u64>, message: &str, n: u64) {
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

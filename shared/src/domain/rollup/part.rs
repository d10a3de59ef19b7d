//! What one request adds to a day: five-minute [`Bucket`]s and error counts.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::memory::{btree_heap_bytes, errors_heap_bytes};
use super::{
    BUCKET_MS, BUCKETS_PER_DAY, ERROR_MESSAGES_KEPT, ERROR_TEXT_KEPT_BYTES, Stats, day_start_ms,
};
use crate::domain::dimensions::{
    DimensionKey, KeyValues, NONE_VALUE, OTHER_VALUE, StatusCounts, add_status,
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
    /// Status classes and dimensions (v3). Stored after the fields above
    /// (see `storage::codec`), so parts written before v3 still decode.
    #[serde(skip)]
    pub dims: PartDims,
}

/// What a part holds of status classes and dimensions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartDims {
    pub status: StatusCounts,
    /// The pages the day's values are stored in, by the owner's tier when
    /// recorded ([`crate::domain::dimensions::dimension_pages`]; 0 means 1).
    pub pages: u8,
    /// Set on the pieces of a split part: a key a piece lacks holds none of
    /// its events (another piece has them). Otherwise a key the part lacks
    /// holds all its events under `(none)`: a proxy that sends no
    /// dimensions stores nothing more than before v3.
    pub explicit: bool,
    pub keys: BTreeMap<DimensionKey, KeyValues>,
    /// Whether a part without keys still counts its events under `(none)`
    /// in the day's dimension pages: set on the chunks of a proxy that has
    /// sent dimensions (the chunk item's `paged` attribute, not the body).
    /// Until then a proxy's parts write no pages at all, so a proxy that
    /// sends none pays nothing for them; its breakdowns read the day items.
    #[serde(skip)]
    pub paged: bool,
}

impl PartDims {
    pub fn is_empty(&self) -> bool {
        *self == PartDims::default()
    }

    pub fn heap_bytes(&self) -> usize {
        btree_heap_bytes::<DimensionKey, KeyValues>(self.keys.len())
            + self.keys.values().map(KeyValues::heap_bytes).sum::<usize>()
    }
}

impl DayPart {
    /// Adds one event of the day starting at `day_start_ms`; `keys` are the
    /// dimension keys any event of the part gives (an event without one of
    /// them counts under `(none)` there). See [`fold_events`].
    pub(super) fn add(&mut self, event: &Event, day_start_ms: i64, keys: &BTreeSet<DimensionKey>) {
        add_status(&mut self.dims.status, &event.status_counts());
        for key in keys {
            let values = self.dims.keys.entry(*key).or_default();
            let value = event.dimensions.value_of(*key);
            match values.values.get_mut(value) {
                Some(stats) => stats.add(event),
                None => {
                    let mut stats = Stats::default();
                    stats.add(event);
                    values.values.insert(value.to_string(), stats);
                }
            }
            if let Some(hash) = event.dimensions.overflowed(*key) {
                values.add_other_hashes([hash]);
            }
        }
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
            + self.dims.heap_bytes()
    }

    /// All the part's events, merged.
    pub fn total(&self) -> Stats {
        let mut total = Stats::default();
        for bucket in self.buckets.values() {
            total.merge(&bucket.stats);
        }
        total
    }

    /// What the part holds of `key`: its values, or — when it gives none
    /// and is not a piece of a split part — all its events under `(none)`.
    pub fn dimension(&self, key: DimensionKey) -> Option<Cow<'_, KeyValues>> {
        if let Some(values) = self.dims.keys.get(&key) {
            return Some(Cow::Borrowed(values));
        }
        if self.dims.explicit || self.buckets.is_empty() {
            return None;
        }
        let mut values = KeyValues::default();
        values.values.insert(NONE_VALUE.to_string(), self.total());
        Some(Cow::Owned(values))
    }

    pub fn event_count(&self) -> u64 {
        self.buckets.values().map(|b| b.stats.event_count).sum()
    }

    pub fn merge(&mut self, other: &DayPart) {
        // Dimensions first (an implicit `(none)` is the part's total before
        // the merge). A piece of a split part makes the result explicit.
        let explicit = self.dims.explicit || other.dims.explicit;
        let mut dims = PartDims {
            status: self.dims.status,
            pages: self.dims.pages.max(other.dims.pages),
            explicit,
            keys: BTreeMap::new(),
            paged: self.dims.paged || other.dims.paged,
        };
        add_status(&mut dims.status, &other.dims.status);
        for key in DimensionKey::ALL {
            let both_implicit = !explicit
                && !self.dims.keys.contains_key(&key)
                && !other.dims.keys.contains_key(&key);
            if both_implicit {
                continue;
            }
            let (mine, theirs) = (self.dimension(key), other.dimension(key));
            if mine.is_none() && theirs.is_none() {
                continue;
            }
            let mut merged = mine.map(Cow::into_owned).unwrap_or_default();
            if let Some(theirs) = theirs {
                merged.merge(&theirs);
            }
            dims.keys.insert(key, merged);
        }
        self.dims = dims;
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
/// An event's dimension values are taken as given: the record path has
/// already sent values past the cardinality cap to `__other__`.
pub fn fold_events<'a>(
    events: impl IntoIterator<Item = &'a Event>,
) -> BTreeMap<NaiveDate, DayPart> {
    let mut by_day: BTreeMap<NaiveDate, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_day.entry(event.day()).or_default().push(event);
    }
    let mut days: BTreeMap<NaiveDate, DayPart> = BTreeMap::new();
    for (day, events) in by_day {
        let keys = keys_given(&events);
        let part = days.entry(day).or_default();
        for event in events {
            part.add(event, day_start_ms(day), &keys);
        }
        bound_errors(&mut part.errors);
    }
    days
}

/// The dimension keys any of `events` gives.
pub(super) fn keys_given(events: &[&Event]) -> BTreeSet<DimensionKey> {
    DimensionKey::ALL
        .into_iter()
        .filter(|k| events.iter().any(|e| e.dimensions.get(*k).is_some()))
        .collect()
}

/// `__other__` is a value like any other in a part; this names it.
pub fn is_other(value: &str) -> bool {
    value == OTHER_VALUE
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

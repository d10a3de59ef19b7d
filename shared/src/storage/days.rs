//! Reading days and buckets: the materialised items plus whatever pending
//! chunks they do not hold yet (read-your-writes), exactly, whatever the
//! timing of the aggregation.
//!
//! Every materialised item (a day, a five-minute bucket) records in
//! `folded` which chunks it holds and whose deletion it has not yet seen.
//! The aggregation writes an item (adding chunks), then moves the proxy's
//! fold epoch, then deletes those chunks; it drops a chunk from `folded`
//! only after its deletion. A read takes, in this order:
//!
//! 1. the fold epoch (E0; the ownership read's proxy item carries it),
//! 2. the items (I) and the pending chunks of the same days (P), in either
//!    order or at once (two queries in flight together: one round trip, not
//!    two, which is most of a cold read's first response),
//! 3. the fold epoch again (E1),
//!
//! and adds a chunk of P to an item of I unless the item's `folded` names it.
//! Each item and chunk is seen at one instant, after E0 and before E1; for a
//! chunk `c` and the item of its day, either was seen first.
//! - Never twice: counting `c` twice needs it seen in P and an item, seen in
//!   I, that holds it without naming it in `folded`. An entry leaves
//!   `folded` only after the chunk's deletion and an epoch move, in that
//!   order (`fold.rs`): `c` seen pending, then deleted, then the epoch
//!   moved, then the item seen — the move lies between E0 and E1, and the
//!   read is taken again.
//! - Never missed: `c` recorded before E0, not seen in P, was deleted
//!   before P saw its place, so it was folded (item written, epoch moved)
//!   before that. If I came after, the item holds it (items only gain
//!   chunks). If I came first and missed it, the item was written after I,
//!   the epoch moved after it and before P: between E0 and E1, and the read
//!   is taken again.
//!
//! A read starts I and P together and keeps up to [`EARLY_PENDING_BYTES`]
//! of chunks while the items arrive; past that it drops them and reads P
//! again after I, streaming (the order above is exact either way).
//!
//! Memory stays bounded whatever the backlog: items are read a month at a
//! time, pending chunks a page at a time, each decoded, added and dropped.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::codec::StoredBody;
use super::error::StorageError;
use super::keys::{self, day_key, parse_day_key};
use super::pending::PendingChunk;
use super::proxies::Proxy;
use super::{Store, get_blob, get_n, get_s};
use crate::domain::rollup::{Bucket, Rollup, day_start_ms};

/// Attempts at a read whose epoch moved under it (the aggregation folded
/// the days it reads meanwhile) before answering 503.
pub(super) const READ_ATTEMPTS: u32 = 4;
/// Days of items read at once (then their pending chunks) when a range's
/// items outgrow [`READ_ITEMS_BUDGET_BYTES`]; a range within it is read in
/// one window (two queries whatever its length).
const READ_WINDOW_DAYS: i64 = 31;
/// Item bytes a read holds at once before it falls back to windows.
pub const READ_ITEMS_BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// A read answers 503 rather than decode more pending chunks than this: the
/// aggregation is that far behind, and it will catch up (reads are bounded
/// in time and memory whatever the backlog).
pub const READ_PENDING_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Pending chunks a read keeps while its items query is in flight (about
/// one query page); a larger backlog is read after the items, streaming.
pub const EARLY_PENDING_BYTES: usize = 1024 * 1024;

/// Where a read hands the days it found, in order (days without events are
/// not handed). A read that has to start again calls `reset` first.
pub trait DaySink {
    fn reset(&mut self);
    fn day(&mut self, day: NaiveDate, rollup: Rollup) -> Result<(), StorageError>;
}

impl DaySink for BTreeMap<NaiveDate, Rollup> {
    fn reset(&mut self) {
        self.clear();
    }

    fn day(&mut self, day: NaiveDate, rollup: Rollup) -> Result<(), StorageError> {
        self.insert(day, rollup);
        Ok(())
    }
}

/// Which chunks an item holds: sort keys and when they were folded in (ms).
pub type Folded = Vec<(String, i64)>;

/// A materialised day as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredDay {
    pub rollup: Rollup,
    pub folded: Folded,
}

/// A materialised five-minute bucket as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredBucket {
    pub bucket: Bucket,
    pub folded: Folded,
}

/// An item with the version its next write is conditioned on.
#[derive(Debug, Clone, Default)]
pub struct Versioned<T> {
    pub value: T,
    /// 0 when the item does not exist yet.
    pub version: u64,
}

/// Whether `folded` names the chunk of `sort_key` (by identity: a chunk
/// moved from the v2 layout is recognised under its v2 key).
pub(super) fn holds(folded: &Folded, sort_key: &str) -> bool {
    let identity = keys::chunk_identity(sort_key);
    folded
        .iter()
        .any(|(k, _)| keys::chunk_identity(k) == identity)
}

/// The identities an item's `folded` names.
pub(super) fn identities(folded: &Folded) -> HashSet<&str> {
    folded
        .iter()
        .map(|(k, _)| keys::chunk_identity(k))
        .collect()
}

impl Store {
    /// Materialised days of `[start, end]`; an item that cannot be decoded
    /// is left out (and logged).
    pub async fn stored_days(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Versioned<StoredDay>>, StorageError> {
        Ok(self
            .stored_days_within(proxy_id, start, end, usize::MAX)
            .await?
            .unwrap_or_default())
    }

    /// [`Store::stored_days`], or `None` once the items pass `max_bytes`.
    async fn stored_days_within(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
        max_bytes: usize,
    ) -> Result<Option<BTreeMap<NaiveDate, Versioned<StoredDay>>>, StorageError> {
        let mut out = BTreeMap::new();
        let mut bytes = 0usize;
        let outcome = self
            .query_each(
                keys::day_partition(proxy_id),
                Some((day_key(start), day_key(end))),
                "read days",
                |item| {
                    bytes += get_blob(item, "body").map_or(0, <[u8]>::len);
                    if bytes > max_bytes {
                        return Err(StorageError::TooLarge(String::new()));
                    }
                    if let Some(key) = get_s(item, keys::SK)
                        && let Some(day) = parse_day_key(key)
                        && let Some(value) = readable(proxy_id, key, versioned::<StoredDay>(item))
                    {
                        out.insert(day, value);
                    }
                    Ok(())
                },
            )
            .await;
        match outcome {
            Ok(()) => Ok(Some(out)),
            Err(StorageError::TooLarge(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Materialised buckets from `(from_day, from)` to `(to_day, to)`, inclusive.
    pub async fn stored_buckets(
        &self,
        proxy_id: &str,
        from: (NaiveDate, u16),
        to: (NaiveDate, u16),
    ) -> Result<BTreeMap<(NaiveDate, u16), Versioned<StoredBucket>>, StorageError> {
        let mut out = BTreeMap::new();
        self.query_each(
            keys::bucket_partition(proxy_id),
            Some((
                keys::bucket_sort_key(from.0, from.1),
                keys::bucket_sort_key(to.0, to.1),
            )),
            "read buckets",
            |item| {
                if let Some(key) = get_s(item, keys::SK)
                    && let Some(at) = keys::parse_bucket_sort_key(key)
                    && let Some(value) = readable(proxy_id, key, versioned::<StoredBucket>(item))
                {
                    out.insert(at, value);
                }
                Ok(())
            },
        )
        .await?;
        Ok(out)
    }

    /// Every day of `[start, end]` that has events, in order, to `sink`,
    /// reflecting every event recorded before the call (see the module's
    /// comment). `proxy` must come from a strongly consistent read made
    /// before this call (its fold epoch is E0).
    pub async fn read_days_into(
        &self,
        proxy: &Proxy,
        start: NaiveDate,
        end: NaiveDate,
        sink: &mut impl DaySink,
    ) -> Result<(), StorageError> {
        let proxy_id = proxy.proxy_id.as_str();
        let mut epoch = proxy.fold_epoch;
        for _ in 0..READ_ATTEMPTS {
            sink.reset();
            let mut budget = PendingBudget::default();
            // The whole range at once when its items fit the budget, with
            // its pending chunks in the same round trip when they are few.
            // Boxed: the SDK's futures are large, and two side by side in
            // a debug build overflowed a 2 MB stack.
            let (whole, early) = futures::join!(
                Box::pin(self.stored_days_within(proxy_id, start, end, READ_ITEMS_BUDGET_BYTES)),
                Box::pin(self.pending_within(proxy_id, start, end, EARLY_PENDING_BYTES)),
            );
            let mut whole = whole?;
            let mut early = early?;
            let window = if whole.is_some() {
                (end - start).num_days() + 1
            } else {
                READ_WINDOW_DAYS
            };
            let mut from = start;
            while from <= end {
                let to = end.min(from + chrono::Duration::days(window - 1));
                let (stored, chunks) = match whole.take() {
                    Some(stored) => (stored, early.take()),
                    None => (self.stored_days(proxy_id, from, to).await?, None),
                };
                let days = match chunks {
                    Some(chunks) => merge_pending(proxy_id, &stored, chunks, &mut budget)?,
                    None => {
                        self.add_pending(proxy_id, from, to, &stored, &mut budget)
                            .await?
                    }
                };
                for (day, rollup) in days {
                    sink.day(day, rollup)?;
                }
                from = to + chrono::Duration::days(1);
            }
            let now = self.fold_epoch(proxy_id).await?;
            if now == epoch {
                return Ok(());
            }
            tracing::info!(
                proxy_id,
                "the days were folded during the read; reading again"
            );
            epoch = now;
        }
        Err(StorageError::Unavailable(format!(
            "{proxy_id}: the days kept being folded during the read"
        )))
    }

    /// Step P of a read, streaming: the items of `[from, to]` (read before)
    /// plus the pending chunks of those days that no item names.
    async fn add_pending(
        &self,
        proxy_id: &str,
        from: NaiveDate,
        to: NaiveDate,
        stored: &BTreeMap<NaiveDate, Versioned<StoredDay>>,
        budget: &mut PendingBudget,
    ) -> Result<BTreeMap<NaiveDate, Rollup>, StorageError> {
        let mut merge = PendingMerge::new(stored);
        self.visit_pending(proxy_id, from, to, |chunk| {
            merge.add(proxy_id, budget, &chunk)
        })
        .await?;
        Ok(merge.days)
    }

    /// Step P of a read, kept: the pending chunks of `[from, to]`, or `None`
    /// once they pass `max_bytes` (then read them again after the items).
    pub(super) async fn pending_within(
        &self,
        proxy_id: &str,
        from: NaiveDate,
        to: NaiveDate,
        max_bytes: usize,
    ) -> Result<Option<Vec<PendingChunk>>, StorageError> {
        let mut chunks = Vec::new();
        let mut bytes = 0usize;
        // On a connection of its own: it is sent beside the items query.
        let outcome = self
            .visit_pending_on(proxy_id, from, to, true, |chunk| {
                bytes += chunk.stored_bytes();
                if bytes > max_bytes {
                    return Err(StorageError::TooLarge(String::new()));
                }
                chunks.push(chunk);
                Ok(())
            })
            .await;
        match outcome {
            Ok(()) => Ok(Some(chunks)),
            Err(StorageError::TooLarge(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every day of `[start, end]` that has events (see [`Store::read_days_into`]).
    pub async fn read_days(
        &self,
        proxy: &Proxy,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Rollup>, StorageError> {
        let mut days = BTreeMap::new();
        self.read_days_into(proxy, start, end, &mut days).await?;
        Ok(days)
    }
}

/// The items of a read plus the pending chunks no item names (the end of
/// step P, whichever of I and P came first).
fn merge_pending(
    proxy_id: &str,
    stored: &BTreeMap<NaiveDate, Versioned<StoredDay>>,
    chunks: Vec<PendingChunk>,
    budget: &mut PendingBudget,
) -> Result<BTreeMap<NaiveDate, Rollup>, StorageError> {
    let mut merge = PendingMerge::new(stored);
    for chunk in chunks {
        merge.add(proxy_id, budget, &chunk)?;
    }
    Ok(merge.days)
}

/// Days being built from their items and the pending chunks they lack.
struct PendingMerge<'a> {
    days: BTreeMap<NaiveDate, Rollup>,
    folded: HashMap<NaiveDate, HashSet<&'a str>>,
}

impl<'a> PendingMerge<'a> {
    fn new(stored: &'a BTreeMap<NaiveDate, Versioned<StoredDay>>) -> Self {
        Self {
            days: stored
                .iter()
                .map(|(day, item)| (*day, item.value.rollup.clone()))
                .collect(),
            folded: stored
                .iter()
                .map(|(day, item)| (*day, identities(&item.value.folded)))
                .collect(),
        }
    }

    fn add(
        &mut self,
        proxy_id: &str,
        budget: &mut PendingBudget,
        chunk: &PendingChunk,
    ) -> Result<(), StorageError> {
        budget.take(proxy_id, chunk)?;
        if self
            .folded
            .get(&chunk.day)
            .is_some_and(|f| f.contains(chunk.identity()))
        {
            return Ok(());
        }
        if let Some(part) = budget.decode(proxy_id, chunk) {
            self.days.entry(chunk.day).or_default().merge_part(&part);
        }
        Ok(())
    }
}

/// What one read may decode of pending chunks, and what it skipped.
#[derive(Default)]
pub(super) struct PendingBudget {
    bytes: usize,
}

impl PendingBudget {
    pub(super) fn take(
        &mut self,
        proxy_id: &str,
        chunk: &PendingChunk,
    ) -> Result<(), StorageError> {
        self.bytes += chunk.stored_bytes();
        if self.bytes > READ_PENDING_BUDGET_BYTES {
            return Err(StorageError::Unavailable(format!(
                "{proxy_id}: more than {READ_PENDING_BUDGET_BYTES} bytes of pending chunks; \
                 the aggregation is behind"
            )));
        }
        Ok(())
    }

    /// The chunk's part; a chunk that cannot be decoded is skipped, logged at
    /// error level (the aggregation quarantines it), never a failed read.
    pub(super) fn decode(
        &mut self,
        proxy_id: &str,
        chunk: &PendingChunk,
    ) -> Option<crate::domain::rollup::DayPart> {
        match chunk.part() {
            Ok(part) => Some(part),
            Err(e) => {
                tracing::error!(proxy_id, chunk = %chunk.sort_key, error = %e, "unreadable pending chunk left out of a read");
                None
            }
        }
    }
}

/// The bucket an instant falls in.
pub fn bucket_of(at: DateTime<Utc>) -> (NaiveDate, u16) {
    let day = at.date_naive();
    let index =
        ((at.timestamp_millis() - day_start_ms(day)) / crate::domain::rollup::BUCKET_MS) as u16;
    (day, index)
}

fn versioned<T: StoredBody + Default>(
    item: &HashMap<String, AttributeValue>,
) -> Result<Versioned<T>, StorageError> {
    let body = get_blob(item, "body")
        .ok_or_else(|| StorageError::Corrupt("materialised item without body".into()))?;
    Ok(Versioned {
        value: T::decode(body).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        version: get_n(item, "v").unwrap_or(0),
    })
}

/// A read meets an item it cannot decode: it is left out of the answer and
/// logged at error level (the aggregation fails on its day, and quarantines
/// it), rather than failing every read of the proxy.
fn readable<T>(proxy_id: &str, key: &str, item: Result<T, StorageError>) -> Option<T> {
    match item {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::error!(proxy_id, key, error = %e, "unreadable item left out of a read");
            None
        }
    }
}

/// One read of days taken step by step as [`Store::read_days_into`] takes
/// them (E0 given, then I and P in either order — at once, in the function
/// — then E1), for tests that interleave other work between the steps.
pub struct DaysRead {
    proxy_id: String,
    start: NaiveDate,
    end: NaiveDate,
    epoch: u64,
    stored: BTreeMap<NaiveDate, Versioned<StoredDay>>,
    chunks: Vec<PendingChunk>,
}

impl DaysRead {
    /// Step E0 done by the caller: `epoch` read before this.
    pub fn new(proxy_id: &str, start: NaiveDate, end: NaiveDate, epoch: u64) -> Self {
        Self {
            proxy_id: proxy_id.to_string(),
            start,
            end,
            epoch,
            stored: BTreeMap::new(),
            chunks: Vec::new(),
        }
    }

    /// Step I.
    pub async fn items(&mut self, store: &Store) -> Result<(), StorageError> {
        self.stored = store
            .stored_days(&self.proxy_id, self.start, self.end)
            .await?;
        Ok(())
    }

    /// Step P (before or after step I).
    pub async fn pending(&mut self, store: &Store) -> Result<(), StorageError> {
        self.chunks = store
            .pending_within(&self.proxy_id, self.start, self.end, usize::MAX)
            .await?
            .unwrap_or_default();
        Ok(())
    }

    /// Step E1, after I and P: the days, or `None` when the epoch moved
    /// (read again).
    pub async fn finish(
        self,
        store: &Store,
    ) -> Result<Option<BTreeMap<NaiveDate, Rollup>>, StorageError> {
        let now = store.fold_epoch(&self.proxy_id).await?;
        if now != self.epoch {
            return Ok(None);
        }
        let mut budget = PendingBudget::default();
        merge_pending(&self.proxy_id, &self.stored, self.chunks, &mut budget).map(Some)
    }
}

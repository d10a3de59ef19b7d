//! Reading days and buckets: the materialised items plus whatever pending
//! chunks they do not hold yet (read-your-writes).
//!
//! Every materialised item (a day, a five-minute bucket) records which
//! chunks it holds (`folded`: their sort keys, for a while after folding),
//! and a chunk records which of its days are folded. A read takes the
//! proxy's pending chunks first, then the items, and adds a chunk's part to
//! an item only if neither says it is already in: whichever way a fold
//! races the read, each part is counted once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::codec::decode_body;
use super::keys::{self, day_key, parse_day_key};
use super::record::ChunkBody;
use super::{Store, get_blob, get_n, get_s};
use crate::domain::rollup::{Bucket, DayPart, Rollup, bucket_start_ms, day_start_ms};
use crate::error::ApiError;

/// A read whose two queries lie further apart than this is taken again: the
/// `folded` records it relies on are kept at least twice as long.
const MAX_READ_SPAN: Duration = Duration::from_secs(60);

/// A chunk as read from the pending partition.
#[derive(Debug, Clone)]
pub struct PendingChunk {
    pub sort_key: String,
    pub proxy_id: String,
    /// Raw retention (days) of the owner's tier when it was recorded.
    pub retention_days: i64,
    /// Days of this chunk already folded into their items.
    pub folded_days: BTreeSet<NaiveDate>,
    /// Its day parts, still encoded; `Err` if the chunk cannot be read at all.
    pub parts: Result<Vec<(NaiveDate, Vec<u8>)>, String>,
    /// Stored size, for the aggregation's budget.
    pub bytes: usize,
}

impl PendingChunk {
    pub(super) fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        let sort_key = get_s(item, keys::SK)?.to_string();
        let proxy_id = keys::proxy_of_pending(&sort_key)?.to_string();
        let body = get_blob(item, "body").unwrap_or_default();
        let parts = decode_body::<ChunkBody>(body)
            .map_err(|e| e.to_string())
            .and_then(|parts| {
                parts
                    .into_iter()
                    .map(|(day, bytes)| {
                        parse_day_key(&day)
                            .map(|d| (d, bytes))
                            .ok_or_else(|| format!("chunk names no day: {day:?}"))
                    })
                    .collect()
            });
        let folded_days = item
            .get("foldedDays")
            .and_then(|v| v.as_ss().ok())
            .map(|days| days.iter().filter_map(|d| parse_day_key(d)).collect())
            .unwrap_or_default();
        Some(Self {
            bytes: body.len() + sort_key.len() + 64,
            sort_key,
            proxy_id,
            retention_days: get_n(item, "retention").map_or(7, |d| d as i64),
            folded_days,
            parts,
        })
    }

    /// The chunk's parts, or why it cannot be read (a reader must not
    /// answer without it: that would be a wrong number, not a missing one).
    pub fn readable(&self) -> Result<(), ApiError> {
        self.parts.as_ref().map(|_| ()).map_err(|e| {
            ApiError::Internal(format!("pending chunk {} unreadable: {e}", self.sort_key))
        })
    }

    /// The days this chunk has parts for (none if it cannot be read).
    pub fn days(&self) -> Vec<NaiveDate> {
        self.parts
            .as_ref()
            .map(|p| p.iter().map(|(d, _)| *d).collect())
            .unwrap_or_default()
    }

    /// The decoded part for `day`, if the chunk has one.
    pub fn part(&self, day: NaiveDate) -> Result<Option<DayPart>, ApiError> {
        let parts = self.parts.as_ref().map_err(|e| {
            ApiError::Internal(format!("pending chunk {} unreadable: {e}", self.sort_key))
        })?;
        parts
            .iter()
            .find(|(d, _)| *d == day)
            .map(|(_, bytes)| decode_body::<DayPart>(bytes))
            .transpose()
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

pub(super) fn holds(folded: &Folded, sort_key: &str) -> bool {
    folded.iter().any(|(k, _)| k == sort_key)
}

impl Store {
    /// Every pending chunk of a proxy (all days), strongly consistent.
    pub async fn pending_chunks_of(&self, proxy_id: &str) -> Result<Vec<PendingChunk>, ApiError> {
        let shard = keys::pending_shard(proxy_id);
        let items = self
            .query_prefix(
                keys::pending_partition(shard),
                keys::pending_prefix(proxy_id),
                "read pending chunks",
            )
            .await?;
        Ok(items.iter().filter_map(PendingChunk::from_item).collect())
    }

    /// Materialised days of `[start, end]`.
    pub async fn stored_days(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Versioned<StoredDay>>, ApiError> {
        let items = self
            .query_all(
                keys::day_partition(proxy_id),
                Some((day_key(start), day_key(end))),
                "read days",
            )
            .await?;
        let mut out = BTreeMap::new();
        for item in &items {
            if let Some(day) = get_s(item, keys::SK).and_then(parse_day_key) {
                out.insert(day, versioned::<StoredDay>(item)?);
            }
        }
        Ok(out)
    }

    /// Materialised buckets from `(from_day, from)` to `(to_day, to)`, inclusive.
    pub async fn stored_buckets(
        &self,
        proxy_id: &str,
        from: (NaiveDate, u16),
        to: (NaiveDate, u16),
    ) -> Result<BTreeMap<(NaiveDate, u16), Versioned<StoredBucket>>, ApiError> {
        let items = self
            .query_all(
                keys::bucket_partition(proxy_id),
                Some((
                    keys::bucket_sort_key(from.0, from.1),
                    keys::bucket_sort_key(to.0, to.1),
                )),
                "read buckets",
            )
            .await?;
        let mut out = BTreeMap::new();
        for item in &items {
            if let Some(at) = get_s(item, keys::SK).and_then(keys::parse_bucket_sort_key) {
                out.insert(at, versioned::<StoredBucket>(item)?);
            }
        }
        Ok(out)
    }

    /// Every day of `[start, end]` that has events, reflecting every event
    /// recorded before the call. Two queries: the proxy's pending chunks,
    /// then its materialised days.
    pub async fn read_days(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Rollup>, ApiError> {
        let (pending, stored) = self
            .consistent_pair(
                || self.pending_chunks_of(proxy_id),
                || self.stored_days(proxy_id, start, end),
            )
            .await?;
        combine_days(&pending, &stored, start, end)
    }

    /// The five-minute buckets whose start lies in `[from, to]`, reflecting
    /// every event recorded before the call (keyed by their start, ms).
    pub async fn read_buckets(
        &self,
        proxy_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<i64, Bucket>, ApiError> {
        let first = bucket_of(from);
        let last = bucket_of(to);
        let (pending, stored) = self
            .consistent_pair(
                || self.pending_chunks_of(proxy_id),
                || self.stored_buckets(proxy_id, first, last),
            )
            .await?;
        combine_buckets(&pending, &stored, first, last)
    }

    /// What a scrape needs of one proxy, reflecting every event recorded
    /// before the call: `today`'s day, the five-minute buckets whose start
    /// lies in `[from, to]`, and — only when neither holds an event — the
    /// `lookback_days` days before `today` (to find the latest event). The
    /// pending chunks are read once for all: three queries, four with the
    /// lookback.
    pub async fn read_recent(
        &self,
        proxy_id: &str,
        today: NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lookback_days: i64,
    ) -> Result<Recent, ApiError> {
        let first = bucket_of(from);
        let last = bucket_of(to);
        loop {
            let started = Instant::now();
            let pending = self.pending_chunks_of(proxy_id).await?;
            let (stored_today, stored_buckets) = futures::try_join!(
                self.stored_days(proxy_id, today, today),
                self.stored_buckets(proxy_id, first, last),
            )?;
            let mut days = combine_days(&pending, &stored_today, today, today)?;
            let buckets = combine_buckets(&pending, &stored_buckets, first, last)?;
            let seen = days.values().any(|d| d.stats.last_event_ms.is_some())
                || buckets.values().any(|b| b.stats.last_event_ms.is_some());
            if !seen && lookback_days > 0 {
                let start = today - chrono::Duration::days(lookback_days);
                let end = today - chrono::Duration::days(1);
                let stored_older = self.stored_days(proxy_id, start, end).await?;
                days.extend(combine_days(&pending, &stored_older, start, end)?);
            }
            if started.elapsed() <= MAX_READ_SPAN {
                return Ok(Recent { days, buckets });
            }
            tracing::warn!("a read took over {MAX_READ_SPAN:?}; reading again");
        }
    }

    /// Runs the pending-chunks query, then the items query, again if they
    /// lay too far apart for the `folded` records to be trusted.
    async fn consistent_pair<A, B, FA, FB, QA, QB>(
        &self,
        first: QA,
        second: QB,
    ) -> Result<(A, B), ApiError>
    where
        QA: Fn() -> FA,
        QB: Fn() -> FB,
        FA: std::future::Future<Output = Result<A, ApiError>>,
        FB: std::future::Future<Output = Result<B, ApiError>>,
    {
        loop {
            let started = Instant::now();
            let a = first().await?;
            let b = second().await?;
            if started.elapsed() <= MAX_READ_SPAN {
                return Ok((a, b));
            }
            tracing::warn!("a read took over {MAX_READ_SPAN:?}; reading again");
        }
    }
}

/// A reader's view of `[start, end]`: the materialised days, plus each
/// pending chunk's part for a day unless the chunk or the day item says it
/// is already in. `pending` must have been read before `stored`.
pub fn combine_days(
    pending: &[PendingChunk],
    stored: &BTreeMap<NaiveDate, Versioned<StoredDay>>,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<BTreeMap<NaiveDate, Rollup>, ApiError> {
    let mut out: BTreeMap<NaiveDate, Rollup> = stored
        .iter()
        .map(|(day, item)| (*day, item.value.rollup.clone()))
        .collect();
    for chunk in pending {
        chunk.readable()?;
        for day in chunk.days() {
            if day < start || day > end || chunk.folded_days.contains(&day) {
                continue;
            }
            if stored
                .get(&day)
                .is_some_and(|s| holds(&s.value.folded, &chunk.sort_key))
            {
                continue;
            }
            if let Some(part) = chunk.part(day)? {
                out.entry(day).or_default().merge_part(&part);
            }
        }
    }
    Ok(out)
}

/// A reader's view of the buckets from `first` to `last` (inclusive), keyed
/// by their start (ms): the materialised buckets, plus each pending chunk's
/// part of a bucket unless the chunk or the bucket item says it is already
/// in. `pending` must have been read before `stored`.
pub fn combine_buckets(
    pending: &[PendingChunk],
    stored: &BTreeMap<(NaiveDate, u16), Versioned<StoredBucket>>,
    first: (NaiveDate, u16),
    last: (NaiveDate, u16),
) -> Result<BTreeMap<i64, Bucket>, ApiError> {
    let mut out: BTreeMap<i64, Bucket> = BTreeMap::new();
    for ((day, index), item) in stored {
        out.insert(bucket_start_ms(*day, *index), item.value.bucket.clone());
    }
    for chunk in pending {
        chunk.readable()?;
        for day in chunk.days() {
            if day < first.0 || day > last.0 || chunk.folded_days.contains(&day) {
                continue;
            }
            let Some(part) = chunk.part(day)? else {
                continue;
            };
            for (index, bucket) in &part.buckets {
                let at = (day, *index);
                if at < first || at > last {
                    continue;
                }
                if stored
                    .get(&at)
                    .is_some_and(|s| holds(&s.value.folded, &chunk.sort_key))
                {
                    continue;
                }
                out.entry(bucket_start_ms(day, *index))
                    .or_default()
                    .merge(bucket);
            }
        }
    }
    Ok(out)
}

/// What [`Store::read_recent`] read of one proxy.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    /// Today's day (if it has events) and, when the lookback ran, the
    /// earlier days that have events.
    pub days: BTreeMap<NaiveDate, Rollup>,
    /// Five-minute buckets keyed by their start (ms).
    pub buckets: BTreeMap<i64, Bucket>,
}

/// The bucket an instant falls in.
pub fn bucket_of(at: DateTime<Utc>) -> (NaiveDate, u16) {
    let day = at.date_naive();
    let index =
        ((at.timestamp_millis() - day_start_ms(day)) / crate::domain::rollup::BUCKET_MS) as u16;
    (day, index)
}

fn versioned<T: serde::de::DeserializeOwned + Default>(
    item: &HashMap<String, AttributeValue>,
) -> Result<Versioned<T>, ApiError> {
    let body = get_blob(item, "body")
        .ok_or_else(|| ApiError::Internal("materialised item without body".into()))?;
    Ok(Versioned {
        value: decode_body(body)?,
        version: get_n(item, "v").unwrap_or(0),
    })
}

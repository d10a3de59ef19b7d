//! Folding pending chunks into the materialised days and buckets.
//!
//! Each materialised item is written with one conditional put: on the
//! version it was read at, and holding in `folded` the chunks it now
//! includes. A chunk already in an item's `folded` is never added again, so
//! a rerun, a crash between two items or two runs at once cannot count a
//! part twice, and a part is never dropped: a chunk leaves the pending
//! partition only once every item of every day it touches holds it.

use std::collections::{BTreeSet, HashSet};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt, stream};

use super::codec::encode_body;
use super::days::{Folded, PendingChunk, StoredBucket, StoredDay, Versioned, holds};
use super::keys::{self, EXPIRES_AT, day_key, n, s};
use super::retry::{classify, with_retries};
use super::{Store, get_blob, get_n};
use crate::domain::event::LATE_WINDOW;
use crate::domain::rollup::{DayPart, Rollup, day_start_ms};
use crate::error::ApiError;

/// A `folded` record is kept at least this long (readers retry a read whose
/// two queries are further apart than half of it).
const FOLDED_KEPT: Duration = Duration::minutes(2);
/// Attempts at one item when concurrent runs keep moving its version.
const MAX_ITEM_ATTEMPTS: u32 = 5;
/// Bucket items written at once.
const CONCURRENT_BUCKET_WRITES: usize = 8;

/// A page of one pending partition.
pub struct PendingPage {
    pub chunks: Vec<PendingChunk>,
    /// Where the next page starts, if there is one.
    pub next: Option<String>,
}

/// What the run knows of a proxy's pending chunks: it read them, in order,
/// from the first one up to `read_through`. A `folded` record of a chunk in
/// that range that is no longer pending can go.
pub struct PendingView {
    pub read_through: String,
    pub still_pending: HashSet<String>,
    pub now: DateTime<Utc>,
}

impl PendingView {
    /// A view that prunes nothing but what is older than it must keep.
    pub fn nothing_read(now: DateTime<Utc>) -> Self {
        Self {
            read_through: String::new(),
            still_pending: HashSet::new(),
            now,
        }
    }

    fn prune(&self, folded: &mut Folded) {
        let cutoff = (self.now - FOLDED_KEPT).timestamp_millis();
        folded.retain(|(key, at)| {
            *at > cutoff || key > &self.read_through || self.still_pending.contains(key)
        });
    }
}

/// What folding one day wrote.
#[derive(Debug, Default)]
pub struct DayFold {
    /// The day item was written (it holds new chunks).
    pub day_written: bool,
    pub buckets_written: u64,
    /// Events of the parts newly added to the day item.
    pub events: u64,
}

impl Store {
    /// Up to `limit` pending chunks of a shard after `after` (exclusive) and
    /// before `before` (exclusive, if given), strongly consistent.
    pub async fn pending_page(
        &self,
        shard: u32,
        after: &str,
        before: Option<&str>,
        limit: i32,
    ) -> Result<PendingPage, ApiError> {
        let pk = keys::pending_partition(shard);
        let page = with_retries(|| async {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":after", s(after))
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .limit(limit);
            query = match before {
                Some(before) => query
                    .key_condition_expression("pk = :pk AND sk BETWEEN :after AND :before")
                    .expression_attribute_values(":before", s(before)),
                None => query.key_condition_expression("pk = :pk AND sk > :after"),
            };
            query
                .send()
                .await
                .map_err(|e| classify("read pending page", e))
        })
        .await?;
        self.meter.query(page.consumed_capacity());
        let chunks: Vec<PendingChunk> = page
            .items()
            .iter()
            .filter_map(PendingChunk::from_item)
            // BETWEEN is inclusive; the bounds are exclusive here.
            .filter(|c| {
                c.sort_key.as_str() > after && before.is_none_or(|b| c.sort_key.as_str() < b)
            })
            .collect();
        let next = page
            .last_evaluated_key()
            .and_then(|k| k.get(keys::SK))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok(PendingPage { chunks, next })
    }

    /// Folds the parts of `day` from `chunks` (sort key, part) into the day
    /// item and its bucket items. Parts an item already holds are skipped.
    pub async fn fold_day(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        chunks: &[(String, DayPart)],
        retention_days: i64,
        view: &PendingView,
    ) -> Result<DayFold, ApiError> {
        let mut outcome = DayFold::default();
        if chunks.is_empty() {
            return Ok(outcome);
        }
        // Buckets first, then the day: any order is correct (each item
        // records what it holds); this one leaves the day item, which marks
        // the day materialised, for last.
        let touched: BTreeSet<u16> = chunks
            .iter()
            .flat_map(|(_, part)| part.buckets.keys().copied())
            .collect();
        if let (Some(first), Some(last)) = (touched.first(), touched.last()) {
            let stored = self
                .stored_buckets(proxy_id, (day, *first), (day, *last))
                .await?;
            // Raw retention counts from the last moment the day can receive
            // an event, so it is never shorter than retention after the
            // day's last event.
            let expires = (day_start_ms(day) / 1000)
                + 86_400
                + LATE_WINDOW.num_seconds()
                + 86_400 * retention_days;
            let written: Vec<bool> = stream::iter(touched.iter().copied())
                .map(|index| {
                    let current = stored.get(&(day, index)).cloned();
                    async move {
                        self.fold_bucket(proxy_id, day, index, current, chunks, expires, view)
                            .await
                    }
                })
                .buffer_unordered(CONCURRENT_BUCKET_WRITES)
                .try_collect()
                .await?;
            outcome.buckets_written = written.iter().filter(|w| **w).count() as u64;
        }
        let contributions: Vec<(String, Rollup)> = chunks
            .iter()
            .map(|(key, part)| {
                let mut rollup = Rollup::default();
                rollup.merge_part(part);
                (key.clone(), rollup)
            })
            .collect();
        let (written, events) = self
            .merge_into_day(proxy_id, day, &contributions, view)
            .await?;
        outcome.day_written = written;
        outcome.events = events;
        Ok(outcome)
    }

    /// Adds each `(key, rollup)` the day item does not hold yet, recording
    /// `key` in it. Returns whether it wrote, and the events it added.
    pub(super) async fn merge_into_day(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        contributions: &[(String, Rollup)],
        view: &PendingView,
    ) -> Result<(bool, u64), ApiError> {
        let mut current = self.stored_day(proxy_id, day).await?;
        for attempt in 1..=MAX_ITEM_ATTEMPTS {
            let new: Vec<&(String, Rollup)> = contributions
                .iter()
                .filter(|(key, _)| !holds(&current.value.folded, key))
                .collect();
            if new.is_empty() {
                return Ok((false, 0));
            }
            let mut next = current.value.clone();
            let before = next.rollup.event_count();
            let mut events = 0;
            for (_, rollup) in &new {
                next.rollup.merge(rollup);
                events += rollup.event_count();
            }
            // Monotonic: a day item is only ever replaced by one holding more.
            if next.rollup.event_count() < before {
                return Err(ApiError::Internal(format!(
                    "refusing to replace {proxy_id} {day} ({before} events) with fewer"
                )));
            }
            view.prune(&mut next.folded);
            let at = view.now.timestamp_millis();
            next.folded
                .extend(new.iter().map(|(key, _)| (key.clone(), at)));
            let mut item = keys::day(proxy_id, day);
            item.insert("events".into(), n(next.rollup.event_count()));
            if self
                .put_versioned(item, &next, current.version, "write day")
                .await?
            {
                return Ok((true, events));
            }
            tracing::info!(proxy_id, %day, attempt, "day item moved under us; reading it again");
            current = self.stored_day(proxy_id, day).await?;
        }
        Err(ApiError::ServiceUnavailable(format!(
            "{proxy_id} {day}: the day item kept changing"
        )))
    }

    #[allow(clippy::too_many_arguments)]
    async fn fold_bucket(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        index: u16,
        mut current: Option<Versioned<StoredBucket>>,
        chunks: &[(String, DayPart)],
        expires: i64,
        view: &PendingView,
    ) -> Result<bool, ApiError> {
        for _ in 0..MAX_ITEM_ATTEMPTS {
            let stored = current.take().unwrap_or_default();
            let mut next = stored.value.clone();
            let mut added = Vec::new();
            for (key, part) in chunks {
                if let Some(bucket) = part.buckets.get(&index)
                    && !holds(&next.folded, key)
                {
                    next.bucket.merge(bucket);
                    added.push(key.clone());
                }
            }
            if added.is_empty() {
                return Ok(false);
            }
            view.prune(&mut next.folded);
            let at = view.now.timestamp_millis();
            next.folded.extend(added.into_iter().map(|key| (key, at)));
            let mut item = keys::bucket(proxy_id, day, index);
            item.insert(EXPIRES_AT.into(), n(expires));
            if self
                .put_versioned(item, &next, stored.version, "write bucket")
                .await?
            {
                return Ok(true);
            }
            current = self.stored_bucket(proxy_id, day, index).await?;
        }
        Err(ApiError::ServiceUnavailable(format!(
            "{proxy_id} {day} bucket {index}: the item kept changing"
        )))
    }

    /// The day item (strongly consistent), empty at version 0 if absent.
    pub async fn stored_day(
        &self,
        proxy_id: &str,
        day: NaiveDate,
    ) -> Result<Versioned<StoredDay>, ApiError> {
        let key = keys::day(proxy_id, day);
        Ok(self
            .get_versioned::<StoredDay>(key, "read day")
            .await?
            .unwrap_or_default())
    }

    async fn stored_bucket(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        index: u16,
    ) -> Result<Option<Versioned<StoredBucket>>, ApiError> {
        self.get_versioned(keys::bucket(proxy_id, day, index), "read bucket")
            .await
    }

    async fn get_versioned<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: keys::Key,
        operation: &str,
    ) -> Result<Option<Versioned<T>>, ApiError> {
        let Some(item) = self.get_item(key, operation).await? else {
            return Ok(None);
        };
        let body = get_blob(&item, "body")
            .ok_or_else(|| ApiError::Internal(format!("{operation}: item without body")))?;
        Ok(Some(Versioned {
            value: super::codec::decode_body(body)?,
            version: get_n(&item, "v").unwrap_or(0),
        }))
    }

    /// Puts `item` + `body` at version `read + 1` if the stored item is still
    /// at `read` (0: absent). `Ok(false)`: it moved; read it again.
    async fn put_versioned<T: serde::Serialize>(
        &self,
        mut item: keys::Key,
        body: &T,
        read: u64,
        operation: &str,
    ) -> Result<bool, ApiError> {
        item.insert("v".into(), n(read + 1));
        item.insert(
            "body".into(),
            AttributeValue::B(Blob::new(encode_body(body)?)),
        );
        let (condition, value) = if read == 0 {
            ("attribute_not_exists(pk)", None)
        } else {
            ("v = :v", Some(n(read)))
        };
        with_retries(|| async {
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .condition_expression(condition);
            if let Some(v) = &value {
                put = put.expression_attribute_values(":v", v.clone());
            }
            match put.send().await {
                Ok(out) => {
                    self.meter.write(out.consumed_capacity());
                    Ok(true)
                }
                Err(err) if is_condition_failure(&err) => Ok(false),
                Err(err) => Err(classify(operation, err)),
            }
        })
        .await
    }

    /// After its days are folded: a chunk with nothing left leaves the
    /// pending partition; otherwise it records which days are done.
    pub async fn finish_chunk(
        &self,
        chunk: &PendingChunk,
        folded_now: &BTreeSet<NaiveDate>,
    ) -> Result<(), ApiError> {
        let key = keys::pending_chunk(&chunk.proxy_id, &chunk.sort_key);
        let remaining = chunk
            .days()
            .into_iter()
            .filter(|d| !chunk.folded_days.contains(d) && !folded_now.contains(d))
            .count();
        if remaining == 0 {
            return with_retries(|| async {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map(|out| self.meter.write(out.consumed_capacity()))
                    .map_err(|e| classify("delete folded chunk", e))
            })
            .await;
        }
        if folded_now.is_empty() {
            return Ok(());
        }
        let days: Vec<String> = folded_now.iter().map(|d| day_key(*d)).collect();
        with_retries(|| async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression("ADD foldedDays :days")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":days", AttributeValue::Ss(days.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|out| self.meter.write(out.consumed_capacity()))
                .or_else(|err| {
                    if is_condition_failure(&err) {
                        Ok(()) // folded and deleted by a concurrent run
                    } else {
                        Err(classify("mark chunk days folded", err))
                    }
                })
        })
        .await
    }
}

pub(super) fn is_condition_failure<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(err, aws_sdk_dynamodb::error::SdkError::ServiceError(s)
        if s.err().code() == Some("ConditionalCheckFailedException"))
}

//! Folding pending chunks into the materialised days and buckets.
//!
//! For each batch of a proxy's chunks (one day's chunks of one page, within
//! a memory budget) a run:
//! 1. reads the day item and the bucket items the chunks touch;
//! 2. checks the proxy's fold epoch is still where this run left it (moving
//!    it first when it will drop entries from `folded`): another run at work
//!    on the same proxy makes this run leave the proxy for now;
//! 3. writes each item conditionally on the version it read, adding the
//!    chunks the item does not hold and naming them in its `folded`;
//! 4. (the caller) moves the epoch, then deletes the chunks every item holds.
//!
//! A chunk already named in an item's `folded` is never added again, so a
//! rerun, a crash between two steps or two runs at once cannot count it
//! twice; a chunk is deleted only once every item it touches holds it, so it
//! is never dropped. An entry leaves `folded` only when its chunk's deletion
//! came before an epoch move that came before the write dropping it: a read
//! (see `days.rs`) or a run that saw the chunk pending then sees the epoch
//! move, and never counts the chunk twice. `folded` lists stay short: they
//! name the chunks of the last batches only.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValue};
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt, stream};

use super::codec::StoredBody;
use super::days::{Folded, StoredBucket, StoredDay, Versioned, holds};
use super::error::StorageError;
use super::keys::{self, EXPIRES_AT, n};
use super::retry::{classify, with_retries};
use super::{Store, get_blob, get_n};
use crate::domain::event::LATE_WINDOW;
use crate::domain::rollup::{DayPart, Rollup, day_start_ms};

/// Bucket items written at once.
const CONCURRENT_BUCKET_WRITES: usize = 8;
/// Whenever an item is written, entries of chunks known deleted leave its
/// `folded` list. That costs one epoch move (1 WRU) per batch, where every
/// kept entry (~65 bytes) would be paid again at each write and read of the
/// item.
/// What a run knows of one proxy while it folds it, page after page.
#[derive(Debug, Clone)]
pub struct ProxyFold {
    pub proxy_id: String,
    /// The fold epoch as this run last saw or left it.
    pub epoch: u64,
    /// The last sort key this run's view of the pending chunks reached.
    pub read_through: Option<String>,
    /// Chunks seen in the view and not deleted (yet): not gone.
    pub still_pending: HashSet<String>,
    /// Set when another run was found at work on the proxy.
    pub concurrent: bool,
    /// Raw retention of the owner's current tier (days).
    pub retention_days: i64,
}

/// A chunk in a fold batch: its sort key and its decoded part.
pub type BatchChunk = (String, DayPart);

/// What folding one day's batch did.
#[derive(Debug, Default)]
pub struct DayFold {
    /// The day item was written (it holds new chunks).
    pub day_written: bool,
    pub buckets_written: u64,
    /// Events of the parts newly added to the day item.
    pub events: u64,
    /// The batch's chunks every item now holds: the caller deletes them
    /// (after moving the epoch).
    pub done: Vec<String>,
}

impl ProxyFold {
    pub fn new(proxy_id: &str, epoch: u64) -> Self {
        Self {
            proxy_id: proxy_id.to_string(),
            epoch,
            read_through: None,
            still_pending: HashSet::new(),
            concurrent: false,
            retention_days: 7,
        }
    }

    /// Whether an entry of a `folded` list of `day` is known deleted: its
    /// chunk's place was covered by this run's view and it was not there.
    fn gone(&self, day: NaiveDate, entry: &str) -> bool {
        // Markers that name no chunk (the v1 migration's) are never pruned.
        if !entry.contains('#') {
            return false;
        }
        let place = format!("{}#{}", keys::day_key(day), keys::chunk_identity(entry));
        self.read_through.as_ref().is_some_and(|r| &place <= r)
            && !self.still_pending.contains(&place)
    }

    /// `folded` (entries of any day, each its chunk's own) with the gone
    /// entries dropped, if there are any.
    pub(super) fn pruned_each_by_its_day(&self, folded: &Folded) -> Option<Folded> {
        let kept: Folded = folded
            .iter()
            .filter(|(k, _)| !keys::day_of_pending(k).is_some_and(|day| self.gone(day, k)))
            .cloned()
            .collect();
        (kept.len() < folded.len()).then_some(kept)
    }

    /// `folded` with the gone entries dropped, if there are any.
    pub(super) fn pruned(&self, day: NaiveDate, folded: &Folded) -> Option<Folded> {
        let kept: Folded = folded
            .iter()
            .filter(|(k, _)| !self.gone(day, k))
            .cloned()
            .collect();
        (kept.len() < folded.len()).then_some(kept)
    }
}

impl Store {
    /// Folds one day's batch of chunks into the day item and its bucket
    /// items (steps 1–3 above). `Ok` with `fold.concurrent` set: another run
    /// holds the proxy; nothing of the batch is done.
    pub async fn fold_day(
        &self,
        fold: &mut ProxyFold,
        day: NaiveDate,
        chunks: &[BatchChunk],
        retention_days: i64,
    ) -> Result<DayFold, StorageError> {
        let mut outcome = DayFold::default();
        if chunks.is_empty() || fold.concurrent {
            return Ok(outcome);
        }
        let proxy_id = fold.proxy_id.clone();
        let touched: BTreeSet<u16> = chunks
            .iter()
            .flat_map(|(_, part)| part.buckets.keys().copied())
            .collect();
        // 1. The items, after the view of the chunks.
        let stored_day = self.stored_day(&proxy_id, day).await?;
        let stored_buckets = match (touched.first(), touched.last()) {
            (Some(first), Some(last)) => {
                self.stored_buckets(&proxy_id, (day, *first), (day, *last))
                    .await?
            }
            _ => BTreeMap::new(),
        };
        // What each item becomes.
        let now_ms = self.clock.now().timestamp_millis();
        let mut prunes = false;
        let mut bucket_writes = Vec::new();
        for index in &touched {
            let current = stored_buckets
                .get(&(day, *index))
                .cloned()
                .unwrap_or_default();
            let mut next = current.value.clone();
            let mut added = Vec::new();
            for (key, part) in chunks {
                if let Some(bucket) = part.buckets.get(index)
                    && !holds(&next.folded, key)
                {
                    next.bucket.merge(bucket);
                    added.push(key.clone());
                }
            }
            if added.is_empty() {
                continue;
            }
            if let Some(kept) = fold.pruned(day, &next.folded) {
                next.folded = kept;
                prunes = true;
            }
            next.folded.extend(added.into_iter().map(|k| (k, now_ms)));
            bucket_writes.push((*index, current.version, next));
        }
        let mut day_next = stored_day.value.clone();
        let before = day_next.rollup.event_count();
        let mut added = Vec::new();
        for (key, part) in chunks {
            if !holds(&day_next.folded, key) {
                let mut rollup = Rollup::default();
                rollup.merge_part(part);
                day_next.rollup.merge(&rollup);
                outcome.events += rollup.event_count();
                added.push(key.clone());
            }
        }
        // Monotonic: a day item is only ever replaced by one holding more.
        if day_next.rollup.event_count() < before {
            return Err(StorageError::Internal(format!(
                "refusing to replace {proxy_id} {day} ({before} events) with fewer"
            )));
        }
        let day_write = !added.is_empty();
        if day_write {
            if let Some(kept) = fold.pruned(day, &day_next.folded) {
                day_next.folded = kept;
                prunes = true;
            }
            day_next
                .folded
                .extend(added.into_iter().map(|k| (k, now_ms)));
        }
        let (page_writes, page_prunes) =
            self.plan_dimension_pages(fold, day, chunks, now_ms).await?;
        let (totals_write, totals_prunes) = self.plan_totals(fold, chunks, now_ms).await?;
        prunes |= page_prunes || totals_prunes;
        // 2. Nobody else at work on this proxy since this run's view.
        let epoch_now = if prunes {
            self.move_fold_epoch(&proxy_id).await?
        } else {
            self.fold_epoch(&proxy_id).await?
        };
        let expected = fold.epoch + u64::from(prunes);
        if epoch_now != expected {
            fold.concurrent = true;
            return Ok(outcome);
        }
        fold.epoch = epoch_now;
        // 3. The items, each on the version it was read at.
        let expires = bucket_expiry(day, retention_days);
        let written: Vec<bool> = stream::iter(bucket_writes)
            .map(|(index, version, next)| {
                let proxy_id = proxy_id.clone();
                async move {
                    let mut item = keys::bucket(&proxy_id, day, index);
                    item.insert(EXPIRES_AT.into(), n(expires));
                    self.put_versioned(item, &next, version, "write bucket")
                        .await
                }
            })
            .buffer_unordered(CONCURRENT_BUCKET_WRITES)
            .try_collect()
            .await?;
        outcome.buckets_written = written.iter().filter(|w| **w).count() as u64;
        if written.iter().any(|w| !w) {
            // An item moved since it was read: another run is folding.
            fold.concurrent = true;
            outcome.events = 0;
            return Ok(outcome);
        }
        if !self
            .write_dimension_pages(&proxy_id, day, page_writes)
            .await?
            || !self.write_totals(&proxy_id, totals_write).await?
        {
            fold.concurrent = true;
            outcome.events = 0;
            return Ok(outcome);
        }
        if day_write {
            let mut item = keys::day(&proxy_id, day);
            item.insert("events".into(), n(day_next.rollup.event_count()));
            if !self
                .put_versioned(item, &day_next, stored_day.version, "write day")
                .await?
            {
                fold.concurrent = true;
                outcome.events = 0;
                return Ok(outcome);
            }
            outcome.day_written = true;
        }
        outcome.done = chunks.iter().map(|(key, _)| key.clone()).collect();
        Ok(outcome)
    }

    /// Adds `(key, rollup)` contributions the day item does not hold yet
    /// (the v1 migration's way in), on the version read, a few attempts.
    pub(super) async fn merge_into_day(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        contributions: &[(String, Rollup)],
    ) -> Result<(bool, u64), StorageError> {
        for _ in 0..5 {
            let current = self.stored_day(proxy_id, day).await?;
            let mut next = current.value.clone();
            let mut events = 0;
            let now_ms = self.clock.now().timestamp_millis();
            for (key, rollup) in contributions {
                if !holds(&next.folded, key) {
                    next.rollup.merge(rollup);
                    events += rollup.event_count();
                    next.folded.push((key.clone(), now_ms));
                }
            }
            if events == 0 {
                return Ok((false, 0));
            }
            let mut item = keys::day(proxy_id, day);
            item.insert("events".into(), n(next.rollup.event_count()));
            if self
                .put_versioned(item, &next, current.version, "write day")
                .await?
            {
                return Ok((true, events));
            }
        }
        Err(StorageError::Unavailable(format!(
            "{proxy_id} {day}: the day item kept changing"
        )))
    }

    /// Adds one part recorded under `marker` (not a chunk: nothing to
    /// delete, so no epoch to move) to the day and its buckets, unless each
    /// item holds it already. The v1 migration's way in.
    pub(super) async fn fold_marked_part(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        marker: &str,
        part: &DayPart,
        retention_days: i64,
    ) -> Result<(), StorageError> {
        let expires = bucket_expiry(day, retention_days);
        for (index, bucket) in &part.buckets {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let current = self
                    .get_versioned::<StoredBucket>(
                        keys::bucket(proxy_id, day, *index),
                        "read bucket",
                    )
                    .await?
                    .unwrap_or_default();
                if holds(&current.value.folded, marker) {
                    break;
                }
                let mut next = current.value.clone();
                next.bucket.merge(bucket);
                next.folded
                    .push((marker.to_string(), self.clock.now().timestamp_millis()));
                let mut item = keys::bucket(proxy_id, day, *index);
                item.insert(EXPIRES_AT.into(), n(expires));
                if self
                    .put_versioned(item, &next, current.version, "write bucket")
                    .await?
                {
                    break;
                }
                if attempts >= 5 {
                    return Err(StorageError::Unavailable(format!(
                        "{proxy_id} {day} bucket {index}: the item kept changing"
                    )));
                }
            }
        }
        self.fold_marked_dimension_pages(proxy_id, day, marker, part)
            .await?;
        let mut rollup = Rollup::default();
        rollup.merge_part(part);
        self.merge_into_day(proxy_id, day, &[(marker.to_string(), rollup)])
            .await?;
        Ok(())
    }

    /// The day item (strongly consistent), empty at version 0 if absent;
    /// [`StorageError::Corrupt`] if it cannot be decoded.
    pub async fn stored_day(
        &self,
        proxy_id: &str,
        day: NaiveDate,
    ) -> Result<Versioned<StoredDay>, StorageError> {
        let key = keys::day(proxy_id, day);
        Ok(self
            .get_versioned::<StoredDay>(key, "read day")
            .await?
            .unwrap_or_default())
    }

    pub(super) async fn get_versioned<T: StoredBody + Default>(
        &self,
        key: keys::Key,
        operation: &str,
    ) -> Result<Option<Versioned<T>>, StorageError> {
        let Some(item) = self.get_item(key, operation).await? else {
            return Ok(None);
        };
        let body = get_blob(&item, "body")
            .ok_or_else(|| StorageError::Corrupt(format!("{operation}: item without body")))?;
        Ok(Some(Versioned {
            value: T::decode(body)
                .map_err(|e| StorageError::Corrupt(format!("{operation}: {e}")))?,
            version: get_n(&item, "v").unwrap_or(0),
        }))
    }

    /// Puts `item` + `body` at version `read + 1` if the stored item is still
    /// at `read` (0: absent). `Ok(false)`: it moved.
    pub(super) async fn put_versioned<T: StoredBody>(
        &self,
        mut item: keys::Key,
        body: &T,
        read: u64,
        operation: &str,
    ) -> Result<bool, StorageError> {
        item.insert("v".into(), n(read + 1));
        item.insert("body".into(), AttributeValue::B(Blob::new(body.encode()?)));
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

    /// Moves the proxy's fold epoch and returns where it now is.
    pub async fn move_fold_epoch(&self, proxy_id: &str) -> Result<u64, StorageError> {
        let key = keys::proxy(proxy_id);
        let out = with_retries(|| async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression("ADD foldEpoch :one")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":one", n(1))
                .return_values(ReturnValue::UpdatedNew)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| classify("move fold epoch", e))
        })
        .await?;
        self.meter.write(out.consumed_capacity());
        Ok(out
            .attributes()
            .and_then(|a| get_n(a, "foldEpoch"))
            .unwrap_or(0))
    }
}

/// When a bucket of `day` expires (epoch s): raw retention counts from the
/// last moment the day can receive an event, so it is never shorter than
/// retention after the day's last event.
pub(super) fn bucket_expiry(day: NaiveDate, retention_days: i64) -> i64 {
    (day_start_ms(day) / 1000) + 86_400 + LATE_WINDOW.num_seconds() + 86_400 * retention_days
}

pub(super) fn is_condition_failure<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    matches!(err, aws_sdk_dynamodb::error::SdkError::ServiceError(s)
        if s.err().code() == Some("ConditionalCheckFailedException"))
}

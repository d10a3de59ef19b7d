//! Pending chunks (layout v3): finding the proxies that have some (dirty
//! marks), reading a proxy's chunks a page at a time, deleting folded ones in
//! batches, setting aside the unreadable, and moving chunks a v2 writer left
//! in the 16 shared partitions into the v3 layout.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, Put, ReturnConsumedCapacity, TransactWriteItem,
    WriteRequest,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::codec::decode_trailed;
use super::error::StorageError;
use super::keys::{self, n, s};
use super::retry::{classify, with_retries};
use super::{Store, get_blob, get_n, get_s};
use crate::domain::rollup::DayPart;

/// How long a recorder trusts a proxy's dirty mark before writing it again.
/// The mark's time is kept on the proxy item too, which the ownership read
/// returns: a proxy costs two small writes per this, whichever instances
/// serve it, not one per request.
pub const MARK_REFRESH: Duration = Duration::minutes(15);
/// The proxy item's (and the mark's) attribute: when the mark was written.
pub(super) const MARKED_AT: &str = "markedAt";
/// A mark at least this old may be removed once its proxy has nothing
/// pending: no instance still relies on it (the refresh period, a request's
/// longest life and clock skew between instances, with room to spare).
pub const MARK_TRUSTED_FOR: Duration = Duration::minutes(25);
/// DynamoDB's limit on requests in one BatchWriteItem.
const BATCH_WRITE_MAX: usize = 25;
/// Instances remember this many proxies' marks at most (then forget all).
const MARKS_REMEMBERED: usize = 10_000;

/// One pending chunk item: a part of one day of one request.
#[derive(Debug, Clone)]
pub struct PendingChunk {
    pub sort_key: String,
    pub day: NaiveDate,
    /// Raw retention (days) of the owner's tier when it was recorded.
    pub retention_days: i64,
    /// The encoded [`DayPart`], decoded only when folded or read.
    pub body: Vec<u8>,
    /// Recorded once the proxy had sent dimensions: its part counts under
    /// `(none)` in the dimension pages even without keys ([`crate::domain::rollup::PartDims::paged`]).
    pub paged: bool,
}

impl PendingChunk {
    pub(super) fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        let sort_key = get_s(item, keys::SK)?.to_string();
        Some(Self {
            day: keys::day_of_pending(&sort_key)?,
            retention_days: get_n(item, "retention").map_or(7, |d| d as i64),
            body: get_blob(item, "body").unwrap_or_default().to_vec(),
            paged: matches!(item.get(keys::PAGED), Some(AttributeValue::Bool(true))),
            sort_key,
        })
    }

    /// Its identity in the `folded` lists of the items it was folded into.
    pub fn identity(&self) -> &str {
        keys::chunk_identity(&self.sort_key)
    }

    /// Its part, decoded; [`StorageError::Corrupt`] if it cannot be.
    pub fn part(&self) -> Result<DayPart, StorageError> {
        let mut part = decode_trailed::<DayPart>(&self.body)
            .map_err(|e| StorageError::Corrupt(format!("pending chunk {}: {e}", self.sort_key)))?;
        part.dims.paged = self.paged;
        Ok(part)
    }

    /// What the item takes in the table (for budgets in bytes).
    pub fn stored_bytes(&self) -> usize {
        self.body.len() + self.sort_key.len() + 48
    }
}

/// One page of a proxy's pending chunks.
#[derive(Debug, Default)]
pub struct PendingPage {
    pub chunks: Vec<PendingChunk>,
    /// The last sort key the page covered, when more may follow.
    pub next: Option<String>,
}

/// A proxy listed as having pending chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct DirtyMark {
    pub proxy_id: String,
    pub marked_at_ms: i64,
}

impl Store {
    /// Lists the proxy among those with pending chunks, unless this instance
    /// did so less than [`MARK_REFRESH`] ago. Written before the chunks, so
    /// a chunk is never left where the aggregation does not look.
    pub(super) async fn mark_dirty(
        &self,
        proxy_id: &str,
        seen_at_ms: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let now_ms = now.timestamp_millis();
        let recent = |at: i64| now_ms - at < MARK_REFRESH.num_milliseconds() && at <= now_ms;
        let fresh = seen_at_ms.is_some_and(recent)
            || self
                .marks
                .lock()
                .ok()
                .is_some_and(|marks| marks.get(proxy_id).copied().is_some_and(recent));
        if fresh {
            return Ok(());
        }
        let mut item = keys::dirty_mark(proxy_id);
        item.insert(MARKED_AT.into(), n(now_ms));
        with_retries(|| async {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|out| self.meter.write(out.consumed_capacity()))
                .map_err(|e| classify("mark proxy dirty", e))
        })
        .await?;
        // ... and on the proxy item, for every instance's ownership read.
        let key = keys::proxy(proxy_id);
        with_retries(|| async {
            match self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression("SET #at = :at")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#at", MARKED_AT)
                .expression_attribute_values(":at", n(now_ms))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
            {
                Ok(out) => {
                    self.meter.write(out.consumed_capacity());
                    Ok(())
                }
                Err(err) if super::fold::is_condition_failure(&err) => Ok(()),
                Err(err) => Err(classify("note the mark on the proxy", err)),
            }
        })
        .await?;
        if let Ok(mut marks) = self.marks.lock() {
            if marks.len() >= MARKS_REMEMBERED {
                marks.clear();
            }
            marks.insert(proxy_id.to_string(), now_ms);
        }
        Ok(())
    }

    /// The proxies listed in one shard of dirty marks.
    pub async fn dirty_marks(&self, shard: u32) -> Result<Vec<DirtyMark>, StorageError> {
        let items = self
            .query_all(keys::dirty_partition(shard), None, "read dirty marks")
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                Some(DirtyMark {
                    proxy_id: get_s(item, keys::SK)?.to_string(),
                    marked_at_ms: get_n(item, "markedAt").map_or(0, |m| m as i64),
                })
            })
            .collect())
    }

    /// Removes a mark the aggregation found stale and idle, unless it was
    /// written again since it was read.
    pub async fn clear_dirty_mark(&self, mark: &DirtyMark) -> Result<(), StorageError> {
        let key = keys::dirty_mark(&mark.proxy_id);
        with_retries(|| async {
            match self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .condition_expression("markedAt = :at")
                .expression_attribute_values(":at", n(mark.marked_at_ms))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
            {
                Ok(out) => {
                    self.meter.write(out.consumed_capacity());
                    Ok(())
                }
                Err(err) if super::fold::is_condition_failure(&err) => Ok(()),
                Err(err) => Err(classify("clear dirty mark", err)),
            }
        })
        .await
    }

    /// Up to `limit` of a proxy's pending chunks after `after` (exclusive;
    /// `None`: from the first), strongly consistent.
    pub async fn pending_page(
        &self,
        proxy_id: &str,
        after: Option<&str>,
        limit: i32,
    ) -> Result<PendingPage, StorageError> {
        let pk = keys::pending_partition(proxy_id);
        let page = with_retries(|| async {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk.clone()))
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .limit(limit);
            query = match after {
                Some(after) => query
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after)),
                None => query.key_condition_expression("pk = :pk"),
            };
            query
                .send()
                .await
                .map_err(|e| classify("read pending page", e))
        })
        .await?;
        self.meter.query(page.consumed_capacity());
        Ok(PendingPage {
            chunks: page
                .items()
                .iter()
                .filter_map(PendingChunk::from_item)
                .collect(),
            next: page
                .last_evaluated_key()
                .and_then(|k| k.get(keys::SK))
                .and_then(|v| v.as_s().ok())
                .cloned(),
        })
    }

    /// Every pending chunk of the days `[start, end]`, a page at a time, to
    /// `visit` (which decodes and drops each: memory stays one page).
    pub async fn visit_pending(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
        visit: impl FnMut(PendingChunk) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.visit_pending_on(proxy_id, start, end, false, visit)
            .await
    }

    /// [`Store::visit_pending`]; `apart`: on a connection of its own (a
    /// query sent beside another, see `Store::query_pages_each_on`).
    pub(super) async fn visit_pending_on(
        &self,
        proxy_id: &str,
        start: NaiveDate,
        end: NaiveDate,
        apart: bool,
        mut visit: impl FnMut(PendingChunk) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        self.query_pages_each_on(
            keys::pending_partition(proxy_id),
            Some(super::Range::Between(
                keys::pending_day_prefix(start),
                keys::pending_day_after(end),
            )),
            None,
            "read pending chunks",
            apart,
            |item| match PendingChunk::from_item(item) {
                Some(chunk) => visit(chunk),
                None => Ok(()),
            },
        )
        .await
    }

    /// Every pending chunk of a proxy (tests, benches, the operator).
    pub async fn pending_chunks_of(
        &self,
        proxy_id: &str,
    ) -> Result<Vec<PendingChunk>, StorageError> {
        let items = self
            .query_all(
                keys::pending_partition(proxy_id),
                None,
                "read pending chunks",
            )
            .await?;
        Ok(items.iter().filter_map(PendingChunk::from_item).collect())
    }

    /// Deletes folded chunks, 25 to a request, retrying what DynamoDB left
    /// unprocessed. Deleting a chunk twice is harmless.
    pub async fn delete_chunks(
        &self,
        proxy_id: &str,
        sort_keys: &[String],
    ) -> Result<(), StorageError> {
        for batch in sort_keys.chunks(BATCH_WRITE_MAX) {
            let mut requests: Vec<WriteRequest> = batch
                .iter()
                .map(|sk| {
                    DeleteRequest::builder()
                        .set_key(Some(keys::pending_chunk(proxy_id, sk)))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(|e| StorageError::Internal(format!("building a delete: {e}")))
                })
                .collect::<Result<_, _>>()?;
            for attempt in 1..=super::MAX_ATTEMPTS {
                let sent = requests.clone();
                let out = with_retries(|| async {
                    self.client
                        .batch_write_item()
                        .request_items(&self.table, sent.clone())
                        .return_consumed_capacity(ReturnConsumedCapacity::Total)
                        .send()
                        .await
                        .map_err(|e| classify("delete folded chunks", e))
                })
                .await?;
                for capacity in out.consumed_capacity() {
                    self.meter.write(Some(capacity));
                }
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt == super::MAX_ATTEMPTS {
                    return Err(StorageError::Unavailable(format!(
                        "{} folded chunks of {proxy_id} left undeleted",
                        requests.len()
                    )));
                }
                super::retry::backoff(attempt).await;
            }
        }
        Ok(())
    }

    /// Sets an unreadable chunk aside (same sort key, quarantine partition),
    /// in one transaction: reads and runs stop meeting it; nothing is lost.
    pub async fn quarantine_chunk(
        &self,
        proxy_id: &str,
        chunk: &PendingChunk,
    ) -> Result<(), StorageError> {
        let mut item = keys::quarantined_chunk(proxy_id, &chunk.sort_key);
        item.insert("retention".into(), n(chunk.retention_days));
        item.insert(
            "body".into(),
            AttributeValue::B(Blob::new(chunk.body.clone())),
        );
        if chunk.paged {
            item.insert(keys::PAGED.into(), AttributeValue::Bool(true));
        }
        self.move_item(
            item,
            keys::pending_chunk(proxy_id, &chunk.sort_key),
            "quarantine chunk",
        )
        .await
    }

    /// Puts a quarantined chunk back in the pending partition (an operator
    /// deployed a build that reads it). `false`: there is no such chunk.
    pub async fn release_chunk(
        &self,
        proxy_id: &str,
        sort_key: &str,
    ) -> Result<bool, StorageError> {
        let Some(mut item) = self
            .get_item(
                keys::quarantined_chunk(proxy_id, sort_key),
                "read quarantined chunk",
            )
            .await?
        else {
            return Ok(false);
        };
        item.extend(keys::pending_chunk(proxy_id, sort_key));
        self.mark_dirty(proxy_id, None, self.clock.now()).await?;
        self.move_item(
            item,
            keys::quarantined_chunk(proxy_id, sort_key),
            "release chunk",
        )
        .await?;
        Ok(true)
    }

    /// Deletes a quarantined chunk for good (an operator gave up on it).
    pub async fn discard_chunk(&self, proxy_id: &str, sort_key: &str) -> Result<(), StorageError> {
        let key = keys::quarantined_chunk(proxy_id, sort_key);
        with_retries(|| async {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("discard chunk", e))
        })
        .await
    }

    /// Puts `item` and deletes `from` in one transaction.
    async fn move_item(
        &self,
        item: HashMap<String, AttributeValue>,
        from: keys::Key,
        what: &str,
    ) -> Result<(), StorageError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(|e| StorageError::Internal(format!("building {what}: {e}")))?;
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(from))
            .build()
            .map_err(|e| StorageError::Internal(format!("building {what}: {e}")))?;
        let actions = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().delete(delete).build(),
        ];
        let token = uuid::Uuid::new_v4().to_string();
        with_retries(|| async {
            self.transact(&actions, &token)
                .await
                .map(|_| ())
                .map_err(|err| match super::retry::cancellations(&err) {
                    Some(reasons) => super::retry::cancelled(what, &reasons),
                    None => classify(what, err),
                })
        })
        .await
    }
}

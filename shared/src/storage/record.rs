//! Recording: event-id markers, producers' sequences and pending chunks.
//!
//! A request's events are folded into one [`DayPart`] per day they fall on,
//! each stored as one *pending chunk* item (a part too large for one item
//! is split by five-minute buckets over several), in the proxy's own
//! pending partition. Before the first chunk of a while, the proxy's dirty
//! mark is written so that the aggregation finds it. What makes a request
//! count exactly once is written in the same transaction:
//! - a **sequenced batch** updates its producer's last sequence, on the
//!   condition that this batch is the next one (or the producer is new);
//! - an **unsequenced event** puts its id marker on the condition that the id
//!   is new; a cancelled transaction names the ids that were not, and the
//!   rest are re-planned without them.
//!
//! No item is shared between writers (chunks are new items, producers send
//! in order), so concurrent requests of one proxy never conflict.

use std::collections::HashSet;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, NaiveDate, Utc};

use super::error::StorageError;
use super::keys::{self, EXPIRES_AT, n};
use super::retry::{Failure, MAX_ATTEMPTS, backoff, cancellations, cancelled, classify};
use super::split::split_part;
use super::{Store, get_n};
use crate::domain::event::Event;
use crate::domain::rollup::fold_events;

/// DynamoDB's limit on actions in one TransactWriteItems.
pub(super) const MAX_TRANSACT_ACTIONS: usize = 100;
/// A chunk item's body stays under this (DynamoDB's item limit is 400 KB).
pub(super) const MAX_CHUNK_BODY_BYTES: usize = 350 * 1024;
/// What one transaction may carry in all (DynamoDB's limit is 4 MB).
const MAX_TRANSACTION_BYTES: usize = 3_900 * 1024;
/// Producers' sequences and event-id markers are kept this long after their
/// last use: the contract's 7 days (producers) and 24 hours (ids), and a
/// retry dated anywhere in the late window still meets its marker.
pub const IDEMPOTENCY_RETENTION: chrono::Duration = chrono::Duration::days(8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    Recorded,
    Duplicate,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::Duplicate => "duplicate",
        }
    }
}

/// What recording did, per input event, and what it cost.
#[derive(Debug, Default)]
pub struct RecordOutcome {
    pub statuses: Vec<EventStatus>,
    pub write_units: f64,
    pub transactions: u32,
}

/// `Producer-Id` and `Producer-Sequence` of a sequenced batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub producer_id: String,
    pub sequence: u64,
    /// A fingerprint of the batch's body ([`body_fingerprint`]): the same
    /// sequence again with another body is a conflict, not a duplicate.
    pub fingerprint: String,
}

/// A stable 128-bit fingerprint of a request body (two FNV-1a 64 lanes):
/// the same in every process and release, unlike std's hasher. It tells a
/// retry (same bytes) from a restarted sender reusing its producer id; it
/// is not a defence against a producer forging collisions with itself.
pub fn body_fingerprint(body: &[u8]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &byte in body {
        a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(byte.rotate_left(3))).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{a:016x}{b:016x}{:x}", body.len())
}

/// What became of a sequenced batch.
#[derive(Debug)]
pub enum SequencedOutcome {
    /// Recorded whole (every event), in one transaction.
    Recorded { write_units: f64 },
    /// The producer is already at or past this sequence: nothing recorded.
    Duplicate,
    /// The producer's last sequence is this one, accepted with another body.
    Conflict,
    /// Batches are missing before this one: nothing recorded.
    Gap { expected: u64 },
}

/// Where a request's events are recorded and for how long their state is kept.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub proxy_id: &'a str,
    /// Raw retention of the owner's tier, in days.
    pub retention_days: i64,
    /// When the proxy's dirty mark was last written, as the ownership read
    /// saw it (`None`: unknown).
    pub marked_at_ms: Option<i64>,
    /// The pages the owner's tier stores a day's dimension values in.
    pub dimension_pages: u8,
    /// When the proxy first sent a dimension, as the ownership read saw it.
    pub dims_since_ms: Option<i64>,
}

/// A v2 chunk as written (several days in one item): read only to move
/// chunks left by a v2 writer into the v3 layout.
pub type ChunkBody = Vec<(String, Vec<u8>)>;

impl Store {
    /// Records a sequenced batch whole, exactly once per (producer, sequence).
    pub async fn record_sequenced(
        &self,
        to: Destination<'_>,
        sequence: &Sequence,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<SequencedOutcome, StorageError> {
        self.mark_dirty(to.proxy_id, to.marked_at_ms, now).await?;
        let mut actions = vec![self.producer_update(to.proxy_id, sequence, now)?];
        actions.extend(self.chunk_puts(to, events.iter(), now)?);
        if actions.len() > MAX_TRANSACT_ACTIONS {
            return Err(StorageError::TooLarge(String::from(
                "The batch is too large to record atomically; send it as several sequenced batches.",
            )));
        }
        // One plan, one token: a retry of an attempt that committed without
        // its answer arriving is answered as a success by DynamoDB.
        let token = uuid::Uuid::new_v4().to_string();
        let mut last = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            match self.transact(&actions, &token).await {
                Ok(write_units) => return Ok(SequencedOutcome::Recorded { write_units }),
                Err(err) => match cancellations(&err) {
                    Some(reasons) if reasons.first().is_some_and(|r| r.condition_failed()) => {
                        let state = match reasons[0].item.as_ref().and_then(ProducerState::of) {
                            Some(state) => Some(state),
                            // Not every store returns the old item: read it.
                            None => {
                                self.producer_state(to.proxy_id, &sequence.producer_id)
                                    .await?
                            }
                        };
                        return Ok(match state {
                            Some(last)
                                if last.sequence == sequence.sequence
                                    && last
                                        .fingerprint
                                        .as_deref()
                                        .is_some_and(|f| f != sequence.fingerprint) =>
                            {
                                SequencedOutcome::Conflict
                            }
                            Some(ProducerState { sequence: last, .. })
                                if sequence.sequence <= last =>
                            {
                                SequencedOutcome::Duplicate
                            }
                            Some(ProducerState { sequence: last, .. }) => {
                                SequencedOutcome::Gap { expected: last + 1 }
                            }
                            // The state expired between the attempt and the read.
                            None => SequencedOutcome::Gap { expected: 0 },
                        });
                    }
                    Some(reasons) => match cancelled("record sequenced batch", &reasons) {
                        Failure::Fatal(e) => return Err(e),
                        Failure::Retryable(why) => last = why,
                    },
                    None => match classify("record sequenced batch", err) {
                        Failure::Fatal(e) => return Err(e),
                        Failure::Retryable(why) => last = why,
                    },
                },
            }
            if attempt < MAX_ATTEMPTS {
                backoff(attempt).await;
            }
        }
        Err(StorageError::Unavailable(last))
    }

    /// The last sequence recorded for a producer, if it has state.
    pub async fn producer_sequence(
        &self,
        proxy_id: &str,
        producer_id: &str,
    ) -> Result<Option<u64>, StorageError> {
        Ok(self
            .producer_state(proxy_id, producer_id)
            .await?
            .map(|s| s.sequence))
    }

    async fn producer_state(
        &self,
        proxy_id: &str,
        producer_id: &str,
    ) -> Result<Option<ProducerState>, StorageError> {
        let item = self
            .get_item(keys::producer(proxy_id, producer_id), "read producer")
            .await?;
        Ok(item.as_ref().and_then(ProducerState::of))
    }

    fn producer_update(
        &self,
        proxy_id: &str,
        sequence: &Sequence,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StorageError> {
        let previous = sequence.sequence as i128 - 1;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::producer(proxy_id, &sequence.producer_id)))
            .update_expression("SET seq = :seq, digest = :digest, #expires = :expires")
            .condition_expression("attribute_not_exists(pk) OR seq = :previous")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":seq", n(sequence.sequence))
            .expression_attribute_values(":digest", keys::s(&sequence.fingerprint))
            .expression_attribute_values(":previous", n(previous))
            .expression_attribute_values(":expires", n((now + IDEMPOTENCY_RETENTION).timestamp()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StorageError::Internal(format!("building producer update: {e}")))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Records unsequenced events, exactly once per event id.
    ///
    /// Events are planned into transactions of at most 100 actions: one
    /// conditional marker per event and the chunk(s) of those events. A
    /// transaction cancelled because some ids exist already is re-planned
    /// without them, so the new events still land in this request.
    pub async fn record_events(
        &self,
        to: Destination<'_>,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<RecordOutcome, StorageError> {
        let mut outcome = RecordOutcome {
            statuses: vec![EventStatus::Recorded; events.len()],
            ..Default::default()
        };
        // The same id twice in one request: the first one counts.
        let mut seen = HashSet::new();
        let mut order = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if seen.insert(e.event_id.as_str()) {
                order.push(i);
            } else {
                outcome.statuses[i] = EventStatus::Duplicate;
            }
        }
        self.mark_dirty(to.proxy_id, to.marked_at_ms, now).await?;
        for group in plan_groups(events, &order) {
            self.write_group(to, events, group, now, &mut outcome)
                .await?;
        }
        Ok(outcome)
    }

    async fn write_group(
        &self,
        to: Destination<'_>,
        events: &[Event],
        mut members: Vec<usize>,
        now: DateTime<Utc>,
        outcome: &mut RecordOutcome,
    ) -> Result<(), StorageError> {
        let mut token = uuid::Uuid::new_v4().to_string();
        let mut actions = self.group_actions(to, events, &members, now)?;
        let mut attempt = 0u32;
        let mut last = String::new();
        while !members.is_empty() {
            attempt += 1;
            if attempt > MAX_ATTEMPTS + members.len() as u32 {
                return Err(StorageError::Unavailable(last));
            }
            match self.transact(&actions, &token).await {
                Ok(units) => {
                    outcome.transactions += 1;
                    outcome.write_units += units;
                    return Ok(());
                }
                Err(err) => {
                    match cancellations(&err) {
                        Some(reasons) => {
                            // Marker puts come first, one per member, in order.
                            let existing: Vec<usize> = members
                                .iter()
                                .zip(&reasons)
                                .filter(|(_, r)| r.condition_failed())
                                .map(|(i, _)| *i)
                                .collect();
                            if !existing.is_empty() {
                                for i in &existing {
                                    outcome.statuses[*i] = EventStatus::Duplicate;
                                }
                                members.retain(|i| !existing.contains(i));
                                if !members.is_empty() {
                                    token = uuid::Uuid::new_v4().to_string();
                                    actions = self.group_actions(to, events, &members, now)?;
                                }
                                continue;
                            }
                            match cancelled("record events", &reasons) {
                                Failure::Fatal(e) => return Err(e),
                                Failure::Retryable(why) => last = why,
                            }
                        }
                        None => match classify("record events", err) {
                            Failure::Fatal(e) => return Err(e),
                            Failure::Retryable(why) => last = why,
                        },
                    }
                    if attempt >= MAX_ATTEMPTS {
                        return Err(StorageError::Unavailable(last));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Ok(())
    }

    fn group_actions(
        &self,
        to: Destination<'_>,
        events: &[Event],
        members: &[usize],
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactWriteItem>, StorageError> {
        let expires = (now + IDEMPOTENCY_RETENTION).timestamp();
        let mut actions = Vec::with_capacity(members.len() + 1);
        for &i in members {
            let mut item = keys::event_id(to.proxy_id, &events[i].event_id);
            item.insert(EXPIRES_AT.into(), n(expires));
            actions.push(self.put_if_absent(item, "event id marker")?);
        }
        actions.extend(self.chunk_puts(to, members.iter().map(|&i| &events[i]), now)?);
        Ok(actions)
    }

    /// The chunk items holding `events`, pre-folded: one per day, split by
    /// five-minute buckets when a day's part outgrows an item. Decided here,
    /// before anything is written: a part that cannot fit even alone is a
    /// [`StorageError::TooLarge`] (413), never a failed transaction.
    pub(super) fn chunk_puts<'e>(
        &self,
        to: Destination<'_>,
        events: impl IntoIterator<Item = &'e Event>,
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactWriteItem>, StorageError> {
        let mut parts = fold_events(events);
        let mut puts = Vec::new();
        let mut total = 0usize;
        for part in parts.values_mut() {
            if !part.dims.keys.is_empty() {
                part.dims.pages = to.dimension_pages;
            }
        }
        // The proxy's first dimension: noted on the proxy in this very
        // transaction, so that no chunk of a later request (whose ownership
        // read sees it) is left out of the pages. Until then chunks write no
        // dimension pages (a proxy without dimensions pays nothing for them).
        let first_dimensions =
            to.dims_since_ms.is_none() && parts.values().any(|part| !part.dims.keys.is_empty());
        let paged = to.dims_since_ms.is_some() || first_dimensions;
        if first_dimensions {
            puts.push(self.note_dimensions_since(to.proxy_id, now)?);
        }
        for (day, part) in &parts {
            for body in split_part(part)? {
                total += body.len();
                if total > MAX_TRANSACTION_BYTES {
                    return Err(StorageError::TooLarge(
                        "The batch's latency samples are too varied to store in one request; \
                         send fewer events (or fewer distinct latency values) per request."
                            .into(),
                    ));
                }
                let chunk_id = uuid::Uuid::new_v4().simple().to_string();
                let sort_key = keys::pending_sort_key(*day, now.timestamp_millis(), &chunk_id);
                let mut item = keys::pending_chunk(to.proxy_id, &sort_key);
                item.insert("retention".into(), n(to.retention_days));
                item.insert("body".into(), AttributeValue::B(Blob::new(body)));
                if paged {
                    item.insert(keys::PAGED.into(), AttributeValue::Bool(true));
                }
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StorageError::Internal(format!("building chunk put: {e}")))?;
                puts.push(TransactWriteItem::builder().put(put).build());
            }
        }
        Ok(puts)
    }
}

impl Store {
    /// Sets the proxy's `dimsSince` unless it is set: in a transaction with
    /// the chunks that bring its first dimension (a racing request's own
    /// note leaves the first one in place).
    fn note_dimensions_since(
        &self,
        proxy_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StorageError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::proxy(proxy_id)))
            .update_expression("SET #since = if_not_exists(#since, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#since", keys::DIMS_SINCE)
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .build()
            .map_err(|e| StorageError::Internal(format!("building dimsSince update: {e}")))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// A producer's stored state.
struct ProducerState {
    sequence: u64,
    /// Absent on state written before fingerprints were kept.
    fingerprint: Option<String>,
}

impl ProducerState {
    fn of(item: &std::collections::HashMap<String, AttributeValue>) -> Option<Self> {
        Some(Self {
            sequence: get_n(item, "seq")?,
            fingerprint: super::get_s(item, "digest").map(str::to_string),
        })
    }
}

/// Splits unsequenced events (indexes, in order) into transactions: one
/// marker per event plus the chunk items, within 100 actions. A chunk never
/// needs more than one item per day, and a request spans at most the late
/// window's days (and one ahead).
fn plan_groups(events: &[Event], order: &[usize]) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut days: HashSet<NaiveDate> = HashSet::new();
    for &i in order {
        let day = events[i].day();
        let new_day = !days.contains(&day);
        if !current.is_empty()
            // One action is kept for the proxy's first-dimension note.
            && current.len() + 1 + days.len() + usize::from(new_day) > MAX_TRANSACT_ACTIONS - 1
        {
            groups.push(std::mem::take(&mut current));
            days.clear();
        }
        current.push(i);
        days.insert(day);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

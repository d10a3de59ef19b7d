//! Recording: event-id markers, producers' sequences and pending chunks.
//!
//! A request's events are folded into one [`DayPart`] per day they fall on
//! and stored as one *pending chunk* (rarely a few, if very large), in the
//! proxy's pending partition. What makes a request count exactly once is
//! written in the same transaction:
//! - a **sequenced batch** updates its producer's last sequence, on the
//!   condition that this batch is the next one (or the producer is new);
//! - an **unsequenced event** puts its id marker on the condition that the id
//!   is new; a cancelled transaction names the ids that were not, and the
//!   rest are re-planned without them.
//!
//! No item is shared between writers (chunks are new items, producers send
//! in order), so concurrent requests of one proxy never conflict.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, NaiveDate, Utc};

use super::codec::encode_body;
use super::keys::{self, EXPIRES_AT, day_key, n};
use super::retry::{Failure, MAX_ATTEMPTS, backoff, cancellations, cancelled, classify};
use super::{Store, get_n};
use crate::domain::event::Event;
use crate::domain::rollup::{DayPart, fold_events};
use crate::error::ApiError;

/// DynamoDB's limit on actions in one TransactWriteItems.
const MAX_TRANSACT_ACTIONS: usize = 100;
/// A chunk item's body stays under this (DynamoDB's item limit is 400 KB).
const MAX_CHUNK_BODY_BYTES: usize = 350 * 1024;
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
}

/// What became of a sequenced batch.
#[derive(Debug)]
pub enum SequencedOutcome {
    /// Recorded whole (every event), in one transaction.
    Recorded { write_units: f64 },
    /// The producer is already at or past this sequence: nothing recorded.
    Duplicate,
    /// Batches are missing before this one: nothing recorded.
    Gap { expected: u64 },
}

/// Where a request's events are recorded and for how long their state is kept.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub proxy_id: &'a str,
    /// Raw retention of the owner's tier, in days.
    pub retention_days: i64,
}

/// A chunk as written: its sort key and its day parts, each encoded on its
/// own so that a part that cannot be decoded poisons only its day.
pub type ChunkBody = Vec<(String, Vec<u8>)>;

impl Store {
    /// Records a sequenced batch whole, exactly once per (producer, sequence).
    pub async fn record_sequenced(
        &self,
        to: Destination<'_>,
        sequence: &Sequence,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> Result<SequencedOutcome, ApiError> {
        let mut actions = vec![self.producer_update(to.proxy_id, sequence, now)?];
        actions.extend(self.chunk_puts(to, events.iter(), now)?);
        if actions.len() > MAX_TRANSACT_ACTIONS {
            return Err(ApiError::invalid(
                "The batch is too large to record atomically; send it as several sequenced batches.",
            ));
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
                        let last_seq = match reasons[0].item.as_ref().and_then(|i| get_n(i, "seq"))
                        {
                            Some(seq) => Some(seq),
                            // Not every store returns the old item: read it.
                            None => {
                                self.producer_sequence(to.proxy_id, &sequence.producer_id)
                                    .await?
                            }
                        };
                        return Ok(match last_seq {
                            Some(last) if sequence.sequence <= last => SequencedOutcome::Duplicate,
                            Some(last) => SequencedOutcome::Gap { expected: last + 1 },
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
        Err(ApiError::ServiceUnavailable(last))
    }

    /// The last sequence recorded for a producer, if it has state.
    pub async fn producer_sequence(
        &self,
        proxy_id: &str,
        producer_id: &str,
    ) -> Result<Option<u64>, ApiError> {
        let item = self
            .get_item(keys::producer(proxy_id, producer_id), "read producer")
            .await?;
        Ok(item.as_ref().and_then(|i| get_n(i, "seq")))
    }

    fn producer_update(
        &self,
        proxy_id: &str,
        sequence: &Sequence,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, ApiError> {
        let previous = sequence.sequence as i128 - 1;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::producer(proxy_id, &sequence.producer_id)))
            .update_expression("SET seq = :seq, #expires = :expires")
            .condition_expression("attribute_not_exists(pk) OR seq = :previous")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":seq", n(sequence.sequence))
            .expression_attribute_values(":previous", n(previous))
            .expression_attribute_values(":expires", n((now + IDEMPOTENCY_RETENTION).timestamp()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| ApiError::Internal(format!("building producer update: {e}")))?;
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
    ) -> Result<RecordOutcome, ApiError> {
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
    ) -> Result<(), ApiError> {
        let mut token = uuid::Uuid::new_v4().to_string();
        let mut actions = self.group_actions(to, events, &members, now)?;
        let mut attempt = 0u32;
        let mut last = String::new();
        while !members.is_empty() {
            attempt += 1;
            if attempt > MAX_ATTEMPTS + members.len() as u32 {
                return Err(ApiError::ServiceUnavailable(last));
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
                        return Err(ApiError::ServiceUnavailable(last));
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
    ) -> Result<Vec<TransactWriteItem>, ApiError> {
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

    /// The chunk item(s) holding `events`, pre-folded: one item unless the
    /// parts outgrow an item, then as few as fit (split between days).
    fn chunk_puts<'e>(
        &self,
        to: Destination<'_>,
        events: impl IntoIterator<Item = &'e Event>,
        now: DateTime<Utc>,
    ) -> Result<Vec<TransactWriteItem>, ApiError> {
        let parts = fold_events(events);
        let mut puts = Vec::new();
        for body in pack_chunks(&parts)? {
            let chunk_id = uuid::Uuid::new_v4().simple().to_string();
            let sort_key = keys::pending_sort_key(to.proxy_id, now.timestamp_millis(), &chunk_id);
            let mut item = keys::pending_chunk(to.proxy_id, &sort_key);
            item.insert("retention".into(), n(to.retention_days));
            item.insert(
                "body".into(),
                AttributeValue::B(Blob::new(encode_body(&body)?)),
            );
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(|e| ApiError::Internal(format!("building chunk put: {e}")))?;
            puts.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(puts)
    }
}

/// Days' parts packed into as few chunk bodies as fit an item.
fn pack_chunks(parts: &BTreeMap<NaiveDate, DayPart>) -> Result<Vec<ChunkBody>, ApiError> {
    let mut bodies: Vec<ChunkBody> = Vec::new();
    let mut current: ChunkBody = Vec::new();
    let mut size = 0;
    for (day, part) in parts {
        let bytes = encode_body(part)?;
        if !current.is_empty() && size + bytes.len() > MAX_CHUNK_BODY_BYTES {
            bodies.push(std::mem::take(&mut current));
            size = 0;
        }
        size += bytes.len() + 16;
        current.push((day_key(*day), bytes));
    }
    if !current.is_empty() {
        bodies.push(current);
    }
    Ok(bodies)
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
            && current.len() + 1 + days.len() + usize::from(new_day) > MAX_TRANSACT_ACTIONS
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

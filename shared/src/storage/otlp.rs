//! OTLP exports exactly once.
//!
//! Each (proxy, resource + scope) has one state item: every series' start
//! and last accepted point (postcard, opaque here), and a version. An
//! export's points of that resource + scope are planned against the state
//! as read (duplicates dropped, cumulative points turned into deltas, by
//! the caller's `plan`), and the new state is written in the **same**
//! TransactWriteItems as the chunks of the events, on the condition that the
//! version is still the one read. Whatever happens — a retry of the whole
//! export, two exports of one resource at once, a transaction whose answer
//! was lost — the state and the chunks move together: a point is counted
//! once. A lost condition re-reads the state and plans again (bounded
//! attempts, then 503 for the exporter to retry).
//!
//! Costs: one strongly consistent read of the state item (1 RRU per 4 KB)
//! and a transaction of the state item and the chunk(s): 2 WRU per started
//! KB of each. The state of a typical proxy (50 series) is a few KB.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::error::StorageError;
use super::keys::{self, EXPIRES_AT, n};
use super::record::{Destination, IDEMPOTENCY_RETENTION, MAX_TRANSACT_ACTIONS};
use super::retry::{Failure, backoff, cancellations, cancelled, classify};
use super::{Store, get_blob, get_n};
use crate::domain::event::Event;

/// A state item's body stays under this (DynamoDB's item limit is 400 KB);
/// past it, new series are refused (their points reported as rejected).
pub const MAX_OTLP_STATE_BYTES: usize = 350 * 1024;
/// Plans of one group tried before answering 503 (each lost condition means
/// another export of the same resource committed meanwhile).
pub const OTLP_ATTEMPTS: u32 = 8;
const VERSION: &str = "ver";
const BODY: &str = "body";

/// What `plan` made of one group's points against its stored state.
#[derive(Debug)]
pub struct Planned<T> {
    /// The new state's bytes, when it changed (it must, if events exist).
    pub state: Option<Vec<u8>>,
    pub events: Vec<Event>,
    /// Whatever the caller wants back from the plan that was written.
    pub report: T,
}

/// A group written (or found to be all duplicates).
#[derive(Debug)]
pub struct GroupWritten<T> {
    pub report: T,
    pub write_units: f64,
    /// Plans made (1 unless another export of the resource raced this one).
    pub attempts: u32,
}

impl Store {
    /// Plans and writes one resource + scope of an export, exactly once:
    /// `plan` gets the stored state's bytes (`None`: no state yet) and may
    /// be called again, with fresher state, after a lost race.
    pub async fn record_otlp_group<T>(
        &self,
        to: Destination<'_>,
        cap: usize,
        group: u64,
        now: DateTime<Utc>,
        mut plan: impl FnMut(Option<&[u8]>) -> Planned<T>,
    ) -> Result<GroupWritten<T>, StorageError> {
        let key = keys::otlp_state(to.proxy_id, group);
        let mut last = String::new();
        let mut marked = false;
        for attempt in 1..=OTLP_ATTEMPTS {
            let item = self.get_item(key.clone(), "read OTLP state").await?;
            let version = item.as_ref().and_then(|i| get_n(i, VERSION));
            let stored = item.as_ref().and_then(|i| get_blob(i, BODY));
            let mut planned = plan(stored);
            let Some(state) = planned.state.take() else {
                // Nothing new (duplicates only): nothing to write.
                return Ok(GroupWritten {
                    report: planned.report,
                    write_units: 0.0,
                    attempts: attempt,
                });
            };
            if !planned.events.is_empty() {
                if !marked {
                    self.mark_dirty(to.proxy_id, to.marked_at_ms, now).await?;
                    marked = true;
                }
                self.admit_dimensions(to.proxy_id, cap, &mut planned.events)
                    .await?;
            }
            let mut actions = vec![self.otlp_state_put(&key, version, state, now)?];
            actions.extend(self.chunk_puts(to, planned.events.iter(), now)?);
            if actions.len() > MAX_TRANSACT_ACTIONS {
                return Err(StorageError::TooLarge(
                    "The export spans too many days to record atomically; export more often."
                        .into(),
                ));
            }
            let token = uuid::Uuid::new_v4().to_string();
            match self.transact(&actions, &token).await {
                Ok(write_units) => {
                    return Ok(GroupWritten {
                        report: planned.report,
                        write_units,
                        attempts: attempt,
                    });
                }
                Err(err) => match cancellations(&err) {
                    // Another export of this resource wrote first: plan again.
                    Some(reasons) if reasons.first().is_some_and(|r| r.condition_failed()) => {
                        last = "OTLP state changed concurrently".into();
                    }
                    Some(reasons) => match cancelled("record OTLP export", &reasons) {
                        Failure::Fatal(e) => return Err(e),
                        Failure::Retryable(why) => last = why,
                    },
                    // Whether it committed or not, the next plan reads the
                    // state it left: a committed write makes its points
                    // duplicates, never counted twice.
                    None => match classify("record OTLP export", err) {
                        Failure::Fatal(e) => return Err(e),
                        Failure::Retryable(why) => last = why,
                    },
                },
            }
            if attempt < OTLP_ATTEMPTS {
                backoff(attempt).await;
            }
        }
        Err(StorageError::Unavailable(last))
    }

    /// The state's bytes as stored (tests and tools).
    pub async fn otlp_state(
        &self,
        proxy_id: &str,
        group: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let item = self
            .get_item(keys::otlp_state(proxy_id, group), "read OTLP state")
            .await?;
        Ok(item
            .as_ref()
            .and_then(|i| get_blob(i, BODY))
            .map(<[u8]>::to_vec))
    }

    fn otlp_state_put(
        &self,
        key: &keys::Key,
        version: Option<u64>,
        state: Vec<u8>,
        now: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StorageError> {
        let mut item = key.clone();
        item.insert(
            BODY.into(),
            aws_sdk_dynamodb::types::AttributeValue::B(Blob::new(state)),
        );
        item.insert(VERSION.into(), n(version.map_or(1, |v| v + 1)));
        item.insert(
            EXPIRES_AT.into(),
            n((now + IDEMPOTENCY_RETENTION).timestamp()),
        );
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match version {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(v) => put
                .condition_expression("#ver = :ver")
                .expression_attribute_names("#ver", VERSION)
                .expression_attribute_values(":ver", n(v)),
        };
        let put = put
            .build()
            .map_err(|e| StorageError::Internal(format!("building the OTLP state put: {e}")))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

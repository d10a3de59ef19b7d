//! One-shot migration from the v1 layout: `aggregate-metrics` invoked with
//! `{"migrate": "v1"}` (see the README's "Upgrading from v1").
//!
//! v1 kept every event (`EVENTS#{proxy}#{day}` chunks of events), a day head
//! per (proxy, day) (`DAYS#{proxy}` / `{day}`) and a materialised rollup
//! (`ROLLUP#{proxy}` / `{day}`). For each v1 day head the migration folds the
//! day into the v2 items — from its raw events when all of them are still
//! kept, else from its v1 rollup (v1 expired raw events by the caller's tier,
//! so some may be gone while the rollup holds them all: the source holding
//! more events wins) — under the marker [`V1_MARKER`], then deletes the head
//! and the v1 rollup. The marker makes a rerun (after a crash, or a run that
//! ran out of time) skip what is done, and it merges with whatever v2 folded
//! into the same day meanwhile. It scans the table once (the only scan in the
//! service), so its read cost is the table's size; the scan position is saved
//! after each page, so a run out of time resumes where it stopped, and one
//! day that fails is counted and left for a rerun, never the end of the run.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::codec::{FORMAT_V1, decode_with};
use super::error::StorageError;
use super::keys::{self, parse_day_key, s};
use super::retry::{classify, with_retries};
use super::{Store, get_blob, get_s};
use crate::domain::event::{Event, EventType};
use crate::domain::rollup::{Rollup, Stats, fold_events};
use crate::domain::sketch::LatencySketch;

/// What the v1 data of a day is recorded under in the v2 items. `~` sorts
/// after every chunk key, so no fold ever prunes it.
pub const V1_MARKER: &str = "~v1";

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationReport {
    pub days_migrated: u64,
    pub events_migrated: u64,
    /// Days rebuilt from their v1 rollup (raw events expired, all or some).
    pub days_from_rollups: u64,
    /// Days that failed (left in place: a rerun tries them again).
    pub days_failed: u64,
    /// False when the run ran out of time: invoke it again to go on.
    pub done: bool,
}

/// An event as v1 stored it (frozen: v1 bodies must decode forever).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V1Event {
    pub event_id: String,
    pub event_type: EventType,
    pub timestamp_ms: i64,
    pub healthy: bool,
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub total_latency_ms: Option<f64>,
    pub min_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub latency_sketch: Option<LatencySketch>,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub connection_count: u64,
    pub concurrent_connections: Option<u64>,
    pub error_message: Option<String>,
}

impl From<V1Event> for Event {
    fn from(e: V1Event) -> Self {
        Event {
            event_id: e.event_id,
            event_type: e.event_type,
            timestamp_ms: e.timestamp_ms,
            healthy: e.healthy,
            request_count: e.request_count,
            success_count: e.success_count,
            error_count: e.error_count,
            total_latency_ms: e.total_latency_ms,
            min_latency_ms: e.min_latency_ms,
            max_latency_ms: e.max_latency_ms,
            latency_sketch: e.latency_sketch,
            data_transferred_bytes: e.data_transferred_bytes,
            data_received_bytes: e.data_received_bytes,
            connection_count: e.connection_count,
            concurrent_connections: e.concurrent_connections,
            dimensions: Default::default(),
            status_counts: None,
            error_message: e.error_message,
        }
    }
}

/// A day's rollup as v1 stored it (frozen).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct V1Rollup {
    pub event_count: u64,
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub latency_total_ms: f64,
    pub latency_weight: u64,
    pub min_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub sketch: LatencySketch,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub connection_count: u64,
    pub peak_concurrent: Option<u64>,
    pub concurrent_sum: u64,
    pub concurrent_reports: u64,
    pub healthy_buckets: Vec<u64>,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    pub latest_concurrent: Option<(i64, u64)>,
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl From<V1Rollup> for Rollup {
    fn from(r: V1Rollup) -> Self {
        Rollup {
            stats: Stats {
                event_count: r.event_count,
                request_count: r.request_count,
                success_count: r.success_count,
                error_count: r.error_count,
                latency_total_ms: r.latency_total_ms,
                latency_weight: r.latency_weight,
                min_latency_ms: r.min_latency_ms,
                max_latency_ms: r.max_latency_ms,
                sketch: r.sketch,
                data_transferred_bytes: r.data_transferred_bytes,
                data_received_bytes: r.data_received_bytes,
                connection_count: r.connection_count,
                peak_concurrent: r.peak_concurrent,
                concurrent_sum: r.concurrent_sum,
                concurrent_reports: r.concurrent_reports,
                first_event_ms: r.first_event_ms,
                last_event_ms: r.last_event_ms,
                latest_concurrent: r.latest_concurrent,
            },
            healthy_buckets: r.healthy_buckets,
            errors: r.errors,
            // v1 knew no status classes: its successes as 2xx, errors as 5xx.
            status: [0, r.success_count, 0, 0, r.error_count],
        }
    }
}

/// Migrates every v1 day head found before `deadline`.
pub async fn migrate_v1(store: &Store, deadline: Instant) -> Result<MigrationReport, StorageError> {
    let mut report = MigrationReport::default();
    let mut start = store.migration_position().await?;
    loop {
        let page = with_retries(|| async {
            store
                .client
                .scan()
                .table_name(&store.table)
                .filter_expression("begins_with(pk, :heads)")
                .expression_attribute_values(":heads", s(keys::v1::DAY_HEADS_PREFIX))
                .set_exclusive_start_key(start.clone())
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| classify("scan for v1 day heads", e))
        })
        .await?;
        for item in page.items() {
            if Instant::now() >= deadline {
                return Ok(report);
            }
            let (Some(pk), Some(day)) = (
                get_s(item, keys::PK),
                get_s(item, keys::SK).and_then(parse_day_key),
            ) else {
                continue;
            };
            let Some(proxy_id) = pk.strip_prefix(keys::v1::DAY_HEADS_PREFIX) else {
                continue;
            };
            if let Err(e) = migrate_day(store, proxy_id, day, &mut report).await {
                tracing::error!(proxy_id, %day, error = %e, "migrating a v1 day failed; a rerun tries it again");
                report.days_failed += 1;
            }
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => {
                store.save_migration_position(Some(&key)).await?;
                start = Some(key);
            }
            _ => break,
        }
    }
    // The next invocation scans from the start again (finding only what
    // failed, or what a v1 writer added since).
    store.save_migration_position(None).await?;
    report.done = report.days_failed == 0;
    Ok(report)
}

async fn migrate_day(
    store: &Store,
    proxy_id: &str,
    day: NaiveDate,
    report: &mut MigrationReport,
) -> Result<(), StorageError> {
    let mut events: Vec<Event> = Vec::new();
    for item in store
        .query_all(
            keys::v1::events_partition(proxy_id, day),
            None,
            "read v1 events",
        )
        .await?
    {
        let body = get_blob(&item, "body")
            .ok_or_else(|| StorageError::Internal("v1 event chunk without body".into()))?;
        events.extend(
            decode_with::<Vec<V1Event>>(FORMAT_V1, body)?
                .into_iter()
                .map(Event::from),
        );
    }
    let rollup = store.v1_rollup(proxy_id, day).await?;
    let events_kept = events.iter().filter(|e| e.day() == day).count() as u64;
    if let Some(rollup) = rollup.filter(|r| r.event_count() >= events_kept) {
        // Some raw events expired (or none are left): the rollup holds more.
        store
            .merge_into_day(proxy_id, day, &[(V1_MARKER.to_string(), rollup)])
            .await?;
        report.days_from_rollups += 1;
    } else {
        let parts = fold_events(&events);
        if let Some(part) = parts.get(&day) {
            let tier = store
                .get_proxy(proxy_id)
                .await?
                .map_or(crate::domain::tier::Tier::Free, |p| p.tier);
            // Buckets too: the summary's last 24 hours may reach into it.
            store
                .fold_marked_part(proxy_id, day, V1_MARKER, part, tier.raw_retention_days())
                .await?;
        }
        report.events_migrated += events.len() as u64;
    }
    for key in [
        keys::v1::day_head(proxy_id, day),
        keys::v1::rollup(proxy_id, day),
    ] {
        with_retries(|| async {
            store
                .client
                .delete_item()
                .table_name(&store.table)
                .set_key(Some(key.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("delete v1 item", e))
        })
        .await?;
    }
    report.days_migrated += 1;
    Ok(())
}

/// Where the migration's scan stopped (one small item).
const MIGRATION_PK: &str = "MIGRATION";
const MIGRATION_SK: &str = "v1";

impl Store {
    async fn migration_position(
        &self,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StorageError> {
        let key = HashMap::from([
            (keys::PK.to_string(), s(MIGRATION_PK)),
            (keys::SK.to_string(), s(MIGRATION_SK)),
        ]);
        let Some(item) = self.get_item(key, "read migration position").await? else {
            return Ok(None);
        };
        let (Some(pk), Some(sk)) = (get_s(&item, "atPk"), get_s(&item, "atSk")) else {
            return Ok(None);
        };
        Ok(Some(HashMap::from([
            (keys::PK.to_string(), s(pk)),
            (keys::SK.to_string(), s(sk)),
        ])))
    }

    async fn save_migration_position(
        &self,
        at: Option<&HashMap<String, AttributeValue>>,
    ) -> Result<(), StorageError> {
        let mut item = HashMap::from([
            (keys::PK.to_string(), s(MIGRATION_PK)),
            (keys::SK.to_string(), s(MIGRATION_SK)),
        ]);
        if let Some(at) = at {
            for (name, attribute) in [(keys::PK, "atPk"), (keys::SK, "atSk")] {
                if let Some(value) = at.get(name) {
                    item.insert(attribute.to_string(), value.clone());
                }
            }
        }
        with_retries(|| async {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("save migration position", e))
        })
        .await
    }

    async fn v1_rollup(
        &self,
        proxy_id: &str,
        day: NaiveDate,
    ) -> Result<Option<Rollup>, StorageError> {
        let item = self
            .get_item(keys::v1::rollup(proxy_id, day), "read v1 rollup")
            .await?;
        match item.as_ref().and_then(|i| get_blob(i, "body")) {
            Some(body) => Ok(Some(decode_with::<V1Rollup>(FORMAT_V1, body)?.into())),
            None => Ok(None),
        }
    }
}

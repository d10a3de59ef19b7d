//! The scheduled aggregation: folds every pending chunk into the days and
//! five-minute buckets it belongs to, incrementally, within bounds.
//!
//! - Incremental: only pending chunks are read (16 partitions; nothing when
//!   idle), and a folded chunk leaves the pending partition, so no chunk is
//!   read by two runs unless the first failed to fold it.
//! - Bounded: a proxy's chunks are read a page at a time, each page folded
//!   before the next is read, so memory does not grow with a day's size; a
//!   proxy gets at most a budget of chunks per run, and the run takes no new
//!   page past its deadline. What is left stays pending for the next run.
//! - Isolated and fair: shards are taken in a random order, each from a
//!   random proxy onwards (wrapping around), so no tenant always goes first;
//!   a day that fails is counted and the run goes on; after three failed
//!   runs in a row the day is quarantined (skipped, reported) until released.
//! - Exactly once: see `storage/fold.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures::{StreamExt, stream};
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::rollup::DayPart;
use crate::error::ApiError;
use crate::storage::{
    BatchChunk, DirtyMark, PENDING_SHARDS, PendingChunk, ProxyFold, StorageError, Store, keys,
};

/// Shards folded at once.
const CONCURRENT_SHARDS: usize = 4;
/// Proxies folded at once in one invocation, whatever the shards: with
/// `FOLD_MEMORY_BYTES` each, a run holds at most 96 MB of decoded state, and
/// a shard of many proxies is not folded one proxy after another.
const CONCURRENT_FOLDS: usize = 4;
/// Chunks read per page of one proxy (a page is also at most 1 MB).
const PAGE_CHUNKS: i32 = 100;
/// Stored chunk bytes one proxy may have read per run: a tenant's backlog
/// cannot take a run's time from the others; the rest waits for the next
/// run. Well above what a proxy may record between two runs at its limit
/// (`BENCHMARKS.md`, "Pressure").
pub const MAX_BYTES_PER_PROXY: usize = 256 * 1024 * 1024;
/// Decoded state one proxy's fold may hold before it writes what it has:
/// shards fold at once, so a run holds at most this times
/// `CONCURRENT_FOLDS` (96 MB of the function's 256 MB).
pub const FOLD_MEMORY_BYTES: usize = 24 * 1024 * 1024;
/// Default time a run may take (the deployed function's timeout is 300 s).
pub const DEFAULT_RUN_BUDGET: Duration = Duration::from_secs(240);
/// What a run leaves of the invocation's time for its report.
const DEADLINE_MARGIN: Duration = Duration::from_secs(20);

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregationReport {
    pub proxies_processed: u64,
    pub days_materialized: u64,
    pub events_read: u64,
    pub days_failed: u64,
    pub days_quarantined: u64,
    pub duration_ms: u64,
}

/// How much one run may do.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// No new page is taken after this instant.
    pub deadline: Instant,
    /// Stored chunk bytes one proxy may have read per run.
    pub max_bytes_per_proxy: usize,
    /// Decoded state one proxy's fold may hold before writing.
    pub fold_memory_bytes: usize,
    /// Chunks read per page of one proxy.
    pub page_chunks: i32,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self::within(DEFAULT_RUN_BUDGET)
    }
}

impl RunLimits {
    pub fn within(budget: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
            max_bytes_per_proxy: MAX_BYTES_PER_PROXY,
            fold_memory_bytes: FOLD_MEMORY_BYTES,
            page_chunks: PAGE_CHUNKS,
        }
    }

    /// The limits of an invocation that must answer by `deadline_ms` (epoch
    /// ms, the Lambda context's deadline), read against the store's clock.
    pub fn for_invocation(store: &Store, deadline_ms: u64) -> Self {
        let now_ms = store.clock().now().timestamp_millis().max(0) as u64;
        if deadline_ms <= now_ms {
            // No usable deadline (local emulators send a duration, not an
            // instant): the default budget.
            return Self::default();
        }
        let remaining = Duration::from_millis(deadline_ms - now_ms);
        let budget = if remaining > DEADLINE_MARGIN * 2 {
            remaining - DEADLINE_MARGIN
        } else {
            remaining / 2
        };
        Self::within(budget.min(DEFAULT_RUN_BUDGET))
    }
}

/// A run in which no day could be processed although some failed: the
/// scheduler should retry (its report is in the message and the log).
#[derive(Debug, thiserror::Error)]
#[error("aggregation processed no day and {} failed: {}", .0.days_failed, serde_json::to_string(.0).unwrap_or_default())]
pub struct RunFailed(pub AggregationReport);

mod run;

use run::{Run, Tally};

/// One run over `shards` (all 16 unless the schedule fans out).
pub async fn run(
    store: &Store,
    shards: impl IntoIterator<Item = u32>,
    limits: RunLimits,
) -> Result<AggregationReport, RunFailed> {
    let started = Instant::now();
    let failures = match store.failure_records().await {
        Ok(records) => records
            .into_iter()
            .map(|(key, record)| (key, record.quarantined))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "reading the failure records failed");
            let report = AggregationReport {
                days_failed: 1,
                duration_ms: started.elapsed().as_millis() as u64,
                ..Default::default()
            };
            return Err(RunFailed(report));
        }
    };
    let run = Run {
        store,
        limits,
        failures,
        tally: Mutex::new(Tally::default()),
        folds: tokio::sync::Semaphore::new(CONCURRENT_FOLDS),
    };
    let mut shards: Vec<u32> = shards.into_iter().collect();
    shards.sort_unstable();
    shards.dedup();
    shards.shuffle(&mut rand::rng());
    stream::iter(shards)
        .map(|shard| Box::pin(run.shard(shard)))
        .buffer_unordered(CONCURRENT_SHARDS)
        .collect::<Vec<()>>()
        .await;
    let mut report = run.tally.into_inner().map(|t| t.report).unwrap_or_default();
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(?report, "aggregation run");
    if report.days_failed > 0 && report.days_materialized == 0 {
        return Err(RunFailed(report));
    }
    Ok(report)
}

/// Every shard, default limits.
pub async fn run_all(store: &Store) -> Result<AggregationReport, RunFailed> {
    run(store, 0..PENDING_SHARDS, RunLimits::default()).await
}

/// The shards an invocation should take: `detail.shards` when it lists valid
/// shard numbers (a fanned-out schedule), otherwise all of them.
pub fn shards_from_payload(payload: &Value) -> Vec<u32> {
    let listed: Vec<u32> = payload
        .pointer("/detail/shards")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .filter(|s| *s < u64::from(PENDING_SHARDS))
                .map(|s| s as u32)
                .collect()
        })
        .unwrap_or_default();
    if listed.is_empty() {
        (0..PENDING_SHARDS).collect()
    } else {
        listed
    }
}

/// What `aggregate-metrics` does with one invocation's payload (any JSON
/// object): a scheduled run, or one of the operator commands
/// `{"release": "all" | [{"proxyId", "date"}]}`, `{"discard": [...]}` (the
/// same entries: unreadable chunks deleted for good) and `{"migrate": "v1"}`.
pub async fn invoke(store: &Store, payload: &Value, limits: RunLimits) -> Result<Value, ApiError> {
    if let Some(release) = payload.get("release") {
        let released = release_quarantine(store, release, Release::Retry).await?;
        return Ok(json!({ "released": released }));
    }
    if let Some(discard) = payload.get("discard") {
        let discarded = release_quarantine(store, discard, Release::Discard).await?;
        return Ok(json!({ "discarded": discarded }));
    }
    if let Some(what) = payload.get("migrate") {
        if what != "v1" {
            return Err(ApiError::invalid("'migrate' takes \"v1\"."));
        }
        let report = Box::pin(crate::storage::migrate::migrate_v1(store, limits.deadline)).await?;
        return Ok(serde_json::to_value(report).unwrap_or_default());
    }
    match Box::pin(run(store, shards_from_payload(payload), limits)).await {
        Ok(report) => Ok(serde_json::to_value(report).unwrap_or_default()),
        Err(failed) => Err(ApiError::ServiceUnavailable(failed.to_string())),
    }
}

/// What becomes of a released subject's unreadable chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Back to pending (a build that reads it is deployed).
    Retry,
    /// Deleted for good.
    Discard,
}

/// Forgets failure records, quarantined or not: `"all"`, or a list of
/// `{"proxyId", "date"}` (a `date` of `chunk:<key>` names an unreadable
/// chunk, which goes back to pending, or is deleted with [`Release::Discard`]).
pub async fn release_quarantine(
    store: &Store,
    what: &Value,
    how: Release,
) -> Result<u64, ApiError> {
    let records = store.failure_records().await?;
    let chosen: Vec<(String, String)> = match what {
        Value::String(all) if all == "all" => records.into_keys().collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let field = |name: &str| {
                    item.get(name)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            ApiError::invalid(format!(
                                "each release entry needs '{name}': {{\"proxyId\": ..., \"date\": ...}}"
                            ))
                        })
                };
                Ok((field("proxyId")?, field("date")?))
            })
            .collect::<Result<_, ApiError>>()?,
        _ => {
            return Err(ApiError::invalid(
                "'release' takes \"all\" or a list of {\"proxyId\", \"date\"}.",
            ));
        }
    };
    for (proxy_id, subject) in &chosen {
        if let Some(sort_key) = subject.strip_prefix("chunk:") {
            match how {
                Release::Retry => {
                    store.release_chunk(proxy_id, sort_key).await?;
                }
                Release::Discard => store.discard_chunk(proxy_id, sort_key).await?,
            }
        } else if how == Release::Discard {
            return Err(ApiError::invalid(
                "'discard' takes unreadable chunks only ({\"proxyId\", \"date\": \"chunk:<key>\"}).",
            ));
        }
        store.clear_failures(proxy_id, subject).await?;
        tracing::warn!(proxy_id, subject, ?how, "released from quarantine");
    }
    Ok(chosen.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_come_from_the_payload_or_default_to_all() {
        assert_eq!(
            shards_from_payload(&json!({})).len(),
            PENDING_SHARDS as usize
        );
        assert_eq!(
            shards_from_payload(&json!({"detail": {"shards": [3, 5]}})),
            vec![3, 5]
        );
        assert_eq!(
            shards_from_payload(&json!({"detail": {"shards": [99, "x"]}})).len(),
            PENDING_SHARDS as usize
        );
    }

    #[test]
    fn a_deadline_in_the_past_means_the_default_budget() {
        use crate::clock::Clock;
        let clock = Clock::pinned(chrono::DateTime::from_timestamp(2_000_000_000, 0).unwrap());
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build();
        let store = Store::new(aws_sdk_dynamodb::Client::from_conf(conf), "t", clock);
        let budget = |limits: RunLimits| limits.deadline.saturating_duration_since(Instant::now());
        // what cargo lambda watch sends: 600 000 "ms" (ten minutes, not an instant)
        assert!(budget(RunLimits::for_invocation(&store, 600_000)) > Duration::from_secs(200));
        let in_five_minutes = 2_000_000_000_000 + 300_000;
        let b = budget(RunLimits::for_invocation(&store, in_five_minutes));
        assert!(
            b > Duration::from_secs(200) && b <= DEFAULT_RUN_BUDGET,
            "{b:?}"
        );
        let in_ten_seconds = 2_000_000_000_000 + 10_000;
        assert!(
            budget(RunLimits::for_invocation(&store, in_ten_seconds)) <= Duration::from_secs(5)
        );
    }
}

//! The scheduled aggregation: materialises the daily rollup of every
//! (proxy, day) written since it was last materialised.
//!
//! Work is proportional to new data: the changed days are read from the
//! sparse `pending` index (one small query per shard, nothing when idle), and
//! only those days' events are read. Each day is written by
//! [`Store::materialise_day`], a transaction that succeeds only if no event
//! arrived since the day's version was read, so reruns, crashes and
//! concurrent runs can never double-count or drop an event: the worst case is
//! a day recomputed once more.

use std::time::Instant;

use futures::{StreamExt, stream};
use serde::Serialize;

use crate::domain::rollup::Rollup;
use crate::error::ApiError;
use crate::storage::{PENDING_SHARDS, Store};

/// Days materialised at once within one run.
const CONCURRENT_DAYS: usize = 8;
/// Times one day is retried in a run when events keep arriving under it.
const MAX_DAY_ATTEMPTS: u32 = 3;

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregationReport {
    pub proxies_processed: u64,
    pub days_materialized: u64,
    pub events_read: u64,
    pub duration_ms: u64,
}

/// Outcome of one (proxy, day).
struct DayOutcome {
    materialised: bool,
    events_read: u64,
}

/// One run over every pending shard (`shards` = all of them in production;
/// a fan-out could hand each invocation a subset).
pub async fn run(
    store: &Store,
    shards: impl IntoIterator<Item = u32>,
) -> Result<AggregationReport, ApiError> {
    let started = Instant::now();
    let mut pending = Vec::new();
    for shard in shards {
        pending.extend(store.pending_days(shard).await?);
    }
    pending.sort();
    pending.dedup();
    let mut proxies: Vec<&str> = pending.iter().map(|(p, _)| p.as_str()).collect();
    proxies.dedup();
    let proxies_processed = proxies.len() as u64;

    // Every day is attempted even if another fails: one bad day must not hold
    // back the rest. A failure still fails the run (so the schedule retries
    // and, in the end, dead-letters it) once the others are done.
    let results: Vec<Result<DayOutcome, ApiError>> = stream::iter(pending.iter())
        .map(|(proxy_id, day)| async move {
            let result = materialise(store, proxy_id, *day).await;
            if let Err(e) = &result {
                tracing::error!(proxy_id, %day, error = %e, "materialising a day failed");
            }
            result
        })
        .buffer_unordered(CONCURRENT_DAYS)
        .collect()
        .await;
    let mut outcomes = Vec::with_capacity(results.len());
    let mut first_error = None;
    for result in results {
        match result {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(AggregationReport {
        proxies_processed,
        days_materialized: outcomes.iter().filter(|o| o.materialised).count() as u64,
        events_read: outcomes.iter().map(|o| o.events_read).sum(),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The shards an invocation should take: `detail.shards` when it lists valid
/// shard numbers (a fanned-out schedule), otherwise all of them.
pub fn shards_from_detail(detail: &serde_json::Value) -> Vec<u32> {
    let listed: Vec<u32> = detail
        .get("shards")
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

/// Every shard.
pub async fn run_all(store: &Store) -> Result<AggregationReport, ApiError> {
    run(store, 0..PENDING_SHARDS).await
}

async fn materialise(
    store: &Store,
    proxy_id: &str,
    day: chrono::NaiveDate,
) -> Result<DayOutcome, ApiError> {
    let mut events_read = 0;
    for _ in 0..MAX_DAY_ATTEMPTS {
        // The version is read before the events: every event of a write at or
        // below it is then visible to the (strongly consistent) query.
        let Some(version) = store.day_version(proxy_id, day).await? else {
            return Ok(DayOutcome {
                materialised: false,
                events_read,
            });
        };
        let events = store.day_events(proxy_id, day).await?;
        events_read += events.len() as u64;
        let rollup = Rollup::of_events(day, &events);
        if store
            .materialise_day(proxy_id, day, version, &rollup)
            .await?
        {
            return Ok(DayOutcome {
                materialised: true,
                events_read,
            });
        }
        tracing::info!(proxy_id, %day, "events arrived during materialisation; recomputing");
    }
    // Still pending: the next run takes it.
    Ok(DayOutcome {
        materialised: false,
        events_read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shards_come_from_the_detail_or_default_to_all() {
        assert_eq!(
            shards_from_detail(&json!({})).len(),
            PENDING_SHARDS as usize
        );
        assert_eq!(shards_from_detail(&json!({"shards": [3, 5]})), vec![3, 5]);
        assert_eq!(
            shards_from_detail(&json!({"shards": [99, "x"]})).len(),
            PENDING_SHARDS as usize
        );
    }
}

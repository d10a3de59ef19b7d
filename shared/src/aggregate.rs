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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use crate::storage::{PENDING_SHARDS, PendingChunk, PendingView, Store, keys};

/// Shards folded at once.
const CONCURRENT_SHARDS: usize = 4;
/// Chunks read per page of one proxy.
const PAGE_CHUNKS: i32 = 100;
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
    /// Chunks one proxy may have folded per run (the rest wait for the next).
    pub max_chunks_per_proxy: usize,
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
            max_chunks_per_proxy: 2_000,
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

/// What the run has done so far (shared by the shards folded at once).
#[derive(Default)]
struct Tally {
    report: AggregationReport,
    quarantined_seen: HashSet<(String, String)>,
}

struct Run<'a> {
    store: &'a Store,
    limits: RunLimits,
    /// (proxy, subject) → quarantined? for every failure record at the start.
    failures: HashMap<(String, String), bool>,
    tally: Mutex<Tally>,
}

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
/// `{"release": "all" | [{"proxyId", "date"}]}` and `{"migrate": "v1"}`.
pub async fn invoke(store: &Store, payload: &Value, limits: RunLimits) -> Result<Value, ApiError> {
    if let Some(release) = payload.get("release") {
        let released = release_quarantine(store, release).await?;
        return Ok(json!({ "released": released }));
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

/// Forgets failure records, quarantined or not: `"all"`, or a list of
/// `{"proxyId", "date"}` (a `date` of `chunk:<key>` names an unreadable chunk).
pub async fn release_quarantine(store: &Store, what: &Value) -> Result<u64, ApiError> {
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
        store.clear_failures(proxy_id, subject).await?;
        tracing::warn!(proxy_id, subject, "released from quarantine");
    }
    Ok(chosen.len() as u64)
}

impl Run<'_> {
    fn out_of_time(&self) -> bool {
        Instant::now() >= self.limits.deadline
    }

    fn tally(&self, f: impl FnOnce(&mut Tally)) {
        if let Ok(mut tally) = self.tally.lock() {
            f(&mut tally);
        }
    }

    /// The shard's proxies from a random one onwards, wrapping around.
    async fn shard(&self, shard: u32) {
        // An empty shard (the common case when idle) costs one query.
        match self.store.pending_page(shard, "!", None, 1).await {
            Ok(page) if page.chunks.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(shard, error = %e, "reading a pending shard failed");
                self.tally(|t| t.report.days_failed += 1);
                return;
            }
        }
        let start = random_position();
        let mut seen: HashSet<String> = HashSet::new();
        // Keys are never empty; "!" sorts before every proxy id.
        for (after, before) in [
            (start.clone(), None),
            ("!".to_string(), Some(start.clone())),
        ] {
            let mut cursor = after;
            loop {
                if self.out_of_time() {
                    return;
                }
                let page = match self
                    .store
                    .pending_page(shard, &cursor, before.as_deref(), 1)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(shard, error = %e, "reading a pending shard failed");
                        self.tally(|t| t.report.days_failed += 1);
                        return;
                    }
                };
                let Some(first) = page.chunks.first() else {
                    break;
                };
                let proxy_id = first.proxy_id.clone();
                cursor = keys::pending_after(&proxy_id);
                if seen.insert(proxy_id.clone()) {
                    // Boxed: the fold's future is deep, and shards run at once.
                    Box::pin(self.proxy(shard, &proxy_id)).await;
                }
            }
        }
    }

    /// Folds one proxy's pending chunks, a page at a time, within its budget.
    async fn proxy(&self, shard: u32, proxy_id: &str) {
        self.tally(|t| t.report.proxies_processed += 1);
        let first_key = keys::pending_prefix(proxy_id);
        let last_key = keys::pending_after(proxy_id);
        // `after` is exclusive: start just before the proxy's first key.
        let mut cursor = keys::pending_prefix(proxy_id);
        cursor.pop();
        let mut still_pending: HashSet<String> = HashSet::new();
        let mut taken = 0usize;
        while taken < self.limits.max_chunks_per_proxy && !self.out_of_time() {
            let limit = PAGE_CHUNKS.min((self.limits.max_chunks_per_proxy - taken) as i32);
            let page = match self
                .store
                .pending_page(shard, &cursor, Some(&last_key), limit)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(proxy_id, error = %e, "reading pending chunks failed");
                    self.tally(|t| t.report.days_failed += 1);
                    return;
                }
            };
            let chunks: Vec<PendingChunk> = page
                .chunks
                .into_iter()
                .filter(|c| c.sort_key.starts_with(&first_key))
                .collect();
            let Some(last) = chunks.last() else {
                return;
            };
            cursor = last.sort_key.clone();
            taken += chunks.len();
            still_pending.extend(chunks.iter().map(|c| c.sort_key.clone()));
            let view = PendingView {
                read_through: cursor.clone(),
                still_pending: still_pending.clone(),
                now: self.store.clock().now(),
            };
            let left = self.fold_page(proxy_id, &chunks, &view).await;
            still_pending.retain(|k| !chunks.iter().any(|c| &c.sort_key == k) || left.contains(k));
            if page.next.is_none() {
                return;
            }
        }
    }

    /// Folds one page of a proxy's chunks; returns the chunks still pending.
    async fn fold_page(
        &self,
        proxy_id: &str,
        chunks: &[PendingChunk],
        view: &PendingView,
    ) -> HashSet<String> {
        // Each day's parts, decoded; days and chunks that cannot be read are
        // failures of their own and hold back nothing else.
        let mut days: BTreeMap<NaiveDate, Vec<(String, DayPart)>> = BTreeMap::new();
        let mut retention: BTreeMap<NaiveDate, i64> = BTreeMap::new();
        let mut failed: BTreeSet<NaiveDate> = BTreeSet::new();
        let mut skipped: BTreeSet<NaiveDate> = BTreeSet::new();
        for chunk in chunks {
            if let Err(why) = &chunk.parts {
                let subject = format!("chunk:{}", chunk.sort_key);
                if !self.skip_quarantined(proxy_id, &subject) {
                    self.failed(proxy_id, &subject, &ApiError::Internal(why.clone()))
                        .await;
                }
                continue;
            }
            for day in chunk.days() {
                if chunk.folded_days.contains(&day) || failed.contains(&day) {
                    continue;
                }
                if self.skip_quarantined(proxy_id, &keys::day_key(day)) {
                    skipped.insert(day);
                    continue;
                }
                match chunk.part(day) {
                    Ok(Some(part)) => {
                        self.tally(|t| t.report.events_read += part.event_count());
                        days.entry(day)
                            .or_default()
                            .push((chunk.sort_key.clone(), part));
                        let r = retention.entry(day).or_insert(chunk.retention_days);
                        *r = (*r).max(chunk.retention_days);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        days.remove(&day);
                        failed.insert(day);
                        self.failed(proxy_id, &keys::day_key(day), &e).await;
                    }
                }
            }
        }
        let mut folded: BTreeSet<NaiveDate> = BTreeSet::new();
        for (day, parts) in &days {
            let retention_days = retention.get(day).copied().unwrap_or(7);
            match Box::pin(
                self.store
                    .fold_day(proxy_id, *day, parts, retention_days, view),
            )
            .await
            {
                Ok(outcome) => {
                    folded.insert(*day);
                    if outcome.day_written {
                        self.tally(|t| t.report.days_materialized += 1);
                    }
                    let subject = keys::day_key(*day);
                    if self
                        .failures
                        .contains_key(&(proxy_id.to_string(), subject.clone()))
                        && let Err(e) = self.store.clear_failures(proxy_id, &subject).await
                    {
                        tracing::warn!(proxy_id, %day, error = %e, "clearing a failure record failed");
                    }
                }
                Err(e) => self.failed(proxy_id, &keys::day_key(*day), &e).await,
            }
        }
        let mut left = HashSet::new();
        for chunk in chunks {
            if chunk.parts.is_err() {
                left.insert(chunk.sort_key.clone());
                continue;
            }
            let done: BTreeSet<NaiveDate> = chunk
                .days()
                .into_iter()
                .filter(|d| folded.contains(d) && !chunk.folded_days.contains(d))
                .collect();
            let remaining = chunk
                .days()
                .into_iter()
                .any(|d| !chunk.folded_days.contains(&d) && !done.contains(&d));
            if remaining {
                left.insert(chunk.sort_key.clone());
            }
            if let Err(e) = self.store.finish_chunk(chunk, &done).await {
                // The items hold the chunk; the next run finishes it.
                tracing::warn!(proxy_id, chunk = %chunk.sort_key, error = %e, "finishing a chunk failed");
                left.insert(chunk.sort_key.clone());
            }
        }
        left
    }

    /// Whether `subject` is quarantined (counted once per run when it is).
    fn skip_quarantined(&self, proxy_id: &str, subject: &str) -> bool {
        let key = (proxy_id.to_string(), subject.to_string());
        if self.failures.get(&key).copied().unwrap_or(false) {
            self.tally(|t| {
                if t.quarantined_seen.insert(key) {
                    t.report.days_quarantined += 1;
                }
            });
            return true;
        }
        false
    }

    /// Counts a failed day. Only permanent failures count towards
    /// quarantine: a throttled store is no reason to set a day aside.
    async fn failed(&self, proxy_id: &str, subject: &str, error: &ApiError) {
        tracing::error!(proxy_id, subject, error = %error, "folding failed");
        self.tally(|t| t.report.days_failed += 1);
        if matches!(error, ApiError::ServiceUnavailable(_)) {
            return;
        }
        let now = self.store.clock().now().timestamp_millis();
        match self
            .store
            .record_failure(proxy_id, subject, &error.to_string(), now)
            .await
        {
            Ok(true) => {
                tracing::error!(
                    proxy_id,
                    subject,
                    "quarantined after {} failed runs; release with {{\"release\": [{{\"proxyId\": \"{proxy_id}\", \"date\": \"{subject}\"}}]}}",
                    crate::storage::QUARANTINE_AFTER
                );
                let key = (proxy_id.to_string(), subject.to_string());
                self.tally(|t| {
                    if t.quarantined_seen.insert(key) {
                        t.report.days_quarantined += 1;
                    }
                });
            }
            Ok(false) => {}
            Err(e) => tracing::error!(proxy_id, subject, error = %e, "counting a failure failed"),
        }
    }
}

/// A random place to start a shard at: proxy ids are made of `[A-Za-z0-9._-]`.
fn random_position() -> String {
    const ALPHABET: &[u8] = b"-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..4)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
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

    #[test]
    fn random_positions_are_proxy_id_shaped() {
        for _ in 0..100 {
            let p = random_position();
            assert!(crate::domain::validate_proxy_id(&p).is_ok(), "{p}");
        }
    }
}

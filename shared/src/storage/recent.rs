//! Reading the recent past: five-minute buckets (the summary, a scrape) and
//! today's day, by the same protocol as `days.rs` (epoch, items and pending
//! chunks, epoch again), with one pending query for all.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};

use super::Store;
use super::days::{PendingBudget, READ_ATTEMPTS, bucket_of, identities};
use super::error::StorageError;
use super::pending::PendingChunk;
use super::proxies::Proxy;
use crate::domain::rollup::{Bucket, Rollup, bucket_start_ms};

/// What [`Store::read_recent`] read of one proxy.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    /// Today's day (if it has events) and, when the lookback ran, the
    /// earlier days that have events.
    pub days: BTreeMap<NaiveDate, Rollup>,
    /// Five-minute buckets keyed by their start (ms).
    pub buckets: BTreeMap<i64, Bucket>,
}

impl Store {
    /// The five-minute buckets whose start lies in `[from, to]`, reflecting
    /// every event recorded before the call (keyed by their start, ms).
    pub async fn read_buckets(
        &self,
        proxy: &Proxy,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<BTreeMap<i64, Bucket>, StorageError> {
        let recent = self
            .read_recent_from(&proxy.proxy_id, proxy.fold_epoch, None, from, to, 0)
            .await?;
        Ok(recent.buckets)
    }

    /// What a scrape needs of one proxy, reflecting every event recorded
    /// before the call: `today`'s day, the five-minute buckets whose start
    /// lies in `[from, to]`, and — only when neither holds an event — the
    /// `lookback_days` days before `today` (to find the latest event). The
    /// proxy comes from the owner's index here, which does not carry the
    /// fold epoch: it is read first.
    pub async fn read_recent(
        &self,
        proxy_id: &str,
        today: NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lookback_days: i64,
    ) -> Result<Recent, StorageError> {
        let epoch = self.fold_epoch(proxy_id).await?;
        self.read_recent_from(proxy_id, epoch, Some(today), from, to, lookback_days)
            .await
    }

    async fn read_recent_from(
        &self,
        proxy_id: &str,
        mut epoch: u64,
        today: Option<NaiveDate>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lookback_days: i64,
    ) -> Result<Recent, StorageError> {
        let first = bucket_of(from);
        let last = bucket_of(to);
        for _ in 0..READ_ATTEMPTS {
            let mut budget = PendingBudget::default();
            // I: today's item and the buckets; then P: their days' chunks.
            let stored_today = match today {
                Some(today) => self.stored_days(proxy_id, today, today).await?,
                None => BTreeMap::new(),
            };
            let stored_buckets = self.stored_buckets(proxy_id, first, last).await?;
            let mut recent = Recent::default();
            for (day, item) in &stored_today {
                recent.days.insert(*day, item.value.rollup.clone());
            }
            for ((day, index), item) in &stored_buckets {
                recent
                    .buckets
                    .insert(bucket_start_ms(*day, *index), item.value.bucket.clone());
            }
            let day_folded: HashMap<NaiveDate, HashSet<&str>> = stored_today
                .iter()
                .map(|(d, item)| (*d, identities(&item.value.folded)))
                .collect();
            let bucket_folded: HashMap<(NaiveDate, u16), HashSet<&str>> = stored_buckets
                .iter()
                .map(|(at, item)| (*at, identities(&item.value.folded)))
                .collect();
            // One pending query for all (the lookback's days included: a
            // pending query before the items is as exact, see the module).
            let lookback_start = today.map(|t| t - chrono::Duration::days(lookback_days));
            let span_start = lookback_start.map_or(first.0, |t| t.min(first.0));
            let span_end = today.map_or(last.0, |t| t.max(last.0));
            let mut older_chunks: Vec<PendingChunk> = Vec::new();
            self.visit_pending(proxy_id, span_start, span_end, |chunk| {
                budget.take(proxy_id, &chunk)?;
                if today.is_some_and(|t| chunk.day < t) {
                    if chunk.day < first.0 {
                        older_chunks.push(chunk);
                        return Ok(());
                    }
                    older_chunks.push(chunk.clone());
                }
                let wants_day = today == Some(chunk.day)
                    && !day_folded
                        .get(&chunk.day)
                        .is_some_and(|f| f.contains(chunk.identity()));
                let wants_buckets = chunk.day >= first.0 && chunk.day <= last.0;
                if !wants_day && !wants_buckets {
                    return Ok(());
                }
                let Some(part) = budget.decode(proxy_id, &chunk) else {
                    return Ok(());
                };
                if wants_day {
                    recent.days.entry(chunk.day).or_default().merge_part(&part);
                }
                for (index, bucket) in &part.buckets {
                    let at = (chunk.day, *index);
                    if at < first
                        || at > last
                        || bucket_folded
                            .get(&at)
                            .is_some_and(|f| f.contains(chunk.identity()))
                    {
                        continue;
                    }
                    recent
                        .buckets
                        .entry(bucket_start_ms(chunk.day, *index))
                        .or_default()
                        .merge(bucket);
                }
                Ok(())
            })
            .await?;
            let seen = recent
                .days
                .values()
                .any(|d| d.stats.last_event_ms.is_some())
                || recent
                    .buckets
                    .values()
                    .any(|b| b.stats.last_event_ms.is_some());
            if let Some(today) = today
                && !seen
                && lookback_days > 0
            {
                let start = today - chrono::Duration::days(lookback_days);
                let end = today - chrono::Duration::days(1);
                let stored = self.stored_days(proxy_id, start, end).await?;
                let folded: HashMap<NaiveDate, HashSet<&str>> = stored
                    .iter()
                    .map(|(d, item)| (*d, identities(&item.value.folded)))
                    .collect();
                let mut older: BTreeMap<NaiveDate, Rollup> = stored
                    .iter()
                    .map(|(d, item)| (*d, item.value.rollup.clone()))
                    .collect();
                for chunk in &older_chunks {
                    if chunk.day < start
                        || folded
                            .get(&chunk.day)
                            .is_some_and(|f| f.contains(chunk.identity()))
                    {
                        continue;
                    }
                    if let Some(part) = budget.decode(proxy_id, chunk) {
                        older.entry(chunk.day).or_default().merge_part(&part);
                    }
                }
                recent.days.extend(older);
            }
            let now = self.fold_epoch(proxy_id).await?;
            if now == epoch {
                return Ok(recent);
            }
            tracing::info!(
                proxy_id,
                "the buckets were folded during the read; reading again"
            );
            epoch = now;
        }
        Err(StorageError::Unavailable(format!(
            "{proxy_id}: the buckets kept being folded during the read"
        )))
    }
}

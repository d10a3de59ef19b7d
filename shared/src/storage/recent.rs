//! Reading the recent past: five-minute buckets (the summary, a scrape) and
//! today's day, by the same protocol as `days.rs` (epoch, items and pending
//! chunks — queried at once —, epoch again), with one pending query for all.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};

use super::Store;
use super::days::{EARLY_PENDING_BYTES, PendingBudget, READ_ATTEMPTS, bucket_of, identities};
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
            .read_recent_from(
                &proxy.proxy_id,
                proxy.fold_epoch,
                from,
                to,
                &RecentRead::buckets(),
            )
            .await?;
        Ok(recent.buckets)
    }

    /// What the summary needs: the buckets of `[from, to]` and — only when
    /// `lookback_when` says so of them — the days `today - lookback_days ..=
    /// today`, with one pending query for all.
    pub async fn read_summary(
        &self,
        proxy: &Proxy,
        today: NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lookback_days: i64,
        lookback_when: &(dyn Fn(&Recent) -> bool + Send + Sync),
    ) -> Result<Recent, StorageError> {
        let read = RecentRead {
            today: Some(today),
            today_up_front: false,
            lookback_days,
            lookback_when,
        };
        self.read_recent_from(&proxy.proxy_id, proxy.fold_epoch, from, to, &read)
            .await
    }

    /// What a scrape needs of one proxy, reflecting every event recorded
    /// before the call: `today`'s day, the five-minute buckets whose start
    /// lies in `[from, to]`, and — only when neither holds an event — the
    /// `lookback_days` days before `today` (to find the latest event).
    /// `epoch`: the fold epoch read before (E0; the owner's index the
    /// scrape lists proxies from does not carry it).
    pub async fn read_recent(
        &self,
        proxy_id: &str,
        today: NaiveDate,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        lookback_days: i64,
        epoch: u64,
    ) -> Result<Recent, StorageError> {
        let nothing_seen = |recent: &Recent| {
            !(recent
                .days
                .values()
                .any(|d| d.stats.last_event_ms.is_some())
                || recent
                    .buckets
                    .values()
                    .any(|b| b.stats.last_event_ms.is_some()))
        };
        let read = RecentRead {
            today: Some(today),
            today_up_front: true,
            lookback_days,
            lookback_when: &nothing_seen,
        };
        self.read_recent_from(proxy_id, epoch, from, to, &read)
            .await
    }

    async fn read_recent_from(
        &self,
        proxy_id: &str,
        mut epoch: u64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        read: &RecentRead<'_>,
    ) -> Result<Recent, StorageError> {
        let (today, lookback_days) = (read.today, read.lookback_days);
        let first = bucket_of(from);
        let last = bucket_of(to);
        for _ in 0..READ_ATTEMPTS {
            let mut budget = PendingBudget::default();
            // One pending query for all (the lookback's days included: a
            // pending query before the items is as exact, see `days.rs`).
            let lookback_start = today.map(|t| t - chrono::Duration::days(lookback_days));
            let span_start = lookback_start.map_or(first.0, |t| t.min(first.0));
            let span_end = today.map_or(last.0, |t| t.max(last.0));
            // I: today's item and the buckets, and P: their days' chunks,
            // all at once (kept when few, else read again after I).
            let today_item = async {
                match today {
                    Some(today) if read.today_up_front => {
                        self.stored_days(proxy_id, today, today).await
                    }
                    _ => Ok(BTreeMap::new()),
                }
            };
            let (stored_today, stored_buckets, early) = futures::join!(
                Box::pin(today_item),
                Box::pin(self.stored_buckets(proxy_id, first, last)),
                Box::pin(self.pending_within(proxy_id, span_start, span_end, EARLY_PENDING_BYTES)),
            );
            let (stored_today, stored_buckets, early) = (stored_today?, stored_buckets?, early?);
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
            let mut older_chunks: Vec<PendingChunk> = Vec::new();
            let mut visit = |chunk: PendingChunk| {
                budget.take(proxy_id, &chunk)?;
                if today.is_some_and(|t| chunk.day < t || (!read.today_up_front && chunk.day == t))
                {
                    if chunk.day < first.0 {
                        older_chunks.push(chunk);
                        return Ok(());
                    }
                    older_chunks.push(chunk.clone());
                }
                let wants_day = read.today_up_front
                    && today == Some(chunk.day)
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
            };
            match early {
                Some(chunks) => chunks.into_iter().try_for_each(&mut visit)?,
                None => {
                    self.visit_pending(proxy_id, span_start, span_end, visit)
                        .await?
                }
            }
            if let Some(today) = today
                && lookback_days > 0
                && (read.lookback_when)(&recent)
            {
                let start = today - chrono::Duration::days(lookback_days);
                let end = if read.today_up_front {
                    today - chrono::Duration::days(1)
                } else {
                    today
                };
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

/// What a read of the recent past takes besides the buckets.
struct RecentRead<'a> {
    today: Option<NaiveDate>,
    /// Today's day item is read with the buckets (a scrape shows it);
    /// otherwise only with the lookback's days.
    today_up_front: bool,
    lookback_days: i64,
    /// Whether the days of the lookback are wanted, given what was read.
    lookback_when: &'a (dyn Fn(&Recent) -> bool + Send + Sync),
}

impl RecentRead<'static> {
    fn buckets() -> Self {
        Self {
            today: None,
            today_up_front: false,
            lookback_days: 0,
            lookback_when: &|_| false,
        }
    }
}

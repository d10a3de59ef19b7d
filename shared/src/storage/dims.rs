//! A day's dimension values (v3): stored per (key, day, page) in the
//! proxy's `DIMS#` partition, folded from the pending chunks like the day
//! and bucket items (each page names the chunks it holds in `folded`), and
//! read with the same protocol (see `days.rs`): epoch, pages and pending
//! chunks (queried at once), epoch.
//!
//! A breakdown by route over a month is two queries: the pages of the
//! month (`{key}#{start}#00` … `{key}#{end}#99`) and the pending chunks of
//! its days. Values are merged as pages arrive, within a budget in bytes.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::codec::StoredBody;
use super::days::{
    EARLY_PENDING_BYTES, Folded, PendingBudget, READ_ATTEMPTS, Versioned, holds, identities,
};
use super::error::StorageError;
use super::fold::ProxyFold;
use super::keys;
use super::pending::PendingChunk;
use super::proxies::Proxy;
use super::{Store, get_blob, get_n, get_s};
use crate::domain::dimensions::{DimensionKey, KeyValues, OTHER_VALUE, page_of};
use crate::domain::rollup::{DayPart, Stats};

/// What a breakdown may hold of merged values at once: past it, the answer
/// is a 422 (narrow the range) rather than a function out of memory.
pub const BREAKDOWN_BUDGET_BYTES: usize = 48 * 1024 * 1024;

/// One page of a day's values of one key, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredDims {
    pub values: KeyValues,
    pub folded: Folded,
}

/// A part's values of `key`, by the page each is stored in.
pub(super) fn pages_of(part: &DayPart, key: DimensionKey) -> BTreeMap<u8, KeyValues> {
    let mut pages: BTreeMap<u8, KeyValues> = BTreeMap::new();
    if !part.dims.paged && !part.dims.explicit && part.dims.keys.is_empty() {
        // A proxy that never sent dimensions: its `(none)` is the day's
        // whole, which the day items hold (see `read_breakdown`).
        return pages;
    }
    let Some(values) = part.dimension(key) else {
        return pages;
    };
    let count = part.dims.pages;
    for (value, stats) in &values.values {
        let page = pages.entry(page_of(value, count)).or_default();
        page.values.insert(value.clone(), stats.clone());
    }
    if !values.other_hashes.is_empty() {
        pages
            .entry(page_of(OTHER_VALUE, count))
            .or_default()
            .add_other_hashes(values.other_hashes.iter().copied());
    }
    pages
}

/// The last day whose dimension pages may lack chunks of a proxy that
/// first sent a dimension at `dims_since_ms`: a chunk without `paged` came
/// from a request that read the proxy before that (its events are dated at
/// most 5 minutes after its clock); the hour is a margin for clock skew.
pub fn pages_incomplete_until(dims_since_ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(dims_since_ms.saturating_add(3_600_000))
        .unwrap_or_default()
        .date_naive()
}

/// A page write a fold batch plans: the page, the version read, its next body.
pub(super) type PageWrite = (DimensionKey, u8, u64, StoredDims);

impl Store {
    /// Step 1 of a fold batch for the dimension pages its chunks touch:
    /// each page's next body (chunks it does not hold added, entries known
    /// deleted pruned). Returns the writes and whether any prunes.
    pub(super) async fn plan_dimension_pages(
        &self,
        fold: &ProxyFold,
        day: NaiveDate,
        chunks: &[(String, DayPart)],
        now_ms: i64,
    ) -> Result<(Vec<PageWrite>, bool), StorageError> {
        let mut contributions: BTreeMap<(DimensionKey, u8), Vec<(&str, KeyValues)>> =
            BTreeMap::new();
        for (sort_key, part) in chunks {
            for key in DimensionKey::ALL {
                for (page, values) in pages_of(part, key) {
                    contributions
                        .entry((key, page))
                        .or_default()
                        .push((sort_key, values));
                }
            }
        }
        let mut writes = Vec::new();
        let mut prunes = false;
        for ((key, page), parts) in contributions {
            let current: Versioned<StoredDims> = self
                .get_versioned(
                    keys::dims_page(&fold.proxy_id, key, day, page),
                    "read dimension page",
                )
                .await?
                .unwrap_or_default();
            let mut next = current.value.clone();
            let mut added = Vec::new();
            for (sort_key, values) in parts {
                if !holds(&next.folded, sort_key) {
                    next.values.merge(&values);
                    added.push(sort_key.to_string());
                }
            }
            if added.is_empty() {
                continue;
            }
            if let Some(kept) = fold.pruned(day, &next.folded) {
                next.folded = kept;
                prunes = true;
            }
            next.folded.extend(added.into_iter().map(|k| (k, now_ms)));
            writes.push((key, page, current.version, next));
        }
        Ok((writes, prunes))
    }

    /// Step 3 for the pages: each on the version it was read at. `false`:
    /// one moved (another run is folding).
    pub(super) async fn write_dimension_pages(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        writes: Vec<PageWrite>,
    ) -> Result<bool, StorageError> {
        // Kept like the day items (a breakdown reaches as far as `daily`).
        for (key, page, version, next) in writes {
            let item = keys::dims_page(proxy_id, key, day, page);
            if !self
                .put_versioned(item, &next, version, "write dimension page")
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A breakdown's values of `key` over `[start, end]`, reflecting every
    /// event recorded before the call, `(none)` included.
    ///
    /// Days after the proxy's first dimension are read from their pages
    /// alone (two queries: pages, pending chunks). A range reaching earlier
    /// also reads the day items, at once: what the pages do not hold — the
    /// parts of a proxy that sent no dimensions, which write no pages — is
    /// the range's total minus what they hold, and counts under `(none)`.
    /// A proxy that never sent a dimension therefore pays nothing for
    /// pages when it records or folds, and its breakdown is its days.
    pub async fn read_breakdown(
        &self,
        proxy: &Proxy,
        key: DimensionKey,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<KeyValues, StorageError> {
        // Boxed: both reads' futures are large, and a task's stack is 2 MB.
        let paged =
            Box::pin(self.read_dimension(&proxy.proxy_id, proxy.fold_epoch, key, start, end));
        if proxy
            .dims_since_ms
            .is_some_and(|since| start > pages_incomplete_until(since))
        {
            return paged.await;
        }
        let total = Box::pin(async {
            let mut total = Stats::default();
            for rollup in self.read_days(proxy, start, end).await?.values() {
                total.merge(&rollup.stats);
            }
            Ok::<_, StorageError>(total)
        });
        let (mut values, total) = futures::try_join!(paged, total)?;
        values.add_unpaged(&total);
        Ok(values)
    }

    /// The values of `key` over `[start, end]` that the dimension pages
    /// (and the pending chunks that write pages) hold, merged, reflecting
    /// every event recorded before the call. `epoch` is the fold epoch the
    /// ownership read saw (E0).
    pub async fn read_dimension(
        &self,
        proxy_id: &str,
        mut epoch: u64,
        key: DimensionKey,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<KeyValues, StorageError> {
        for _ in 0..READ_ATTEMPTS {
            let mut merged = KeyValues::default();
            let mut held = MergeBudget::default();
            // I: the pages, merged as they arrive; only their `folded` kept.
            // P: the pending chunks of those days, queried at the same time
            // (kept when few, else read again after I, streaming): either
            // order is exact, by `days.rs`'s argument.
            let mut folded: HashMap<(NaiveDate, u8), HashSet<String>> = HashMap::new();
            let pages = self.query_each(
                keys::dims_partition(proxy_id),
                Some((
                    keys::dims_sort_key(key, start, 0),
                    keys::dims_sort_key(key, end, u8::MAX),
                )),
                "read dimension pages",
                |item| {
                    let Some((_, day, page)) =
                        get_s(item, keys::SK).and_then(keys::parse_dims_sort_key)
                    else {
                        return Ok(());
                    };
                    let body = get_blob(item, "body").unwrap_or_default();
                    match StoredDims::decode(body) {
                        Ok(stored) => {
                            merged.merge(&stored.values);
                            held.check(proxy_id, &merged)?;
                            folded.insert(
                                (day, page),
                                identities(&stored.folded)
                                    .into_iter()
                                    .map(str::to_string)
                                    .collect(),
                            );
                        }
                        Err(e) => tracing::error!(
                            proxy_id,
                            day = %day,
                            page,
                            version = get_n(item, "v"),
                            error = %e,
                            "unreadable dimension page left out of a read"
                        ),
                    }
                    Ok(())
                },
            );
            let (pages, early) = futures::join!(
                Box::pin(pages),
                Box::pin(self.pending_within(proxy_id, start, end, EARLY_PENDING_BYTES))
            );
            pages?;
            let early = early?;
            let mut budget = PendingBudget::default();
            let mut visit = |chunk: PendingChunk| {
                budget.take(proxy_id, &chunk)?;
                let Some(part) = budget.decode(proxy_id, &chunk) else {
                    return Ok(());
                };
                for (page, values) in pages_of(&part, key) {
                    let held_already = folded
                        .get(&(chunk.day, page))
                        .is_some_and(|f| f.contains(chunk.identity()));
                    if !held_already {
                        merged.merge(&values);
                    }
                }
                held.check(proxy_id, &merged)
            };
            match early {
                Some(chunks) => chunks.into_iter().try_for_each(&mut visit)?,
                None => self.visit_pending(proxy_id, start, end, visit).await?,
            }
            let now = self.fold_epoch(proxy_id).await?;
            if now == epoch {
                return Ok(merged);
            }
            tracing::info!(
                proxy_id,
                "dimension pages folded during the read; reading again"
            );
            epoch = now;
        }
        Err(StorageError::Unavailable(format!(
            "{proxy_id}: the dimension pages kept being folded during the read"
        )))
    }
}

/// Bytes of merged values a breakdown holds, checked as they grow.
#[derive(Default)]
struct MergeBudget {
    checks: u64,
}

impl MergeBudget {
    fn check(&mut self, proxy_id: &str, merged: &KeyValues) -> Result<(), StorageError> {
        // Measuring walks the map: every 64th check is enough to stay
        // within a page's worth of the budget.
        self.checks += 1;
        if !self.checks.is_multiple_of(64) {
            return Ok(());
        }
        let bytes = merged.heap_bytes();
        if bytes > BREAKDOWN_BUDGET_BYTES {
            return Err(StorageError::TooLarge(format!(
                "{proxy_id}: this breakdown holds more than {} MB of distinct values; \
                 ask for fewer days.",
                BREAKDOWN_BUDGET_BYTES / (1024 * 1024)
            )));
        }
        Ok(())
    }
}

impl Store {
    /// Adds one part recorded under `marker` (the v1 migration's way in:
    /// not a chunk, so nothing to prune) to the dimension pages it touches,
    /// unless a page holds it already.
    pub(super) async fn fold_marked_dimension_pages(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        marker: &str,
        part: &DayPart,
    ) -> Result<(), StorageError> {
        for key in DimensionKey::ALL {
            for (page, values) in pages_of(part, key) {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    let item = keys::dims_page(proxy_id, key, day, page);
                    let current: Versioned<StoredDims> = self
                        .get_versioned(item.clone(), "read dimension page")
                        .await?
                        .unwrap_or_default();
                    if holds(&current.value.folded, marker) {
                        break;
                    }
                    let mut next = current.value.clone();
                    next.values.merge(&values);
                    next.folded
                        .push((marker.to_string(), self.clock.now().timestamp_millis()));
                    if self
                        .put_versioned(item, &next, current.version, "write dimension page")
                        .await?
                    {
                        break;
                    }
                    if attempts >= 5 {
                        return Err(StorageError::Unavailable(format!(
                            "{proxy_id} {day} {} page {page}: the item kept changing",
                            key.as_str()
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

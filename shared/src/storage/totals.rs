//! A proxy's counts since registration (contract v3: `/metrics`' monotonic
//! counters): one item per proxy, folded from the pending chunks like the
//! day and bucket items (it names the chunks it holds in `folded`), and read
//! with the same protocol (see `days.rs`): epoch, item, pending chunks,
//! epoch. A scrape therefore never counts a chunk twice or misses one, and
//! the counters never go down.
//!
//! The item is created by the first fold after the upgrade that brought it
//! (or by a read, if no fold came yet), from the proxy's day items: what
//! was recorded before counts too.

use std::collections::HashSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::Store;
use super::days::{Folded, PendingBudget, READ_ATTEMPTS, Versioned, holds, identities};
use super::error::StorageError;
use super::fold::ProxyFold;
use super::keys;
use crate::domain::dimensions::{StatusCounts, add_status};
use crate::domain::rollup::{DayPart, Rollup};

/// Counts since registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub status: StatusCounts,
}

impl Totals {
    pub fn add_rollup(&mut self, rollup: &Rollup) {
        let s = &rollup.stats;
        self.requests = self.requests.saturating_add(s.request_count);
        self.errors = self.errors.saturating_add(s.error_count);
        self.data_transferred_bytes = self
            .data_transferred_bytes
            .saturating_add(s.data_transferred_bytes);
        self.data_received_bytes = self
            .data_received_bytes
            .saturating_add(s.data_received_bytes);
        add_status(&mut self.status, &rollup.status);
    }

    pub fn add_part(&mut self, part: &DayPart) {
        let mut rollup = Rollup::default();
        rollup.merge_part(part);
        self.add_rollup(&rollup);
    }
}

/// The totals item as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredTotals {
    pub totals: Totals,
    pub folded: Folded,
}

/// Days before and after any a proxy can have (four-digit years: the keys
/// sort as text).
fn all_days() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default(),
        NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or_default(),
    )
}

impl Store {
    /// The stored totals item, or — when there is none yet — what it would
    /// start from: the sums of the proxy's day items, holding what they hold.
    async fn stored_totals(&self, proxy_id: &str) -> Result<Versioned<StoredTotals>, StorageError> {
        if let Some(stored) = self
            .get_versioned::<StoredTotals>(keys::totals(proxy_id), "read totals")
            .await?
        {
            return Ok(stored);
        }
        let (first, last) = all_days();
        let mut base = StoredTotals::default();
        for item in self.stored_days(proxy_id, first, last).await?.values() {
            base.totals.add_rollup(&item.value.rollup);
            base.folded.extend(item.value.folded.iter().cloned());
        }
        Ok(Versioned {
            value: base,
            version: 0,
        })
    }

    /// Step 1 of a fold batch for the totals: their next body, if the batch
    /// adds anything, and whether entries were pruned.
    pub(super) async fn plan_totals(
        &self,
        fold: &ProxyFold,
        chunks: &[(String, DayPart)],
        now_ms: i64,
    ) -> Result<(Option<(u64, StoredTotals)>, bool), StorageError> {
        let current = self.stored_totals(&fold.proxy_id).await?;
        let mut next = current.value.clone();
        let mut added = Vec::new();
        for (sort_key, part) in chunks {
            if !holds(&next.folded, sort_key) {
                next.totals.add_part(part);
                added.push(sort_key.clone());
            }
        }
        if added.is_empty() {
            return Ok((None, false));
        }
        // Its entries are of any day (each its chunk's own).
        let prunes = match fold.pruned_each_by_its_day(&next.folded) {
            Some(kept) => {
                next.folded = kept;
                true
            }
            None => false,
        };
        next.folded.extend(added.into_iter().map(|k| (k, now_ms)));
        Ok((Some((current.version, next)), prunes))
    }

    /// Step 3 for the totals. `false`: the item moved (another run).
    pub(super) async fn write_totals(
        &self,
        proxy_id: &str,
        write: Option<(u64, StoredTotals)>,
    ) -> Result<bool, StorageError> {
        match write {
            None => Ok(true),
            Some((version, next)) => {
                self.put_versioned(keys::totals(proxy_id), &next, version, "write totals")
                    .await
            }
        }
    }

    /// The proxy's counts since registration, reflecting every event
    /// recorded before the call. `epoch`: the fold epoch read before (E0).
    pub async fn read_totals(
        &self,
        proxy_id: &str,
        mut epoch: u64,
    ) -> Result<Totals, StorageError> {
        for _ in 0..READ_ATTEMPTS {
            let stored = self.stored_totals(proxy_id).await?;
            let held: HashSet<&str> = identities(&stored.value.folded);
            let mut totals = stored.value.totals;
            let mut budget = PendingBudget::default();
            let (first, last) = all_days();
            self.visit_pending(proxy_id, first, last, |chunk| {
                if held.contains(chunk.identity()) {
                    return Ok(());
                }
                budget.take(proxy_id, &chunk)?;
                if let Some(part) = budget.decode(proxy_id, &chunk) {
                    totals.add_part(&part);
                }
                Ok(())
            })
            .await?;
            let now = self.fold_epoch(proxy_id).await?;
            if now == epoch {
                return Ok(totals);
            }
            epoch = now;
        }
        Err(StorageError::Unavailable(format!(
            "{proxy_id}: the totals kept being folded during the read"
        )))
    }
}

//! The cardinality cap (contract v3): per proxy, UTC day and dimension key,
//! the first `cap` distinct values are admitted; later ones are counted
//! under `__other__`. Decided when a request records a value, once for
//! every request and run after it:
//!
//! - the admitted values are a number set of value hashes in one item per
//!   (proxy, day, key), grown by `ADD` conditioned on its size, so
//!   concurrent writers can never admit more than the cap between them;
//! - a value once admitted stays admitted, and a full set stays full, so an
//!   instance caches what it learnt: a value it has seen costs nothing, and
//!   a request of known values makes no call at all.
//!
//! Costs: one strongly consistent read per (proxy, day, key) and function
//! instance; one conditional update per request that brings new values
//! (1 WRU per KB of the set: ~9 bytes a value).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::NaiveDate;

use super::Store;
use super::error::StorageError;
use super::fold::is_condition_failure;
use super::keys::{self, EXPIRES_AT, n};
use super::retry::{classify, with_retries};
use crate::domain::dimensions::{DimensionKey, NONE_VALUE, OTHER_VALUE, value_hash};
use crate::domain::event::{Event, LATE_WINDOW};
use crate::domain::rollup::day_start_ms;

/// Attempts at admitting a request's new values when other writers keep
/// growing the set meanwhile.
const ADMIT_ATTEMPTS: u32 = 8;
/// Days of sets an instance remembers (entries past this are forgotten and
/// read again if needed): bounds the cache at a few MB.
const CACHED_SETS: usize = 4_096;

/// What an instance knows of one (proxy, day, key) set.
#[derive(Debug, Default, Clone)]
pub struct KnownSet {
    admitted: HashSet<u64>,
    /// The set held `cap` values when last read: nothing more is admitted.
    full: bool,
}

/// The instance's cache of sets, shared by the clones of a [`Store`].
#[derive(Debug, Default)]
pub struct CardinalityCache {
    sets: Mutex<HashMap<(String, NaiveDate, DimensionKey), KnownSet>>,
}

impl CardinalityCache {
    fn get(&self, at: &(String, NaiveDate, DimensionKey)) -> Option<KnownSet> {
        self.sets.lock().ok()?.get(at).cloned()
    }

    fn put(&self, at: (String, NaiveDate, DimensionKey), known: KnownSet) {
        if let Ok(mut sets) = self.sets.lock() {
            if sets.len() >= CACHED_SETS && !sets.contains_key(&at) {
                sets.clear();
            }
            sets.insert(at, known);
        }
    }
}

impl Store {
    /// Sends each event's dimension values past the owner's `cap` to
    /// `__other__` (in event order: the first new values of a request are
    /// the ones admitted when only some fit).
    pub async fn admit_dimensions(
        &self,
        proxy_id: &str,
        cap: usize,
        events: &mut [Event],
    ) -> Result<(), StorageError> {
        // The distinct new-looking values per (day, key), in event order.
        let mut wanted: BTreeMap<(NaiveDate, DimensionKey), Vec<String>> = BTreeMap::new();
        for event in events.iter() {
            for key in DimensionKey::ALL {
                if let Some(value) = event.dimensions.get(key)
                    && value != OTHER_VALUE
                    && value != NONE_VALUE
                {
                    let values = wanted.entry((event.day(), key)).or_default();
                    if !values.iter().any(|v| v == value) {
                        values.push(value.to_string());
                    }
                }
            }
        }
        let mut refused: HashSet<(NaiveDate, DimensionKey, u64)> = HashSet::new();
        for ((day, key), values) in wanted {
            let admitted = self.admit(proxy_id, day, key, cap, &values).await?;
            for value in values {
                let hash = value_hash(&value);
                if !admitted.contains(&hash) {
                    refused.insert((day, key, hash));
                }
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        for event in events.iter_mut() {
            let day = event.day();
            for key in DimensionKey::ALL {
                let past_cap = event
                    .dimensions
                    .get(key)
                    .is_some_and(|v| refused.contains(&(day, key, value_hash(v))));
                if past_cap {
                    event.dimensions.send_to_other(key);
                }
            }
        }
        Ok(())
    }

    /// The hashes of `values` admitted in (proxy, day, key)'s set, adding
    /// the new ones while the set has room.
    async fn admit(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        key: DimensionKey,
        cap: usize,
        values: &[String],
    ) -> Result<HashSet<u64>, StorageError> {
        let at = (proxy_id.to_string(), day, key);
        let hashes: Vec<u64> = values.iter().map(|v| value_hash(v)).collect();
        let mut known = self.cardinality.get(&at);
        for _ in 0..ADMIT_ATTEMPTS {
            let set = match known.take() {
                Some(set) => set,
                None => self.read_cardinality(proxy_id, day, key, cap).await?,
            };
            let new: Vec<u64> = hashes
                .iter()
                .copied()
                .filter(|h| !set.admitted.contains(h))
                .collect();
            if new.is_empty() || set.full {
                self.cardinality.put(at, set.clone());
                return Ok(set.admitted);
            }
            // The cache may be behind: read the set before writing to it.
            let fresh = self.read_cardinality(proxy_id, day, key, cap).await?;
            let new: Vec<u64> = new
                .into_iter()
                .filter(|h| !fresh.admitted.contains(h))
                .collect();
            let room = cap.saturating_sub(fresh.admitted.len());
            let admit: Vec<u64> = new.into_iter().take(room).collect();
            if admit.is_empty() {
                self.cardinality.put(at, fresh.clone());
                return Ok(fresh.admitted);
            }
            if self
                .add_to_cardinality(proxy_id, day, key, &admit, cap - admit.len())
                .await?
            {
                let mut set = fresh;
                set.admitted.extend(admit);
                set.full = set.admitted.len() >= cap;
                self.cardinality.put(at, set.clone());
                return Ok(set.admitted);
            }
            // Another writer grew the set meanwhile: read it again.
        }
        Err(StorageError::Unavailable(format!(
            "{proxy_id} {day}: the {} values kept changing while admitting new ones",
            key.as_str()
        )))
    }

    async fn read_cardinality(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        key: DimensionKey,
        cap: usize,
    ) -> Result<KnownSet, StorageError> {
        let item = self
            .get_item(
                keys::cardinality(proxy_id, day, key),
                "read admitted values",
            )
            .await?;
        let admitted: HashSet<u64> = item
            .as_ref()
            .and_then(|i| i.get("h"))
            .and_then(|h| h.as_ns().ok())
            .map(|ns| ns.iter().filter_map(|v| v.parse().ok()).collect())
            .unwrap_or_default();
        let full = admitted.len() >= cap;
        Ok(KnownSet { admitted, full })
    }

    /// `ADD`s `hashes` to the set if it holds at most `at_most` values now.
    /// `Ok(false)`: it holds more (another writer added some).
    async fn add_to_cardinality(
        &self,
        proxy_id: &str,
        day: NaiveDate,
        key: DimensionKey,
        hashes: &[u64],
        at_most: usize,
    ) -> Result<bool, StorageError> {
        // Kept while the day can still receive events, and a day more.
        let expires = day_start_ms(day) / 1000 + 2 * 86_400 + LATE_WINDOW.num_seconds();
        let set = AttributeValue::Ns(hashes.iter().map(u64::to_string).collect());
        let item_key = keys::cardinality(proxy_id, day, key);
        with_retries(|| async {
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(item_key.clone()))
                .update_expression("ADD h :new SET #expires = :expires")
                .condition_expression("attribute_not_exists(h) OR size(h) <= :most")
                .expression_attribute_names("#expires", EXPIRES_AT)
                .expression_attribute_values(":new", set.clone())
                .expression_attribute_values(":expires", n(expires))
                .expression_attribute_values(":most", n(at_most))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match out {
                Ok(out) => {
                    self.meter.write(out.consumed_capacity());
                    Ok(true)
                }
                Err(err) if is_condition_failure(&err) => Ok(false),
                Err(err) => Err(classify("admit dimension values", err)),
            }
        })
        .await
    }
}

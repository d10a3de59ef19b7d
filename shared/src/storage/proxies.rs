//! Proxies and their owners' index.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use chrono::{DateTime, SecondsFormat, Utc};

use super::keys::{self, s};
use super::retry::{Failure, cancellations, cancelled, classify, with_retries};
use super::{Store, get_n, get_s};

/// The proxy item's attribute counting the aggregation's chunk deletions.
const FOLD_EPOCH: &str = "foldEpoch";
/// The retention (days) existing buckets were written with, when an upgrade
/// left them to be extended.
const BUCKET_RETENTION: &str = "bucketRetention";
use super::error::StorageError;
use crate::domain::tier::Tier;

#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    pub proxy_id: String,
    pub name: Option<String>,
    pub owner_id: String,
    pub registered_at: DateTime<Utc>,
    /// The owner's tier, which sets raw retention (recorded at registration,
    /// updated when the owner uses a user token of another tier).
    pub tier: Tier,
    /// Counts the aggregation's deletions of folded chunks (see
    /// `storage/days.rs`): a read that sees it move re-reads. 0 on a new
    /// proxy, and on an owner's index entry (which does not keep it).
    pub fold_epoch: u64,
    /// Set after an upgrade: the retention (days) the existing buckets were
    /// written with, until the aggregation has extended them.
    pub bucket_retention: Option<i64>,
    /// When the proxy's dirty mark was last written (epoch ms): recorders
    /// skip writing it again for a few minutes, whichever instance wrote it.
    pub marked_at_ms: Option<i64>,
    /// When the proxy first sent a dimension (epoch ms): from then on every
    /// chunk counts in the day's dimension pages (`storage/dims.rs`).
    pub dims_since_ms: Option<i64>,
}

fn proxy_item(proxy: &Proxy) -> HashMap<String, AttributeValue> {
    let mut item = keys::proxy(&proxy.proxy_id);
    item.insert("proxyId".into(), s(&proxy.proxy_id));
    item.insert("ownerId".into(), s(&proxy.owner_id));
    item.insert(
        "registeredAt".into(),
        s(proxy
            .registered_at
            .to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    item.insert("tier".into(), s(proxy.tier.as_str()));
    if let Some(name) = &proxy.name {
        item.insert("name".into(), s(name));
    }
    item
}

fn proxy_from_item(item: &HashMap<String, AttributeValue>) -> Option<Proxy> {
    Some(Proxy {
        proxy_id: get_s(item, "proxyId")?.to_string(),
        name: get_s(item, "name").map(str::to_string),
        owner_id: get_s(item, "ownerId")?.to_string(),
        registered_at: DateTime::parse_from_rfc3339(get_s(item, "registeredAt")?)
            .ok()?
            .with_timezone(&Utc),
        // Proxies registered before tiers were recorded count as free until
        // their owner next uses a user token.
        tier: Tier::from_claim(get_s(item, "tier")),
        fold_epoch: get_n(item, FOLD_EPOCH).unwrap_or(0),
        bucket_retention: get_n(item, BUCKET_RETENTION).map(|d| d as i64),
        marked_at_ms: get_n(item, super::pending::MARKED_AT).map(|d| d as i64),
        dims_since_ms: get_n(item, keys::DIMS_SINCE).map(|d| d as i64),
    })
}

impl Store {
    /// Registers a proxy and its owner's index entry in one transaction; both
    /// are conditional, so two users can never both own an id.
    pub async fn register_proxy(&self, proxy: &Proxy) -> Result<(), StorageError> {
        let item = proxy_item(proxy);
        let mut index = item.clone();
        index.extend(keys::owner_entry(&proxy.owner_id, &proxy.proxy_id));
        let actions = vec![
            self.put_if_absent(item, "proxy")?,
            self.put_if_absent(index, "owner index")?,
        ];
        let token = uuid::Uuid::new_v4().to_string();
        with_retries(|| async {
            match self.transact(&actions, &token).await {
                Ok(_) => Ok(()),
                Err(err) => match cancellations(&err) {
                    Some(reasons) if reasons.iter().any(|r| r.condition_failed()) => {
                        Err(Failure::Fatal(StorageError::Conflict(format!(
                            "A proxy with id '{}' is already registered.",
                            proxy.proxy_id
                        ))))
                    }
                    Some(reasons) => Err(cancelled("register proxy", &reasons)),
                    None => Err(classify("register proxy", err)),
                },
            }
        })
        .await
    }

    /// The proxy, read strongly consistently (a registration is visible at once).
    pub async fn get_proxy(&self, proxy_id: &str) -> Result<Option<Proxy>, StorageError> {
        let item = self.get_item(keys::proxy(proxy_id), "get proxy").await?;
        Ok(item.as_ref().and_then(proxy_from_item))
    }

    /// The owner's proxies, ordered by id (the owner's partition holds only
    /// index entries).
    pub async fn list_proxies(&self, owner_id: &str) -> Result<Vec<Proxy>, StorageError> {
        let items = self
            .query_all(keys::owner_partition(owner_id), None, "list proxies")
            .await?;
        Ok(items.iter().filter_map(proxy_from_item).collect())
    }

    /// Records the owner's current tier on the proxy (and its index entry).
    /// Called only for the owner's user tokens; a proxy token never changes it.
    /// An upgrade also notes the retention the existing five-minute buckets
    /// were written with, and marks the proxy, so that the aggregation
    /// extends their expiry ([`Store::extend_bucket_retention`]).
    pub async fn update_proxy_tier(&self, proxy: &Proxy, tier: Tier) -> Result<(), StorageError> {
        let old = proxy.tier.raw_retention_days();
        if tier.raw_retention_days() > old {
            let key = keys::proxy(&proxy.proxy_id);
            with_retries(|| async {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    .update_expression("SET #kept = if_not_exists(#kept, :old)")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_names("#kept", BUCKET_RETENTION)
                    .expression_attribute_values(":old", keys::n(old))
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map(|out| self.meter.write(out.consumed_capacity()))
                    .or_else(|err| {
                        if super::fold::is_condition_failure(&err) {
                            Ok(())
                        } else {
                            Err(classify("note bucket retention", err))
                        }
                    })
            })
            .await?;
            self.mark_dirty(&proxy.proxy_id, None, self.clock.now())
                .await?;
        }
        for key in [
            keys::proxy(&proxy.proxy_id),
            keys::owner_entry(&proxy.owner_id, &proxy.proxy_id),
        ] {
            with_retries(|| async {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    .update_expression("SET tier = :tier")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":tier", s(tier.as_str()))
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map(|out| self.meter.write(out.consumed_capacity()))
                    .or_else(|err| {
                        if super::fold::is_condition_failure(&err) {
                            Ok(()) // an index entry missing: nothing to update
                        } else {
                            Err(classify("update proxy tier", err))
                        }
                    })
            })
            .await?;
        }
        Ok(())
    }

    /// The proxy's fold epoch, read strongly consistently.
    pub async fn fold_epoch(&self, proxy_id: &str) -> Result<u64, StorageError> {
        let item = self
            .get_item(keys::proxy(proxy_id), "read fold epoch")
            .await?;
        Ok(item
            .as_ref()
            .and_then(|i| get_n(i, FOLD_EPOCH))
            .unwrap_or(0))
    }

    /// After an upgrade: the expiry of the buckets written under the old
    /// retention is moved to the new one, then the note is removed. Bounded:
    /// the old retention's days of buckets (at most 90 × 288 small updates).
    pub async fn extend_bucket_retention(&self, proxy: &Proxy) -> Result<u64, StorageError> {
        let Some(kept) = proxy.bucket_retention else {
            return Ok(0);
        };
        let retention = proxy.tier.raw_retention_days();
        let today = self.clock.now().date_naive();
        let first = today - chrono::Duration::days(kept + 8);
        let buckets = self
            .stored_buckets(&proxy.proxy_id, (first, 0), (today, 287))
            .await?;
        let mut extended = 0;
        for (day, index) in buckets.keys() {
            let expires = super::fold::bucket_expiry(*day, retention);
            let key = keys::bucket(&proxy.proxy_id, *day, *index);
            with_retries(|| async {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    .update_expression("SET #expires = :expires")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_names("#expires", keys::EXPIRES_AT)
                    .expression_attribute_values(":expires", keys::n(expires))
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map(|out| self.meter.write(out.consumed_capacity()))
                    .or_else(|err| {
                        if super::fold::is_condition_failure(&err) {
                            Ok(())
                        } else {
                            Err(classify("extend bucket retention", err))
                        }
                    })
            })
            .await?;
            extended += 1;
        }
        let key = keys::proxy(&proxy.proxy_id);
        with_retries(|| async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression("REMOVE #kept")
                .expression_attribute_names("#kept", BUCKET_RETENTION)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("clear bucket retention", e))
        })
        .await?;
        Ok(extended)
    }
}

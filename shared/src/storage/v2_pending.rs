//! Chunks a v2 writer left in the 16 shared pending partitions, moved into
//! the v3 layout by every aggregation run (one query per shard when none).

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};

use super::codec::decode_body;
use super::error::StorageError;
use super::keys::{self, n, s};
use super::record::ChunkBody;
use super::retry::{classify, with_retries};
use super::{Store, get_blob, get_n, get_s};

impl Store {
    /// Moves the chunks a v2 writer left in one of the 16 shared partitions
    /// into their proxies' v3 partitions, until `deadline`: one transaction
    /// per chunk (its unfolded days as v3 chunks of the same identity, and the
    /// v2 item's deletion), so an item that folded a day of it before the
    /// move still recognises it. Returns the chunks moved.
    pub async fn drain_v2_shard(&self, shard: u32, deadline: Instant) -> Result<u64, StorageError> {
        let items = self
            .query_page_raw(keys::v2::pending_partition(shard), 25, "read v2 pending")
            .await?;
        let mut moved = 0;
        for item in &items {
            if Instant::now() >= deadline {
                break;
            }
            let Some(sort_key) = get_s(item, keys::SK) else {
                continue;
            };
            let Some(proxy_id) = keys::v2::proxy_of_pending(sort_key) else {
                continue;
            };
            let folded_days: Vec<String> = item
                .get("foldedDays")
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default();
            let parts = decode_body::<ChunkBody>(get_blob(item, "body").unwrap_or_default())
                .map_err(|e| StorageError::Corrupt(format!("v2 chunk {sort_key}: {e}")));
            let mut actions = Vec::new();
            match parts {
                Ok(parts) => {
                    for (day, bytes) in parts {
                        if folded_days.contains(&day) {
                            continue;
                        }
                        let Some(day) = keys::parse_day_key(&day) else {
                            continue;
                        };
                        let v3_key =
                            format!("{}#{}", keys::day_key(day), keys::chunk_identity(sort_key));
                        let mut put = keys::pending_chunk(proxy_id, &v3_key);
                        put.insert("retention".into(), n(get_n(item, "retention").unwrap_or(7)));
                        put.insert("body".into(), AttributeValue::B(Blob::new(bytes)));
                        actions.push(put);
                    }
                }
                Err(e) => {
                    // Kept whole for an operator, in the proxy's quarantine.
                    tracing::error!(proxy_id, chunk = sort_key, error = %e, "v2 chunk unreadable; quarantined");
                    let mut put = keys::quarantined_chunk(proxy_id, sort_key);
                    put.extend(
                        item.iter()
                            .filter(|(k, _)| *k != keys::PK && *k != keys::SK)
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                    actions.push(put);
                }
            }
            self.mark_dirty(proxy_id, None, self.clock.now()).await?;
            let mut writes: Vec<TransactWriteItem> = actions
                .into_iter()
                .map(|item| {
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .build()
                        .map(|p| TransactWriteItem::builder().put(p).build())
                        .map_err(|e| StorageError::Internal(format!("building a v2 move: {e}")))
                })
                .collect::<Result<_, _>>()?;
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(HashMap::from([
                    (keys::PK.to_string(), s(keys::v2::pending_partition(shard))),
                    (keys::SK.to_string(), s(sort_key)),
                ])))
                .build()
                .map_err(|e| StorageError::Internal(format!("building a v2 move: {e}")))?;
            writes.push(TransactWriteItem::builder().delete(delete).build());
            let token = uuid::Uuid::new_v4().to_string();
            with_retries(|| async {
                self.transact(&writes, &token)
                    .await
                    .map(|_| ())
                    .map_err(|err| match super::retry::cancellations(&err) {
                        Some(reasons) => super::retry::cancelled("move v2 chunk", &reasons),
                        None => classify("move v2 chunk", err),
                    })
            })
            .await?;
            moved += 1;
        }
        Ok(moved)
    }
}

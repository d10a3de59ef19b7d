//! Days whose aggregation keeps failing: counted per (proxy, day), and
//! quarantined after [`QUARANTINE_AFTER`] failed runs in a row — kept
//! pending, skipped by the aggregation and reported, until released.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::ReturnValue;

use super::error::StorageError;
use super::keys::{self, n, s};
use super::retry::{classify, with_retries};
use super::{Store, get_n, get_s};

/// Failed runs in a row after which a day is quarantined.
pub const QUARANTINE_AFTER: u64 = 3;

/// A (proxy, subject) the aggregation failed on: `subject` is a day
/// (`2024-01-15`) or, for a chunk that cannot be read at all, `chunk:<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRecord {
    pub proxy_id: String,
    pub subject: String,
    pub failures: u64,
    pub quarantined: bool,
    pub last_error: String,
}

impl Store {
    /// Every failure record (one small partition; empty in a healthy table).
    pub async fn failure_records(
        &self,
    ) -> Result<BTreeMap<(String, String), FailureRecord>, StorageError> {
        let items = self
            .query_all(
                keys::QUARANTINE_PARTITION.to_string(),
                None,
                "read quarantine",
            )
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let (proxy_id, subject) = get_s(item, keys::SK)?.split_once('#')?;
                Some((
                    (proxy_id.to_string(), subject.to_string()),
                    FailureRecord {
                        proxy_id: proxy_id.to_string(),
                        subject: subject.to_string(),
                        failures: get_n(item, "failures").unwrap_or(0),
                        quarantined: item
                            .get("quarantined")
                            .and_then(|v| v.as_bool().ok())
                            .copied()
                            .unwrap_or(false),
                        last_error: get_s(item, "lastError").unwrap_or_default().to_string(),
                    },
                ))
            })
            .collect())
    }

    /// Counts one more failed run; returns whether the subject is now quarantined.
    pub async fn record_failure(
        &self,
        proxy_id: &str,
        subject: &str,
        error: &str,
        at_ms: i64,
    ) -> Result<bool, StorageError> {
        let key = keys::quarantine(proxy_id, subject);
        let error: String = error.chars().take(500).collect();
        let output = with_retries(|| async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(
                    "ADD failures :one SET lastError = :error, lastFailedAt = :at, proxyId = :proxy",
                )
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":error", s(error.clone()))
                .expression_attribute_values(":at", n(at_ms))
                .expression_attribute_values(":proxy", s(proxy_id))
                .return_values(ReturnValue::AllNew)
                .send()
                .await
                .map_err(|e| classify("count a failure", e))
        })
        .await?;
        let failures = output
            .attributes()
            .and_then(|a| get_n(a, "failures"))
            .unwrap_or(0);
        if failures < QUARANTINE_AFTER {
            return Ok(false);
        }
        with_retries(|| async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression("SET quarantined = :yes")
                .expression_attribute_values(
                    ":yes",
                    aws_sdk_dynamodb::types::AttributeValue::Bool(true),
                )
                .send()
                .await
                .map_err(|e| classify("quarantine", e))
        })
        .await?;
        Ok(true)
    }

    /// Forgets a subject's failures (it succeeded, or an operator released it).
    pub async fn clear_failures(&self, proxy_id: &str, subject: &str) -> Result<(), StorageError> {
        let key = keys::quarantine(proxy_id, subject);
        with_retries(|| async {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("clear failures", e))
        })
        .await
    }

    /// Records a subject as quarantined at once (an unreadable chunk: no
    /// later run would read it any better).
    pub async fn quarantine_record(
        &self,
        proxy_id: &str,
        subject: &str,
        error: &str,
        at_ms: i64,
    ) -> Result<(), StorageError> {
        let key = keys::quarantine(proxy_id, subject);
        let error: String = error.chars().take(500).collect();
        with_retries(|| async {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(
                    "SET failures = :n, quarantined = :yes, lastError = :error, lastFailedAt = :at, proxyId = :proxy",
                )
                .expression_attribute_values(":n", n(QUARANTINE_AFTER))
                .expression_attribute_values(
                    ":yes",
                    aws_sdk_dynamodb::types::AttributeValue::Bool(true),
                )
                .expression_attribute_values(":error", s(error.clone()))
                .expression_attribute_values(":at", n(at_ms))
                .expression_attribute_values(":proxy", s(proxy_id))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("quarantine a chunk", e))
        })
        .await
    }
}

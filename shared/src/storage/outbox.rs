//! The delivery outbox and the deliveries log of alerts (keys in
//! `keys.rs`, layout in `alerts.rs`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnConsumedCapacity, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::alerts::{
    DELIVERIES_SHOWN, DELIVERY_LOG_DAYS, DeliveryAttempt, OutboxItem, get_i, instant, ms,
};
use super::keys::{self, n, s};
use super::retry::{classify, with_retries};
use super::{StorageError, Store, get_n, get_s};

pub(super) fn outbox_item(o: &OutboxItem) -> HashMap<String, AttributeValue> {
    let mut item = keys::outbox(&o.webhook_id);
    item.insert("webhookId".into(), s(&o.webhook_id));
    item.insert("proxyId".into(), s(&o.proxy_id));
    item.insert("alertId".into(), s(&o.alert_id));
    item.insert("type".into(), s(&o.event_type));
    item.insert("body".into(), s(&o.body));
    item.insert("attempts".into(), n(o.attempts));
    item.insert("dueAt".into(), n(o.due_ms));
    item.insert("claimedUntil".into(), n(o.claimed_until_ms));
    item
}

fn outbox_from_item(item: &HashMap<String, AttributeValue>) -> Option<OutboxItem> {
    Some(OutboxItem {
        webhook_id: get_s(item, "webhookId")?.to_string(),
        proxy_id: get_s(item, "proxyId")?.to_string(),
        alert_id: get_s(item, "alertId")?.to_string(),
        event_type: get_s(item, "type")?.to_string(),
        body: get_s(item, "body")?.to_string(),
        attempts: u32::try_from(get_n(item, "attempts")?).ok()?,
        due_ms: get_i(item, "dueAt")?,
        claimed_until_ms: get_i(item, "claimedUntil").unwrap_or(0),
    })
}

impl Store {
    /// Enqueues one delivery (a test delivery) unless it is already queued.
    pub async fn enqueue_delivery(&self, delivery: &OutboxItem) -> Result<(), StorageError> {
        let put = Self::built(
            "the outbox put",
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(outbox_item(delivery)))
                .build(),
        )?;
        let actions = vec![TransactWriteItem::builder().put(put).build()];
        let token = uuid::Uuid::new_v4().to_string();
        with_retries(|| async {
            self.transact(&actions, &token)
                .await
                .map(|_| ())
                .map_err(|e| classify("enqueue delivery", e))
        })
        .await
    }

    /// Outbox items due at `now` and not claimed by a live run.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>, StorageError> {
        let items = self
            .query_all(keys::OUTBOX_PARTITION.into(), None, "read outbox")
            .await?;
        let now = ms(now);
        Ok(items
            .iter()
            .filter_map(outbox_from_item)
            .filter(|o| o.due_ms <= now && o.claimed_until_ms <= now)
            .collect())
    }

    /// Claims a due delivery until `until`; `false` if another run has it
    /// (or it was sent and removed meanwhile).
    pub async fn claim_delivery(
        &self,
        item: &OutboxItem,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StorageError> {
        with_retries(|| async {
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::outbox(&item.webhook_id)))
                .update_expression("SET claimedUntil = :until")
                .condition_expression(
                    "attribute_exists(pk) AND attempts = :attempts AND claimedUntil <= :now",
                )
                .expression_attribute_values(":until", n(ms(until)))
                .expression_attribute_values(":now", n(ms(now)))
                .expression_attribute_values(":attempts", n(item.attempts))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match out {
                Ok(out) => {
                    self.meter.write(out.consumed_capacity());
                    Ok(true)
                }
                Err(err) if super::fold::is_condition_failure(&err) => Ok(false),
                Err(err) => Err(classify("claim delivery", err)),
            }
        })
        .await
    }

    /// After an attempt: logs it, then either removes the outbox item
    /// (`next` = `None`: delivered or given up) or schedules the next attempt.
    /// `disable` marks the rule's webhook disabled (a 410).
    pub async fn finish_attempt(
        &self,
        item: &OutboxItem,
        attempt: &DeliveryAttempt,
        disable: bool,
    ) -> Result<(), StorageError> {
        let mut log = keys::delivery(
            &item.alert_id,
            ms(attempt.at),
            &item.webhook_id,
            attempt.attempt,
        );
        log.insert("webhookId".into(), s(&item.webhook_id));
        log.insert("type".into(), s(&item.event_type));
        log.insert("attempt".into(), n(attempt.attempt));
        log.insert("at".into(), n(ms(attempt.at)));
        log.insert("status".into(), s(&attempt.status));
        if let Some(next) = attempt.next_attempt_at {
            log.insert("nextAttemptAt".into(), n(ms(next)));
        }
        log.insert(
            keys::EXPIRES_AT.into(),
            n(attempt.at.timestamp() + DELIVERY_LOG_DAYS * 86_400),
        );
        self.put_plain(log, "log delivery").await?;
        if disable {
            self.update_plain(
                keys::alert(&item.proxy_id, &item.alert_id),
                "SET webhookDisabled = :t",
                vec![(":t", AttributeValue::Bool(true))],
                "disable webhook",
            )
            .await?;
        }
        match attempt.next_attempt_at {
            None => {
                with_retries(|| async {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(keys::outbox(&item.webhook_id)))
                        .return_consumed_capacity(ReturnConsumedCapacity::Total)
                        .send()
                        .await
                        .map(|out| self.meter.write(out.consumed_capacity()))
                        .map_err(|e| classify("remove delivery", e))
                })
                .await
            }
            Some(next) => {
                self.update_plain(
                    keys::outbox(&item.webhook_id),
                    "SET attempts = :a, dueAt = :due, claimedUntil = :zero",
                    vec![
                        (":a", n(attempt.attempt)),
                        (":due", n(ms(next))),
                        (":zero", n(0)),
                    ],
                    "reschedule delivery",
                )
                .await
            }
        }
    }

    /// The last [`DELIVERIES_SHOWN`] attempts of a rule, newest first.
    pub async fn list_deliveries(
        &self,
        alert_id: &str,
    ) -> Result<Vec<DeliveryAttempt>, StorageError> {
        let pk = keys::deliveries_partition(alert_id);
        let out = with_retries(|| async {
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk.clone()))
                .scan_index_forward(false)
                .limit(DELIVERIES_SHOWN)
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| classify("list deliveries", e))
        })
        .await?;
        self.meter.query(out.consumed_capacity());
        Ok(out
            .items()
            .iter()
            .filter_map(|item| {
                Some(DeliveryAttempt {
                    webhook_id: get_s(item, "webhookId")?.to_string(),
                    event_type: get_s(item, "type")?.to_string(),
                    attempt: u32::try_from(get_n(item, "attempt")?).ok()?,
                    at: instant(get_i(item, "at")?),
                    status: get_s(item, "status")?.to_string(),
                    next_attempt_at: get_i(item, "nextAttemptAt").map(instant),
                })
            })
            .collect())
    }

    async fn put_plain(
        &self,
        item: HashMap<String, AttributeValue>,
        operation: &str,
    ) -> Result<(), StorageError> {
        with_retries(|| async {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map(|out| self.meter.write(out.consumed_capacity()))
                .map_err(|e| classify(operation, e))
        })
        .await
    }

    async fn update_plain(
        &self,
        key: keys::Key,
        expression: &str,
        values: Vec<(&str, AttributeValue)>,
        operation: &str,
    ) -> Result<(), StorageError> {
        with_retries(|| async {
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .update_expression(expression)
                .condition_expression("attribute_exists(pk)")
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            for (k, v) in &values {
                update = update.expression_attribute_values(*k, v.clone());
            }
            match update.send().await {
                Ok(out) => {
                    self.meter.write(out.consumed_capacity());
                    Ok(())
                }
                Err(err) if super::fold::is_condition_failure(&err) => Ok(()),
                Err(err) => Err(classify(operation, err)),
            }
        })
        .await
    }
}

//! Alert rules, their state changes, the delivery outbox and the deliveries log.
//!
//! | entity | pk | sk | why |
//! |---|---|---|---|
//! | rule | `ALERT#{shard}` | `{proxyId}#{alertId}` | a proxy's rules are one range; the evaluation reads every rule with one query per shard |
//! | rule count | `ALERTCOUNT#{proxyId}` | `ALERTCOUNT` | the tier limit is a condition on it, in the create's transaction |
//! | state change | `ALERTCHANGE#{alertId}` | `{sequence:010}` | created once per (rule, sequence), in the transaction that moves the rule's state and enqueues the delivery |
//! | outbox | `OUTBOX` | `{webhookId}` | a delivery waiting to be sent or retried; claimed with a lease |
//! | delivery | `DELIVERIES#{alertId}` | `{atMs:013}#{webhookId}#{attempt:02}` | every attempt, kept 30 days; the API shows the last 100 |

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, ReturnConsumedCapacity, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::keys::{self, n, s};
use super::retry::{cancellations, cancelled, classify, with_retries};
use super::{StorageError, Store, get_blob, get_n, get_s};
use crate::domain::alert::RuleSpec;
use crate::domain::alert::eval::State;

/// How long the deliveries log and the state changes are kept.
pub const DELIVERY_LOG_DAYS: i64 = 30;
/// The deliveries the API shows.
pub const DELIVERIES_SHOWN: i32 = 100;

/// A rule as stored, with its evaluation state.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub proxy_id: String,
    pub alert_id: String,
    pub spec: RuleSpec,
    pub created_at: DateTime<Utc>,
    pub state: State,
    pub state_since: DateTime<Utc>,
    /// Number of state changes so far (the next one is `sequence + 1`).
    pub sequence: u64,
    pub last_value: Option<f64>,
    pub last_evaluated_at: Option<DateTime<Utc>>,
    /// End (ms) of the newest window evaluated.
    pub last_close: Option<i64>,
    /// A receiver answered 410: no more deliveries.
    pub webhook_disabled: bool,
    /// The webhook secret, sealed (`alerts::secret`).
    pub sealed_secret: Vec<u8>,
}

/// A delivery waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub webhook_id: String,
    pub proxy_id: String,
    pub alert_id: String,
    pub event_type: String,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub due_ms: i64,
    pub claimed_until_ms: i64,
}

/// One attempt, as the deliveries log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub webhook_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// HTTP status, `timeout` or `refused` (or `error`).
    pub status: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

pub(super) fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(super) fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

fn get_f(item: &HashMap<String, AttributeValue>, name: &str) -> Option<f64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

pub(super) fn get_i(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn rule_item(rule: &AlertRule) -> Result<HashMap<String, AttributeValue>, StorageError> {
    let spec = serde_json::to_string(&rule.spec)
        .map_err(|e| StorageError::Internal(format!("encoding a rule: {e}")))?;
    let mut item = keys::alert(&rule.proxy_id, &rule.alert_id);
    item.insert("proxyId".into(), s(&rule.proxy_id));
    item.insert("alertId".into(), s(&rule.alert_id));
    item.insert("spec".into(), s(spec));
    item.insert("createdAt".into(), n(ms(rule.created_at)));
    item.insert("state".into(), s(rule.state.as_str()));
    item.insert("stateSince".into(), n(ms(rule.state_since)));
    item.insert("seq".into(), n(rule.sequence));
    item.insert(
        "secret".into(),
        AttributeValue::B(rule.sealed_secret.clone().into()),
    );
    Ok(item)
}

fn rule_from_item(item: &HashMap<String, AttributeValue>) -> Result<AlertRule, StorageError> {
    let corrupt = || StorageError::Corrupt("alert rule item".into());
    let spec: RuleSpec = serde_json::from_str(get_s(item, "spec").ok_or_else(corrupt)?)
        .map_err(|e| StorageError::Corrupt(format!("alert rule: {e}")))?;
    Ok(AlertRule {
        proxy_id: get_s(item, "proxyId").ok_or_else(corrupt)?.to_string(),
        alert_id: get_s(item, "alertId").ok_or_else(corrupt)?.to_string(),
        spec,
        created_at: instant(get_i(item, "createdAt").ok_or_else(corrupt)?),
        state: get_s(item, "state")
            .and_then(State::parse)
            .ok_or_else(corrupt)?,
        state_since: instant(get_i(item, "stateSince").ok_or_else(corrupt)?),
        sequence: get_n(item, "seq").unwrap_or(0),
        last_value: get_f(item, "lastValue"),
        last_evaluated_at: get_i(item, "lastEvaluatedAt").map(instant),
        last_close: get_i(item, "lastClose"),
        webhook_disabled: item
            .get("webhookDisabled")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        sealed_secret: get_blob(item, "secret").ok_or_else(corrupt)?.to_vec(),
    })
}

/// What a state change writes, besides the rule's new state.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub state: State,
    pub value: Option<f64>,
    pub close: i64,
    pub at: DateTime<Utc>,
    /// The delivery to enqueue (`None` when the webhook is disabled).
    pub delivery: Option<OutboxItem>,
}

impl Store {
    pub(super) fn built<T, E: std::fmt::Display>(
        what: &str,
        r: Result<T, E>,
    ) -> Result<T, StorageError> {
        r.map_err(|e| StorageError::Internal(format!("building {what}: {e}")))
    }

    /// Creates a rule if the proxy has fewer than `limit`: the count and the
    /// rule are written in one transaction conditioned on the count.
    pub async fn create_alert(&self, rule: &AlertRule, limit: usize) -> Result<(), StorageError> {
        let count = Self::built(
            "the rule count update",
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(keys::alert_count(&rule.proxy_id)))
                .update_expression("ADD ruleCount :one")
                .condition_expression("attribute_not_exists(ruleCount) OR ruleCount < :limit")
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":limit", n(limit))
                .build(),
        )?;
        let actions = vec![
            TransactWriteItem::builder().update(count).build(),
            self.put_if_absent(rule_item(rule)?, "alert rule")?,
        ];
        let token = uuid::Uuid::new_v4().to_string();
        with_retries(|| async {
            match self.transact(&actions, &token).await {
                Ok(_) => Ok(()),
                Err(err) => match cancellations(&err) {
                    Some(reasons) if reasons.first().is_some_and(|r| r.condition_failed()) => {
                        Err(super::retry::Failure::Fatal(StorageError::Conflict(format!(
                            "This proxy already has {limit} alert rules, the limit of its owner's tier."
                        ))))
                    }
                    Some(reasons) => Err(cancelled("create alert", &reasons)),
                    None => Err(classify("create alert", err)),
                },
            }
        })
        .await
    }

    /// A proxy's rules, ordered by id.
    pub async fn list_alerts(&self, proxy_id: &str) -> Result<Vec<AlertRule>, StorageError> {
        let items = self
            .query_all(
                keys::alert_partition(keys::pending_shard(proxy_id)),
                Some((format!("{proxy_id}#"), format!("{proxy_id}$"))),
                "list alerts",
            )
            .await?;
        items.iter().map(rule_from_item).collect()
    }

    /// Every rule of one shard (the evaluation's read); an unreadable rule is
    /// logged and left out, never holding back the others.
    pub async fn alerts_in_shard(&self, shard: u32) -> Result<Vec<AlertRule>, StorageError> {
        let items = self
            .query_all(keys::alert_partition(shard), None, "read alert rules")
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                rule_from_item(item)
                    .inspect_err(|e| tracing::error!(error = %e, "unreadable alert rule skipped"))
                    .ok()
            })
            .collect())
    }

    pub async fn get_alert(
        &self,
        proxy_id: &str,
        alert_id: &str,
    ) -> Result<Option<AlertRule>, StorageError> {
        let item = self
            .get_item(keys::alert(proxy_id, alert_id), "get alert")
            .await?;
        item.as_ref().map(rule_from_item).transpose()
    }

    /// Deletes a rule (and counts it out); `false` if there was none.
    pub async fn delete_alert(&self, proxy_id: &str, alert_id: &str) -> Result<bool, StorageError> {
        let delete = Self::built(
            "the rule delete",
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(keys::alert(proxy_id, alert_id)))
                .condition_expression("attribute_exists(pk)")
                .build(),
        )?;
        let count = Self::built(
            "the rule count update",
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(keys::alert_count(proxy_id)))
                .update_expression("ADD ruleCount :minus")
                .expression_attribute_values(":minus", n(-1))
                .build(),
        )?;
        let actions = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder().update(count).build(),
        ];
        let token = uuid::Uuid::new_v4().to_string();
        with_retries(|| async {
            match self.transact(&actions, &token).await {
                Ok(_) => Ok(true),
                Err(err) => match cancellations(&err) {
                    Some(reasons) if reasons.first().is_some_and(|r| r.condition_failed()) => {
                        Ok(false)
                    }
                    Some(reasons) => Err(cancelled("delete alert", &reasons)),
                    None => Err(classify("delete alert", err)),
                },
            }
        })
        .await
    }

    /// Records an evaluation that changed nothing (value, time, window),
    /// only if no state change happened meanwhile.
    pub async fn record_evaluation(
        &self,
        rule: &AlertRule,
        value: Option<f64>,
        close: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StorageError> {
        let (set, values) = evaluation_update(value, close, at);
        with_retries(|| async {
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::alert(&rule.proxy_id, &rule.alert_id)))
                .update_expression(set.clone())
                .condition_expression("seq = :seq")
                .expression_attribute_values(":seq", n(rule.sequence))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            for (k, v) in &values {
                update = update.expression_attribute_values(k, v.clone());
            }
            match update.send().await {
                Ok(out) => {
                    self.meter.write(out.consumed_capacity());
                    Ok(())
                }
                Err(err) if super::fold::is_condition_failure(&err) => Ok(()),
                Err(err) => Err(classify("record evaluation", err)),
            }
        })
        .await
    }

    /// Moves a rule to a new state exactly once: one transaction updates the
    /// rule (conditioned on its sequence), creates the change item keyed by
    /// (rule, sequence + 1) and enqueues the delivery. `false` when another
    /// run (or a retry of this one) already made this change, or the rule is gone.
    pub async fn record_change(
        &self,
        rule: &AlertRule,
        change: &StateChange,
    ) -> Result<bool, StorageError> {
        let next = rule.sequence + 1;
        let (set, values) = evaluation_update(change.value, change.close, change.at);
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::alert(&rule.proxy_id, &rule.alert_id)))
            .update_expression(format!(
                "{set}, #state = :state, stateSince = :evaluated, seq = :next"
            ))
            .condition_expression("seq = :seq")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(change.state.as_str()))
            .expression_attribute_values(":next", n(next))
            .expression_attribute_values(":seq", n(rule.sequence));
        for (k, v) in values {
            update = update.expression_attribute_values(k, v);
        }
        let mut marker = keys::alert_change(&rule.alert_id, next);
        marker.insert("state".into(), s(change.state.as_str()));
        marker.insert("previousState".into(), s(rule.state.as_str()));
        marker.insert("at".into(), n(ms(change.at)));
        marker.insert(
            keys::EXPIRES_AT.into(),
            n(change.at.timestamp() + 90 * 86_400),
        );
        let mut actions = vec![
            TransactWriteItem::builder()
                .update(Self::built("the rule update", update.build())?)
                .build(),
            self.put_if_absent(marker, "state change")?,
        ];
        if let Some(delivery) = &change.delivery {
            actions.push(self.put_if_absent(super::outbox::outbox_item(delivery), "outbox")?);
        }
        let token = uuid::Uuid::new_v4().to_string();
        with_retries(|| async {
            match self.transact(&actions, &token).await {
                Ok(_) => Ok(true),
                Err(err) => match cancellations(&err) {
                    Some(reasons) if reasons.iter().any(|r| r.condition_failed()) => Ok(false),
                    Some(reasons) => Err(cancelled("record alert change", &reasons)),
                    None => Err(classify("record alert change", err)),
                },
            }
        })
        .await
    }
}

/// `SET` of an evaluation's value, window and time (`lastValue` removed
/// when the newest window has none).
fn evaluation_update(
    value: Option<f64>,
    close: i64,
    at: DateTime<Utc>,
) -> (String, Vec<(String, AttributeValue)>) {
    let mut values = vec![
        (":close".to_string(), n(close)),
        (":evaluated".to_string(), n(ms(at))),
    ];
    let mut set = "SET lastClose = :close, lastEvaluatedAt = :evaluated".to_string();
    match value {
        Some(v) => {
            set.push_str(", lastValue = :value");
            values.push((":value".into(), n(v)));
        }
        None => set = format!("REMOVE lastValue {set}"),
    }
    (set, values)
}

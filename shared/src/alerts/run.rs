//! `evaluate-alerts`: one run evaluates every rule whose newest window has
//! closed since its last evaluation, then sends what the outbox holds.
//!
//! Exactly one delivery per state change: the change, the rule's new state
//! and the outbox item are one transaction conditioned on the rule's
//! sequence (`Store::record_change`), so a retried or concurrent run that
//! reaches the same change writes nothing. A delivery is claimed (a lease
//! conditioned on its attempt count) before it is sent, so two runs never
//! send the same attempt. Work per run: one rule query per shard, one read
//! of the buckets per proxy with a rule due, one write per rule evaluated.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use rand::Rng;

use super::send::{self, Outcome};
use super::{AlertsConfig, Report, run_payload as payload};
use crate::domain::alert::eval;
use crate::domain::alert::webhook::{change_id, retry_delay, sign};
use crate::domain::rollup::Bucket;
use crate::storage::alerts::{AlertRule, DeliveryAttempt, OutboxItem, StateChange};
use crate::storage::{PENDING_SHARDS, StorageError, Store};

/// How long a run holds a delivery it is sending (over the 10 s timeout).
pub const CLAIM_SECONDS: i64 = 60;
/// Deliveries sent at once by one run.
pub const PARALLEL_DELIVERIES: usize = 8;

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

/// One scheduled run: evaluation, then delivery. Fails only when no rule
/// shard could be read at all (the scheduler then retries).
pub async fn run(store: &Store, config: &AlertsConfig) -> Result<Report, StorageError> {
    let started = Instant::now();
    let mut report = Report::default();
    evaluate_all(store, &mut report).await?;
    deliver_due(store, config, &mut report).await?;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(?report, "evaluate-alerts run");
    Ok(report)
}

async fn evaluate_all(store: &Store, report: &mut Report) -> Result<(), StorageError> {
    let now = store.clock().now();
    let mut by_proxy: BTreeMap<String, Vec<AlertRule>> = BTreeMap::new();
    let mut failed_shards = 0;
    let mut last_error = None;
    for shard in 0..PENDING_SHARDS {
        match store.alerts_in_shard(shard).await {
            Ok(rules) => {
                for rule in rules {
                    let close = eval::latest_close(now, rule.spec.window_minutes);
                    if rule.last_close.is_none_or(|done| done < close) {
                        by_proxy
                            .entry(rule.proxy_id.clone())
                            .or_default()
                            .push(rule);
                    }
                }
            }
            Err(e) => {
                tracing::error!(shard, error = %e, "reading alert rules failed");
                failed_shards += 1;
                last_error = Some(e);
            }
        }
    }
    if failed_shards == PENDING_SHARDS
        && let Some(e) = last_error
    {
        return Err(e);
    }
    for (proxy_id, rules) in by_proxy {
        if let Err(e) = evaluate_proxy(store, &proxy_id, &rules, now, report).await {
            tracing::error!(proxy_id, error = %e, "evaluating a proxy's alert rules failed");
        }
    }
    Ok(())
}

/// One read of the proxy's buckets covering every due rule's windows.
async fn evaluate_proxy(
    store: &Store,
    proxy_id: &str,
    rules: &[AlertRule],
    now: DateTime<Utc>,
    report: &mut Report,
) -> Result<(), StorageError> {
    let Some(proxy) = store.get_proxy(proxy_id).await? else {
        return Ok(());
    };
    let spans: Vec<(i64, i64)> = rules
        .iter()
        .map(|r| {
            let close = eval::latest_close(now, r.spec.window_minutes);
            let size = i64::from(r.spec.window_minutes) * 60_000;
            (close - i64::from(r.spec.evaluations) * size, close)
        })
        .collect();
    let from = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let to = spans.iter().map(|s| s.1).max().unwrap_or(0);
    let buckets = store
        .read_buckets(&proxy, instant(from), instant(to - 1))
        .await?;
    for rule in rules {
        match evaluate_rule(store, rule, &buckets, now).await {
            Ok(changed) => {
                report.rules_evaluated += 1;
                report.state_changes += u64::from(changed);
            }
            Err(e) => {
                tracing::error!(proxy_id, alert_id = rule.alert_id, error = %e, "evaluating a rule failed");
            }
        }
    }
    Ok(())
}

/// Evaluates one rule; `true` if this run wrote a state change.
async fn evaluate_rule(
    store: &Store,
    rule: &AlertRule,
    buckets: &BTreeMap<i64, Bucket>,
    now: DateTime<Utc>,
) -> Result<bool, StorageError> {
    let close = eval::latest_close(now, rule.spec.window_minutes);
    let outcome = eval::evaluate(&rule.spec, rule.state, close, buckets);
    if outcome.state == rule.state {
        store
            .record_evaluation(rule, outcome.value, close, now)
            .await?;
        return Ok(false);
    }
    let event_type = eval::event_type(outcome.state);
    let webhook_id = change_id(&rule.alert_id, rule.sequence + 1);
    let delivery = (!rule.webhook_disabled).then(|| OutboxItem {
        webhook_id,
        proxy_id: rule.proxy_id.clone(),
        alert_id: rule.alert_id.clone(),
        event_type: event_type.to_string(),
        body: payload(
            rule,
            event_type,
            outcome.state,
            rule.state,
            outcome.value,
            outcome.window,
            now,
        ),
        attempts: 0,
        due_ms: now.timestamp_millis(),
        claimed_until_ms: 0,
    });
    let change = StateChange {
        state: outcome.state,
        value: outcome.value,
        close,
        at: now,
        delivery,
    };
    store.record_change(rule, &change).await
}

/// Sends every due delivery of the outbox (a few at a time).
pub async fn deliver_due(
    store: &Store,
    config: &AlertsConfig,
    report: &mut Report,
) -> Result<(), StorageError> {
    let now = store.clock().now();
    let due = store.due_deliveries(now).await?;
    let mut rules: HashMap<(String, String), Option<AlertRule>> = HashMap::new();
    for item in &due {
        let key = (item.proxy_id.clone(), item.alert_id.clone());
        if let std::collections::hash_map::Entry::Vacant(slot) = rules.entry(key) {
            slot.insert(store.get_alert(&item.proxy_id, &item.alert_id).await?);
        }
    }
    let results: Vec<Option<bool>> = futures::stream::iter(due.iter())
        .map(|item| {
            let rule = rules
                .get(&(item.proxy_id.clone(), item.alert_id.clone()))
                .cloned()
                .flatten();
            async move {
                match deliver_one(store, config, item, rule.as_ref(), now).await {
                    Ok(sent) => sent,
                    Err(e) => {
                        tracing::error!(webhook_id = item.webhook_id, error = %e, "delivery failed");
                        None
                    }
                }
            }
        })
        .buffer_unordered(PARALLEL_DELIVERIES)
        .collect()
        .await;
    for sent in results.into_iter().flatten() {
        report.deliveries_attempted += 1;
        report.deliveries_succeeded += u64::from(sent);
    }
    Ok(())
}

/// Claims and sends one delivery: `None` when not attempted (claimed by
/// another run, rule gone or disabled), else whether it was delivered.
pub async fn deliver_one(
    store: &Store,
    config: &AlertsConfig,
    item: &OutboxItem,
    rule: Option<&AlertRule>,
    now: DateTime<Utc>,
) -> Result<Option<bool>, StorageError> {
    if !store
        .claim_delivery(item, now, now + Duration::seconds(CLAIM_SECONDS))
        .await?
    {
        return Ok(None);
    }
    let attempt = item.attempts + 1;
    let Some(rule) = rule.filter(|r| !r.webhook_disabled) else {
        // The rule was deleted or its webhook disabled: nothing to send.
        let log = DeliveryAttempt {
            webhook_id: item.webhook_id.clone(),
            event_type: item.event_type.clone(),
            attempt,
            at: now,
            status: "refused".into(),
            next_attempt_at: None,
        };
        store.finish_attempt(item, &log, false).await?;
        return Ok(None);
    };
    let outcome = match config.key.open(&rule.sealed_secret, &rule.alert_id) {
        Ok(key) => {
            let timestamp = store.clock().now().timestamp();
            let signature = sign(&key, &item.webhook_id, timestamp, item.body.as_bytes());
            let headers = [
                ("webhook-id", item.webhook_id.clone()),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signature),
            ];
            send::post(
                &rule.spec.webhook_url,
                config.allow_loopback,
                &headers,
                item.body.clone(),
            )
            .await
        }
        Err(e) => Outcome::Failed(e),
    };
    let gone = outcome == Outcome::Status(410);
    let next_attempt_at = if outcome.delivered() || gone {
        None
    } else {
        let jitter = rand::rng().random_range(-1.0..=1.0);
        retry_delay(attempt, jitter).map(|d| now + d)
    };
    if let Outcome::Refused(why) | Outcome::Failed(why) = &outcome {
        tracing::warn!(
            webhook_id = item.webhook_id,
            attempt,
            why,
            "webhook attempt failed"
        );
    }
    let log = DeliveryAttempt {
        webhook_id: item.webhook_id.clone(),
        event_type: item.event_type.clone(),
        attempt,
        at: now,
        status: outcome.log_status(),
        next_attempt_at,
    };
    store.finish_attempt(item, &log, gone).await?;
    Ok(Some(outcome.delivered()))
}

//! The scheduled aggregation under storage faults: a failed or half-answered
//! run never loses or double-counts; once faults stop, a rerun ends exact.

use crate::common;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use common::fault_proxy::{Fault, FaultConfig, FaultProxy};
use common::*;
use proxy_metrics::{App, aggregate};
use serde_json::{Value, json};

fn batch(prefix: &str, n: usize) -> Value {
    // today's events, whatever the hour (the reads below are of today)
    let ts = iso(instant_on(now().date_naive(), 1, 2, now()));
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"eventType": "request", "eventId": format!("{prefix}-{i}"), "timestamp": ts,
                         "metrics": {"requestCount": 3, "successCount": 3, "latencySamplesMs": [4.0, 8.0]}}))
        .collect();
    json!({ "events": events })
}

/// The harness (direct to dynoxide) and an app whose storage goes through the fault proxy.
async fn rig(seed: u64) -> (Harness, FaultProxy, App, String) {
    let h = Harness::start().await;
    let fault = FaultProxy::start(&h.endpoint, seed).await;
    let conf = sdk_client(&fault.endpoint)
        .config()
        .to_builder()
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .build();
    let app = App::with_clock(
        &config(&fault.endpoint, &[]),
        aws_sdk_dynamodb::Client::from_conf(conf),
        h.app.clock.clone(),
    );
    let token = user_token("alice");
    for p in ["p1", "p2"] {
        assert_eq!(h.register(&token, p).await.0, 201);
    }
    (h, fault, app, token)
}

async fn today_counts(h: &Harness, token: &str, proxy: &str) -> (u64, u64) {
    let (s, b) = h.daily(token, proxy, &today()).await;
    assert_eq!(s, 200, "{b}");
    (
        b["metrics"]["eventCount"].as_u64().unwrap(),
        b["metrics"]["requestCount"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_run_whose_commits_fail_leaves_days_pending() {
    let (h, fault, app, t) = rig(11).await;
    h.record(&t, "p1", batch("a", 30)).await;
    // every write of the aggregation is lost before it reaches the store
    fault.set(FaultConfig::always(Fault::Drop).only(&["PutItem", "DeleteItem", "UpdateItem"]));
    let failed = aggregate::run_all(&app.store).await.unwrap_err();
    assert_eq!(failed.0.days_failed, 1);
    let day = now().date_naive();
    assert!(
        h.app
            .store
            .stored_days("p1", day, day)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.app.store.pending_chunks_of("p1").await.unwrap().len(), 1);
    assert_eq!(today_counts(&h, &t, "p1").await, (30, 90));
    fault.off();
    let report = aggregate::run_all(&app.store).await.unwrap();
    assert_eq!((report.days_materialized, report.events_read), (1, 30));
    assert_eq!(today_counts(&h, &t, "p1").await, (30, 90));
}

#[tokio::test]
async fn a_run_whose_answers_are_lost_after_committing_is_harmless() {
    let (h, fault, app, t) = rig(12).await;
    h.record(&t, "p1", batch("a", 20)).await;
    // every write of the aggregation commits, but its answer never arrives
    fault.set(FaultConfig::always(Fault::DropAfterForward).only(&["PutItem", "DeleteItem"]));
    let _ = aggregate::run_all(&app.store).await;
    fault.off();
    // whatever the lost answers left undone, the rerun finishes without
    // adding anything twice, and then all is idle
    let rerun = aggregate::run_all(&app.store).await.unwrap();
    assert_eq!(rerun.days_failed, 0);
    assert_eq!(aggregate::run_all(&app.store).await.unwrap().events_read, 0);
    let day = now().date_naive();
    assert_eq!(
        h.app.store.stored_days("p1", day, day).await.unwrap()[&day]
            .value
            .rollup
            .event_count(),
        20
    );
    assert_eq!(today_counts(&h, &t, "p1").await, (20, 60));
}

#[tokio::test]
async fn recording_and_aggregating_under_random_faults_end_exact() {
    let (h, fault, app, t) = rig(13).await;
    fault.set(FaultConfig::random(
        0.3,
        &[
            (Fault::Throttling, 3),
            (Fault::ProvisionedThroughputExceeded, 2),
            (Fault::InternalServerError, 2),
            (Fault::Drop, 1),
            (Fault::DropAfterForward, 2),
        ],
    ));
    let mut sent = [0u64, 0u64];
    for round in 0..6 {
        for (i, p) in ["p1", "p2"].iter().enumerate() {
            let body = batch(&format!("{p}-{round}"), 15);
            // a client retries until acknowledged, with the same ids
            loop {
                let (s, b, _) = send_record(&app, record_req(&t, p).json(body.clone())).await;
                assert!(s == 200 || s == 201 || s == 503, "{s} {b}");
                if s != 503 {
                    break;
                }
            }
            sent[i] += 15;
        }
        // a run may fail midway; it must never corrupt anything
        let _ = aggregate::run_all(&app.store).await;
    }
    fault.off();
    for _ in 0..3 {
        aggregate::run_all(&app.store).await.unwrap();
    }
    assert_eq!(aggregate::run_all(&app.store).await.unwrap().events_read, 0);
    let day = now().date_naive();
    for (i, p) in ["p1", "p2"].iter().enumerate() {
        assert_eq!(today_counts(&h, &t, p).await, (sent[i], sent[i] * 3));
        let stored = h.app.store.stored_days(p, day, day).await.unwrap();
        assert_eq!(stored[&day].value.rollup.event_count(), sent[i]);
    }
}

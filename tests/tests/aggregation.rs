//! Scheduled aggregation: materialised rollups equal the read-your-writes
//! answer; reruns, races, late events and concurrent runs never double-count.

mod common;

use chrono::NaiveDate;
use common::*;
use proxy_metrics::aggregate;
use proxy_metrics::domain::rollup::Rollup;
use serde_json::{Value, json};

fn day_of(ago: i64) -> NaiveDate {
    day_ago(ago)
}

fn batch(prefix: &str, ago_days: i64, n: usize) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"eventType": "request", "eventId": format!("{prefix}-{i}"),
                   "timestamp": iso(instant_on(day_of(ago_days), i, n, now())),
                   "healthy": i % 7 != 0,
                   "metrics": {"requestCount": 10 + i, "successCount": 10 + i,
                               "latencySamplesMs": [1.0 + i as f64, 2.0 * (1 + i) as f64],
                               "concurrentConnections": i % 13,
                               "errorMessage": format!("e{}", i % 4)}})
        })
        .collect();
    json!({ "events": events })
}

/// The daily object without the fields that depend on the reading instant.
async fn daily_metrics(h: &Harness, token: &str, proxy: &str, ago: i64) -> Value {
    let (s, b) = h
        .daily(token, proxy, &day_of(ago).format("%Y-%m-%d").to_string())
        .await;
    assert_eq!(s, 200, "{b}");
    let mut metrics = b["metrics"].clone();
    if ago == 0 {
        // today's uptime moves with the clock (the bucket in progress counts)
        metrics["uptimePercentage"] = Value::Null;
    }
    metrics
}

#[tokio::test]
async fn materialised_days_read_exactly_like_raw_days() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    h.register(&t, "p2").await;
    assert_eq!(h.record(&t, "p1", batch("a", 1, 120)).await.0, 201);
    assert_eq!(h.record(&t, "p1", batch("b", 0, 30)).await.0, 201);
    assert_eq!(h.record(&t, "p2", batch("c", 2, 10)).await.0, 201);

    let before = [
        daily_metrics(&h, &t, "p1", 1).await,
        daily_metrics(&h, &t, "p1", 0).await,
        daily_metrics(&h, &t, "p2", 2).await,
    ];
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(report.proxies_processed, 2);
    assert_eq!(report.days_materialized, 3);
    assert_eq!(report.events_read, 160);
    // the rollups exist and are current
    let stored = h
        .app
        .store
        .stored_rollups("p1", day_of(1), day_of(0))
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    let after = [
        daily_metrics(&h, &t, "p1", 1).await,
        daily_metrics(&h, &t, "p1", 0).await,
        daily_metrics(&h, &t, "p2", 2).await,
    ];
    assert_eq!(before, after);
    assert_eq!(after[0]["eventCount"], 120);

    // an idle run reads nothing
    let idle = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(
        (
            idle.proxies_processed,
            idle.days_materialized,
            idle.events_read
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn late_events_reopen_their_day() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    h.record(&t, "p1", batch("a", 3, 5)).await;
    aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(daily_metrics(&h, &t, "p1", 3).await["eventCount"], 5);

    // a late event for the materialised day is visible at once…
    h.record(&t, "p1", batch("late", 3, 2)).await;
    assert_eq!(daily_metrics(&h, &t, "p1", 3).await["eventCount"], 7);
    // …and the next run materialises it
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!((report.days_materialized, report.events_read), (1, 7));
    let stored = h
        .app
        .store
        .stored_rollups("p1", day_of(3), day_of(3))
        .await
        .unwrap();
    assert_eq!(stored[&day_of(3)].1.event_count, 7);
}

#[tokio::test]
async fn a_write_racing_materialisation_keeps_the_day_pending() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    h.record(&t, "p1", batch("a", 1, 4)).await;
    let store = &h.app.store;
    let day = day_of(1);

    // The aggregator read version v and the events…
    let v = store.day_version("p1", day).await.unwrap().unwrap();
    let stale = Rollup::of_events(day, &store.day_events("p1", day).await.unwrap());
    // …then an event lands before it commits…
    h.record(&t, "p1", batch("b", 1, 1)).await;
    // …so its commit is refused and nothing is lost.
    assert!(!store.materialise_day("p1", day, v, &stale).await.unwrap());
    assert_eq!(daily_metrics(&h, &t, "p1", 1).await["eventCount"], 5);
    // A crash at this point (nothing committed) is just a rerun:
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(report.days_materialized, 1);
    assert_eq!(daily_metrics(&h, &t, "p1", 1).await["eventCount"], 5);
    // A run that dies after committing (its report lost) is followed by an idle one.
    let again = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(again.events_read, 0);
    assert_eq!(daily_metrics(&h, &t, "p1", 1).await["eventCount"], 5);
}

#[tokio::test]
async fn concurrent_runs_and_writes_end_exact() {
    let h = Harness::start().await;
    let t = user_token("alice");
    for p in ["p1", "p2", "p3"] {
        h.register(&t, p).await;
        h.record(&t, p, batch(p, 0, 40)).await;
    }
    let store = &h.app.store;
    let runs = futures::future::join3(
        aggregate::run_all(store),
        aggregate::run_all(store),
        h.record(&t, "p1", batch("extra", 0, 10)),
    )
    .await;
    runs.0.unwrap();
    runs.1.unwrap();
    assert_eq!(runs.2.0, 201);
    aggregate::run_all(store).await.unwrap();
    let idle = aggregate::run_all(store).await.unwrap();
    assert_eq!(idle.events_read, 0);
    let expected_requests = |n: usize| (0..n).map(|i| 10 + i as u64).sum::<u64>();
    let p1 = daily_metrics(&h, &t, "p1", 0).await;
    assert_eq!(p1["eventCount"], 50);
    assert_eq!(
        p1["requestCount"],
        expected_requests(40) + expected_requests(10)
    );
    for p in ["p2", "p3"] {
        let m = daily_metrics(&h, &t, p, 0).await;
        assert_eq!(m["eventCount"], 40);
        assert_eq!(m["requestCount"], expected_requests(40));
    }
    let stored = store
        .stored_rollups("p1", day_of(0), day_of(0))
        .await
        .unwrap();
    assert_eq!(stored[&day_of(0)].1.event_count, 50);
}

#[tokio::test]
async fn one_bad_day_does_not_hold_back_the_others() {
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue;
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "good").await;
    h.register(&t, "bad").await;
    h.record(&t, "good", batch("g", 0, 5)).await;
    h.record(&t, "bad", batch("b", 0, 5)).await;
    // a chunk whose body cannot be decoded (as after a bad deploy)
    let day = day_of(0).format("%Y-%m-%d").to_string();
    h.client
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S(format!("EVENTS#bad#{day}")))
        .item("sk", AttributeValue::S("9999999999999#corrupt".into()))
        .item("body", AttributeValue::B(Blob::new(vec![0xff, 0x00])))
        .send()
        .await
        .unwrap();
    assert!(aggregate::run_all(&h.app.store).await.is_err());
    let good = h
        .app
        .store
        .stored_rollups("good", day_of(0), day_of(0))
        .await
        .unwrap();
    assert_eq!(good[&day_of(0)].1.event_count, 5);
    assert!(
        h.app
            .store
            .stored_rollups("bad", day_of(0), day_of(0))
            .await
            .unwrap()
            .is_empty()
    );
}

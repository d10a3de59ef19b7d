//! Scheduled aggregation: materialised days read exactly like unfolded ones;
//! folding is incremental (no chunk read twice), exactly once under reruns,
//! races and concurrent runs, isolated (a poisoned or a giant day holds back
//! nobody), monotonic (a late event never shrinks a day), and retention
//! follows the owner's tier.

use crate::common;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, NaiveDate};
use common::*;
use proxy_metrics::aggregate::{self, RunLimits};
use proxy_metrics::storage::{PENDING_SHARDS, keys};
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
    let (s, b) = h.daily(token, proxy, &day_str(day_of(ago))).await;
    assert_eq!(s, 200, "{b}");
    b["metrics"].clone()
}

async fn stored_events(h: &Harness, proxy: &str, day: NaiveDate) -> Option<u64> {
    h.app
        .store
        .stored_days(proxy, day, day)
        .await
        .unwrap()
        .get(&day)
        .map(|d| d.value.rollup.event_count())
}

async fn pending_count(h: &Harness, proxy: &str) -> usize {
    h.app.store.pending_chunks_of(proxy).await.unwrap().len()
}

#[tokio::test]
async fn materialised_days_read_exactly_like_unfolded_ones() {
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
    assert_eq!((report.days_failed, report.days_quarantined), (0, 0));
    // the days are materialised and nothing is pending any more
    assert_eq!(stored_events(&h, "p1", day_of(1)).await, Some(120));
    assert_eq!(stored_events(&h, "p1", day_of(0)).await, Some(30));
    assert_eq!(pending_count(&h, "p1").await, 0);
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
async fn late_events_are_folded_incrementally() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    h.record(&t, "p1", batch("a", 3, 5)).await;
    aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(daily_metrics(&h, &t, "p1", 3).await["eventCount"], 5);

    // a late event for the materialised day is visible at once…
    h.record(&t, "p1", batch("late", 3, 2)).await;
    assert_eq!(daily_metrics(&h, &t, "p1", 3).await["eventCount"], 7);
    // …and the next run folds only what is new: the two late events
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!((report.days_materialized, report.events_read), (1, 2));
    assert_eq!(stored_events(&h, "p1", day_of(3)).await, Some(7));
}

#[tokio::test]
async fn a_fold_between_a_reads_items_and_its_chunks_is_seen_and_read_again() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    h.record(&t, "p1", batch("a", 1, 4)).await;
    let store = &h.app.store;
    let day = day_of(1);
    // A reader took the epoch and the items (none yet), then the
    // aggregation folded the chunk and deleted it, then the reader took the
    // pending chunks (none left): the epoch moved, so the reader knows to
    // read again (and then sees the 4 events).
    let e0 = store.fold_epoch("p1").await.unwrap();
    let items = store.stored_days("p1", day, day).await.unwrap();
    assert!(items.is_empty());
    aggregate::run_all(store).await.unwrap();
    assert_eq!(pending_count(&h, "p1").await, 0);
    assert_ne!(store.fold_epoch("p1").await.unwrap(), e0);
    let proxy = store.get_proxy("p1").await.unwrap().unwrap();
    assert_eq!(
        store.read_days(&proxy, day, day).await.unwrap()[&day].event_count(),
        4
    );
    // A reader that took the items after a fold and the chunks before their
    // deletion: the items name the chunks, counted once.
    h.record(&t, "p1", batch("b", 1, 3)).await;
    assert_eq!(daily_metrics(&h, &t, "p1", 1).await["eventCount"], 7);
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
    let runs = futures::future::join4(
        aggregate::run_all(store),
        aggregate::run_all(store),
        aggregate::run_all(store),
        h.record(&t, "p1", batch("extra", 0, 10)),
    )
    .await;
    runs.0.unwrap();
    runs.1.unwrap();
    runs.2.unwrap();
    assert_eq!(runs.3.0, 201);
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
    assert_eq!(stored_events(&h, "p1", day_of(0)).await, Some(50));
    // the buckets hold every event once as well
    let buckets = store
        .stored_buckets("p1", (day_of(0), 0), (day_of(0), 287))
        .await
        .unwrap();
    let bucket_events: u64 = buckets
        .values()
        .map(|b| b.value.bucket.stats.event_count)
        .sum();
    assert_eq!(bucket_events, 50);
}

#[tokio::test]
async fn a_poisoned_day_is_quarantined_and_holds_back_nobody() {
    let h = Harness::start().await;
    let t = user_token("alice");
    for p in ["good", "bad"] {
        h.register(&t, p).await;
    }
    h.record(&t, "good", batch("g", 0, 5)).await;
    h.record(&t, "bad", batch("b", 0, 5)).await;
    h.record(&t, "bad", batch("b2", 1, 5)).await;
    // today's materialised item of "bad" cannot be decoded (as after a bad deploy)
    let poison = keys::day("bad", day_of(0));
    h.client
        .put_item()
        .table_name(TABLE)
        .set_item(Some(poison.clone()))
        .item("v", AttributeValue::N("1".into()))
        .item("body", AttributeValue::B(Blob::new(vec![0xff, 0x00])))
        .send()
        .await
        .unwrap();
    let store = &h.app.store;
    for run in 1..=3 {
        // once only the poisoned day is left, the run as a whole fails (so
        // that the scheduler retries); its report says the same either way
        let report = aggregate::run_all(store)
            .await
            .unwrap_or_else(|failed| failed.0);
        assert_eq!(report.days_failed, 1, "run {run}: {report:?}");
        assert_eq!(report.days_quarantined, u64::from(run == 3), "run {run}");
        if run == 1 {
            // the healthy days materialise in the same run
            assert_eq!(report.days_materialized, 2, "{report:?}");
            assert_eq!(stored_events(&h, "good", day_of(0)).await, Some(5));
            assert_eq!(stored_events(&h, "bad", day_of(1)).await, Some(5));
        }
    }
    // quarantined: skipped (not failed again), counted, kept pending; the
    // run succeeds (nothing failed)
    let report = aggregate::run_all(store).await.unwrap();
    assert_eq!((report.days_failed, report.days_quarantined), (0, 1));
    assert_eq!(pending_count(&h, "bad").await, 1);
    let records = store.failure_records().await.unwrap();
    assert!(records[&("bad".to_string(), day_str(day_of(0)))].quarantined);

    // fixed (the bad item removed) and released: the day is whole again
    h.client
        .delete_item()
        .table_name(TABLE)
        .set_key(Some(poison))
        .send()
        .await
        .unwrap();
    let released = aggregate::invoke(
        store,
        &json!({"release": [{"proxyId": "bad", "date": day_str(day_of(0))}]}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(released["released"], 1);
    let report = aggregate::run_all(store).await.unwrap();
    assert_eq!((report.days_failed, report.days_materialized), (0, 1));
    assert_eq!(stored_events(&h, "bad", day_of(0)).await, Some(5));
    assert_eq!(pending_count(&h, "bad").await, 0);
    assert!(store.failure_records().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreadable_chunk_is_skipped_quarantined_and_released() {
    let h = Harness::start().await;
    let t = user_token("alice");
    for p in ["good", "bad"] {
        h.register(&t, p).await;
        h.record(&t, p, batch(p, 0, 5)).await;
    }
    let sort_key = keys::pending_sort_key(now().date_naive(), now().timestamp_millis(), "corrupt");
    h.client
        .put_item()
        .table_name(TABLE)
        .set_item(Some(keys::pending_chunk("bad", &sort_key)))
        .item(
            "body",
            AttributeValue::B(Blob::new(vec![2, 0xff, 0xff, 0xff])),
        )
        .send()
        .await
        .unwrap();
    // Reads skip it (logged at error level): the readable events still count.
    assert_eq!(daily_metrics(&h, &t, "bad", 0).await["eventCount"], 5);
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(
        (
            report.days_materialized,
            report.days_failed,
            report.days_quarantined
        ),
        (2, 1, 1)
    );
    assert_eq!(stored_events(&h, "bad", day_of(0)).await, Some(5));
    assert_eq!(pending_count(&h, "bad").await, 0, "set aside, not pending");
    let records = h.app.store.failure_records().await.unwrap();
    let subject = format!("chunk:{sort_key}");
    assert!(records[&("bad".to_string(), subject.clone())].quarantined);
    // the next run has nothing left to fail on
    let next = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(next.days_failed, 0);
    // released, it is pending again (and, still unreadable, set aside again)
    let released = aggregate::invoke(
        &h.app.store,
        &json!({"release": [{"proxyId": "bad", "date": subject}]}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(released["released"], 1);
    assert_eq!(pending_count(&h, "bad").await, 1);
    // (a run with failures only fails, so that the scheduler retries)
    let again = aggregate::run_all(&h.app.store).await.unwrap_err();
    assert_eq!(again.0.days_quarantined, 1);
    // discarded, it is gone for good
    let discarded = aggregate::invoke(
        &h.app.store,
        &json!({"discard": [{"proxyId": "bad", "date": subject}]}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(discarded["discarded"], 1);
    assert!(h.app.store.failure_records().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_giant_day_does_not_hold_back_the_others() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "giant").await;
    let long = "x".repeat(1000);
    // 12 requests (one chunk each) of 90 events with long, distinct error messages
    for r in 0..12 {
        let events: Vec<Value> = (0..90)
            .map(|i| {
                json!({"eventType": "error", "timestamp": iso(instant_on(now().date_naive(), i, 90, now())),
                       "metrics": {"requestCount": 1, "errorCount": 1,
                                   "errorMessage": format!("{r}-{i} {long}")}})
            })
            .collect();
        assert_eq!(
            h.record(&t, "giant", json!({"events": events})).await.0,
            201
        );
    }
    let healthy: Vec<String> = (0..6).map(|i| format!("tenant-{i}")).collect();
    for p in &healthy {
        h.register(&t, p).await;
        h.record(&t, p, batch(p, 0, 3)).await;
    }
    // A run may take 4 of a proxy's chunks: the giant needs three runs, the
    // others are all materialised in the first.
    let limits = || RunLimits {
        page_chunks: 4,
        max_bytes_per_proxy: 1,
        ..RunLimits::default()
    };
    let first = aggregate::run(&h.app.store, 0..PENDING_SHARDS, limits())
        .await
        .unwrap();
    assert_eq!(first.proxies_processed, 7);
    for p in &healthy {
        assert_eq!(stored_events(&h, p, day_of(0)).await, Some(3), "{p}");
    }
    assert_eq!(stored_events(&h, "giant", day_of(0)).await, Some(360));
    assert_eq!(pending_count(&h, "giant").await, 8);
    // read-your-writes meanwhile: every event, folded or not
    assert_eq!(daily_metrics(&h, &t, "giant", 0).await["eventCount"], 1080);
    for _ in 0..2 {
        aggregate::run(&h.app.store, 0..PENDING_SHARDS, limits())
            .await
            .unwrap();
    }
    assert_eq!(pending_count(&h, "giant").await, 0);
    let m = daily_metrics(&h, &t, "giant", 0).await;
    assert_eq!(
        (m["eventCount"].clone(), m["errorCount"].clone()),
        (json!(1080), json!(1080))
    );
    assert_eq!(m["topErrors"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn a_run_past_its_deadline_leaves_the_rest_pending() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    h.record(&t, "p1", batch("a", 0, 5)).await;
    let spent = RunLimits::within(std::time::Duration::ZERO);
    let report = aggregate::run(&h.app.store, 0..PENDING_SHARDS, spent)
        .await
        .unwrap();
    assert_eq!((report.proxies_processed, report.events_read), (0, 0));
    assert_eq!(pending_count(&h, "p1").await, 1);
    aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(pending_count(&h, "p1").await, 0);
}

#[tokio::test]
async fn a_late_event_at_the_edge_of_retention_never_shrinks_a_day() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    // the oldest day the API still takes events for (free tier: the late
    // window is as long as raw retention)
    let day = (now() - Duration::days(7) + Duration::minutes(30)).date_naive();
    let events: Vec<Value> = (0..6)
        .map(|i| {
            json!({"eventType": "request", "timestamp": iso(instant_on(day, i, 6, now())),
                        "metrics": {"requestCount": 1, "successCount": 1}})
        })
        .collect();
    h.record(&t, "p1", json!({"events": events})).await;
    aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(stored_events(&h, "p1", day).await, Some(6));
    // Everything but the materialised days expires (as DynamoDB's TTL would
    // delete raw state)…
    for pk in [keys::bucket_partition("p1")] {
        let items = h
            .client
            .query()
            .table_name(TABLE)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk))
            .send()
            .await
            .unwrap();
        for item in items.items() {
            let key = [("pk", &item["pk"]), ("sk", &item["sk"])]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            h.client
                .delete_item()
                .table_name(TABLE)
                .set_key(Some(key))
                .send()
                .await
                .unwrap();
        }
    }
    // …then a late event arrives for that day: the day keeps every event.
    let late = json!({"eventType": "request", "timestamp": iso(instant_on(day, 5, 6, now())),
                      "metrics": {"requestCount": 1, "successCount": 1}});
    assert_eq!(h.record(&t, "p1", late).await.0, 201);
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(report.events_read, 1);
    assert_eq!(stored_events(&h, "p1", day).await, Some(7));
    assert_eq!(
        daily_metrics(&h, &t, "p1", (now().date_naive() - day).num_days()).await["requestCount"],
        7
    );
}

/// The TTL of a proxy's buckets for `day`, in days after the day's end.
async fn bucket_retention_days(h: &Harness, proxy: &str, day: NaiveDate) -> i64 {
    let buckets = h
        .client
        .query()
        .table_name(TABLE)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(keys::bucket_partition(proxy)))
        .send()
        .await
        .unwrap();
    let of_day = buckets
        .items()
        .iter()
        .find(|b| b["sk"].as_s().is_ok_and(|sk| sk.starts_with(&day_str(day))))
        .expect("a bucket of the day");
    let expires: i64 = of_day["expiresAt"].as_n().unwrap().parse().unwrap();
    let day_end = (day + Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    (expires - day_end) / 86_400
}

#[tokio::test]
async fn retention_follows_the_owners_tier_not_the_proxy_token() {
    let h = Harness::start().await;
    let owner = token("owner", json!({"tier": "pro"}));
    h.register(&owner, "edge").await;
    // the proxy's own token carries no tier (it would count as free)
    let proxy_token = token(
        "owner",
        json!({"proxy_id": "edge", "scope": "metrics:write"}),
    );
    let (s, b) = h.record(&proxy_token, "edge", batch("p", 0, 3)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["tier"], "free", "the response shows the caller's tier");
    aggregate::run_all(&h.app.store).await.unwrap();
    // raw state is kept the late window (7 days) + the pro retention (30 days)
    assert_eq!(bucket_retention_days(&h, "edge", day_of(0)).await, 7 + 30);
    let (_, proxies) = {
        let req = Req::new("GET", "/proxies").bearer(&owner).build();
        let (s, b, _) = parts(proxy_metrics::handlers::list_proxies(&h.app, req).await);
        (s, b)
    };
    assert_eq!(proxies["count"], 1);

    // the owner moved to enterprise: the next request with their token records it
    let enterprise = token("owner", json!({"tier": "enterprise"}));
    assert_eq!(h.daily(&enterprise, "edge", &today()).await.0, 200);
    let (s, _) = h.record(&proxy_token, "edge", batch("q", 1, 3)).await;
    assert_eq!(s, 201);
    aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(bucket_retention_days(&h, "edge", day_of(1)).await, 7 + 90);
    // and the buckets written under pro were extended by that run (finding 12)
    assert_eq!(bucket_retention_days(&h, "edge", day_of(0)).await, 7 + 90);
    assert_eq!(
        h.app
            .store
            .get_proxy("edge")
            .await
            .unwrap()
            .unwrap()
            .tier
            .as_str(),
        "enterprise"
    );
}

#[tokio::test]
async fn fanned_out_runs_take_only_their_shards() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    h.record(&t, "p1", batch("a", 0, 3)).await;
    let shard = keys::pending_shard("p1");
    let others: Vec<u32> = (0..PENDING_SHARDS).filter(|s| *s != shard).collect();
    let report = aggregate::invoke(
        &h.app.store,
        &json!({"detail": {"shards": others}}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(report["daysMaterialized"], 0);
    let report = aggregate::invoke(
        &h.app.store,
        &json!({"detail": {"shards": [shard]}}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(report["daysMaterialized"], 1);
    assert_eq!(report["daysFailed"], 0);
    assert!(report["durationMs"].is_u64());
}

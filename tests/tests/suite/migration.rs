//! The one-shot migration from the v1 layout (`{"migrate": "v1"}`): days
//! written by v1 read the same afterwards, merged with whatever v2 recorded
//! meanwhile, and a rerun changes nothing.

use crate::common;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, NaiveDate};
use common::*;
use proxy_metrics::aggregate::{self, RunLimits};
use proxy_metrics::domain::event::{Event, parse_event};
use proxy_metrics::domain::rollup::Rollup;
use proxy_metrics::storage::migrate::{V1Event, V1Rollup};
use proxy_metrics::storage::{FORMAT_V1, encode_with};
use serde_json::json;

fn v1_event(id: &str, at: chrono::DateTime<chrono::Utc>, requests: u64) -> V1Event {
    let e: Event = parse_event(
        &json!({"eventType": "request", "eventId": id, "timestamp": iso(at),
                "metrics": {"requestCount": requests, "successCount": requests,
                            "latencySamplesMs": [10.0, 20.0], "errorMessage": "boom"}}),
        None,
        // as of when v1 recorded it
        at,
    )
    .unwrap();
    V1Event {
        event_id: e.event_id,
        event_type: e.event_type,
        timestamp_ms: e.timestamp_ms,
        healthy: e.healthy,
        request_count: e.request_count,
        success_count: e.success_count,
        error_count: e.error_count,
        total_latency_ms: e.total_latency_ms,
        min_latency_ms: e.min_latency_ms,
        max_latency_ms: e.max_latency_ms,
        latency_sketch: e.latency_sketch,
        data_transferred_bytes: e.data_transferred_bytes,
        data_received_bytes: e.data_received_bytes,
        connection_count: e.connection_count,
        concurrent_connections: e.concurrent_connections,
        error_message: e.error_message,
    }
}

fn v1_rollup_of(day: NaiveDate, events: &[V1Event]) -> V1Rollup {
    let events: Vec<Event> = events.iter().cloned().map(Event::from).collect();
    let r = Rollup::of_events(day, &events);
    let s = r.stats;
    V1Rollup {
        event_count: s.event_count,
        request_count: s.request_count,
        success_count: s.success_count,
        error_count: s.error_count,
        latency_total_ms: s.latency_total_ms,
        latency_weight: s.latency_weight,
        min_latency_ms: s.min_latency_ms,
        max_latency_ms: s.max_latency_ms,
        sketch: s.sketch,
        data_transferred_bytes: s.data_transferred_bytes,
        data_received_bytes: s.data_received_bytes,
        connection_count: s.connection_count,
        peak_concurrent: s.peak_concurrent,
        concurrent_sum: s.concurrent_sum,
        concurrent_reports: s.concurrent_reports,
        healthy_buckets: r.healthy_buckets,
        first_event_ms: s.first_event_ms,
        last_event_ms: s.last_event_ms,
        latest_concurrent: s.latest_concurrent,
        errors: r.errors,
    }
}

/// Writes a v1 day the way v1 did: event chunks (unless expired), the day
/// head and (maybe stale) rollup, and the id markers.
async fn write_v1_day(
    h: &Harness,
    proxy: &str,
    day: NaiveDate,
    events: &[V1Event],
    raw_kept: bool,
    rollup_of: usize,
) {
    let put = |item: Vec<(&str, AttributeValue)>| {
        let item = item.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        h.client
            .put_item()
            .table_name(TABLE)
            .set_item(Some(item))
            .send()
    };
    let s = |v: String| AttributeValue::S(v);
    let day_key = day_str(day);
    if raw_kept {
        put(vec![
            ("pk", s(format!("EVENTS#{proxy}#{day_key}"))),
            ("sk", s("0000000000001#chunk".into())),
            ("n", AttributeValue::N(events.len().to_string())),
            (
                "body",
                AttributeValue::B(Blob::new(encode_with(FORMAT_V1, &events.to_vec()).unwrap())),
            ),
        ])
        .await
        .unwrap();
    }
    put(vec![
        ("pk", s(format!("DAYS#{proxy}"))),
        ("sk", s(day_key.clone())),
        ("version", AttributeValue::N("2".into())),
    ])
    .await
    .unwrap();
    put(vec![
        ("pk", s(format!("ROLLUP#{proxy}"))),
        ("sk", s(day_key.clone())),
        ("version", AttributeValue::N("1".into())),
        (
            "body",
            AttributeValue::B(Blob::new(
                encode_with(FORMAT_V1, &v1_rollup_of(day, &events[..rollup_of])).unwrap(),
            )),
        ),
    ])
    .await
    .unwrap();
    for e in events {
        put(vec![
            ("pk", s(format!("EVENTID#{proxy}#{}", e.event_id))),
            ("sk", s("EVENTID".into())),
        ])
        .await
        .unwrap();
    }
}

async fn daily(h: &Harness, token: &str, day: NaiveDate) -> serde_json::Value {
    let (s, b) = h.daily(token, "edge", &day_str(day)).await;
    assert_eq!(s, 200, "{b}");
    b["metrics"].clone()
}

#[tokio::test]
async fn v1_days_read_the_same_after_the_migration() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let yesterday = day_ago(1);
    let old = day_ago(20);
    // yesterday: raw events kept, v1 rollup stale (2 of 3 events)
    let recent: Vec<V1Event> = (0..3)
        .map(|i| v1_event(&format!("y{i}"), instant_on(yesterday, i, 3, now()), 10))
        .collect();
    write_v1_day(&h, "edge", yesterday, &recent, true, 2).await;
    // 20 days ago: raw events expired, the v1 rollup is all there is
    let at_old = old.and_hms_opt(12, 0, 0).unwrap().and_utc();
    let gone: Vec<V1Event> = (0..4)
        .map(|i| v1_event(&format!("o{i}"), at_old + Duration::minutes(i as i64), 100))
        .collect();
    write_v1_day(&h, "edge", old, &gone, false, 4).await;
    // after the upgrade, before the migration: v2 records into yesterday too
    let new = json!({"eventType": "request", "eventId": "after-upgrade",
                     "timestamp": iso(instant_on(yesterday, 2, 3, now())),
                     "metrics": {"requestCount": 1000, "successCount": 1000}});
    assert_eq!(h.record(&t, "edge", new).await.0, 201);
    // and a retry of a v1 event is still a duplicate
    let retry = json!({"eventType": "request", "eventId": "y0", "metrics": {"requestCount": 5}});
    let (s, b) = h.record(&t, "edge", retry).await;
    assert_eq!((s, b["duplicates"].clone()), (200, json!(1)), "{b}");
    aggregate::run_all(&h.app.store).await.unwrap();

    let report = aggregate::invoke(
        &h.app.store,
        &json!({"migrate": "v1"}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(report["daysMigrated"], 2, "{report}");
    assert_eq!(report["eventsMigrated"], 3);
    assert_eq!(report["daysFromRollups"], 1);
    assert_eq!(report["done"], true);

    let y = daily(&h, &t, yesterday).await;
    assert_eq!(y["eventCount"], 4, "all three v1 events and the v2 one");
    assert_eq!(y["requestCount"], 1030);
    assert_eq!(y["topErrors"][0], json!({"message": "boom", "count": 3}));
    let o = daily(&h, &t, old).await;
    assert_eq!(
        (o["eventCount"].clone(), o["requestCount"].clone()),
        (json!(4), json!(400))
    );
    assert_eq!(
        o["p50LatencyMs"].as_f64().map(|p| (p - 10.0).abs() < 0.2),
        Some(true)
    );

    // a rerun finds nothing left, and changes nothing
    let again = aggregate::invoke(
        &h.app.store,
        &json!({"migrate": "v1"}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        (again["daysMigrated"].clone(), again["done"].clone()),
        (json!(0), json!(true))
    );
    assert_eq!(daily(&h, &t, yesterday).await, y);
    assert_eq!(daily(&h, &t, old).await, o);
}

#[tokio::test]
async fn a_migration_cut_short_goes_on_where_it_stopped() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    for ago in 1..=3 {
        let day = day_ago(ago);
        let events: Vec<V1Event> = (0..2)
            .map(|i| v1_event(&format!("d{ago}-{i}"), instant_on(day, i, 2, now()), 1))
            .collect();
        write_v1_day(&h, "edge", day, &events, true, 2).await;
    }
    let spent = RunLimits::within(std::time::Duration::ZERO);
    let first = aggregate::invoke(&h.app.store, &json!({"migrate": "v1"}), spent)
        .await
        .unwrap();
    assert_eq!(
        (first["daysMigrated"].clone(), first["done"].clone()),
        (json!(0), json!(false))
    );
    let rest = aggregate::invoke(
        &h.app.store,
        &json!({"migrate": "v1"}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(rest["daysMigrated"], 3);
    for ago in 1..=3 {
        assert_eq!(daily(&h, &t, day_ago(ago)).await["eventCount"], 2);
    }
    // an unknown migration is refused
    let err = aggregate::invoke(
        &h.app.store,
        &json!({"migrate": "v0"}),
        RunLimits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.status(), 400);
}

/// v1 expired raw events by the caller's tier: a day may keep some of its
/// raw events while its rollup holds them all. The rollup wins, nothing is
/// lost; and a day that cannot be migrated is counted, not the end of the run.
#[tokio::test]
async fn a_day_whose_raw_events_partly_expired_keeps_its_rollups_count() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let day = day_ago(2);
    let events: Vec<V1Event> = (0..4)
        .map(|i| v1_event(&format!("p{i}"), instant_on(day, i, 4, now()), 10))
        .collect();
    write_v1_day(&h, "edge", day, &events, true, 4).await;
    // two of the four raw events expired (TTL): the chunk holds the others
    h.client
        .put_item()
        .table_name(TABLE)
        .item(
            "pk",
            AttributeValue::S(format!("EVENTS#edge#{}", day_str(day))),
        )
        .item("sk", AttributeValue::S("0000000000001#chunk".into()))
        .item(
            "body",
            AttributeValue::B(Blob::new(
                encode_with(FORMAT_V1, &events[2..].to_vec()).unwrap(),
            )),
        )
        .send()
        .await
        .unwrap();
    // another day whose raw events cannot be decoded
    let broken = day_ago(3);
    let others: Vec<V1Event> = (0..2)
        .map(|i| v1_event(&format!("b{i}"), instant_on(broken, i, 2, now()), 1))
        .collect();
    write_v1_day(&h, "edge", broken, &others, true, 2).await;
    h.client
        .put_item()
        .table_name(TABLE)
        .item(
            "pk",
            AttributeValue::S(format!("EVENTS#edge#{}", day_str(broken))),
        )
        .item("sk", AttributeValue::S("0000000000001#chunk".into()))
        .item("body", AttributeValue::B(Blob::new(vec![1, 0xff, 0xff])))
        .send()
        .await
        .unwrap();
    let report = aggregate::invoke(
        &h.app.store,
        &json!({"migrate": "v1"}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(report["daysMigrated"], 1, "{report}");
    assert_eq!(report["daysFromRollups"], 1);
    assert_eq!(report["daysFailed"], 1);
    assert_eq!(
        report["done"], false,
        "a rerun is needed for the failed day"
    );
    let m = daily(&h, &t, day).await;
    assert_eq!(
        (m["eventCount"].clone(), m["requestCount"].clone()),
        (json!(4), json!(40))
    );
}

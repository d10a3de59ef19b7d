//! Storage under pressure (issue 20): no tenant can stall, crash or starve
//! another, and nothing valid is ever a 500. Small-scale versions of the
//! findings, against dynoxide; the figures at scale are `bench_pressure`'s.

use crate::common;

use chrono::{Duration, NaiveDate};
use common::*;
use proxy_metrics::aggregate::{self, RunLimits};
use proxy_metrics::storage::{MARK_REFRESH, PENDING_SHARDS, keys};
use serde_json::{Value, json};

fn events_on(day: NaiveDate, prefix: &str, n: usize) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"eventType": "request", "eventId": format!("{prefix}-{i}"),
                   "timestamp": iso(instant_on(day, i, n, now())),
                   "metrics": {"requestCount": 2, "successCount": 2, "latencySamplesMs": [5.0 + i as f64]}})
        })
        .collect();
    json!({ "events": events })
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

async fn event_count(h: &Harness, token: &str, proxy: &str, day: NaiveDate) -> u64 {
    let (s, b) = h.daily(token, proxy, &day_str(day)).await;
    assert_eq!(s, 200, "{b}");
    b["metrics"]["eventCount"].as_u64().unwrap()
}

/// Finding 1: a quarantined day sits in its own key range; the run steps
/// over it without reading it, and every newer day of the proxy is folded.
#[tokio::test]
async fn a_quarantined_day_never_holds_back_the_proxys_other_days() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p").await;
    let old = day_ago(3);
    let today = now().date_naive();
    for r in 0..5 {
        h.record(&t, "p", events_on(old, &format!("old{r}"), 20))
            .await;
    }
    h.record(&t, "p", events_on(today, "new", 7)).await;
    let store = &h.app.store;
    store
        .quarantine_record("p", &keys::day_key(old), "test", 0)
        .await
        .unwrap();
    let report = aggregate::run_all(store).await.unwrap();
    assert_eq!(stored_events(&h, "p", today).await, Some(7));
    assert_eq!(stored_events(&h, "p", old).await, None);
    // the quarantined day's 100 events were never decoded
    assert_eq!(report.events_read, 7);
    assert_eq!(report.days_quarantined, 1);
    assert_eq!(pending_count(&h, "p").await, 5);
    // and reads still count them
    assert_eq!(event_count(&h, &t, "p", old).await, 100);
    // released, the day is folded like any other
    aggregate::invoke(
        store,
        &json!({"release": [{"proxyId": "p", "date": keys::day_key(old)}]}),
        RunLimits::default(),
    )
    .await
    .unwrap();
    aggregate::run_all(store).await.unwrap();
    assert_eq!(stored_events(&h, "p", old).await, Some(100));
    assert_eq!(pending_count(&h, "p").await, 0);
}

/// Finding 1: a read loads the pending chunks of the days it answers only,
/// whatever another day's backlog.
#[tokio::test]
async fn a_read_reads_only_the_pending_chunks_of_its_days() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p").await;
    let backlog = day_ago(2);
    for r in 0..120 {
        h.record(&t, "p", events_on(backlog, &format!("b{r}"), 5))
            .await;
    }
    let today = now().date_naive();
    h.record(&t, "p", events_on(today, "t", 3)).await;
    let before = h.app.store.usage();
    assert_eq!(event_count(&h, &t, "p", today).await, 3);
    let today_read = h.app.store.usage() - before;
    let before = h.app.store.usage();
    assert_eq!(event_count(&h, &t, "p", backlog).await, 600);
    let backlog_read = h.app.store.usage() - before;
    println!("today {today_read:?}, the backlog's day {backlog_read:?}");
    // ownership + epoch (1 RRU each), the day items, today's one chunk
    assert!(today_read.read_units <= 5.0, "{today_read:?}");
    assert!(
        backlog_read.read_units > 5.0 * today_read.read_units,
        "{backlog_read:?}"
    );
}

/// Finding 1 and 8: a proxy's backlog is folded within its budget in bytes,
/// and the other proxies of the run are all folded in the same run.
#[tokio::test]
async fn a_busy_proxy_is_bounded_and_the_others_are_folded_in_the_same_run() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "busy").await;
    for r in 0..60 {
        h.record(&t, "busy", events_on(day_ago(r % 3), &format!("b{r}"), 10))
            .await;
    }
    let quiet: Vec<String> = (0..5).map(|i| format!("quiet-{i}")).collect();
    for p in &quiet {
        h.register(&t, p).await;
        h.record(&t, p, events_on(day_ago(0), p, 4)).await;
    }
    let chunk_bytes: usize = h
        .app
        .store
        .pending_chunks_of("busy")
        .await
        .unwrap()
        .iter()
        .map(|c| c.stored_bytes())
        .sum();
    // A budget of a quarter of the backlog: four runs, each folding some.
    let limits = || RunLimits {
        page_chunks: 5,
        max_bytes_per_proxy: chunk_bytes / 4,
        ..RunLimits::default()
    };
    aggregate::run(&h.app.store, 0..PENDING_SHARDS, limits())
        .await
        .unwrap();
    for p in &quiet {
        assert_eq!(stored_events(&h, p, day_ago(0)).await, Some(4), "{p}");
    }
    let left = pending_count(&h, "busy").await;
    assert!(left > 0 && left < 60, "{left} chunks left");
    let mut runs = 1;
    while pending_count(&h, "busy").await > 0 {
        aggregate::run(&h.app.store, 0..PENDING_SHARDS, limits())
            .await
            .unwrap();
        runs += 1;
        assert!(runs <= 8, "the backlog must shrink every run");
    }
    let mut total = 0;
    for ago in 0..3 {
        total += stored_events(&h, "busy", day_ago(ago)).await.unwrap_or(0);
    }
    assert_eq!(total, 600);
}

/// Finding 5: `folded` lists name the chunks of the latest batches only,
/// however many chunks a day received.
#[tokio::test]
async fn folded_lists_stay_short_however_many_chunks_a_day_receives() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p").await;
    let today = now().date_naive();
    let mut longest = 0;
    for round in 0..8 {
        for r in 0..25 {
            h.record(&t, "p", events_on(today, &format!("{round}-{r}"), 2))
                .await;
        }
        aggregate::run_all(&h.app.store).await.unwrap();
        let day = h.app.store.stored_day("p", today).await.unwrap();
        longest = longest.max(day.value.folded.len());
    }
    assert_eq!(stored_events(&h, "p", today).await, Some(400));
    // one round's chunks, never the 200 of the day
    assert!(longest <= 25, "folded grew to {longest}");
    assert_eq!(event_count(&h, &t, "p", today).await, 400);
}

/// Finding 2: hostile sketches (two samples decades apart in every one of a
/// week's buckets) next to healthy proxies: the healthy ones are folded in
/// the same run, the hostile ones exactly (memory: `bench_pressure`).
#[tokio::test]
async fn hostile_sketches_are_folded_beside_healthy_proxies() {
    let h = Harness::start().await;
    let t = user_token("alice");
    let start = now() - Duration::days(6);
    for p in ["hostile-1", "hostile-2"] {
        h.register(&t, p).await;
        for r in 0..3 {
            let events: Vec<Value> = (0..500)
                .map(|i| {
                    let at = start + Duration::minutes(5 * (r * 500 + i) as i64);
                    json!({"eventType": "latency", "timestamp": iso(at),
                           "metrics": {"requestCount": 2, "latencySamplesMs": [1e-8, 1e9]}})
                })
                .collect();
            let (s, b) = h.record(&t, p, json!({ "events": events })).await;
            assert_eq!(s, 201, "{b}");
        }
    }
    for p in ["healthy-1", "healthy-2", "healthy-3"] {
        h.register(&t, p).await;
        h.record(&t, p, events_on(now().date_naive(), p, 5)).await;
    }
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(report.days_failed, 0);
    for p in ["healthy-1", "healthy-2", "healthy-3"] {
        assert_eq!(stored_events(&h, p, now().date_naive()).await, Some(5));
    }
    for p in ["hostile-1", "hostile-2"] {
        assert_eq!(pending_count(&h, p).await, 0, "{p}");
        let mut total = 0;
        for ago in 0..8 {
            total += stored_events(&h, p, day_ago(ago)).await.unwrap_or(0);
        }
        assert_eq!(total, 1500, "{p}");
    }
}

/// Finding 8: chunks live in the proxy's own partition; the proxy's dirty
/// mark is one small write per instance every few minutes, not per request.
#[tokio::test]
async fn chunks_go_to_the_proxys_own_partition_and_marks_are_rare() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p").await;
    let mut units = Vec::new();
    for r in 0..6 {
        let before = h.app.store.usage();
        h.record(&t, "p", events_on(now().date_naive(), &format!("r{r}"), 1))
            .await;
        units.push((h.app.store.usage() - before).write_units);
    }
    // the first request wrote the mark and noted it on the proxy item (1 WRU
    // each), the others did not
    assert_eq!(units[0], units[1] + 2.0, "{units:?}");
    assert!(units[1..].iter().all(|u| *u == units[1]), "{units:?}");
    h.app.clock.advance(MARK_REFRESH + Duration::seconds(1));
    let before = h.app.store.usage();
    h.record(&t, "p", events_on(now().date_naive(), "later", 1))
        .await;
    assert_eq!((h.app.store.usage() - before).write_units, units[0]);
    let partition = h
        .client
        .query()
        .table_name(TABLE)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(keys::pending_partition("p")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(partition.items().len(), 7);
    let marks = h
        .app
        .store
        .dirty_marks(keys::pending_shard("p"))
        .await
        .unwrap();
    assert_eq!(marks.iter().filter(|m| m.proxy_id == "p").count(), 1);
}

/// Finding 10: a valid batch whose day part is too large for one item is
/// split by buckets over several chunks — recorded, never a 500.
#[tokio::test]
async fn a_day_too_varied_for_one_item_is_split_not_a_500() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p").await;
    let day = day_ago(1);
    // one event per five-minute bucket, each with 500 distinct latency bins
    let samples: Vec<f64> = (0..500)
        .map(|j| (1.0201f64.powi(j)).round() + j as f64)
        .collect();
    let events: Vec<Value> = (0..288)
        .map(|i| {
            json!({"eventType": "latency",
                   "timestamp": iso(instant_on(day, i, 288, now())),
                   "metrics": {"requestCount": 500, "latencySamplesMs": samples}})
        })
        .collect();
    let body = json!({ "events": events });
    assert!(body.to_string().len() < 1024 * 1024);
    let (s, b) = h.record(&t, "p", body).await;
    assert_eq!(s, 201, "{b}");
    assert!(
        pending_count(&h, "p").await > 1,
        "split over several chunks"
    );
    let (s, daily) = h.daily(&t, "p", &day_str(day)).await;
    assert_eq!(s, 200);
    assert_eq!(daily["metrics"]["requestCount"], 288 * 500);
    aggregate::run_all(&h.app.store).await.unwrap();
    let (_, after) = h.daily(&t, "p", &day_str(day)).await;
    assert_eq!(after["metrics"]["requestCount"], 288 * 500);
    assert_eq!(
        after["metrics"]["p95LatencyMs"],
        daily["metrics"]["p95LatencyMs"]
    );
}

/// Finding 11: the same producer sequence with another body is a conflict.
#[tokio::test]
async fn a_repeated_sequence_with_another_body_is_a_conflict() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p").await;
    let send = |body: Value, seq: u64| {
        let req = record_req(&t, "p")
            .header("Producer-Id", "boot-1")
            .header("Producer-Sequence", &seq.to_string())
            .json(body);
        send_record(&h.app, req)
    };
    let first = events_on(now().date_naive(), "a", 3);
    assert_eq!(send(first.clone(), 0).await.0, 201);
    // a retry (same bytes): a duplicate
    let (s, b, _) = send(first, 0).await;
    assert_eq!((s, b["duplicates"].clone()), (200, json!(3)));
    // a restarted sender reusing its id: a conflict, nothing recorded
    let (s, b, _) = send(events_on(now().date_naive(), "other", 2), 0).await;
    assert_error(s, &b, 409, "SEQUENCE_CONFLICT");
    assert_eq!(event_count(&h, &t, "p", now().date_naive()).await, 3);
    // an older sequence stays a plain duplicate; the next one is recorded
    assert_eq!(send(events_on(now().date_naive(), "b", 1), 1).await.0, 201);
    assert_eq!(send(events_on(now().date_naive(), "z", 9), 0).await.0, 200);
    assert_eq!(event_count(&h, &t, "p", now().date_naive()).await, 4);
}

/// Finding 9: a range whose answer cannot fit a response (Lambda's 6 MB) is
/// a clear 422 naming what fits, not a 502; memory follows the answer.
#[tokio::test]
async fn a_range_too_large_to_answer_is_a_clear_422() {
    use proxy_metrics::domain::event::parse_event;
    use proxy_metrics::domain::tier::Tier;
    let h = Harness::start().await;
    let t = token("alice", json!({"tier": "enterprise"}));
    h.register(&t, "p").await;
    let long = "x".repeat(1000);
    let days = 600;
    for ago in 0..days {
        let day = now().date_naive() - Duration::days(ago);
        let events: Vec<_> = (0..10)
            .map(|i| {
                let at = day.and_hms_opt(0, i, 0).unwrap().and_utc().min(now());
                parse_event(
                    &json!({"eventType": "error", "timestamp": iso(at),
                            "metrics": {"requestCount": 1, "errorCount": 1,
                                        "errorMessage": format!("{i} {long}")}}),
                    None,
                    // as of the day it was recorded
                    at,
                )
                .unwrap()
            })
            .collect();
        h.store_events("p", Tier::Enterprise, &events, 10).await;
    }
    let start = day_str(now().date_naive() - Duration::days(days - 1));
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/daily")
        .param("proxyId", "p")
        .query("startDate", &start)
        .query("endDate", &today())
        .bearer(&t)
        .build();
    let (s, b, _) = parts(proxy_metrics::handlers::get_daily_range(&h.app, req).await);
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    assert!(
        b["message"].as_str().unwrap().contains("6 MB")
            || b["message"].as_str().unwrap().contains("5 MB"),
        "{b}"
    );
    // a shorter range is answered
    let start = day_str(now().date_naive() - Duration::days(99));
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/daily")
        .param("proxyId", "p")
        .query("startDate", &start)
        .query("endDate", &today())
        .bearer(&t)
        .build();
    let (s, b, _) = parts(proxy_metrics::handlers::get_daily_range(&h.app, req).await);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["count"], 100);
}

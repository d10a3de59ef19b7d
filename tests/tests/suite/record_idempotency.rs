//! Recording exactly once: retries that changed the payload or the day,
//! duplicates within and across batches, a 500-event batch and its retry,
//! batches spanning days, and concurrent identical retries.

use crate::common;

use chrono::{DateTime, Duration, Utc};
use common::record::*;
use serde_json::{Value, json};

#[tokio::test]
async fn a_retry_that_changed_payload_and_day_is_a_duplicate() {
    let c = setup().await;
    let (t1, day1) = recent();
    let t2 = t1 - Duration::days(2);
    let day2 = day_of(t2);
    let first = json!({"eventType": "request", "timestamp": rfc3339(t1),
                       "metrics": {"requestCount": 100, "successCount": 95, "errorCount": 5,
                                   "totalLatencyMs": 5000, "dataTransferredBytes": 1234}});
    let (s, b, _) = c
        .send(c.req().header("Idempotency-Key", "evt-0001").json(first))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (&b["recorded"], &b["duplicates"], &b["eventId"]),
        (&json!(1), &json!(0), &json!("evt-0001"))
    );
    assert_eq!(
        b["events"],
        json!([{"eventId": "evt-0001", "status": "recorded"}])
    );

    // the retry changed every figure, the type and the day
    let changed = json!({"eventType": "error", "eventId": "evt-0001", "timestamp": rfc3339(t2),
                         "healthy": false,
                         "metrics": {"requestCount": 999, "errorCount": 999, "errorMessage": "boom"}});
    let (s, b) = c.record(changed.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!((&b["recorded"], &b["duplicates"]), (&json!(0), &json!(1)));
    assert_eq!(
        b["events"],
        json!([{"eventId": "evt-0001", "status": "duplicate"}])
    );
    assert_eq!(b["eventId"], "evt-0001");
    // and once more through the header
    let (s, b, _) = c
        .send(
            c.req()
                .header("idempotency-key", "evt-0001")
                .json(with(changed, "eventId", None)),
        )
        .await;
    assert_eq!((s, &b["duplicates"]), (200, &json!(1)), "{b}");

    let m1 = c.day(&day1).await;
    assert_eq!(m1["eventCount"], 1);
    assert_eq!(m1["requestCount"], 100);
    assert_eq!(m1["successCount"], 95);
    assert_eq!(m1["errorCount"], 5);
    assert_eq!(m1["averageLatencyMs"], 50.0);
    assert_eq!(m1["dataTransferredBytes"], 1234);
    assert_eq!(m1["topErrors"], json!([]));
    assert_empty_day(&c.day(&day2).await);

    // ids are per proxy: the same id for another proxy of the same user counts
    assert_eq!(c.h.register(&c.token, "edge-2").await.0, 201);
    let (s, b) =
        c.h.record(&c.token, "edge-2", ev("evt-0001", &rfc3339(t1), 7))
            .await;
    assert_eq!((s, &b["recorded"]), (201, &json!(1)), "{b}");
    let (_, b) = c.h.daily(&c.token, "edge-2", &day1).await;
    assert_eq!(b["metrics"]["requestCount"], 7);
    assert_eq!(c.day(&day1).await["requestCount"], 100);
}

#[tokio::test]
async fn duplicates_within_and_across_batches() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    // within one batch the first occurrence counts
    let (s, b) = c
        .record(json!({"events": [ev("a", &ts, 1), ev("b", &ts, 2), ev("a", &ts, 100), ev("c", &ts, 4)]}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!((&b["recorded"], &b["duplicates"]), (&json!(3), &json!(1)));
    assert_eq!(
        statuses(&b),
        ["recorded", "recorded", "duplicate", "recorded"]
    );
    let ids: Vec<&str> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "a", "c"]);
    assert_eq!(c.day(&day).await["requestCount"], 7);

    // a batch mixing new and recorded ids, in input order
    let (s, b) = c
        .record(
            json!({"events": [ev("x", &ts, 10), ev("b", &ts, 1000), ev("y", &ts, 20),
                                  ev("a", &ts, 1000), ev("z", &ts, 30), ev("x", &ts, 1000)]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!((&b["recorded"], &b["duplicates"]), (&json!(3), &json!(3)));
    assert_eq!(
        statuses(&b),
        [
            "recorded",
            "duplicate",
            "recorded",
            "duplicate",
            "recorded",
            "duplicate"
        ]
    );
    assert_eq!(b["message"], "Metrics recorded successfully");

    // all duplicates: 200
    let (s, b) = c
        .record(json!({"events": [ev("z", &ts, 1), ev("a", &ts, 1)]}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!((&b["recorded"], &b["duplicates"]), (&json!(0), &json!(2)));

    let m = c.day(&day).await;
    assert_eq!(m["eventCount"], 6);
    assert_eq!(m["requestCount"], 1 + 2 + 4 + 10 + 20 + 30);
    assert_eq!(m["errorCount"], 1 + 2 + 3);
    assert_eq!(m["successCount"], 67 - 6);
    assert_eq!(m["dataTransferredBytes"], 6700);
}

/// Event `i` of a 500-event batch: every metric varies, every figure is an
/// integer so the expected sums are exact.
fn rich_event(prefix: &str, i: u64, ts: &str) -> Value {
    let error = i % 3;
    let mut metrics = json!({
        "requestCount": i + 1, "successCount": i + 1 - error, "errorCount": error,
        "totalLatencyMs": (i + 1) * (i % 7 + 1), "minLatencyMs": i % 7 + 1, "maxLatencyMs": 100 + i,
        "dataTransferredBytes": i * 1000, "dataReceivedBytes": i * 7,
        "connectionCount": i % 5, "concurrentConnections": i % 50,
    });
    if i.is_multiple_of(25) {
        metrics["errorMessage"] = json!(if (i / 25).is_multiple_of(4) {
            "timeout"
        } else {
            "reset"
        });
    }
    json!({"eventType": "request", "eventId": format!("{prefix}-{i:04}"), "timestamp": ts,
           "healthy": i.is_multiple_of(2), "metrics": metrics})
}

fn assert_rich_sums(m: &Value, range: std::ops::Range<u64>) {
    let n = range.end - range.start;
    let (mut req, mut err, mut lat, mut tx, mut rx, mut conn, mut conc) = (0, 0, 0, 0, 0, 0, 0);
    for i in range.clone() {
        req += i + 1;
        err += i % 3;
        lat += (i + 1) * (i % 7 + 1);
        tx += i * 1000;
        rx += i * 7;
        conn += i % 5;
        conc += i % 50;
    }
    assert_eq!(m["eventCount"], n, "{m}");
    assert_eq!(m["requestCount"], req);
    assert_eq!(m["errorCount"], err);
    assert_eq!(m["successCount"], req - err);
    assert_eq!(
        m["averageLatencyMs"].as_f64(),
        Some(lat as f64 / req as f64)
    );
    assert_eq!(m["minLatencyMs"], 1.0);
    assert_eq!(m["maxLatencyMs"], (100 + range.end - 1) as f64);
    assert_eq!(m["dataTransferredBytes"], tx);
    assert_eq!(m["dataReceivedBytes"], rx);
    assert_eq!(m["connectionCount"], conn);
    assert_eq!(m["peakConcurrentConnections"], 49);
    assert_eq!(
        m["averageConcurrentConnections"].as_f64(),
        Some(conc as f64 / n as f64)
    );
}

#[tokio::test]
async fn a_500_event_batch_counts_once_and_its_retry_is_all_duplicates() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    let events: Vec<Value> = (0..500).map(|i| rich_event("big", i, &ts)).collect();
    let body = json!({ "events": events });

    let (s, b) = c.record(body.clone()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!((&b["recorded"], &b["duplicates"]), (&json!(500), &json!(0)));
    assert!(statuses(&b).iter().all(|s| *s == "recorded"));
    assert_eq!(b["events"][499]["eventId"], "big-0499");
    let m = c.day(&day).await;
    assert_rich_sums(&m, 0..500);
    assert_eq!(
        m["topErrors"],
        json!([{"message": "reset", "count": 15}, {"message": "timeout", "count": 5}])
    );

    let (s, b) = c.record(body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!((&b["recorded"], &b["duplicates"]), (&json!(0), &json!(500)));
    assert!(statuses(&b).iter().all(|s| *s == "duplicate"));
    assert_eq!(
        b["message"],
        "All events were already recorded (duplicates)"
    );
    assert_rich_sums(&c.day(&day).await, 0..500);
}

#[tokio::test]
async fn a_batch_spanning_days_lands_on_each_day_exactly() {
    let c = setup().await;
    let (t, _) = recent();
    let times: Vec<DateTime<Utc>> = (0..3).map(|d| t - Duration::days(d)).collect();
    // 450 events, day-interleaved: event i goes to day i % 3
    let events: Vec<Value> = (0..450)
        .map(|i| {
            let mut e = rich_event("span", i / 3, &rfc3339(times[(i % 3) as usize]));
            e["eventId"] = json!(format!("span-{i}"));
            e
        })
        .collect();
    let (s, b) = c.record(json!({ "events": events })).await;
    assert_eq!((s, &b["recorded"]), (201, &json!(450)), "{b}");
    for time in &times {
        assert_rich_sums(&c.day(&day_of(*time)).await, 0..150);
    }
    // the retry of the whole batch counts nothing anywhere
    let (s, b) = c.record(json!({ "events": events })).await;
    assert_eq!((s, &b["duplicates"]), (200, &json!(450)), "{b}");
    for time in &times {
        assert_rich_sums(&c.day(&day_of(*time)).await, 0..150);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_retries_count_each_event_once() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    let events: Vec<Value> = (0..50).map(|i| rich_event("conc", i, &ts)).collect();
    let body = json!({ "events": events });

    let attempt = |body: Value| {
        let c = &c;
        async move {
            let mut unavailable = 0;
            loop {
                let (s, b) = c.record(body.clone()).await;
                match s {
                    200 | 201 => return (s, b, unavailable),
                    503 => {
                        unavailable += 1;
                        assert!(unavailable < 20, "503 does not go away: {b}");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected {other}: {b}"),
                }
            }
        }
    };
    let results = futures::future::join_all((0..8).map(|_| attempt(body.clone()))).await;
    let recorded: u64 = results
        .iter()
        .map(|(_, b, _)| b["recorded"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = results
        .iter()
        .map(|(_, b, _)| b["duplicates"].as_u64().unwrap())
        .sum();
    let retries: u32 = results.iter().map(|(_, _, n)| n).sum();
    println!(
        "8 concurrent identical batches: {recorded} recorded, {duplicates} duplicates, {retries} retried 503s"
    );
    assert_eq!(recorded, 50, "{results:?}");
    assert_eq!(duplicates, 7 * 50);
    for (s, b, _) in &results {
        let r = b["recorded"].as_u64().unwrap();
        assert_eq!(*s, if r == 0 { 200 } else { 201 }, "{b}");
        assert_eq!(r + b["duplicates"].as_u64().unwrap(), 50);
    }
    // per event, exactly one response says "recorded"
    for i in 0..50 {
        let winners = results
            .iter()
            .filter(|(_, b, _)| b["events"][i]["status"] == "recorded")
            .count();
        assert_eq!(winners, 1, "event {i}");
    }
    assert_rich_sums(&c.day(&day).await, 0..50);
}

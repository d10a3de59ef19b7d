//! What a recorded event counts for, read back through `get_daily_metrics`
//! exactly: edge values accepted as given, defaults (absent request count,
//! absent latency), percentiles from samples, and sums that cannot overflow.

use crate::common;

use chrono::Duration;
use common::record::*;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn accepted_edge_values_are_recorded_as_given() {
    let c = setup().await;
    let now = now();
    let t = now - Duration::minutes(2);
    let day = day_of(t);
    let id128 = "a".repeat(64) + &"Z9._:-".repeat(10) + "0123";
    assert_eq!(id128.len(), 128);

    // epoch milliseconds as a number
    let (s, b) = c
        .record(json!({"eventType": "connection", "eventId": "epoch",
                       "timestamp": t.timestamp_millis(),
                       "metrics": {"connectionCount": 3, "concurrentConnections": 9}}))
        .await;
    assert_eq!(s, 201, "{b}");
    // an RFC 3339 offset other than Z names the same instant
    let offset = t
        .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
        .to_rfc3339();
    let (s, b) = c
        .record(
            json!({"eventType": "latency", "eventId": id128, "timestamp": offset,
                       "metrics": {"latencySamplesMs": vec![7.5; 10_000]}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["eventId"], id128.as_str());
    assert_eq!(b["eventType"], "latency");
    // 2^53 exactly, 1024 multi-byte characters, a bound-touching sample, 4 min ahead
    let ahead = now + Duration::minutes(4);
    let (s, b) = c
        .record(json!({"eventType": "error", "eventId": "limits", "timestamp": rfc3339(ahead),
                       "healthy": false,
                       "metrics": {"dataReceivedBytes": TWO_POW_53, "errorMessage": "é".repeat(1024),
                                   "minLatencyMs": 1, "maxLatencyMs": 3, "latencySamplesMs": [1, 3]}}))
        .await;
    assert_eq!(s, 201, "{b}");
    // 7 days minus 10 minutes old
    let old = now - Duration::days(7) + Duration::minutes(10);
    let (s, b) = c
        .record(
            json!({"eventType": "request", "eventId": "old", "timestamp": rfc3339(old),
                       "metrics": {"requestCount": 4}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // the header alone, and the header equal to the body's eventId
    let (s, b, _) = c
        .send(
            c.req()
                .header("Idempotency-Key", "hdr-only")
                .json(json!({"eventType": "request", "timestamp": rfc3339(t),
                             "metrics": {"requestCount": 1}})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["eventId"], "hdr-only");
    let (s, b, _) = c
        .send(c.req().header("idempotency-key", "both").json(
            json!({"eventType": "request", "eventId": "both", "timestamp": rfc3339(t),
                             "metrics": {"requestCount": 1}}),
        ))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["eventId"], "both");
    // no eventId at all: the server assigns one
    let (s, b) = c
        .record(json!({"eventType": "request", "timestamp": rfc3339(t)}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(
        b["eventId"].as_str().is_some_and(|id| id.len() >= 16),
        "{b}"
    );

    let m = c.day(&day).await;
    let ahead_same_day = day_of(ahead) == day;
    assert_eq!(m["eventCount"], if ahead_same_day { 6 } else { 5 }, "{m}");
    assert_eq!(m["connectionCount"], 3);
    assert_eq!(m["peakConcurrentConnections"], 9);
    assert_eq!(m["requestCount"], 2);
    let m_ahead = c.day(&day_of(ahead)).await;
    assert_eq!(m_ahead["dataReceivedBytes"], TWO_POW_53);
    assert_eq!(m_ahead["topErrors"][0]["message"], "é".repeat(1024));
    assert_eq!(m_ahead["topErrors"][0]["count"], 1);
    let m_old = c.day(&day_of(old)).await;
    assert_eq!(
        (m_old["eventCount"].clone(), m_old["requestCount"].clone()),
        (json!(1), json!(4))
    );
}

#[tokio::test]
async fn absent_request_count_and_absent_latency() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    let events = json!([
        // requestCount absent: 7 + 3; no latency at all
        {"eventType": "request", "eventId": "a", "timestamp": ts,
         "metrics": {"successCount": 7, "errorCount": 3}},
        // latency reported
        {"eventType": "request", "eventId": "b", "timestamp": ts,
         "metrics": {"requestCount": 10, "successCount": 10, "totalLatencyMs": 1000,
                     "minLatencyMs": 20, "maxLatencyMs": 300}},
        // requests without latency: not in the average, min or max
        {"eventType": "request", "eventId": "c", "timestamp": ts,
         "metrics": {"requestCount": 5}},
        // nothing but the type: no counts, no latency
        {"eventType": "connection", "eventId": "d", "timestamp": ts}
    ]);
    let (s, b) = c.record(json!({ "events": events })).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["recorded"], 4);
    assert_eq!(b["duplicates"], 0);
    assert!(
        b.get("eventType").is_none(),
        "a batch has no top-level eventType: {b}"
    );
    let m = c.day(&day).await;
    assert_eq!(m["eventCount"], 4);
    assert_eq!(m["requestCount"], 25);
    assert_eq!(m["successCount"], 17);
    assert_eq!(m["errorCount"], 3);
    assert_eq!(m["successRate"], 0.68);
    assert_eq!(m["averageLatencyMs"], 100.0);
    assert_eq!(m["minLatencyMs"], 20.0);
    assert_eq!(m["maxLatencyMs"], 300.0);
    assert_eq!(m["peakConcurrentConnections"], 0);
    assert_eq!(m["averageConcurrentConnections"], Value::Null);
    assert_eq!(m["topErrors"], json!([]));

    // a day with events but no latency reported at all keeps latency null
    let t2 = t - Duration::days(2);
    let (s, b) = c
        .record(
            json!({"eventType": "request", "eventId": "e", "timestamp": rfc3339(t2),
                       "metrics": {"successCount": 2}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let m = c.day(&day_of(t2)).await;
    assert_eq!(m["requestCount"], 2);
    assert_eq!(m["successRate"], 1.0);
    for field in [
        "averageLatencyMs",
        "minLatencyMs",
        "maxLatencyMs",
        "p50LatencyMs",
        "p99LatencyMs",
    ] {
        assert_eq!(m[field], Value::Null, "{field}: {m}");
    }
}

#[tokio::test]
async fn percentiles_from_samples_survive_storage() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    // 1..=1000 ms spread over 10 events of 100 samples, interleaved
    let events: Vec<Value> = (0..10u64)
        .map(|e| {
            let samples: Vec<u64> = (0..100).map(|k| k * 10 + e + 1).collect();
            json!({"eventType": "latency", "eventId": format!("lat-{e}"), "timestamp": ts,
                   "metrics": {"requestCount": 100, "totalLatencyMs": samples.iter().sum::<u64>(),
                               "minLatencyMs": e + 1, "maxLatencyMs": 990 + e + 1,
                               "latencySamplesMs": samples}})
        })
        .collect();
    let (s, b) = c.record(json!({ "events": events })).await;
    assert_eq!(s, 201, "{b}");
    let m = c.day(&day).await;
    assert_eq!(m["averageLatencyMs"], 500.5);
    assert_eq!(m["minLatencyMs"], 1.0);
    assert_eq!(m["maxLatencyMs"], 1000.0);
    for (field, q) in [
        ("p50LatencyMs", 0.50),
        ("p95LatencyMs", 0.95),
        ("p99LatencyMs", 0.99),
    ] {
        let p = m[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} is null although 1000 samples were recorded: {m}"));
        // exact quantile of 1..=1000 under either rank convention
        let low = (q * 999.0f64).floor() + 1.0;
        let high = (q * 1000.0f64).ceil();
        assert!(
            p >= low * 0.99 && p <= high * 1.01,
            "{field} = {p}, exact in [{low}, {high}] within 1 %"
        );
    }
}

// -------------------------------------------------------- sums and limits

#[tokio::test]
async fn day_sums_of_maximal_counts_do_not_overflow() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    for batch in 0..5u64 {
        let events: Vec<Value> = (0..if batch < 4 { 500 } else { 48 })
            .map(|i| {
                json!({"eventType": "request", "eventId": format!("max-{batch}-{i}"), "timestamp": ts,
                       "metrics": {"requestCount": TWO_POW_53, "successCount": TWO_POW_53}})
            })
            .collect();
        let (s, b) = c.record(json!({ "events": events })).await;
        assert_eq!(s, 201, "{b}");
    }
    // 2048 x 2^53 = 2^64: one past u64::MAX
    let (status, body) = c.h.daily(&c.token, PROXY, &day).await;
    assert_eq!(status, 200, "{body}");
    let m = &body["metrics"];
    assert_eq!(m["eventCount"], 2048);
    let requests = m["requestCount"].as_f64().unwrap();
    assert!(requests >= TWO_POW_53 as f64 * 2047.0, "wrapped: {m}");
}

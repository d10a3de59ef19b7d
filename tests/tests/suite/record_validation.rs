//! `POST /proxy/metrics/{proxyId}/record` refusals: every validation rule of
//! the contract on one event and in a batch (nothing of a refused body is
//! recorded), and the request-level rules (headers, body shape, ids).

use crate::common;

use chrono::Duration;
use common::record::*;
use common::*;
use serde_json::{Value, json};

/// Each rule of the contract on one event: the event's JSON and a fragment
/// the message must carry (the field it names).
fn invalid_events(ts: &str) -> Vec<(&'static str, Value, &'static str)> {
    let base = json!({"eventType": "request", "eventId": "ok-1", "timestamp": ts,
                      "metrics": {"requestCount": 10, "successCount": 9, "errorCount": 1,
                                  "minLatencyMs": 5, "maxLatencyMs": 50,
                                  "latencySamplesMs": [5, 10, 50]}});
    let b = || base.clone();
    let now = now();
    vec![
        (
            "unknown eventType",
            with(b(), "eventType", Some(json!("requests"))),
            "eventType",
        ),
        (
            "eventType in capitals",
            with(b(), "eventType", Some(json!("REQUEST"))),
            "eventType",
        ),
        (
            "missing eventType",
            with(b(), "eventType", None),
            "eventType",
        ),
        (
            "null eventType",
            with(b(), "eventType", Some(Value::Null)),
            "eventType",
        ),
        (
            "eventType not a string",
            with(b(), "eventType", Some(json!(7))),
            "eventType",
        ),
        (
            "eventId with a space",
            with(b(), "eventId", Some(json!("a b"))),
            "eventId",
        ),
        (
            "eventId with a slash",
            with(b(), "eventId", Some(json!("a/b"))),
            "eventId",
        ),
        (
            "eventId with a #",
            with(b(), "eventId", Some(json!("a#b"))),
            "eventId",
        ),
        (
            "eventId not ASCII",
            with(b(), "eventId", Some(json!("évènement"))),
            "eventId",
        ),
        (
            "empty eventId",
            with(b(), "eventId", Some(json!(""))),
            "eventId",
        ),
        (
            "eventId of 129 chars",
            with(b(), "eventId", Some(json!("x".repeat(129)))),
            "eventId",
        ),
        (
            "eventId not a string",
            with(b(), "eventId", Some(json!(42))),
            "eventId",
        ),
        (
            "timestamp 7 days + 1 min old",
            with(
                b(),
                "timestamp",
                Some(json!(rfc3339(
                    now - Duration::days(7) - Duration::minutes(1)
                ))),
            ),
            "7 days",
        ),
        (
            "timestamp 6 min ahead",
            with(
                b(),
                "timestamp",
                Some(json!(rfc3339(now + Duration::minutes(6)))),
            ),
            "5 minutes",
        ),
        (
            "epoch-ms timestamp 8 days old",
            with(
                b(),
                "timestamp",
                Some(json!((now - Duration::days(8)).timestamp_millis())),
            ),
            "timestamp",
        ),
        (
            "timestamp month 13",
            with(b(), "timestamp", Some(json!("2024-13-01T00:00:00Z"))),
            "timestamp",
        ),
        (
            "timestamp a word",
            with(b(), "timestamp", Some(json!("yesterday"))),
            "timestamp",
        ),
        (
            "timestamp a date only",
            with(b(), "timestamp", Some(json!("2024-01-15"))),
            "timestamp",
        ),
        (
            "timestamp without zone",
            with(b(), "timestamp", Some(json!(ts.trim_end_matches('Z')))),
            "timestamp",
        ),
        (
            "timestamp fractional epoch ms",
            with(
                b(),
                "timestamp",
                Some(json!(now.timestamp_millis() as f64 + 0.5)),
            ),
            "timestamp",
        ),
        (
            "timestamp a boolean",
            with(b(), "timestamp", Some(json!(true))),
            "timestamp",
        ),
        (
            "healthy a string",
            with(b(), "healthy", Some(json!("yes"))),
            "healthy",
        ),
        (
            "metrics an array",
            with(b(), "metrics", Some(json!([1, 2]))),
            "metrics",
        ),
        (
            "metrics a number",
            with(b(), "metrics", Some(json!(3))),
            "metrics",
        ),
        (
            "success + error > request",
            with(b(), "metrics.successCount", Some(json!(10))),
            "requestCount",
        ),
        (
            "absent requestCount, success + error above 2^53",
            with(
                with(
                    with(b(), "metrics.requestCount", None),
                    "metrics.successCount",
                    Some(json!(TWO_POW_53)),
                ),
                "metrics.errorCount",
                Some(json!(TWO_POW_53)),
            ),
            "2^53",
        ),
        (
            "min > max latency",
            with(b(), "metrics.minLatencyMs", Some(json!(60))),
            "minLatencyMs",
        ),
        (
            "sample above max",
            with(b(), "metrics.latencySamplesMs", Some(json!([5, 50.5]))),
            "latencySamplesMs[1]",
        ),
        (
            "sample below min",
            with(b(), "metrics.latencySamplesMs", Some(json!([4.99]))),
            "latencySamplesMs[0]",
        ),
        (
            "10 001 samples",
            with(
                b(),
                "metrics.latencySamplesMs",
                Some(json!(vec![10; 10_001])),
            ),
            "latencySamplesMs",
        ),
        (
            "negative count",
            with(b(), "metrics.requestCount", Some(json!(-1))),
            "requestCount",
        ),
        (
            "fractional count",
            with(b(), "metrics.successCount", Some(json!(1.5))),
            "successCount",
        ),
        (
            "whole-valued float count",
            with(b(), "metrics.errorCount", Some(json!(1.0))),
            "errorCount",
        ),
        (
            "NaN count",
            with(b(), "metrics.errorCount", Some(json!("NaN"))),
            "errorCount",
        ),
        (
            "Infinity count",
            with(b(), "metrics.connectionCount", Some(json!("Infinity"))),
            "connectionCount",
        ),
        (
            "huge float count",
            with(b(), "metrics.connectionCount", Some(json!(1e300))),
            "connectionCount",
        ),
        (
            "count 2^53 + 1",
            with(
                b(),
                "metrics.dataTransferredBytes",
                Some(json!(TWO_POW_53 + 1)),
            ),
            "dataTransferredBytes",
        ),
        (
            "count u64::MAX",
            with(b(), "metrics.dataReceivedBytes", Some(json!(u64::MAX))),
            "dataReceivedBytes",
        ),
        (
            "count a string",
            with(b(), "metrics.requestCount", Some(json!("10"))),
            "requestCount",
        ),
        (
            "count a boolean",
            with(b(), "metrics.requestCount", Some(json!(true))),
            "requestCount",
        ),
        (
            "negative concurrentConnections",
            with(b(), "metrics.concurrentConnections", Some(json!(-3))),
            "concurrentConnections",
        ),
        (
            "errorMessage of 1025 chars",
            with(b(), "metrics.errorMessage", Some(json!("e".repeat(1025)))),
            "errorMessage",
        ),
        (
            "errorMessage of 1025 multi-byte chars",
            with(b(), "metrics.errorMessage", Some(json!("é".repeat(1025)))),
            "errorMessage",
        ),
        (
            "errorMessage a number",
            with(b(), "metrics.errorMessage", Some(json!(500))),
            "errorMessage",
        ),
        (
            "typo in metrics",
            with(b(), "metrics.requestCnt", Some(json!(1))),
            "requestCnt",
        ),
        (
            "typo of the samples field",
            with(b(), "metrics.latencySamples", Some(json!([5]))),
            "latencySamples",
        ),
        (
            "negative latency",
            with(b(), "metrics.totalLatencyMs", Some(json!(-1))),
            "totalLatencyMs",
        ),
        (
            "latency a string",
            with(b(), "metrics.maxLatencyMs", Some(json!("50"))),
            "maxLatencyMs",
        ),
        (
            "samples not an array",
            with(b(), "metrics.latencySamplesMs", Some(json!("5,10"))),
            "latencySamplesMs",
        ),
        (
            "a sample a string",
            with(b(), "metrics.latencySamplesMs", Some(json!([5, "x"]))),
            "latencySamplesMs[1]",
        ),
        (
            "a negative sample without bounds",
            with(
                with(
                    with(b(), "metrics.minLatencyMs", None),
                    "metrics.maxLatencyMs",
                    None,
                ),
                "metrics.latencySamplesMs",
                Some(json!([1, -1])),
            ),
            "latencySamplesMs[1]",
        ),
    ]
}

#[tokio::test]
async fn every_event_rule_rejects_the_event_and_the_batch_holding_it() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    for (label, event, field) in invalid_events(&ts) {
        let (status, body) = c.record(event.clone()).await;
        assert_eq!(status, 400, "{label}: {body}");
        assert_error(status, &body, 400, "INVALID_REQUEST");
        assert!(
            message(&body).contains(field),
            "{label}: message {:?} should name {field}",
            message(&body)
        );

        // the same event at index 3 of a batch of otherwise valid events
        let mut events: Vec<Value> = (0..5).map(|i| ev(&format!("batch-{i}"), &ts, 10)).collect();
        events[3] = event;
        let (status, body) = c.record(json!({ "events": events })).await;
        assert_error(status, &body, 400, "INVALID_REQUEST");
        assert!(
            message(&body).starts_with("events[3]"),
            "{label}: {:?} should name the index",
            message(&body)
        );
        assert!(message(&body).contains(field), "{label}: {body}");
    }
    // nothing of any rejected body was recorded, not even an id marker
    assert_empty_day(&c.day(&day).await);
    let (status, body) = c.record(ev("batch-0", &ts, 10)).await;
    assert_eq!((status, &body["recorded"]), (201, &json!(1)), "{body}");
    let (status, body) = c.record(ev("ok-1", &ts, 10)).await;
    assert_eq!((status, &body["recorded"]), (201, &json!(1)), "{body}");
    assert_eq!(c.day(&day).await["eventCount"], 2);
}

#[tokio::test]
async fn request_level_rejections() {
    let c = setup().await;
    let (t, day) = recent();
    let ts = rfc3339(t);
    let one = ev("e-1", &ts, 10);

    // Idempotency-Key differing from the body's eventId
    let (s, b, _) = c
        .send(c.req().header("idempotency-key", "other").json(one.clone()))
        .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert!(message(&b).contains("Idempotency-Key"), "{b}");

    // Idempotency-Key with a batch body
    let (s, b, _) = c
        .send(
            c.req()
                .header("idempotency-key", "e-1")
                .json(json!({"events": [one.clone()]})),
        )
        .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert!(message(&b).contains("Idempotency-Key"), "{b}");

    // an Idempotency-Key that is not a valid eventId
    let (s, b, _) = c
        .send(c.req().header("idempotency-key", "not valid").json(with(
            one.clone(),
            "eventId",
            None,
        )))
        .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert!(message(&b).contains("eventId"), "{b}");

    // 501 events: 413, whatever they hold
    let events: Vec<Value> = (0..501).map(|i| ev(&format!("big-{i}"), &ts, 1)).collect();
    let (s, b) = c.record(json!({ "events": events })).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");
    assert!(message(&b).contains("500"), "{b}");

    // a body of 1 MiB + 1 byte: 413; exactly 1 MiB: accepted
    let padded = |len: usize| {
        let mut text = ev("padded", &ts, 3).to_string();
        text.push_str(&" ".repeat(len - text.len()));
        text
    };
    let (s, b, _) = c.send(c.req().raw(&padded(1024 * 1024 + 1))).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");
    let huge =
        json!({"eventType": "error", "metrics": {"errorMessage": "x".repeat(2 * 1024 * 1024)}});
    let (s, b) = c.record(huge).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");

    // bodies that are not one event or a batch
    let bad_bodies: [(&str, &str); 9] = [
        ("non-JSON", "{not json"),
        ("truncated JSON", r#"{"eventType": "request""#),
        (
            "NaN literal",
            r#"{"eventType": "request", "metrics": {"totalLatencyMs": NaN}}"#,
        ),
        ("a JSON array", r#"[{"eventType": "request"}]"#),
        ("a JSON string", r#""request""#),
        ("null", "null"),
        ("empty events", r#"{"events": []}"#),
        (
            "events an object",
            r#"{"events": {"eventType": "request"}}"#,
        ),
        (
            "a batch element not an object",
            r#"{"events": [{"eventType": "request"}, 7]}"#,
        ),
    ];
    for (label, raw) in bad_bodies {
        let (s, b, _) = c.send(c.req().raw(raw)).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
        assert!(!message(&b).is_empty(), "{label}");
        if label.starts_with("a batch element") {
            assert!(message(&b).starts_with("events[1]"), "{b}");
        }
        if label.contains("events") {
            assert!(message(&b).contains("events"), "{label}: {b}");
        }
    }
    // empty body
    let (s, b, _) = c
        .send(c.req().raw("").header("content-type", "application/json"))
        .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");

    // Content-Type other than JSON
    let (s, b, _) = c
        .send(
            c.req()
                .json(one.clone())
                .header("content-type", "text/plain"),
        )
        .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert!(message(&b).contains("Content-Type"), "{b}");
    let (s, b, _) = c
        .send(
            c.req()
                .json(one.clone())
                .header("content-type", "application/x-www-form-urlencoded"),
        )
        .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");

    assert_empty_day(&c.day(&day).await);

    // the accepted neighbours of those limits
    let (s, b, _) = c.send(c.req().raw(&padded(1024 * 1024))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b, _) = c
        .send(
            c.req()
                .json(one.clone())
                .header("content-type", "application/json; charset=utf-8"),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let events: Vec<Value> = (0..500).map(|i| ev(&format!("big-{i}"), &ts, 1)).collect();
    let (s, b) = c.record(json!({ "events": events })).await;
    assert_eq!((s, &b["recorded"]), (201, &json!(500)), "{b}");
    let m = c.day(&day).await;
    assert_eq!(m["eventCount"], 502);
    assert_eq!(m["requestCount"], 3 + 10 + 500);
}

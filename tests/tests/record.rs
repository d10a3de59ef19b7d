//! `POST /proxy/metrics/{proxyId}/record` through the handler against dynoxide:
//! every validation rule of the contract, defaults, idempotency (headers,
//! retries that change the payload or the day, duplicates within and across
//! batches, concurrent identical retries) and the write cost per event.
//! Values read back through `get_daily_metrics` are asserted exactly.

mod common;

use std::collections::HashMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::*;
use proxy_metrics::handlers;
use serde_json::{Value, json};

const ROUTE: &str = "/proxy/metrics/{proxyId}/record";
const PROXY: &str = "edge-1";
const TWO_POW_53: u64 = 1 << 53;

struct Ctx {
    h: Harness,
    token: String,
}

async fn setup() -> Ctx {
    let h = Harness::start().await;
    let token = user_token("alice");
    let (status, body) = h.register(&token, PROXY).await;
    assert_eq!(status, 201, "{body}");
    Ctx { h, token }
}

impl Ctx {
    /// A record request for the proxy, authenticated, without a body yet.
    fn req(&self) -> Req {
        Req::new("POST", ROUTE)
            .param("proxyId", PROXY)
            .bearer(&self.token)
    }

    async fn send(&self, req: Req) -> (u16, Value, HashMap<String, String>) {
        parts(handlers::record_metrics(&self.h.app, req.build()).await)
    }

    async fn record(&self, body: Value) -> (u16, Value) {
        self.h.record(&self.token, PROXY, body).await
    }

    /// The daily metrics object of `day`.
    async fn day(&self, day: &str) -> Value {
        let (status, body) = self.h.daily(&self.token, PROXY, day).await;
        assert_eq!(status, 200, "{body}");
        body["metrics"].clone()
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn day_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// An instant safely inside the accepted window, and its day.
fn recent() -> (DateTime<Utc>, String) {
    let t = now() - Duration::minutes(1);
    (t, day_of(t))
}

/// A valid event: `rc` requests, a tenth of them errors, 100 bytes each.
fn ev(id: &str, ts: &str, rc: u64) -> Value {
    json!({"eventType": "request", "eventId": id, "timestamp": ts,
           "metrics": {"requestCount": rc, "successCount": rc - rc / 10, "errorCount": rc / 10,
                       "dataTransferredBytes": rc * 100}})
}

/// `v` with the dotted `path` set to `new` (or removed when `None`).
fn with(mut v: Value, path: &str, new: Option<Value>) -> Value {
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap();
    let mut cur = &mut v;
    for k in keys {
        cur = cur.get_mut(k).unwrap();
    }
    let object = cur.as_object_mut().unwrap();
    match new {
        Some(n) => object.insert(last.to_string(), n),
        None => object.remove(last),
    };
    v
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

fn statuses(body: &Value) -> Vec<&str> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect()
}

fn assert_empty_day(m: &Value) {
    assert_eq!(m["eventCount"], 0, "{m}");
    assert_eq!(m["requestCount"], 0, "{m}");
    assert_eq!(m["dataTransferredBytes"], 0, "{m}");
}

// ------------------------------------------------------------- validation

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

// ------------------------------------------------------------ idempotency

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

// ------------------------------------------------------------ percentiles

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

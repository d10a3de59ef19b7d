//! Sequenced batches (contract "Sequenced batches"): a batch is recorded
//! whole, once per (proxy, producer, sequence); duplicates answer 200, gaps
//! 409 `SEQUENCE_GAP` with `expectedSequence`; a restarted producer takes a
//! new id. Also under a store that loses answers after committing.

use crate::common;

use common::fault_proxy::{Fault, FaultConfig, FaultProxy};
use common::*;
use proxy_metrics::App;
use serde_json::{Value, json};

/// `n` events of `requests` requests each, dated just before now.
fn batch(n: usize, requests: u64) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"eventType": "request", "timestamp": iso(instant_on(now().date_naive(), i, n, now())),
                   "metrics": {"requestCount": requests, "successCount": requests,
                               "latencySamplesMs": [5.0, 10.0, 20.0]}})
        })
        .collect();
    json!({ "events": events })
}

async fn send(
    app: &App,
    token: &str,
    proxy: &str,
    producer: Option<&str>,
    sequence: Option<&str>,
    body: Value,
) -> (u16, Value, std::collections::HashMap<String, String>) {
    let mut req = record_req(token, proxy).json(body);
    if let Some(p) = producer {
        req = req.header("Producer-Id", p);
    }
    if let Some(s) = sequence {
        req = req.header("Producer-Sequence", s);
    }
    send_record(app, req).await
}

async fn requests_today(h: &Harness, token: &str, proxy: &str) -> u64 {
    let (s, b) = h.daily(token, proxy, &today()).await;
    assert_eq!(s, 200, "{b}");
    b["metrics"]["requestCount"].as_u64().unwrap()
}

#[tokio::test]
async fn batches_are_recorded_once_in_order() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let seq = |s: &str| Some(s.to_string());
    let go = |s: Option<String>, body: Value| {
        let t = t.clone();
        let app = &h.app;
        async move { send(app, &t, "edge", Some("boot-1"), s.as_deref(), body).await }
    };
    // a producer with no state may start anywhere
    let (s, b, _) = go(seq("41"), batch(3, 1)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (b["recorded"].clone(), b["duplicates"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(go(seq("42"), batch(2, 10)).await.0, 201);
    // the same batch again, or an older one: duplicates, nothing recorded
    for again in ["42", "41", "0"] {
        let (s, b, _) = go(seq(again), batch(2, 10)).await;
        assert_eq!(s, 200, "{again}: {b}");
        assert_eq!(b["recorded"], 0);
        assert!(
            b["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["status"] == "duplicate")
        );
    }
    // a gap: 409 naming the next sequence, nothing recorded
    let (s, b, _) = go(seq("44"), batch(1, 1000)).await;
    assert_error(s, &b, 409, "SEQUENCE_GAP");
    assert_eq!(b["expectedSequence"], 43);
    assert_eq!(requests_today(&h, &t, "edge").await, 3 + 20);
    assert_eq!(go(seq("43"), batch(1, 100)).await.0, 201);
    assert_eq!(requests_today(&h, &t, "edge").await, 123);
    // a restarted producer takes a new id, which starts afresh
    let (s, _, _) = send(
        &h.app,
        &t,
        "edge",
        Some("boot-2"),
        Some("0"),
        batch(1, 1000),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(requests_today(&h, &t, "edge").await, 1123);
    // producers belong to a proxy: the same id elsewhere is another producer
    h.register(&t, "edge-2").await;
    let (s, _, _) = send(&h.app, &t, "edge-2", Some("boot-1"), Some("0"), batch(1, 1)).await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn event_ids_label_events_of_a_sequenced_batch() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let mut body = batch(3, 1);
    body["events"][0]["eventId"] = json!("a");
    body["events"][1]["eventId"] = json!("b");
    let (s, b, _) = send(&h.app, &t, "edge", Some("p"), Some("0"), body.clone()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["events"][0]["eventId"], "a");
    assert_eq!(b["events"][1]["eventId"], "b");
    assert!(
        b["events"][2]["eventId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    // ids are not checked against other requests: the sequence is the key
    let (s, b, _) = send(&h.app, &t, "edge", Some("p"), Some("1"), body.clone()).await;
    assert_eq!((s, b["recorded"].clone()), (201, json!(3)));
    // but they must be unique within the batch
    body["events"][2]["eventId"] = json!("a");
    let (s, b, _) = send(&h.app, &t, "edge", Some("p"), Some("2"), body).await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert!(b["message"].as_str().unwrap().contains("events[2]"), "{b}");
    // a single-event body may be sequenced too
    let single = json!({"eventType": "request", "metrics": {"requestCount": 5}});
    let (s, b, _) = send(&h.app, &t, "edge", Some("p"), Some("2"), single).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["eventType"], "request");
    assert_eq!(requests_today(&h, &t, "edge").await, 6 + 5);
}

#[tokio::test]
async fn sequence_headers_are_validated_before_any_storage_call() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let cases: [(Option<&str>, Option<&str>, &str); 9] = [
        (Some("p"), None, "go together"),
        (None, Some("1"), "go together"),
        (Some(""), Some("1"), "Producer-Id"),
        (Some(&*"x".repeat(65)), Some("1"), "Producer-Id"),
        (Some("a b"), Some("1"), "Producer-Id"),
        (Some("p"), Some("-1"), "Producer-Sequence"),
        (Some("p"), Some("1.5"), "Producer-Sequence"),
        (Some("p"), Some("9007199254740993"), "Producer-Sequence"),
        (Some("p"), Some("one"), "Producer-Sequence"),
    ];
    for (producer, sequence, named) in cases {
        let (s, b, _) = send(&h.app, &t, "edge", producer, sequence, batch(1, 1)).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
        assert!(
            b["message"].as_str().unwrap().contains(named),
            "{producer:?} {sequence:?}: {b}"
        );
    }
    // the largest sequence is accepted
    let (s, _, _) = send(
        &h.app,
        &t,
        "edge",
        Some(&"p".repeat(64)),
        Some("9007199254740992"),
        batch(1, 1),
    )
    .await;
    assert_eq!(s, 201);
    // Idempotency-Key belongs to unsequenced single events
    let req = Req::new("POST", "/proxy/metrics/{proxyId}/record")
        .param("proxyId", "edge")
        .bearer(&t)
        .header("Producer-Id", "q")
        .header("Producer-Sequence", "0")
        .header("Idempotency-Key", "k")
        .json(json!({"eventType": "request"}))
        .build();
    let (s, b, _) = parts(proxy_metrics::handlers::record_metrics(&h.app, req).await);
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert_eq!(requests_today(&h, &t, "edge").await, 1);
}

#[tokio::test]
async fn lost_answers_after_commit_neither_double_count_nor_open_a_gap() {
    let h = Harness::start().await;
    let fault = FaultProxy::start(&h.endpoint, 21).await;
    let app = App::with_clock(
        &config(&fault.endpoint, &[]),
        sdk_client(&fault.endpoint),
        h.app.clock.clone(),
    );
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let mut sent = 0u64;
    for sequence in 0..8u64 {
        let body = batch(6, 10);
        match sequence % 3 {
            // the store commits, one answer is lost: the server's own retry
            // (same transaction token) is answered as the success it was
            0 => fault.set(
                FaultConfig::scripted(&[Fault::DropAfterForward]).only(&["TransactWriteItems"]),
            ),
            // every answer is lost: the request ends in 503 although the
            // batch landed; the client's retry is then a duplicate
            1 => fault
                .set(FaultConfig::always(Fault::DropAfterForward).only(&["TransactWriteItems"])),
            _ => fault.off(),
        }
        let mut statuses = Vec::new();
        loop {
            let (s, b, _) = send(
                &app,
                &t,
                "edge",
                Some("boot"),
                Some(&sequence.to_string()),
                body.clone(),
            )
            .await;
            statuses.push(s);
            assert!(matches!(s, 200 | 201 | 503), "{s}: {b}");
            fault.off();
            if s != 503 {
                break;
            }
        }
        match sequence % 3 {
            1 => assert_eq!(statuses, [503, 200]),
            _ => assert_eq!(statuses, [201]),
        }
        sent += 60;
    }
    assert_eq!(requests_today(&h, &t, "edge").await, sent);
    assert!(fault.stats().injected_total() >= 4);
}

#[tokio::test]
async fn concurrent_writers_on_one_proxy_never_conflict() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    // 8 producers (and 8 unsequenced writers) on one proxy for a few seconds
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let writers = (0..16).map(|w| {
        let app = &h.app;
        let t = t.clone();
        async move {
            let mut requests = 0u64;
            let mut sequence = 0u64;
            while std::time::Instant::now() < until {
                let (s, b, _) = if w < 8 {
                    let producer = format!("producer-{w}");
                    send(
                        app,
                        &t,
                        "edge",
                        Some(&producer),
                        Some(&sequence.to_string()),
                        batch(6, 1),
                    )
                    .await
                } else {
                    send(app, &t, "edge", None, None, batch(6, 1)).await
                };
                assert_eq!(s, 201, "writer {w}: {b}");
                sequence += 1;
                requests += 6;
            }
            requests
        }
    });
    let total: u64 = futures::future::join_all(writers).await.into_iter().sum();
    assert!(total > 0);
    assert_eq!(requests_today(&h, &t, "edge").await, total);
    proxy_metrics::aggregate::run_all(&h.app.store)
        .await
        .unwrap();
    assert_eq!(requests_today(&h, &t, "edge").await, total);
}

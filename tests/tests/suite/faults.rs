//! Recording while the store misbehaves: a fault proxy between the SDK
//! client and dynoxide throttles, fails, delays and drops requests.
//!
//! The app under test gets the SDK retry setting of the deployed functions
//! (`Config::dynamodb_client`: standard mode, 2 attempts); registration and
//! read-back go straight to dynoxide through the harness's own app.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use chrono::SecondsFormat;
use common::fault_proxy::{Fault, FaultConfig, FaultProxy};
use common::*;
use proxy_metrics::App;
use serde_json::{Value, json};

const PROXY: &str = "edge-faulty";

struct Rig {
    /// Straight to dynoxide: registration and reading back.
    h: Harness,
    fault: FaultProxy,
    /// Through the fault proxy: the app under test.
    app: App,
    token: String,
}

/// The client of the deployed functions, pointed at `endpoint`.
fn deployed_like_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = sdk_client(endpoint)
        .config()
        .to_builder()
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

async fn rig(seed: u64) -> Rig {
    let h = Harness::start().await;
    let fault = FaultProxy::start(&h.endpoint, seed).await;
    let app = App::with_clock(
        &config(&fault.endpoint, &[]),
        deployed_like_client(&fault.endpoint),
        h.app.clock.clone(),
    );
    let token = user_token("alice");
    let (status, body) = h.register(&token, PROXY).await;
    assert_eq!(status, 201, "{body}");
    Rig {
        h,
        fault,
        app,
        token,
    }
}

impl Rig {
    async fn record(&self, body: Value) -> (u16, Value, HashMap<String, String>) {
        send_record(&self.app, record_req(&self.token, PROXY).json(body)).await
    }

    async fn day(&self, day: &str) -> Value {
        let (status, body) = self.h.daily(&self.token, PROXY, day).await;
        assert_eq!(status, 200, "{body}");
        body["metrics"].clone()
    }
}

fn event(id: &str, ts: &str, requests: u64) -> Value {
    json!({"eventType": "request", "eventId": id, "timestamp": ts,
           "metrics": {"requestCount": requests, "successCount": requests - requests / 4,
                       "errorCount": requests / 4, "dataTransferredBytes": requests * 10}})
}

fn now_minus_a_minute() -> (String, String) {
    let t = now() - chrono::Duration::minutes(1);
    (
        t.to_rfc3339_opts(SecondsFormat::Millis, true),
        t.format("%Y-%m-%d").to_string(),
    )
}

/// The contract's 503: kind, code, a positive `Retry-After`, and nothing of
/// the store in the body.
fn assert_unavailable(status: u16, body: &Value, headers: &HashMap<String, String>) {
    assert_error(status, body, 503, "SERVICE_UNAVAILABLE");
    let retry_after: u64 = headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no retry-after: {headers:?}"))
        .parse()
        .expect("retry-after in seconds");
    assert!(retry_after > 0);
    let text = body.to_string().to_lowercase();
    for leak in [
        "throttl",
        "provisioned",
        "throughput",
        "dynamodb",
        "transact",
        "internalservererror",
        "exception",
        "amazon",
        "aws",
        "sdk",
        TABLE,
        "eventid#",
        "127.0.0.1",
    ] {
        assert!(!text.contains(leak), "the 503 body leaks {leak:?}: {body}");
    }
}

async fn unavailable_then_recovered(fault: FaultConfig, seed: u64) {
    let r = rig(seed).await;
    let (ts, day) = now_minus_a_minute();
    let batch =
        json!({"events": (0..20).map(|i| event(&format!("u-{i}"), &ts, 4)).collect::<Vec<_>>()});

    r.fault.set(fault);
    let started = std::time::Instant::now();
    let (status, body, headers) = r.record(batch.clone()).await;
    let took = started.elapsed();
    assert_unavailable(status, &body, &headers);
    let stats = r.fault.stats();
    println!("gave up after {took:?}; proxy saw {stats:?}");
    assert_eq!(stats.forwarded_of("TransactWriteItems"), 0);
    assert!(
        stats.injected_total() >= 6,
        "retried before giving up: {stats:?}"
    );

    // nothing was counted; the client's retry after the outage counts all once
    r.fault.off();
    let m = r.day(&day).await;
    assert_eq!(m["eventCount"], 0, "{m}");
    let (status, body, _) = r.record(batch.clone()).await;
    assert_eq!((status, &body["recorded"]), (201, &json!(20)), "{body}");
    let (status, body, _) = r.record(batch).await;
    assert_eq!((status, &body["duplicates"]), (200, &json!(20)), "{body}");
    let m = r.day(&day).await;
    assert_eq!(m["eventCount"], 20);
    assert_eq!(m["requestCount"], 80);
    assert_eq!(m["errorCount"], 20);
}

#[tokio::test]
async fn full_throttling_is_503_with_retry_after_and_no_internals() {
    unavailable_then_recovered(FaultConfig::always(Fault::Throttling), 1).await;
}

#[tokio::test]
async fn throttled_transactions_are_503() {
    unavailable_then_recovered(
        FaultConfig::always(Fault::ProvisionedThroughputExceeded).only(&["TransactWriteItems"]),
        2,
    )
    .await;
}

#[tokio::test]
async fn failing_transactions_are_503() {
    unavailable_then_recovered(
        FaultConfig::always(Fault::InternalServerError).only(&["TransactWriteItems"]),
        3,
    )
    .await;
}

#[tokio::test]
async fn unreachable_store_is_503() {
    unavailable_then_recovered(
        FaultConfig::always(Fault::Drop).only(&["TransactWriteItems"]),
        4,
    )
    .await;
}

/// `clients` clients each send `batches` batches of `per_batch` events,
/// retrying a batch on 503 (same eventIds) like a well-behaved client.
/// Returns the final status of every batch and the 503s seen on the way.
async fn fleet(
    r: &Arc<Rig>,
    clients: usize,
    batches: usize,
    per_batch: usize,
    ts: &str,
) -> (Vec<(u16, Value)>, usize) {
    let tasks = (0..clients).map(|c| {
        let r = r.clone();
        let ts = ts.to_string();
        tokio::spawn(async move {
            let mut finals = Vec::new();
            let mut unavailable = 0;
            for b in 0..batches {
                let events: Vec<Value> = (0..per_batch)
                    .map(|i| {
                        event(
                            &format!("c{c}-b{b}-e{i}"),
                            &ts,
                            (c * 100 + b * 10 + i) as u64 + 1,
                        )
                    })
                    .collect();
                let body = json!({ "events": events });
                loop {
                    let (status, body, headers) = r.record(body.clone()).await;
                    if status == 503 {
                        assert_unavailable(status, &body, &headers);
                        unavailable += 1;
                        assert!(unavailable < 50, "503 does not go away");
                        // Retry-After says 2 s; a test need not wait that long
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    finals.push((status, body));
                    break;
                }
            }
            (finals, unavailable)
        })
    });
    let mut finals = Vec::new();
    let mut unavailable = 0;
    for result in futures::future::join_all(tasks).await {
        let (f, u) = result.expect("client task");
        finals.extend(f);
        unavailable += u;
    }
    (finals, unavailable)
}

fn expected_requests(clients: usize, batches: usize, per_batch: usize) -> u64 {
    let mut total = 0;
    for c in 0..clients {
        for b in 0..batches {
            for i in 0..per_batch {
                total += (c * 100 + b * 10 + i) as u64 + 1;
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_faults_with_client_retries_count_each_event_once() {
    let r = Arc::new(rig(42).await);
    let (ts, day) = now_minus_a_minute();
    r.fault.set(FaultConfig::random(
        0.3,
        &[
            (Fault::Throttling, 3),
            (Fault::ProvisionedThroughputExceeded, 2),
            (Fault::InternalServerError, 2),
            (Fault::Delay(Duration::from_millis(20)), 1),
            (Fault::Delay(Duration::from_millis(150)), 1),
            (Fault::Drop, 2),
        ],
    ));
    let started = std::time::Instant::now();
    let (finals, unavailable) = fleet(&r, 20, 5, 20, &ts).await;
    let took = started.elapsed();
    r.fault.off();
    let stats = r.fault.stats();
    println!("100 batches in {took:?}, {unavailable} 503s retried; proxy: {stats:?}");

    for (status, body) in &finals {
        assert_eq!(*status, 201, "{body}");
    }
    // faults before forwarding never apply a write, so statuses are exact too
    let recorded: u64 = finals
        .iter()
        .map(|(_, b)| b["recorded"].as_u64().unwrap())
        .sum();
    assert_eq!(recorded, 2000);
    for kind in [
        "ThrottlingException",
        "InternalServerError",
        "drop",
        "delay",
    ] {
        assert!(
            stats.injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {stats:?}"
        );
    }

    let m = r.day(&day).await;
    let requests = expected_requests(20, 5, 20);
    assert_eq!(m["eventCount"], 2000, "{m}");
    assert_eq!(m["requestCount"], requests);
    let mut errors = 0;
    for c in 0..20u64 {
        for b in 0..5u64 {
            for i in 0..20u64 {
                errors += (c * 100 + b * 10 + i + 1) / 4;
            }
        }
    }
    assert_eq!(m["errorCount"], errors);
    assert_eq!(m["successCount"], requests - errors);
    assert_eq!(m["dataTransferredBytes"], requests * 10);
}

#[tokio::test]
async fn a_lost_response_retried_by_the_sdk_counts_once() {
    let r = rig(5).await;
    let (ts, day) = now_minus_a_minute();
    let batch =
        json!({"events": (0..10).map(|i| event(&format!("l-{i}"), &ts, 8)).collect::<Vec<_>>()});
    // the first transaction is applied, its answer lost; the SDK resends it
    r.fault
        .set(FaultConfig::scripted(&[Fault::DropAfterForward]).only(&["TransactWriteItems"]));
    let (status, body, _) = r.record(batch.clone()).await;
    let stats = r.fault.stats();
    println!("{status} {body}\n{stats:?}");
    assert!(status == 201 || status == 200, "{status} {body}");
    assert_eq!(r.day(&day).await["requestCount"], 80);
    let (status, body, _) = r.record(batch).await;
    assert_eq!((status, &body["duplicates"]), (200, &json!(10)), "{body}");
    assert_eq!(r.day(&day).await["eventCount"], 10);
}

#[tokio::test]
async fn two_lost_responses_in_a_row_are_not_a_500() {
    let r = rig(6).await;
    let (ts, day) = now_minus_a_minute();
    let batch =
        json!({"events": (0..10).map(|i| event(&format!("l2-{i}"), &ts, 8)).collect::<Vec<_>>()});
    // applied, answer lost; the SDK's own retry replays it, answer lost again;
    // then the storage layer's retry
    r.fault.set(
        FaultConfig::scripted(&[Fault::DropAfterForward, Fault::DropAfterForward])
            .only(&["TransactWriteItems"]),
    );
    let (status, body, _) = r.record(batch.clone()).await;
    let stats = r.fault.stats();
    println!("{status} {body}\n{stats:?}");
    assert_eq!(
        stats
            .upstream_errors
            .get("IdempotentParameterMismatchException"),
        None
    );
    assert_ne!(status, 500, "{body}");
    assert!([200, 201, 503].contains(&status), "{status} {body}");
    // the events were applied exactly once either way
    assert_eq!(r.day(&day).await["requestCount"], 80);
    // and a 201 must say they were recorded
    if status == 201 || status == 200 {
        assert_eq!(body["recorded"], 10, "{body}");
    }
}

#[tokio::test]
async fn the_proxy_forwards_verbatim_when_off() {
    let r = rig(7).await;
    let (ts, day) = now_minus_a_minute();
    let events: Vec<Value> = (0..500).map(|i| event(&format!("v-{i}"), &ts, 2)).collect();
    let (status, body, _) = r.record(json!({ "events": events })).await;
    assert_eq!((status, &body["recorded"]), (201, &json!(500)), "{body}");
    let first = r.fault.stats();
    r.fault.reset_stats();
    let (status, body, _) = r.record(json!({ "events": events })).await;
    assert_eq!((status, &body["duplicates"]), (200, &json!(500)), "{body}");
    let again = r.fault.stats();
    println!(
        "500 new events: {} TransactWriteItems; the same 500 again: {}",
        first.requests_of("TransactWriteItems"),
        again.requests_of("TransactWriteItems")
    );
    assert_eq!(first.injected_total() + again.injected_total(), 0);
    // a retried batch costs no more round trips than the first one
    assert!(again.requests_of("TransactWriteItems") <= first.requests_of("TransactWriteItems"));
    assert_eq!(r.day(&day).await["requestCount"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_responses_in_a_random_mix_never_double_count() {
    let r = Arc::new(rig(43).await);
    let (ts, day) = now_minus_a_minute();
    r.fault.set(FaultConfig::random(
        0.3,
        &[
            (Fault::Throttling, 2),
            (Fault::InternalServerError, 1),
            (Fault::Drop, 1),
            (Fault::DropAfterForward, 3),
        ],
    ));
    // clients that also retry a 500 (the same batch, the same eventIds)
    let tasks = (0..10).map(|c| {
        let r = r.clone();
        let ts = ts.to_string();
        tokio::spawn(async move {
            let mut failures = HashMap::<u16, u32>::new();
            for b in 0..5 {
                let events: Vec<Value> = (0..20)
                    .map(|i| {
                        event(
                            &format!("m{c}-b{b}-e{i}"),
                            &ts,
                            (c * 100 + b * 10 + i) as u64 + 1,
                        )
                    })
                    .collect();
                let body = json!({ "events": events });
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 50, "never succeeds");
                    let (status, answer, _) = r.record(body.clone()).await;
                    match status {
                        200 | 201 => break,
                        500 | 503 => {
                            *failures.entry(status).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("{other}: {answer}"),
                    }
                }
            }
            failures
        })
    });
    let mut failures = HashMap::<u16, u32>::new();
    for result in futures::future::join_all(tasks).await {
        for (status, n) in result.expect("client task") {
            *failures.entry(status).or_default() += n;
        }
    }
    r.fault.off();
    println!(
        "retried failures by status: {failures:?}; proxy: {:?}",
        r.fault.stats()
    );
    let m = r.day(&day).await;
    assert_eq!(m["eventCount"], 1000, "{m}");
    assert_eq!(m["requestCount"], expected_requests(10, 5, 20));
}

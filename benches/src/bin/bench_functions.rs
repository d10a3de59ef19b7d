//! Cold start and peak memory of each function binary, under a minimal Lambda
//! Runtime API emulator (the same protocol the Lambda service speaks):
//!   cargo build --release --bins && cargo run --release -p integration-tests --example bench_functions
//!
//! For each function: spawn `target/release/<name>` with AWS_LAMBDA_RUNTIME_API
//! pointing here, hand it one realistic invocation (a valid token, a registered
//! proxy, embedded dynoxide behind it), and time process start → response
//! received. Peak RSS is the process's VmHWM after the response. Also: a
//! 500-event record (100 samples per event) and a 366-day aggregation.
//! The reads run first, against materialised days; the writes last.

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use chrono::Utc;
use common::*;
use proxy_metrics::domain::event::{Event, EventType};
use proxy_metrics::domain::sketch::LatencySketch;
use proxy_metrics::domain::tier::Tier;
use serde_json::{Value, json};
use tokio::sync::Notify;

const RUNS: usize = 7;

#[derive(Default)]
struct Shared {
    event: Mutex<Option<String>>,
    response: Mutex<Option<(Instant, String)>>,
    done: Notify,
}

async fn next(State(s): State<Arc<Shared>>) -> (HeaderMap, String) {
    let event = s.event.lock().unwrap().take();
    match event {
        Some(body) => {
            let mut h = HeaderMap::new();
            h.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_static("bench-request"),
            );
            let deadline = (proxy_metrics::clock::Clock::system()
                .now()
                .timestamp_millis()
                + 60_000)
                .to_string();
            h.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from_str(&deadline).unwrap(),
            );
            h.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:bench"),
            );
            h.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            (h, body)
        }
        // The function asks for its next event; it is killed before one comes.
        None => std::future::pending().await,
    }
}

async fn respond(
    State(s): State<Arc<Shared>>,
    Path(_id): Path<String>,
    body: String,
) -> StatusCode {
    *s.response.lock().unwrap() = Some((Instant::now(), body));
    s.done.notify_one();
    StatusCode::ACCEPTED
}

async fn init_error(State(s): State<Arc<Shared>>, body: String) -> StatusCode {
    *s.response.lock().unwrap() = Some((Instant::now(), format!("INIT ERROR {body}")));
    s.done.notify_one();
    StatusCode::ACCEPTED
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// One cold invocation: (ms from spawn to response, peak RSS MiB, response body).
async fn cold_invoke(
    binary: &PathBuf,
    env: &[(String, String)],
    event: &Value,
) -> (f64, f64, String) {
    let shared = Arc::new(Shared::default());
    *shared.event.lock().unwrap() = Some(event.to_string());
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(respond),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(respond))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().cloned())
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    tokio::time::timeout(Duration::from_secs(60), shared.done.notified())
        .await
        .expect("function answered");
    let (at, body) = shared.response.lock().unwrap().take().unwrap();
    let rss = peak_rss_kib(pid) as f64 / 1024.0;
    let _ = child.kill().await;
    server.abort();
    ((at - started).as_secs_f64() * 1000.0, rss, body)
}

fn api_event(
    method: &str,
    route: &str,
    path: &str,
    params: Value,
    query: Value,
    token: &str,
    body: Option<Value>,
) -> Value {
    let qs = query
        .as_object()
        .map(|q| {
            q.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect::<Vec<_>>()
                .join("&")
        })
        .unwrap_or_default();
    json!({
        "version": "2.0", "routeKey": format!("{method} {route}"), "rawPath": path, "rawQueryString": qs,
        "headers": {"authorization": format!("Bearer {token}"), "content-type": "application/json", "host": "api"},
        "queryStringParameters": if qs.is_empty() { Value::Null } else { query },
        "pathParameters": params,
        "requestContext": {"accountId": "0", "apiId": "api", "domainName": "api", "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": "bench", "routeKey": format!("{method} {route}"), "stage": "$default",
            "time": "26/Nov/2026:10:00:00 +0000", "timeEpoch": 0},
        "body": body.map(|b| b.to_string()), "isBase64Encoded": false
    })
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn record_event(i: usize, ts: chrono::DateTime<Utc>) -> Event {
    let mut s = LatencySketch::new();
    (0..100).for_each(|k| s.add(3.0 + ((i * 7 + k * 13) % 500) as f64));
    Event {
        event_id: format!("seed-{i}"),
        event_type: EventType::Request,
        timestamp_ms: ts.timestamp_millis(),
        healthy: true,
        request_count: 100,
        success_count: 100,
        error_count: 0,
        total_latency_ms: None,
        min_latency_ms: None,
        max_latency_ms: None,
        latency_sketch: Some(s),
        data_transferred_bytes: 10,
        data_received_bytes: 10,
        connection_count: 1,
        concurrent_connections: Some(3),
        dimensions: Default::default(),
        status_counts: None,
        error_message: None,
    }
}

#[tokio::main]
async fn main() {
    let h = Harness::start().await;
    let token = token("bench-user", json!({"tier": "enterprise"}));
    assert_eq!(h.register(&token, "bench").await.0, 201);
    // 366 days of data, materialised, for the aggregation case.
    let today = proxy_metrics::clock::Clock::system().now().date_naive();
    let start = today - chrono::Duration::days(365);
    let seed: Vec<Event> = (0..366)
        .map(|d| {
            record_event(
                d,
                (start + chrono::Duration::days(d as i64))
                    .and_hms_opt(12, 0, 0)
                    .unwrap()
                    .and_utc(),
            )
        })
        .collect();
    h.store_events("bench", Tier::Enterprise, &seed, 300).await;
    proxy_metrics::aggregate::run_all(&h.app.store)
        .await
        .unwrap();

    let env: Vec<(String, String)> = [
        ("TABLE_NAME", TABLE),
        ("JWT_SECRET", SECRET),
        ("DYNAMODB_ENDPOINT", h.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let day = today.format("%Y-%m-%d").to_string();
    let first = start.format("%Y-%m-%d").to_string();
    let now_iso = now_rfc3339();
    let batch: Vec<Value> = (0..500)
        .map(|i| {
            let samples: Vec<f64> = (0..100).map(|k| 1.0 + ((i * 31 + k * 7) % 900) as f64 * 0.5).collect();
            json!({"eventType": "latency", "timestamp": now_iso,
                   "metrics": {"requestCount": 100, "successCount": 100, "latencySamplesMs": samples}})
        })
        .collect();
    let p = json!({"proxyId": "bench"});
    let mut cases: Vec<(&str, String, Value)> = vec![
        (
            "list-proxies",
            "GET /proxies".into(),
            api_event(
                "GET",
                "/proxies",
                "/proxies",
                json!({}),
                json!({}),
                &token,
                None,
            ),
        ),
        (
            "get-daily-metrics",
            "GET one day".into(),
            api_event(
                "GET",
                "/proxy/metrics/{proxyId}/daily/{date}",
                &format!("/proxy/metrics/bench/daily/{day}"),
                json!({"proxyId": "bench", "date": day}),
                json!({}),
                &token,
                None,
            ),
        ),
        (
            "get-daily-range",
            "GET 366-day range".into(),
            api_event(
                "GET",
                "/proxy/metrics/{proxyId}/daily",
                "/proxy/metrics/bench/daily",
                p.clone(),
                json!({"startDate": first, "endDate": day}),
                &token,
                None,
            ),
        ),
        (
            "get-aggregation",
            "GET 366-day aggregation".into(),
            api_event(
                "GET",
                "/proxy/metrics/{proxyId}/aggregation",
                "/proxy/metrics/bench/aggregation",
                p.clone(),
                json!({"periodStart": first, "periodEnd": day}),
                &token,
                None,
            ),
        ),
        (
            "get-summary",
            "GET summary".into(),
            api_event(
                "GET",
                "/proxy/metrics/{proxyId}/summary",
                "/proxy/metrics/bench/summary",
                p.clone(),
                json!({}),
                &token,
                None,
            ),
        ),
        (
            "get-series",
            "GET 24-hour 5-minute series".into(),
            api_event(
                "GET",
                "/proxy/metrics/{proxyId}/series",
                "/proxy/metrics/bench/series",
                p.clone(),
                json!({"from": iso(now() - chrono::Duration::hours(24)), "to": now_iso, "step": "5m"}),
                &token,
                None,
            ),
        ),
        (
            "aggregate-metrics",
            "scheduled run (idle)".into(),
            json!({"version": "0", "id": "bench", "detail-type": "Scheduled Event", "source": "aws.scheduler",
                   "account": "0", "time": now_iso, "region": "us-east-1", "resources": [], "detail": {}}),
        ),
    ];
    // These two change state, so each run gets a fresh id / event ids.
    let record_case = |run: usize| {
        let events: Vec<Value> = batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut e = e.clone();
                e["eventId"] = json!(format!("r{run}-{i}"));
                e
            })
            .collect();
        api_event(
            "POST",
            "/proxy/metrics/{proxyId}/record",
            "/proxy/metrics/bench/record",
            p.clone(),
            json!({}),
            &token,
            Some(json!({"events": events})),
        )
    };
    let register_case = |run: usize| {
        api_event(
            "POST",
            "/proxies",
            "/proxies",
            json!({}),
            json!({}),
            &token,
            Some(
                json!({"proxyId": format!("cold-{run}-{}", proxy_metrics::clock::Clock::system().now().timestamp_micros())}),
            ),
        )
    };

    let bin_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    println!(
        "| function | invocation | cold start to response, ms (min / median / max) | peak RSS MiB (max) |"
    );
    println!("|---|---|---|---|");
    let mut all: Vec<(String, String, Vec<f64>, Vec<f64>)> = Vec::new();
    for (name, what, event) in cases.drain(..) {
        let (mut t, mut m) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let (ms, rss, body) = cold_invoke(&bin_dir.join(name), &env, &event).await;
            assert!(
                body.contains("\"statusCode\":200") || body.contains("daysMaterialized"),
                "{name}: {body}"
            );
            t.push(ms);
            m.push(rss);
        }
        all.push((name.to_string(), what, t, m));
    }
    for (name, what) in [
        ("register-proxy", "POST /proxies"),
        ("record-metrics", "POST 500 events × 100 samples"),
    ] {
        let (mut t, mut m) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            let event = if name == "register-proxy" {
                register_case(run)
            } else {
                record_case(run)
            };
            let (ms, rss, body) = cold_invoke(&bin_dir.join(name), &env, &event).await;
            assert!(body.contains("\"statusCode\":201"), "{name}: {body}");
            t.push(ms);
            m.push(rss);
        }
        all.push((name.to_string(), what.to_string(), t, m));
    }
    for (name, what, t, m) in all {
        let (a, b, c) = stats(t);
        let peak = m.iter().cloned().fold(0.0, f64::max);
        println!("| {name} | {what} | {a:.1} / {b:.1} / {c:.1} | {peak:.1} |");
    }
}

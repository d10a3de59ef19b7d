//! Load test against a running local stack (loopback only, bounded in time and
//! count). Many simulated proxies record batches concurrently, retrying on 503
//! or network errors with the same event ids, and re-sending a share of batches
//! on purpose; afterwards every day's totals must equal what was sent once.
//!
//!   scripts/local-stack &            # or any stack on LOAD_API_URL
//!   cargo run --release -p integration-tests --example load_test
//!
//! Settings: LOAD_API_URL (http://127.0.0.1:9000), LOAD_PROXIES (40),
//! LOAD_SECONDS (60), LOAD_BATCH (50), JWT_SECRET (the local default).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn token(secret: &str, sub: &str) -> String {
    let now = proxy_metrics::clock::Clock::system().now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 3600, "tier": "pro"}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    retries: AtomicU64,
    resends: AtomicU64,
    status_503: AtomicU64,
    status_5xx_other: AtomicU64,
    network_errors: AtomicU64,
    events_acknowledged: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
}

#[tokio::main]
async fn main() {
    let api = env("LOAD_API_URL", "http://127.0.0.1:9000");
    let proxies: usize = env("LOAD_PROXIES", "40").parse().unwrap();
    let seconds: u64 = env("LOAD_SECONDS", "60").parse().unwrap();
    let batch: usize = env("LOAD_BATCH", "50").parse().unwrap();
    let secret = env("JWT_SECRET", "local-dev-secret-change-me");
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let user = format!("load-{run}");
    let auth = format!("Bearer {}", token(&secret, &user));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let stats = Arc::new(Stats::default());

    let mut names = Vec::new();
    for p in 0..proxies {
        let name = format!("{run}-p{p}");
        let r = client
            .post(format!("{api}/proxies"))
            .header("authorization", &auth)
            .json(&json!({"proxyId": name}))
            .send()
            .await
            .expect("stack reachable");
        assert_eq!(r.status().as_u16(), 201, "register {name}");
        names.push(name);
    }

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for name in names.clone() {
        let (client, api, auth, stats) = (client.clone(), api.clone(), auth.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            // What this proxy sent, each event once: (events, requests)
            let mut sent = (0u64, 0u64);
            let mut seq = 0u64;
            let mut previous: Option<Value> = None;
            let mut n = 0u64;
            while Instant::now() < deadline && n < 10_000 {
                n += 1;
                // One batch in ten is a deliberate re-send of the previous one.
                let resend = n.is_multiple_of(10) && previous.is_some();
                let body = if resend {
                    stats.resends.fetch_add(1, Ordering::Relaxed);
                    previous.clone().unwrap()
                } else {
                    let events: Vec<Value> = (0..batch)
                        .map(|i| {
                            seq += 1;
                            let requests = 1 + (seq % 17);
                            json!({"eventType": "request", "eventId": format!("{name}-{seq}"),
                                   "healthy": !i.is_multiple_of(9),
                                   "metrics": {"requestCount": requests, "successCount": requests,
                                               "latencySamplesMs": [1.0 + (seq % 50) as f64, 3.5]}})
                        })
                        .collect();
                    sent.0 += batch as u64;
                    sent.1 += events
                        .iter()
                        .map(|e| e["metrics"]["requestCount"].as_u64().unwrap())
                        .sum::<u64>();
                    json!({ "events": events })
                };
                // Retry until acknowledged, as a proxy would (same ids).
                for attempt in 0.. {
                    if attempt > 0 {
                        stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200 * attempt.min(10))).await;
                    }
                    let t = Instant::now();
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    let result = client
                        .post(format!("{api}/proxy/metrics/{name}/record"))
                        .header("authorization", &auth)
                        .json(&body)
                        .send()
                        .await;
                    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
                    match result {
                        Ok(r) if r.status().is_success() => {
                            stats.latencies_ms.lock().await.push(elapsed);
                            let v: Value = r.json().await.unwrap_or_default();
                            stats
                                .events_acknowledged
                                .fetch_add(v["recorded"].as_u64().unwrap_or(0), Ordering::Relaxed);
                            break;
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            stats.status_503.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            stats.status_5xx_other.fetch_add(1, Ordering::Relaxed);
                            let s = r.status();
                            let text = r.text().await.unwrap_or_default();
                            panic!("unexpected {s}: {text}");
                        }
                        Err(_) => {
                            stats.network_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    assert!(attempt < 50, "gave up after 50 attempts");
                }
                previous = Some(body);
            }
            (name, sent)
        }));
    }
    let mut expected = Vec::new();
    for t in tasks {
        expected.push(t.await.unwrap());
    }
    let wall = started.elapsed().as_secs_f64();

    // Materialise, then check every proxy's day against what it sent once.
    let r = client
        .post(format!(
            "{api}/2015-03-31/functions/aggregate-metrics/invocations"
        ))
        .json(&json!({"detail-type": "Scheduled Event", "source": "aws.scheduler", "detail": {}}))
        .send()
        .await
        .unwrap();
    let report: Value = r.json().await.unwrap_or_default();
    let today = proxy_metrics::clock::Clock::system()
        .now()
        .format("%Y-%m-%d")
        .to_string();
    let mut mismatches = 0;
    let (mut total_events, mut total_requests) = (0u64, 0u64);
    for (name, (events, requests)) in &expected {
        let v: Value = client
            .get(format!("{api}/proxy/metrics/{name}/daily/{today}"))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let m = &v["metrics"];
        total_events += events;
        total_requests += requests;
        if m["eventCount"].as_u64() != Some(*events)
            || m["requestCount"].as_u64() != Some(*requests)
        {
            mismatches += 1;
            eprintln!("MISMATCH {name}: sent {events} events / {requests} requests, read {m}");
        }
    }
    let mut lat = stats.latencies_ms.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!("| load test | figure |");
    println!("|---|---|");
    println!("| simulated proxies × duration | {proxies} × {wall:.0} s, batches of {batch} |");
    println!(
        "| record requests sent (incl. retries) | {} |",
        stats.requests.load(Ordering::Relaxed)
    );
    println!(
        "| unique events sent / acknowledged as recorded | {total_events} / {} |",
        stats.events_acknowledged.load(Ordering::Relaxed)
    );
    println!(
        "| throughput (unique events recorded) | {:.0} events/s |",
        total_events as f64 / wall
    );
    println!(
        "| request latency p50 / p99 | {:.1} / {:.1} ms |",
        pct(0.5),
        pct(0.99)
    );
    println!(
        "| deliberate re-sends / retries after errors | {} / {} |",
        stats.resends.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed)
    );
    println!(
        "| 503s / other 5xx / network errors | {} / {} / {} |",
        stats.status_503.load(Ordering::Relaxed),
        stats.status_5xx_other.load(Ordering::Relaxed),
        stats.network_errors.load(Ordering::Relaxed)
    );
    println!("| aggregation after the run | {report} |");
    println!(
        "| proxies whose totals differ from what was sent once | {mismatches} of {proxies} ({total_requests} requests in all) |"
    );
    assert_eq!(mismatches, 0, "totals differ");
    assert_eq!(
        stats.events_acknowledged.load(Ordering::Relaxed),
        total_events
    );
}

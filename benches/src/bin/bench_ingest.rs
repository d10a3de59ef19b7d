//! Ingestion benchmark (std only, no criterion): the `record_metrics` handler
//! against embedded dynoxide (in memory), as the handler tests run it.
//!
//! ```sh
//! cargo run --release -p integration-tests --example bench_ingest
//! ```
//!
//! Prints markdown tables of
//! - events/s through the handler for 1-, 100- and 500-event batches, one
//!   client and several concurrent clients (every event has 100 latency samples);
//! - handler CPU time per event without storage: validation and sketch folding
//!   (`parse_record_body`), the response, and the token check, on 500-event
//!   batches with 100 samples per event (single thread, so wall time is CPU time);
//! - DynamoDB write units per event (`Store::record_events`, as dynoxide bills
//!   transactional writes: 2 WRU per KB per item, index writes included).
//!
//! Settings: `BENCH_SCALE` multiplies the event counts (default 1).

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use common::{Harness, Req, parts, user_token};
use proxy_metrics::domain::event::{parse_event, parse_record_body};
use proxy_metrics::domain::tier::Tier;
use proxy_metrics::handlers;
use proxy_metrics::storage::EventStatus;
use serde_json::{Value, json};

const SAMPLES_PER_EVENT: usize = 100;
const CONCURRENCY: usize = 4;

/// A realistic event: every metric, 100 latency samples inside [min, max].
fn event(id: &str, ts: &str, i: usize) -> Value {
    let samples: Vec<f64> = (0..SAMPLES_PER_EVENT)
        .map(|k| 10.0 + ((i * 31 + k * 17) % 4900) as f64 / 10.0)
        .collect();
    json!({"eventType": "request", "eventId": id, "timestamp": ts, "healthy": true,
           "metrics": {"requestCount": 100, "successCount": 95, "errorCount": 5,
                       "totalLatencyMs": 5000, "minLatencyMs": 10, "maxLatencyMs": 500,
                       "latencySamplesMs": samples,
                       "dataTransferredBytes": 123456, "dataReceivedBytes": 654321,
                       "connectionCount": 12, "concurrentConnections": 7,
                       "errorMessage": if i.is_multiple_of(10) { Some("upstream timeout") } else { None }}})
}

fn body(prefix: &str, batch: usize, ts: &str, first: usize) -> Value {
    if batch == 1 {
        event(&format!("{prefix}-{first}"), ts, first)
    } else {
        json!({"events": (first..first + batch)
            .map(|i| event(&format!("{prefix}-{i}"), ts, i))
            .collect::<Vec<_>>()})
    }
}

struct Run {
    batch: usize,
    clients: usize,
    events: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Sends `events` events in batches of `batch` from `clients` concurrent
/// clients to a fresh proxy; requests are built before the clock starts.
async fn throughput(
    h: &Arc<Harness>,
    token: &str,
    batch: usize,
    clients: usize,
    events: usize,
) -> Run {
    let proxy = format!("bench-{batch}-{clients}-{events}");
    let (status, b) = h.register(token, &proxy).await;
    assert_eq!(status, 201, "{b}");
    let ts = proxy_metrics::clock::Clock::system()
        .now()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let requests = events / batch;
    let mut per_client: Vec<Vec<lambda_http::Request>> = (0..clients).map(|_| Vec::new()).collect();
    for r in 0..requests {
        let req = Req::new("POST", "/proxy/metrics/{proxyId}/record")
            .param("proxyId", &proxy)
            .bearer(token)
            .json(body(&proxy, batch, &ts, r * batch))
            .build();
        per_client[r % clients].push(req);
    }
    let started = Instant::now();
    let tasks = per_client.into_iter().map(|reqs| {
        let h = h.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(reqs.len());
            for req in reqs {
                let t = Instant::now();
                let response = handlers::record_metrics(&h.app, req).await;
                latencies.push(t.elapsed());
                let (status, b, _) = parts(response);
                assert_eq!(status, 201, "{b}");
            }
            latencies
        })
    });
    let mut latencies = Vec::new();
    for l in futures::future::join_all(tasks).await {
        latencies.extend(l.expect("client task"));
    }
    let elapsed = started.elapsed();
    let day = proxy_metrics::clock::Clock::system()
        .now()
        .format("%Y-%m-%d")
        .to_string();
    let (_, b) = h.daily(token, &proxy, &day).await;
    assert_eq!(
        b["metrics"]["eventCount"],
        requests * batch,
        "every event counted once"
    );
    latencies.sort();
    Run {
        batch,
        clients,
        events: requests * batch,
        elapsed,
        latencies,
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let h = Arc::new(Harness::start().await);
    let token = user_token("bench");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# record_metrics against embedded dynoxide (in memory); {cores} cores; {SAMPLES_PER_EVENT} latency samples per event\n"
    );

    // warm-up: connections, table pages, code paths
    throughput(&h, &token, 100, 1, 1000).await;

    println!("## Throughput\n");
    println!(
        "| batch | clients | events | seconds | events/s | requests/s | p50 request | p99 request |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (batch, events) in [(1, 2000), (100, 10_000), (500, 20_000)] {
        for clients in [1, CONCURRENCY] {
            let run = throughput(&h, &token, batch, clients, events * scale).await;
            let secs = run.elapsed.as_secs_f64();
            println!(
                "| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} ms | {:.1} ms |",
                run.batch,
                run.clients,
                run.events,
                secs,
                run.events as f64 / secs,
                (run.events / run.batch) as f64 / secs,
                percentile(&run.latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&run.latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
    }

    // ------------------------------------------------ CPU without storage
    let ts = proxy_metrics::clock::Clock::system()
        .now()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let bytes = body("cpu", 500, &ts, 0).to_string().into_bytes();
    let rounds = 20 * scale;
    let now = proxy_metrics::clock::Clock::system().now();
    let mut parse = Duration::ZERO;
    let mut respond = Duration::ZERO;
    let mut response_bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let parsed = parse_record_body(std::hint::black_box(&bytes), None, now).unwrap();
        parse += t.elapsed();
        let t = Instant::now();
        // what the handler builds after storage answered
        let statuses = vec![EventStatus::Recorded; parsed.events.len()];
        let events: Vec<Value> = parsed
            .events
            .iter()
            .zip(&statuses)
            .map(|(e, s)| json!({"eventId": e.event_id, "status": s.as_str()}))
            .collect();
        let response = json!({"proxyId": "cpu", "recorded": events.len(), "duplicates": 0,
                              "events": events, "message": "Metrics recorded successfully",
                              "timestamp": proxy_metrics::clock::Clock::system().now().to_rfc3339_opts(SecondsFormat::Millis, true),
                              "tier": "pro"})
        .to_string();
        response_bytes = response.len();
        std::hint::black_box(response);
        respond += t.elapsed();
    }
    let header = format!("Bearer {token}");
    let auth_rounds = 2000;
    let t = Instant::now();
    for _ in 0..auth_rounds {
        std::hint::black_box(h.app.auth.authenticate(Some(&header)).await.unwrap());
    }
    let auth = t.elapsed() / auth_rounds;
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / (rounds * 500) as f64;
    println!(
        "\n## Handler CPU per event, storage excluded (500-event batches, {} KB body, {rounds} rounds)\n",
        bytes.len() / 1024
    );
    println!("| step | µs/event | ms per 500-event batch |");
    println!("|---|---:|---:|");
    println!(
        "| parse + validate + fold {SAMPLES_PER_EVENT} samples into a sketch | {:.2} | {:.2} |",
        per_event(parse),
        per_event(parse) * 0.5
    );
    println!(
        "| response ({} KB) | {:.2} | {:.2} |",
        response_bytes / 1024,
        per_event(respond),
        per_event(respond) * 0.5
    );
    println!(
        "| token check (once per request) | {:.3} | {:.3} |",
        auth.as_secs_f64() * 1e6 / 500.0,
        auth.as_secs_f64() * 1e3
    );
    let total = per_event(parse) + per_event(respond) + auth.as_secs_f64() * 1e6 / 500.0;
    println!("| **total** | **{total:.2}** | **{:.2}** |", total * 0.5);

    // ------------------------------------------------ write units
    println!("\n## Write units (as billed by dynoxide for TransactWriteItems)\n");
    println!("| events per request | transactions | WRU | WRU/event |");
    println!("|---:|---:|---:|---:|");
    for n in [1usize, 100, 500] {
        let events: Vec<_> = (0..n)
            .map(|i| parse_event(&event(&format!("wru-{n}-{i}"), &ts, i), None, now).unwrap())
            .collect();
        let outcome = h
            .app
            .store
            .record_events(
                proxy_metrics::storage::Destination {
                    proxy_id: "bench-wru",
                    retention_days: Tier::Pro.raw_retention_days(),
                    marked_at_ms: None,
                    dimension_pages: 1,
                    dims_since_ms: None,
                },
                &events,
                now,
            )
            .await
            .unwrap();
        println!(
            "| {n} | {} | {:.0} | {:.2} |",
            outcome.transactions,
            outcome.write_units,
            outcome.write_units / n as f64
        );
    }
}

//! Breakdown benchmark against embedded dynoxide (release build):
//!   cargo run --release -p proxy-metrics-benches --bin bench_breakdown
//! A pro proxy with 200 routes and 2 upstreams on each of 31 days (all
//! folded, plus today's pending chunks): the time and read units of a
//! breakdown by route over the 31 days.

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chrono::Duration;
use common::*;
use proxy_metrics::domain::dimensions::Dimensions;
use proxy_metrics::domain::event::{Event, EventType};
use proxy_metrics::domain::sketch::LatencySketch;
use proxy_metrics::{aggregate, domain::tier::Tier, handlers};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAYS: i64 = 31;
const ROUTES: usize = 200;
const RUNS: usize = 15;

fn event(rng: &mut StdRng, id: String, at: chrono::DateTime<chrono::Utc>, route: usize) -> Event {
    let mut sketch = LatencySketch::new();
    for _ in 0..20 {
        sketch.add(rng.random_range(1.0..400.0));
    }
    Event {
        event_id: id,
        event_type: EventType::Request,
        timestamp_ms: at.timestamp_millis(),
        healthy: true,
        request_count: 20,
        success_count: 19,
        error_count: 1,
        total_latency_ms: None,
        min_latency_ms: None,
        max_latency_ms: None,
        latency_sketch: Some(sketch),
        data_transferred_bytes: 1_000,
        data_received_bytes: 2_000,
        connection_count: 1,
        concurrent_connections: None,
        dimensions: Dimensions {
            route: Some(format!("/api/v1/service-{route:03}/items/:id")),
            upstream: Some(format!("10.0.3.{}:8080", route % 2)),
            overflow: [None; 2],
        },
        status_counts: None,
        error_message: None,
    }
}

#[tokio::main]
async fn main() {
    let h = Harness::start().await;
    let token = user_token("bench-owner");
    assert_eq!(h.register(&token, "bench").await.0, 201);
    let mut rng = StdRng::seed_from_u64(21);
    let today = now().date_naive();
    let seed = Instant::now();
    for ago in (0..DAYS).rev() {
        let day = today - Duration::days(ago);
        // noon of past days (stored directly: no late window), a minute
        // ago today
        let at = if ago == 0 {
            now() - Duration::minutes(1)
        } else {
            day.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc()
        };
        let events: Vec<Event> = (0..ROUTES)
            .map(|r| event(&mut rng, format!("d{ago}-r{r}"), at, r))
            .collect();
        h.store_events("bench", Tier::Pro, &events, 100).await;
        if ago > 0 {
            aggregate::run_all(&h.app.store).await.expect("aggregation");
        }
    }
    eprintln!(
        "seeded {DAYS} days x {ROUTES} routes in {:?}",
        seed.elapsed()
    );
    let start = day_str(today - Duration::days(DAYS - 1));
    let end = day_str(today);
    // An established proxy (dimensions since before the range: its pages
    // alone), then one that sent its first dimension today (the range
    // reaches before it: the days are read too, see `read_breakdown`).
    println!("| measurement | min | median | max | queries | RRU |");
    println!("|---|---|---|---|---|---|");
    for (label, since) in [
        ("dimensions for months", now() - Duration::days(DAYS + 60)),
        ("first dimension today", now() - Duration::hours(1)),
    ] {
        h.set_dims_since("bench", since).await;
        measure(&h, &token, &start, &end, label).await;
    }
}

async fn measure(h: &Harness, token: &str, start: &str, end: &str, label: &str) {
    let mut times = Vec::new();
    let mut used = None;
    for _ in 0..RUNS {
        let req = Req::new("GET", "/proxy/metrics/{proxyId}/breakdown")
            .param("proxyId", "bench")
            .query("by", "route")
            .query("startDate", start)
            .query("endDate", end)
            .query("limit", "500")
            .bearer(token)
            .build();
        let before = h.app.store.usage();
        let t = Instant::now();
        let (status, body, _) = parts(handlers::get_breakdown(&h.app, req).await);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        used = Some(h.app.store.usage() - before);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["count"], ROUTES, "{body}");
        let requests: u64 = body["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["requestCount"].as_u64().unwrap())
            .sum();
        assert_eq!(requests, DAYS as u64 * ROUTES as u64 * 20);
    }
    times.sort_by(f64::total_cmp);
    let used = used.expect("runs");
    println!(
        "| breakdown by route, {DAYS} days x {ROUTES} routes, {label} (ms) | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        used.queries,
        used.read_units
    );
}

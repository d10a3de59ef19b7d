//! Aggregation benchmark against embedded dynoxide (release build recommended):
//!   cargo run --release -p integration-tests --example bench_aggregate
//! Measures the pure fold (events/s), one run over 1,000 proxies × 1 day end to
//! end, and an idle run over the same table.

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chrono::Duration;
use common::*;
use proxy_metrics::aggregate;
use proxy_metrics::domain::event::{Event, EventType};
use proxy_metrics::domain::rollup::Rollup;
use proxy_metrics::domain::sketch::LatencySketch;
use proxy_metrics::domain::tier::Tier;

const PROXIES: usize = 1_000;
const EVENTS_PER_PROXY: usize = 20;

fn event(i: usize, ts_ms: i64, samples: usize) -> Event {
    let sketch = (samples > 0).then(|| {
        let mut s = LatencySketch::new();
        for k in 0..samples {
            s.add(5.0 + ((i * 31 + k * 17) % 400) as f64 * 0.7);
        }
        s
    });
    Event {
        event_id: format!("e{i}"),
        event_type: EventType::Request,
        timestamp_ms: ts_ms + (i as i64 % 86_000) * 1000,
        healthy: !i.is_multiple_of(11),
        request_count: 50,
        success_count: 48,
        error_count: 2,
        total_latency_ms: Some(2_500.0),
        min_latency_ms: None,
        max_latency_ms: None,
        latency_sketch: sketch,
        data_transferred_bytes: 4_096,
        data_received_bytes: 512,
        connection_count: 2,
        concurrent_connections: Some((i % 40) as u64),
        dimensions: Default::default(),
        status_counts: None,
        error_message: i
            .is_multiple_of(5)
            .then(|| format!("upstream error {}", i % 3)),
    }
}

#[tokio::main]
async fn main() {
    let day = (proxy_metrics::clock::Clock::system().now() - Duration::days(1)).date_naive();
    let day_start = day
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();

    // 1. The fold alone (what a run does per event once the events are read).
    let mut fold_rows = Vec::new();
    for samples in [0usize, 10, 100] {
        let events: Vec<Event> = (0..200_000).map(|i| event(i, day_start, samples)).collect();
        let t = Instant::now();
        let r = Rollup::of_events(day, &events);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(r.event_count(), 200_000);
        fold_rows.push((samples, events.len() as f64 / secs));
    }
    // Decoding the stored bodies is part of the compute too.
    let events: Vec<Event> = (0..200_000).map(|i| event(i, day_start, 10)).collect();
    let bodies: Vec<Vec<u8>> = events
        .chunks(98)
        .map(|c| proxy_metrics::storage::encode_body(&c).unwrap())
        .collect();
    let t = Instant::now();
    let mut decoded = 0usize;
    let mut r = Rollup::default();
    for b in &bodies {
        let evs: Vec<Event> = proxy_metrics::storage::decode_body(b).unwrap();
        decoded += evs.len();
        let part = Rollup::of_events(day, &evs);
        r.merge(&part);
    }
    let decode_fold_rate = decoded as f64 / t.elapsed().as_secs_f64();

    // 2. End to end: 1,000 proxies × 1 day.
    let h = Harness::start().await;
    let t = Instant::now();
    for p in 0..PROXIES {
        let evs: Vec<Event> = (0..EVENTS_PER_PROXY)
            .map(|i| event(p * 1000 + i, day_start, 10))
            .collect();
        h.store_events(&format!("proxy-{p}"), Tier::Pro, &evs, evs.len())
            .await;
    }
    let load_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    let run_secs = t.elapsed().as_secs_f64();
    assert_eq!(report.days_materialized as usize, PROXIES);
    let t = Instant::now();
    let idle = aggregate::run_all(&h.app.store).await.unwrap();
    let idle_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(idle.events_read, 0);

    println!("| measurement | figure |");
    println!("|---|---|");
    for (samples, rate) in fold_rows {
        println!("| fold only, events with {samples} latency samples | {rate:.0} events/s |");
    }
    println!("| decode stored chunks + fold (10 samples/event) | {decode_fold_rate:.0} events/s |");
    println!(
        "| end to end: {PROXIES} proxies × 1 day × {EVENTS_PER_PROXY} events | {} days, {} events in {:.2} s = {:.0} events/s, {:.1} ms/day |",
        report.days_materialized,
        report.events_read,
        run_secs,
        report.events_read as f64 / run_secs,
        run_secs * 1000.0 / report.days_materialized as f64
    );
    println!(
        "| idle run over the same table (nothing pending) | {idle_ms:.1} ms, {} events read |",
        idle.events_read
    );
    println!(
        "| (setup: recording {} events took {load_secs:.1} s) | |",
        PROXIES * EVENTS_PER_PROXY
    );
}

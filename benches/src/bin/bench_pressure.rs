//! Storage under pressure (issue 20), against embedded dynoxide (release):
//!   cargo run --release -p proxy-metrics-benches --bin bench_pressure
//! Prints: aggregation throughput for one proxy's backlog against the most a
//! proxy may record; the run's peak memory (RSS) folding hostile sketches
//! beside healthy proxies; and read times with a 10,000-chunk backlog.

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chrono::Duration;
use common::*;
use proxy_metrics::aggregate;
use proxy_metrics::domain::event::parse_event;
use proxy_metrics::domain::tier::Tier;
use serde_json::json;

const BACKLOG_CHUNKS: usize = 10_000;

/// Peak resident memory of this process so far (kB), and a way to reset it.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    // "5" resets the peak RSS counter (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let h = Harness::start_at(proxy_metrics::clock::Clock::system().now()).await;
    let now = h.app.clock.now();
    let t = user_token("bench");

    // 1. One proxy's backlog: chunks folded per second by one run.
    h.register(&t, "busy").await;
    let yesterday = (now - Duration::days(1)).date_naive();
    let events: Vec<_> = (0..BACKLOG_CHUNKS)
        .map(|i| {
            let at = yesterday.and_hms_opt(0, 0, 0).unwrap().and_utc()
                + Duration::milliseconds((i as i64) * 8_000);
            parse_event(
                &json!({"eventType": "request", "timestamp": iso(at),
                        "metrics": {"requestCount": 20, "successCount": 19, "errorCount": 1,
                                    "latencySamplesMs": [12.0 + (i % 50) as f64, 40.5, 80.25]}}),
                None,
                now,
            )
            .unwrap()
        })
        .collect();
    let started = Instant::now();
    h.store_events("busy", Tier::Pro, &events, 1).await;
    let recorded_in = started.elapsed();

    // 3 (first). Reads against the 10,000-chunk backlog, before it is folded.
    let today = now.date_naive();
    let proxy = h.app.store.get_proxy("busy").await.unwrap().unwrap();
    let timed = |start, end| {
        let store = &h.app.store;
        let proxy = &proxy;
        async move {
            let t0 = Instant::now();
            let days = store.read_days(proxy, start, end).await.unwrap();
            (
                t0.elapsed(),
                days.values().map(|d| d.event_count()).sum::<u64>(),
            )
        }
    };
    let (today_read, _) = timed(today, today).await;
    let (backlog_read, backlog_events) = timed(yesterday, yesterday).await;
    println!(
        "read | today, beside a {BACKLOG_CHUNKS}-chunk backlog on another day | {today_read:?}"
    );
    println!("read | the backlog's own day ({backlog_events} events, unfolded) | {backlog_read:?}");

    let started = Instant::now();
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    let folded_in = started.elapsed();
    let per_second = BACKLOG_CHUNKS as f64 / folded_in.as_secs_f64();
    // The most a proxy may record: 10 requests/s (the default limit), each
    // at most 6 chunks (an unsequenced 500-event batch, one day).
    let most = 10.0 * 6.0;
    println!(
        "aggregation | one proxy's backlog: {BACKLOG_CHUNKS} chunks ({} events) recorded in {recorded_in:?}, folded in {folded_in:?} | {per_second:.0} chunks/s = {:.1}× the most a proxy may record ({most} chunks/s)",
        report.events_read,
        per_second / most
    );
    let (after_read, _) = timed(yesterday, yesterday).await;
    println!("read | the same day once folded | {after_read:?}");

    // 2. Hostile sketches beside healthy proxies: the run's peak memory.
    let start = now - Duration::days(6);
    for p in 0..4 {
        let id = format!("hostile-{p}");
        h.register(&t, &id).await;
        for r in 0..18 {
            let batch: Vec<_> = (0..500)
                .map(|i| {
                    let at = start + Duration::minutes(5 * ((r * 500 + i) % 1700) as i64);
                    json!({"eventType": "latency", "timestamp": iso(at),
                           "metrics": {"requestCount": 2, "latencySamplesMs": [1e-8, 1e9]}})
                })
                .collect();
            let (s, b) = h.record(&t, &id, json!({ "events": batch })).await;
            assert_eq!(s, 201, "{b}");
        }
    }
    for p in 0..20 {
        let id = format!("healthy-{p}");
        h.register(&t, &id).await;
        h.record(
            &t,
            &id,
            json!({"events": [{"eventType": "request", "metrics": {"requestCount": 3, "successCount": 3}}]}),
        )
        .await;
    }
    let before = rss_kb();
    reset_peak_rss();
    let started = Instant::now();
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    let took = started.elapsed();
    let peak = peak_rss_kb();
    println!(
        "memory | one run over 4 hostile proxies × 18 × 500 events of [1e-8, 1e9] ms (36,000 events) and 20 healthy ones: {} proxies, {} days, {} events in {took:?} | RSS before {:.1} MB, peak {:.1} MB (+{:.1} MB)",
        report.proxies_processed,
        report.days_materialized,
        report.events_read,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    for p in 0..20 {
        let days = h
            .app
            .store
            .stored_days(&format!("healthy-{p}"), today, today)
            .await
            .unwrap();
        assert_eq!(days.len(), 1, "healthy-{p} folded in the same run");
    }
}

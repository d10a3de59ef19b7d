//! Read-path benchmark against embedded dynoxide (release build recommended):
//!   cargo run --release -p integration-tests --example bench_read
//! Prints a markdown table: 366-day range and aggregation latency (materialised
//! and not), a 7-day 5-minute series (2,016 points, one event in every
//! bucket) and its read units, rollup bytes per day, percentile error on
//! 1,000,000 samples.

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use common::*;
use proxy_metrics::domain::event::{Event, EventType};
use proxy_metrics::domain::rollup::Rollup;
use proxy_metrics::domain::sketch::LatencySketch;
use proxy_metrics::{aggregate, domain::tier::Tier, handlers};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DAYS: i64 = 366;
const EVENTS_PER_DAY: usize = 24;
const RUNS: usize = 15;

fn lognormal(rng: &mut StdRng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    (3.0 + 0.8 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).exp()
}

fn event(rng: &mut StdRng, id: String, ts: chrono::DateTime<Utc>) -> Event {
    let mut sketch = LatencySketch::new();
    for _ in 0..100 {
        sketch.add(lognormal(rng));
    }
    Event {
        event_id: id,
        event_type: EventType::Request,
        timestamp_ms: ts.timestamp_millis(),
        healthy: true,
        request_count: 100,
        success_count: 99,
        error_count: 1,
        total_latency_ms: None,
        min_latency_ms: None,
        max_latency_ms: None,
        latency_sketch: Some(sketch),
        data_transferred_bytes: 1_000,
        data_received_bytes: 2_000,
        connection_count: 3,
        concurrent_connections: Some(rng.random_range(0..50)),
        dimensions: Default::default(),
        status_counts: None,
        error_message: Some(format!("error {}", rng.random_range(0..5))),
    }
}

fn median_ms(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

async fn time_handler(
    h: &Harness,
    token: &str,
    route: &'static str,
    q: (&str, &str),
    start: &str,
    end: &str,
) -> (f64, f64, f64) {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let req = Req::new("GET", route)
            .param("proxyId", "bench")
            .query(q.0, start)
            .query(q.1, end)
            .bearer(token)
            .build();
        let t = Instant::now();
        let resp = if route.ends_with("/daily") {
            handlers::get_daily_range(&h.app, req).await
        } else {
            handlers::get_aggregation(&h.app, req).await
        };
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(resp.status(), 200);
    }
    median_ms(times)
}

/// The 7-day 5-minute series of `proxy` (2,016 points): (min, median, max)
/// ms and the read units of one request.
async fn time_series(
    h: &Harness,
    token: &str,
    proxy: &str,
    from: &str,
    to: &str,
) -> ((f64, f64, f64), f64, u64) {
    let mut times = Vec::new();
    let mut usage = None;
    for _ in 0..RUNS {
        let req = Req::new("GET", "/proxy/metrics/{proxyId}/series")
            .param("proxyId", proxy)
            .query("from", from)
            .query("to", to)
            .query("step", "5m")
            .bearer(token)
            .build();
        let before = h.app.store.usage();
        let t = Instant::now();
        let resp = handlers::get_series(&h.app, req).await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        usage.get_or_insert(h.app.store.usage() - before);
        let (status, body, _) = parts(resp);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["count"], 2016);
    }
    let usage = usage.unwrap_or_default();
    (median_ms(times), usage.read_units, usage.queries)
}

#[tokio::main]
async fn main() {
    let h = Harness::start().await;
    let token = token("bench-user", serde_json::json!({"tier": "pro"}));
    assert_eq!(h.register(&token, "bench").await.0, 201);
    let mut rng = StdRng::seed_from_u64(1);
    let today = proxy_metrics::clock::Clock::system().now().date_naive();
    let start = today - Duration::days(DAYS - 1);
    // Events for 366 days, written through the storage layer (the API only
    // accepts the last 7 days).
    let mut events = Vec::new();
    for d in 0..DAYS {
        let day = start + Duration::days(d);
        for i in 0..EVENTS_PER_DAY {
            let ts = day.and_hms_opt(i as u32, 30, 0).unwrap().and_utc();
            events.push(event(&mut rng, format!("d{d}-{i}"), ts));
        }
    }
    h.store_events("bench", Tier::Enterprise, &events, 500)
        .await;
    // The series proxy: one event in every five-minute bucket of the last
    // 7 days (2,016 events of 100 samples), beside the range's proxy.
    assert_eq!(h.register(&token, "bench-series").await.0, 201);
    let now = h.app.clock.now();
    let series_to = Utc
        .timestamp_millis_opt(now.timestamp_millis().div_euclid(300_000) * 300_000)
        .single()
        .unwrap_or(now);
    let series_from = series_to - Duration::days(7);
    let series_events: Vec<Event> = (0..2016)
        .map(|i| {
            event(
                &mut rng,
                format!("s{i}"),
                series_from + Duration::minutes(5 * i + 2),
            )
        })
        .collect();
    h.store_events("bench-series", Tier::Pro, &series_events, 288)
        .await;
    let (sf, st) = (
        series_from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        series_to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let series_raw = time_series(&h, &token, "bench-series", &sf, &st).await;
    let (s, e) = (
        start.format("%Y-%m-%d").to_string(),
        today.format("%Y-%m-%d").to_string(),
    );

    let range_raw = time_handler(
        &h,
        &token,
        "/proxy/metrics/{proxyId}/daily",
        ("startDate", "endDate"),
        &s,
        &e,
    )
    .await;
    let agg_raw = time_handler(
        &h,
        &token,
        "/proxy/metrics/{proxyId}/aggregation",
        ("periodStart", "periodEnd"),
        &s,
        &e,
    )
    .await;
    let t = Instant::now();
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    let aggregate_ms = t.elapsed().as_secs_f64() * 1000.0;
    let series_mat = time_series(&h, &token, "bench-series", &sf, &st).await;
    let range_mat = time_handler(
        &h,
        &token,
        "/proxy/metrics/{proxyId}/daily",
        ("startDate", "endDate"),
        &s,
        &e,
    )
    .await;
    let agg_mat = time_handler(
        &h,
        &token,
        "/proxy/metrics/{proxyId}/aggregation",
        ("periodStart", "periodEnd"),
        &s,
        &e,
    )
    .await;

    let rollups = h
        .app
        .store
        .stored_days("bench", start, today)
        .await
        .unwrap();
    let sizes: Vec<usize> = rollups
        .values()
        .map(|d| proxy_metrics::storage::encode_body(&d.value).unwrap().len())
        .collect();
    let avg_size = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    let max_size = sizes.iter().max().copied().unwrap_or(0);

    // Percentile error on 1,000,000 samples (log-normal), one sketch and merged from 100 parts.
    let samples: Vec<f64> = (0..1_000_000).map(|_| lognormal(&mut rng)).collect();
    let mut whole = LatencySketch::new();
    samples.iter().for_each(|v| whole.add(*v));
    let mut merged = Rollup::default();
    for part in samples.chunks(10_000) {
        let mut r = Rollup::default();
        let mut s = LatencySketch::new();
        part.iter().for_each(|v| s.add(*v));
        r.stats.sketch = s;
        merged.merge(&r);
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let exact = |q: f64| sorted[(q * (sorted.len() as f64 - 1.0)) as usize];
    let err = |got: f64, q: f64| (got - exact(q)).abs() / exact(q) * 100.0;

    println!("| measurement | min | median | max |");
    println!("|---|---|---|---|");
    for (name, (a, b, c)) in [
        ("366-day range, days not yet materialised (ms)", range_raw),
        (
            "366-day aggregation, days not yet materialised (ms)",
            agg_raw,
        ),
        ("366-day range, materialised (ms)", range_mat),
        ("366-day aggregation, materialised (ms)", agg_mat),
        (
            "7-day 5-minute series (2,016 points), buckets not yet materialised (ms)",
            series_raw.0,
        ),
        (
            "7-day 5-minute series (2,016 points), materialised (ms)",
            series_mat.0,
        ),
    ] {
        println!("| {name} | {a:.1} | {b:.1} | {c:.1} |");
    }
    println!();
    println!(
        "- series read units: not materialised {:.1} RRU in {} queries, materialised {:.1} RRU in {} queries",
        series_raw.1, series_raw.2, series_mat.1, series_mat.2
    );
    println!();
    println!(
        "- aggregation run: {} days, {} events in {aggregate_ms:.0} ms",
        report.days_materialized, report.events_read
    );
    println!(
        "- rollup body per day ({} events/day, 100 samples each): mean {avg_size:.0} B, max {max_size} B",
        EVENTS_PER_DAY
    );
    println!(
        "- sketch of 1,000,000 samples: {} B",
        whole.to_bytes().len()
    );
    for q in [0.5, 0.95, 0.99] {
        println!(
            "- p{:.0}: exact {:.3} ms, one sketch error {:.3} %, merged-from-100 error {:.3} %",
            q * 100.0,
            exact(q),
            err(whole.quantile(q).unwrap(), q),
            err(merged.stats.percentile(q).unwrap(), q)
        );
    }
}

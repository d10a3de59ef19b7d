//! What storage v2 costs, in the units DynamoDB bills (as dynoxide reports
//! them through `ReturnConsumedCapacity`), and what the aggregation's memory
//! does with a giant day. Prints markdown; `scripts/bench` runs it.
//!
//! ```sh
//! cargo run --release -p integration-tests --example bench_cost
//! ```

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chrono::Duration;
use common::record::{full_events, metered_read, metered_record};
use common::{Harness, day_str, iso, now, token};
use proxy_metrics::aggregate;
use serde_json::{Value, json};

/// On-demand list prices (us-east-1): per million write / read request units.
const USD_PER_MILLION_WRU: f64 = 0.625;
const USD_PER_MILLION_RRU: f64 = 0.125;

/// The reference fleet: 1,000 proxies, one event every 10 s each, sent as one
/// batch of 6 a minute; the schedule runs every 5 minutes.
const PROXIES: f64 = 1_000.0;
const REQUESTS_PER_PROXY_MONTH: f64 = 60.0 * 24.0 * 30.0;
const EVENTS_PER_REQUEST: f64 = 6.0;
const RUNS_PER_MONTH: f64 = 12.0 * 24.0 * 30.0;

/// Peak RSS since the last reset (VmHWM), in MB; reset with clear_refs.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The dirty mark and its note on the proxy item: two 1-WRU writes.
const MARK_WRU: f64 = 2.0;

#[tokio::main]
async fn main() {
    let h = Harness::start().await;
    let t = token("bench", json!({"tier": "enterprise"}));
    h.register(&t, "edge").await;
    let at = now();
    // The proxy's dirty mark: written by its first request, then at most
    // once per MARK_REFRESH whatever the instances (its own row below).
    let mark = metered_record(
        &h,
        &t,
        "edge",
        None,
        json!({"events": full_events(1, "warm", at)}),
    )
    .await;

    println!(
        "## Write units per request (storage v3)\n\nThe proxy's dirty mark (first request, then once per {} min, whatever the instances): +{} WRU.\n",
        proxy_metrics::storage::MARK_REFRESH.num_minutes(),
        mark.write_units - 4.0
    );
    println!("| request | events | WRU | WRU/event | target |");
    println!("|---|---:|---:|---:|---|");
    let mut sequence = 0;
    let mut sequenced_6 = 0.0;
    for (n, target) in [(6usize, "≤ 1.0"), (60, "≤ 0.2"), (500, "")] {
        let used = metered_record(
            &h,
            &t,
            "edge",
            Some(sequence),
            json!({"events": full_events(n, &format!("s{n}"), at)}),
        )
        .await;
        sequence += 1;
        if n == 6 {
            sequenced_6 = used.write_units;
        }
        println!(
            "| sequenced batch | {n} | {} | {:.3} | {target} |",
            used.write_units,
            used.write_units / n as f64
        );
    }
    for (n, target) in [(1usize, "≤ 4"), (100, "≤ 2.2")] {
        let used = metered_record(
            &h,
            &t,
            "edge",
            None,
            json!({"events": full_events(n, &format!("u{n}"), at)}),
        )
        .await;
        println!(
            "| unsequenced | {n} | {} | {:.3} | {target} |",
            used.write_units,
            used.write_units / n as f64
        );
    }

    // A busy day, folded: what reads cost.
    for b in 0..50u64 {
        metered_record(
            &h,
            &t,
            "edge",
            Some(sequence),
            json!({"events": full_events(6, &format!("d{b}"), at - Duration::minutes(b as i64))}),
        )
        .await;
        sequence += 1;
    }
    aggregate::run_all(&h.app.store).await.unwrap();
    let start = day_str(at.date_naive() - Duration::days(365));
    let end = day_str(at.date_naive());
    println!("\n## Reads (after the aggregation ran; strongly consistent)\n");
    println!("| read | queries | RRU |");
    println!("|---|---:|---:|");
    for (name, route, query) in [
        (
            "a materialised day",
            "/proxy/metrics/{proxyId}/daily/{date}",
            vec![],
        ),
        (
            "a 366-day range",
            "/proxy/metrics/{proxyId}/daily",
            vec![("startDate", start.clone()), ("endDate", end.clone())],
        ),
        ("the summary", "/proxy/metrics/{proxyId}/summary", vec![]),
    ] {
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let used = metered_read(&h, &t, route, &query).await;
        println!("| {name} | {} | {} |", used.queries, used.read_units);
    }

    // One run's worth of a proxy's batches (5 minutes: 5 batches of 6).
    println!("\n## Aggregation\n");
    let before = h.app.store.usage();
    let idle = aggregate::run_all(&h.app.store).await.unwrap();
    let idle_used = h.app.store.usage() - before;
    println!(
        "- idle run: {} queries, {} RRU, {} WRU, {} events read",
        idle_used.queries, idle_used.read_units, idle_used.write_units, idle.events_read
    );
    let mut runs = Vec::new();
    for round in 0..3u64 {
        let later = at + Duration::minutes(5 * (round as i64 + 1));
        h.app.clock.set(later);
        let t = token("bench", json!({"tier": "enterprise"}));
        for b in 0..5u64 {
            metered_record(&h, &t, "edge", Some(sequence), json!({"events": full_events(6, &format!("r{round}-{b}"), later - Duration::minutes(b as i64))})).await;
            sequence += 1;
        }
        let before = h.app.store.usage();
        let report = aggregate::run_all(&h.app.store).await.unwrap();
        let used = h.app.store.usage() - before;
        runs.push((report.events_read, used));
    }
    println!("\n| run | events read | queries | RRU | WRU | RRU/event | WRU/event |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (events, used)) in runs.iter().enumerate() {
        println!(
            "| {i} | {events} | {} | {} | {} | {:.3} | {:.3} |",
            used.queries,
            used.read_units,
            used.write_units,
            used.read_units / *events as f64,
            used.write_units / *events as f64
        );
    }
    // Without the 16 empty shards of the fleet-wide overhead: per proxy per run.
    let (events_run, run_used) = runs[2];
    let per_proxy_rru = run_used.read_units - idle_used.read_units;
    let per_proxy_wru = run_used.write_units;

    println!(
        "\n## Monthly cost of the reference fleet (DynamoDB on-demand, us-east-1 list prices)\n"
    );
    let requests = PROXIES * REQUESTS_PER_PROXY_MONTH;
    let record_wru = requests * sequenced_6;
    let refresh_minutes = proxy_metrics::storage::MARK_REFRESH.num_minutes() as f64;
    let marks_per_proxy = REQUESTS_PER_PROXY_MONTH / refresh_minutes;
    let mark_wru = PROXIES * marks_per_proxy * MARK_WRU;
    let agg_wru = PROXIES * RUNS_PER_MONTH * per_proxy_wru;
    let agg_rru = PROXIES * RUNS_PER_MONTH * per_proxy_rru + RUNS_PER_MONTH * idle_used.read_units;
    let usd = |units: f64, price: f64| units / 1e6 * price;
    println!(
        "1,000 proxies × one event per 10 s, one sequenced batch of 6 a minute = {requests:.0} requests, {:.0} events a month.\n",
        requests * EVENTS_PER_REQUEST
    );
    println!("| item | arithmetic | units/month | USD/month |");
    println!("|---|---|---:|---:|");
    println!(
        "| recording | {requests:.0} requests × {sequenced_6} WRU | {record_wru:.3e} WRU | {:.2} |",
        usd(record_wru, USD_PER_MILLION_WRU)
    );
    println!(
        "| aggregation writes | 1,000 proxies × {RUNS_PER_MONTH:.0} runs × {per_proxy_wru} WRU ({events_run} events/run) | {agg_wru:.3e} WRU | {:.2} |",
        usd(agg_wru, USD_PER_MILLION_WRU)
    );
    println!(
        "| aggregation reads | 1,000 × {RUNS_PER_MONTH:.0} × {per_proxy_rru} RRU + {RUNS_PER_MONTH:.0} × {} RRU (empty shards) | {agg_rru:.3e} RRU | {:.2} |",
        idle_used.read_units,
        usd(agg_rru, USD_PER_MILLION_RRU)
    );
    println!(
        "| dirty marks | 1,000 proxies × {marks_per_proxy:.0} (one per {refresh_minutes} min) × {MARK_WRU} WRU | {mark_wru:.3e} WRU | {:.2} |",
        usd(mark_wru, USD_PER_MILLION_WRU)
    );
    let total = usd(mark_wru, USD_PER_MILLION_WRU)
        + usd(record_wru, USD_PER_MILLION_WRU)
        + usd(agg_wru, USD_PER_MILLION_WRU)
        + usd(agg_rru, USD_PER_MILLION_RRU);
    println!("| **total** | | | **{total:.2}** |");
    println!(
        "\n(v1 at 2.67 WRU per event: {:.0} WRU = ${:.2} for recording alone.)",
        requests * EVENTS_PER_REQUEST * 2.67,
        usd(requests * EVENTS_PER_REQUEST * 2.67, USD_PER_MILLION_WRU)
    );

    // Memory of a run: a small day against a giant one (~100 MB of events).
    println!("\n## Aggregation memory: a giant day against a small one\n");
    for (name, requests, per) in [
        ("small day: 5 × 6 events", 5usize, 6usize),
        ("giant day: 200 × 500 events, 1 KB messages", 200, 500),
    ] {
        let h = Harness::start().await;
        let t = token("bench", json!({"tier": "pro"}));
        h.register(&t, "giant").await;
        let long = "x".repeat(1000);
        let started = Instant::now();
        let mut bytes = 0usize;
        for r in 0..requests {
            let body: Vec<Value> = (0..per)
                .map(|i| json!({"eventType": "error", "timestamp": iso(now() - Duration::seconds(((r * per + i) % 3600) as i64)),
                                "metrics": {"requestCount": 1, "errorCount": 1, "errorMessage": format!("{r}-{i} {long}")}}))
                .collect();
            let body = json!({"events": body});
            bytes += body.to_string().len();
            metered_record(&h, &t, "giant", Some(r as u64), body).await;
        }
        let recorded = started.elapsed();
        let base = rss_mb();
        reset_peak_rss();
        let started = Instant::now();
        let report = aggregate::run_all(&h.app.store).await.unwrap();
        let peak = peak_rss_mb();
        println!(
            "- {name}: {:.1} MB of request bodies recorded in {recorded:.1?}; run folded {} events in {:.1?}; RSS {base:.1} MB before, peak {peak:.1} MB during the run (+{:.1} MB)",
            bytes as f64 / 1e6,
            report.events_read,
            started.elapsed(),
            peak - base
        );
    }
}

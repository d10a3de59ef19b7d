//! Merging in any order, uptime, windows and error bounds.

use super::*;
use crate::domain::event::{Event, EventType};
use crate::domain::sketch::LatencySketch;
use chrono::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 15).unwrap()
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, h, m, 0).unwrap()
}

fn event(ts: DateTime<Utc>, healthy: bool) -> Event {
    Event {
        event_id: format!("e{}", ts.timestamp_millis()),
        event_type: EventType::Request,
        timestamp_ms: ts.timestamp_millis(),
        healthy,
        request_count: 0,
        success_count: 0,
        error_count: 0,
        total_latency_ms: None,
        min_latency_ms: None,
        max_latency_ms: None,
        latency_sketch: None,
        data_transferred_bytes: 0,
        data_received_bytes: 0,
        connection_count: 0,
        concurrent_connections: None,
        dimensions: Default::default(),
        status_counts: None,
        error_message: None,
    }
}

fn with_samples(ts: DateTime<Utc>, samples: &[f64]) -> Event {
    let mut e = event(ts, true);
    let mut s = LatencySketch::new();
    samples.iter().for_each(|v| s.add(*v));
    e.request_count = samples.len() as u64;
    e.success_count = samples.len() as u64;
    e.latency_sketch = Some(s);
    e
}

fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
}

fn distributions() -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = StdRng::seed_from_u64(7);
    let normal = |rng: &mut StdRng| {
        let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let n = 50_000;
    vec![
        (
            "uniform",
            (0..n).map(|_| rng.random_range(1.0..1000.0)).collect(),
        ),
        (
            "log-normal",
            (0..n)
                .map(|_| (3.0 + 0.8 * normal(&mut rng)).exp())
                .collect(),
        ),
        (
            "bimodal",
            (0..n)
                .map(|i| {
                    if i % 5 == 0 {
                        800.0 + 50.0 * normal(&mut rng).abs()
                    } else {
                        20.0 + 5.0 * normal(&mut rng).abs()
                    }
                })
                .collect(),
        ),
        (
            "heavy-tailed (Pareto a=1.2)",
            (0..n)
                .map(|_| 5.0 / rng.random_range(1e-9..1.0f64).powf(1.0 / 1.2))
                .collect(),
        ),
    ]
}

#[test]
fn percentiles_are_within_one_percent_for_a_day_and_merged_days() {
    for (name, samples) in distributions() {
        // One day: events of 500 samples each.
        let events: Vec<Event> = samples
            .chunks(500)
            .enumerate()
            .map(|(i, c)| with_samples(at(0, 0) + chrono::Duration::seconds(i as i64), c))
            .collect();
        let day_rollup = Rollup::of_events(day(), &events);
        // Merged period: the same samples spread over 10 days, merged.
        let mut period = Rollup::default();
        for (d, chunk) in samples.chunks(samples.len() / 10).enumerate() {
            let date = day() + chrono::Duration::days(d as i64);
            let ts = date.and_hms_opt(12, 0, 0).unwrap().and_utc();
            period.merge(&Rollup::of_events(date, &[with_samples(ts, chunk)]));
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.5, 0.95, 0.99] {
            let truth = exact(&sorted, q);
            for (what, got) in [
                ("day", day_rollup.stats.percentile(q)),
                ("period", period.stats.percentile(q)),
            ] {
                let got = got.unwrap();
                let err = (got - truth).abs() / truth;
                assert!(
                    err <= 0.01,
                    "{name} {what} p{q}: got {got}, exact {truth}, error {err}"
                );
            }
        }
    }
}

#[test]
fn mean_of_daily_p95s_is_not_the_period_p95() {
    // A quiet fast day and a busy slow day: the period's p95 is the slow one.
    let fast: Vec<f64> = (0..100).map(|i| 10.0 + (i % 10) as f64).collect();
    let slow: Vec<f64> = (0..10_000).map(|i| 500.0 + (i % 100) as f64).collect();
    let d1 = Rollup::of_events(day(), &[with_samples(at(1, 0), &fast)]);
    let d2 = Rollup::of_events(day(), &[with_samples(at(2, 0), &slow)]);
    let mean_of_p95s =
        (d1.stats.percentile(0.95).unwrap() + d2.stats.percentile(0.95).unwrap()) / 2.0;
    let mut merged = d1.clone();
    merged.merge(&d2);
    let mut all: Vec<f64> = fast.iter().chain(&slow).copied().collect();
    all.sort_by(f64::total_cmp);
    let truth = exact(&all, 0.95);
    let merged_p95 = merged.stats.percentile(0.95).unwrap();
    assert!((merged_p95 - truth).abs() / truth <= 0.01);
    assert!(
        (mean_of_p95s - truth).abs() / truth > 0.3,
        "the averaging mistake would be {mean_of_p95s} vs {truth}"
    );
}

#[test]
fn average_latency_is_request_weighted() {
    let mut a = event(at(1, 0), true);
    a.request_count = 1;
    a.total_latency_ms = Some(1000.0);
    let mut b = event(at(1, 1), true);
    b.request_count = 99;
    b.total_latency_ms = Some(990.0);
    let no_latency = {
        let mut e = event(at(1, 2), true);
        e.request_count = 1000;
        e
    };
    let r = Rollup::of_events(day(), &[a, b, no_latency]);
    assert_eq!(r.stats.average_latency_ms(), Some(19.9));
    assert_eq!(r.stats.request_count, 1100);
    assert_eq!(r.stats.min_latency_ms, None);
}

#[test]
fn uptime_counts_from_registration_and_to_now() {
    let r = Rollup::of_events(day(), &[event(at(12, 2), true), event(at(12, 7), false)]);
    // registered at noon, day over: 144 buckets from noon, one healthy
    let end_of_day = at(23, 59) + chrono::Duration::minutes(5);
    assert_eq!(
        r.uptime_buckets(day(), Some(at(12, 0)), end_of_day),
        Some((1, 144))
    );
    // now = 12:11: buckets 12:00, 12:05, 12:10 (in progress) observed
    assert_eq!(
        r.uptime_buckets(day(), Some(at(12, 0)), at(12, 11)),
        Some((1, 3))
    );
    // now = 12:10:00 exactly: the 12:10 bucket has not begun
    assert_eq!(
        r.uptime_buckets(day(), Some(at(12, 0)), at(12, 10)),
        Some((1, 2))
    );
    // an unhealthy-only bucket is down
    let sick = Rollup::of_events(day(), &[event(at(12, 7), false)]);
    assert_eq!(
        sick.uptime_buckets(day(), Some(at(12, 5)), at(12, 9)),
        Some((0, 1))
    );
    // registered the day before: the whole day is observed
    let before = at(0, 0) - chrono::Duration::hours(3);
    assert_eq!(
        r.uptime_buckets(day(), Some(before), end_of_day),
        Some((1, 288))
    );
    // an event before registration opens the window earlier
    let early = Rollup::of_events(day(), &[event(at(6, 0), true)]);
    assert_eq!(
        early.uptime_buckets(day(), Some(at(12, 0)), end_of_day),
        Some((1, 216))
    );
}

#[test]
fn uptime_without_data() {
    let empty = Rollup::default();
    let end_of_day = at(23, 59) + chrono::Duration::minutes(5);
    // registered, silent all day: 0, not null
    assert_eq!(
        empty.uptime_buckets(
            day(),
            Some(at(0, 0) - chrono::Duration::days(1)),
            end_of_day
        ),
        Some((0, 288))
    );
    // registered after the day: no observed window
    assert_eq!(
        empty.uptime_buckets(
            day(),
            Some(at(0, 0) + chrono::Duration::days(2)),
            end_of_day
        ),
        None
    );
    // a day in the future
    assert_eq!(
        empty.uptime_buckets(
            day(),
            Some(at(0, 0) - chrono::Duration::days(1)),
            at(0, 0) - chrono::Duration::hours(1)
        ),
        None
    );
}

#[test]
fn last_24_hours_uptime_follows_the_contract_rule() {
    let now = at(12, 2);
    let windows = SummaryWindows::at(now);
    let bucket = |h: u32, m: u32, healthy: bool| {
        let e = event(at(h, m), healthy);
        let mut b = Bucket {
            healthy,
            ..Bucket::default()
        };
        b.stats.add(&e);
        (e.timestamp_ms.div_euclid(BUCKET_MS) * BUCKET_MS, b)
    };
    let buckets: BTreeMap<i64, Bucket> = [
        bucket(11, 0, true),
        bucket(11, 5, false),
        bucket(12, 1, true),
    ]
    .into_iter()
    .collect();
    // registered long ago: the 288 buckets up to the one in progress
    let long_ago = Some(at(0, 0) - chrono::Duration::days(3));
    assert_eq!(
        windows.uptime_buckets(&buckets, long_ago, now),
        Some((2, 288))
    );
    // registered at 11:00: 11:00 … 12:00 is 13 buckets, 2 healthy
    assert_eq!(
        windows.uptime_buckets(&buckets, Some(at(11, 0)), now),
        Some((2, 13))
    );
    // an event before the registration opens the window earlier
    assert_eq!(
        windows.uptime_buckets(&buckets, Some(at(11, 30)), now),
        Some((2, 13))
    );
    // registered, silent: 0, not None
    assert_eq!(
        windows.uptime_buckets(&BTreeMap::new(), Some(at(11, 58)), now),
        Some((0, 2))
    );
    // registered now: nothing observed yet
    assert_eq!(
        windows.uptime_buckets(&BTreeMap::new(), Some(now), now),
        None
    );
    // exactly on a bucket's start, the new bucket has not begun
    assert_eq!(
        SummaryWindows::at(at(12, 5)).uptime_buckets(&buckets, Some(at(11, 0)), at(12, 5)),
        Some((2, 13))
    );
}

#[test]
fn top_errors_are_bounded_and_ordered() {
    let mut events = Vec::new();
    for i in 0..40u32 {
        for _ in 0..=i {
            let mut e = event(at(3, 0), true);
            e.error_message = Some(format!("error {i:02}"));
            events.push(e);
        }
    }
    let r = Rollup::of_events(day(), &events);
    let top = r.top_errors();
    assert_eq!(top.len(), 10);
    assert_eq!(top[0], ("error 39".to_string(), 40));
    assert_eq!(top[9], ("error 30".to_string(), 31));
}

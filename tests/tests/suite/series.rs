//! `GET /proxy/metrics/{proxyId}/series` (contract v3): values per point
//! before and after the aggregation, alignment, empty points, the 2,016-point
//! and retention limits, 1h and 1d points as the merge of their 5-minute
//! buckets and days, percentiles, uptime edges, bad input.
//!
//! Most tests pin their own instants (in the future of any CI run, as in
//! `clock_edges.rs`: no TTL sweep ever sees their items as expired); the
//! merge test runs at the suite's pinned `now()`, so `scripts/test --at`
//! moves it across midnight.

use crate::common;
use crate::series_support as support;

use chrono::{DateTime, Duration};
use common::*;
use proxy_metrics::aggregate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::*;

#[tokio::test]
async fn five_minute_points_hold_their_events_before_and_after_aggregation() {
    let (h, t) = registered("edge", "pro", utc(10, 9, 0, 0), utc(10, 12, 34, 56)).await;
    let e = |ts, body: Value| {
        let mut e = json!({"eventType": "request", "timestamp": iso(ts)});
        e.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        e
    };
    record(
        &h,
        &t,
        "edge",
        vec![
            e(
                utc(10, 10, 1, 0),
                json!({"healthy": true, "metrics": {"requestCount": 10, "successCount": 10,
            "latencySamplesMs": [10.0, 20.0, 30.0], "concurrentConnections": 3,
            "dataTransferredBytes": 100, "dataReceivedBytes": 200}}),
            ),
            e(
                utc(10, 10, 4, 59),
                json!({"healthy": false, "metrics": {"requestCount": 5, "successCount": 4,
            "errorCount": 1, "totalLatencyMs": 50.0}}),
            ),
            e(
                utc(10, 10, 15, 0),
                json!({"metrics": {"requestCount": 20, "successCount": 20,
            "concurrentConnections": 9}}),
            ),
        ],
    )
    .await;
    // from 10:02 is rounded down to 10:00; to 10:30 is exclusive: 6 points.
    let read = || series(&h, &t, "edge", utc(10, 10, 2, 0), utc(10, 10, 30, 0), "5m");
    let before = read().await;
    assert_eq!(
        starts(&before),
        ["10:00", "10:05", "10:10", "10:15", "10:20", "10:25"]
            .map(|m| format!("2030-03-10T{m}:00.000Z"))
    );
    let p = &before[0];
    assert_eq!(
        (
            p["requestCount"].as_u64(),
            p["successCount"].as_u64(),
            p["errorCount"].as_u64()
        ),
        (Some(15), Some(14), Some(1))
    );
    assert!(close(&p["successRate"], 14.0 / 15.0), "{p}");
    // request-weighted: e1 stands for 10 requests at its samples' mean (20),
    // e2 for 5 at 10: (200 + 50) / 15.
    assert!(close(&p["averageLatencyMs"], 250.0 / 15.0), "{p}");
    assert_eq!(
        (
            p["dataTransferredBytes"].as_u64(),
            p["dataReceivedBytes"].as_u64()
        ),
        (Some(100), Some(200))
    );
    assert_eq!(p["peakConcurrentConnections"], 3);
    assert_eq!(p["uptimePercentage"], 100.0);
    // observations: the samples 10, 20, 30 and e2's five requests at its
    // mean (10): p50 is 10 and p99 one of the two largest, within 1 %
    assert!(
        (p["p50LatencyMs"].as_f64().unwrap() - 10.0).abs() <= 0.1,
        "{p}"
    );
    let p99 = p["p99LatencyMs"].as_f64().unwrap();
    assert!(
        (19.8..=20.2).contains(&p99) || (29.7..=30.3).contains(&p99),
        "{p}"
    );
    // an empty point inside the observed window: counts 0, ratios null, uptime 0
    let empty = &before[1];
    assert_eq!(empty["requestCount"], 0);
    assert_eq!(empty["dataTransferredBytes"], 0);
    assert_eq!(empty["peakConcurrentConnections"], 0);
    for field in [
        "successRate",
        "averageLatencyMs",
        "p50LatencyMs",
        "p95LatencyMs",
        "p99LatencyMs",
    ] {
        assert_eq!(empty[field], Value::Null, "{field}: {empty}");
    }
    assert_eq!(empty["uptimePercentage"], 0.0);
    // no `healthy` means healthy (default true)
    assert_eq!(before[3]["requestCount"], 20);
    assert_eq!(before[3]["peakConcurrentConnections"], 9);
    assert_eq!(before[3]["uptimePercentage"], 100.0);
    assert_eq!(before[3]["averageLatencyMs"], Value::Null);

    // The aggregation changes nothing a reader sees.
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert!(report.events_read >= 3, "{report:?}");
    assert_eq!(read().await, before);
    // A new event lands on a materialised bucket: still counted (pending).
    record(
        &h,
        &t,
        "edge",
        vec![e(
            utc(10, 10, 16, 0),
            json!({"metrics": {"requestCount": 7, "successCount": 7}}),
        )],
    )
    .await;
    let after = read().await;
    assert_eq!(after[3]["requestCount"], 27);
    assert_eq!(after[0], before[0]);
}

#[tokio::test]
async fn points_align_to_utc_step_boundaries_and_to_is_exclusive() {
    let (h, t) = registered("edge", "pro", utc(9, 0, 0, 0), utc(10, 12, 0, 0)).await;
    // 1h: from 10:59:59.999 → 10:00; to 12:00:00 exact excludes the 12:00 point.
    let points = series(
        &h,
        &t,
        "edge",
        utc(10, 10, 59, 59) + Duration::milliseconds(999),
        utc(10, 12, 0, 0),
        "1h",
    )
    .await;
    assert_eq!(
        starts(&points),
        ["2030-03-10T10:00:00.000Z", "2030-03-10T11:00:00.000Z"]
    );
    // one millisecond more takes the 12:00 point
    let points = series(
        &h,
        &t,
        "edge",
        utc(10, 10, 0, 0),
        utc(10, 12, 0, 0) + Duration::milliseconds(1),
        "1h",
    )
    .await;
    assert_eq!(points.len(), 3);
    // 1d: midnight UTC, whatever the offset the instants are written with
    let (s, b) = series_raw(
        &h,
        &t,
        "edge",
        &[
            ("from", "2030-03-08T23:30:00-02:00"),
            ("to", "2030-03-10T06:00:00Z"),
            ("step", "1d"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["from"], "2030-03-09T00:00:00.000Z");
    assert_eq!(b["to"], "2030-03-10T06:00:00.000Z");
    assert_eq!(
        starts(b["points"].as_array().unwrap()),
        ["2030-03-09T00:00:00.000Z", "2030-03-10T00:00:00.000Z"]
    );
    // epoch milliseconds are instants too
    let (from, to) = (
        utc(10, 11, 7, 0).timestamp_millis(),
        utc(10, 11, 15, 0).timestamp_millis(),
    );
    let (s, b) = series_raw(
        &h,
        &t,
        "edge",
        &[
            ("from", &from.to_string()),
            ("to", &to.to_string()),
            ("step", "5m"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        starts(b["points"].as_array().unwrap()),
        ["2030-03-10T11:05:00.000Z", "2030-03-10T11:10:00.000Z"]
    );
    // every point of a silent proxy is present, empty
    let points = series(&h, &t, "edge", utc(10, 0, 0, 0), utc(10, 12, 0, 0), "5m").await;
    assert_eq!(points.len(), 144);
    assert!(
        points
            .iter()
            .all(|p| p["requestCount"] == 0 && p["successRate"].is_null())
    );
    assert!(points.iter().all(|p| p["uptimePercentage"] == 0.0));
}

/// `n` latency samples, log-normal around 20 ms.
fn samples(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            ((3.0 + 0.8 * z).exp() * 1000.0).round() / 1000.0
        })
        .collect()
}

fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
}

#[tokio::test]
async fn hourly_and_daily_points_are_the_merge_of_their_buckets_and_days() {
    // At the suite's pinned instant: the six hours before it (across
    // midnight under `scripts/test --at 00:02`).
    let now = common::now();
    let (h, t) = registered("edge", "pro", now - Duration::hours(7), now).await;
    let mut rng = StdRng::seed_from_u64(21);
    let mut by_event = Vec::new();
    let mut events = Vec::new();
    for i in 0..60 {
        let at = now - Duration::minutes(6 * 60) + Duration::seconds(i * 353);
        let s = samples(&mut rng, 50);
        by_event.push((at, s.clone()));
        let requests = rng.random_range(50..100u64);
        events.push(json!({"eventType": "request", "timestamp": iso(at), "healthy": i % 7 != 3,
            "metrics": {"requestCount": requests, "successCount": requests - i as u64 % 3, "errorCount": i as u64 % 3,
                        "latencySamplesMs": s, "dataTransferredBytes": 1000 + i, "concurrentConnections": i % 11}}));
    }
    let (first, rest) = events.split_at(30);
    record(&h, &t, "edge", first.to_vec()).await;
    aggregate::run_all(&h.app.store).await.unwrap(); // half materialised, half pending
    record(&h, &t, "edge", rest.to_vec()).await;

    let from = now - Duration::hours(7);
    let fine = series(&h, &t, "edge", from, now, "5m").await;
    let hours = series(&h, &t, "edge", from, now, "1h").await;
    for hour in &hours {
        let start = DateTime::parse_from_rfc3339(hour["start"].as_str().unwrap())
            .unwrap()
            .to_utc();
        let inside: Vec<&Value> = fine
            .iter()
            .filter(|p| {
                let at = DateTime::parse_from_rfc3339(p["start"].as_str().unwrap())
                    .unwrap()
                    .to_utc();
                at >= start && at < start + Duration::hours(1)
            })
            .collect();
        let sum = |f: &str| inside.iter().map(|p| p[f].as_u64().unwrap()).sum::<u64>();
        for field in [
            "requestCount",
            "successCount",
            "errorCount",
            "dataTransferredBytes",
            "dataReceivedBytes",
        ] {
            assert_eq!(
                hour[field].as_u64().unwrap(),
                sum(field),
                "{field} of {hour}"
            );
        }
        let peak = inside
            .iter()
            .map(|p| p["peakConcurrentConnections"].as_u64().unwrap())
            .max()
            .unwrap_or(0);
        assert_eq!(hour["peakConcurrentConnections"], peak);
        // a 5-minute point is one bucket: 100 (healthy), 0 (silent) or null
        let observed: Vec<f64> = inside
            .iter()
            .filter_map(|p| p["uptimePercentage"].as_f64())
            .collect();
        match observed.len() {
            0 => assert!(hour["uptimePercentage"].is_null(), "{hour}"),
            n => assert!(
                close(
                    &hour["uptimePercentage"],
                    observed.iter().sum::<f64>() / n as f64
                ),
                "{hour}"
            ),
        }
    }
    let total: u64 = hours
        .iter()
        .map(|p| p["requestCount"].as_u64().unwrap())
        .sum();
    assert!(total > 60 * 50, "{total}");
    // each hour's percentiles: within 1 % of the exact ones of its samples
    let mut with_samples = 0;
    for hour in &hours {
        let start = DateTime::parse_from_rfc3339(hour["start"].as_str().unwrap())
            .unwrap()
            .to_utc();
        let mut own: Vec<f64> = by_event
            .iter()
            .filter(|(at, _)| *at >= start && *at < start + Duration::hours(1))
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        if own.is_empty() {
            assert!(hour["p50LatencyMs"].is_null(), "{hour}");
            continue;
        }
        with_samples += 1;
        own.sort_by(f64::total_cmp);
        for (field, q) in [
            ("p50LatencyMs", 0.5),
            ("p95LatencyMs", 0.95),
            ("p99LatencyMs", 0.99),
        ] {
            let (got, want) = (hour[field].as_f64().unwrap(), exact(&own, q));
            assert!(
                (got - want).abs() <= 0.01 * want,
                "{field} of {hour}: exact {want}"
            );
        }
    }
    assert!(with_samples >= 6, "{with_samples}");

    // 1d points are the daily objects of their days
    let days = series(&h, &t, "edge", from, now + Duration::milliseconds(1), "1d").await;
    for point in &days {
        let day = &point["start"].as_str().unwrap()[..10];
        let daily = h.daily(&t, "edge", day).await.1["metrics"].clone();
        for field in [
            "requestCount",
            "successCount",
            "errorCount",
            "successRate",
            "averageLatencyMs",
            "p50LatencyMs",
            "p95LatencyMs",
            "p99LatencyMs",
            "dataTransferredBytes",
            "dataReceivedBytes",
            "peakConcurrentConnections",
            "uptimePercentage",
        ] {
            assert_eq!(point[field], daily[field], "{field} of {day}");
        }
    }
    assert_eq!(
        days.iter()
            .map(|p| p["requestCount"].as_u64().unwrap())
            .sum::<u64>(),
        total
    );
}

#[tokio::test]
async fn percentiles_of_a_point_are_within_one_percent_of_the_exact_ones() {
    let (h, t) = registered("edge", "pro", utc(10, 0, 0, 0), utc(10, 12, 0, 0)).await;
    let mut rng = StdRng::seed_from_u64(7);
    let mut all = Vec::new();
    let mut events = Vec::new();
    for i in 0..40 {
        let s = samples(&mut rng, 250);
        all.extend_from_slice(&s);
        events.push(json!({"eventType": "latency", "timestamp": iso(utc(10, 10, 0, 0) + Duration::seconds(i * 89)),
            "metrics": {"requestCount": 250, "successCount": 250, "latencySamplesMs": s}}));
    }
    record(&h, &t, "edge", events[..20].to_vec()).await;
    aggregate::run_all(&h.app.store).await.unwrap();
    record(&h, &t, "edge", events[20..].to_vec()).await;
    all.sort_by(f64::total_cmp);
    let points = series(&h, &t, "edge", utc(10, 10, 0, 0), utc(10, 11, 0, 0), "1h").await;
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["requestCount"], 10_000);
    for (field, q) in [
        ("p50LatencyMs", 0.5),
        ("p95LatencyMs", 0.95),
        ("p99LatencyMs", 0.99),
    ] {
        let got = points[0][field].as_f64().unwrap();
        let want = exact(&all, q);
        assert!(
            (got - want).abs() <= 0.01 * want,
            "{field}: {got} vs exact {want}"
        );
    }
}

#[tokio::test]
async fn uptime_counts_the_observed_window_only() {
    // registered at 10:07, now 10:32:10 (the 10:30 bucket is in progress)
    let (h, t) = registered("edge", "pro", utc(10, 10, 7, 0), utc(10, 10, 32, 10)).await;
    record(&h, &t, "edge", vec![
        json!({"eventType": "request", "timestamp": iso(utc(10, 10, 12, 0)), "healthy": true, "metrics": {"requestCount": 1}}),
        json!({"eventType": "request", "timestamp": iso(utc(10, 10, 21, 0)), "healthy": false, "metrics": {"requestCount": 1}}),
    ]).await;
    let points = series(&h, &t, "edge", utc(10, 9, 50, 0), utc(10, 10, 45, 0), "5m").await;
    let uptime: Vec<Value> = points
        .iter()
        .map(|p| p["uptimePercentage"].clone())
        .collect();
    let (null, zero, full) = (Value::Null, json!(0.0), json!(100.0));
    assert_eq!(
        uptime,
        // 9:50 9:55 10:00 (before registration) | 10:05 (registered inside) 10:10 (healthy)
        // 10:15 10:20 (unhealthy only) 10:25 10:30 (in progress) | 10:35 10:40 (future)
        [
            &null, &null, &null, &zero, &full, &zero, &zero, &zero, &zero, &null, &null
        ]
        .map(Clone::clone)
    );
    // hours: 9:00 wholly before, 10:00 one healthy of six observed, 11:00 after now
    let hours = series(&h, &t, "edge", utc(10, 9, 0, 0), utc(10, 12, 0, 0), "1h").await;
    assert_eq!(hours[0]["uptimePercentage"], Value::Null);
    assert!(
        close(&hours[1]["uptimePercentage"], 100.0 / 6.0),
        "{}",
        hours[1]
    );
    assert_eq!(hours[2]["uptimePercentage"], Value::Null);
    // a day: the daily object's uptime, the day before registration null
    let days = series(&h, &t, "edge", utc(9, 0, 0, 0), utc(11, 0, 0, 0), "1d").await;
    assert_eq!(days[0]["uptimePercentage"], Value::Null);
    assert!(
        close(&days[1]["uptimePercentage"], 100.0 / 6.0),
        "{}",
        days[1]
    );
    // an event dated before the registration opens the window at its bucket
    record(&h, &t, "edge", vec![json!({"eventType": "request", "timestamp": iso(utc(10, 9, 56, 0)), "metrics": {"requestCount": 1}})]).await;
    let points = series(&h, &t, "edge", utc(10, 9, 50, 0), utc(10, 10, 10, 0), "5m").await;
    let uptime: Vec<Value> = points
        .iter()
        .map(|p| p["uptimePercentage"].clone())
        .collect();
    assert_eq!(
        uptime,
        [null.clone(), full.clone(), zero.clone(), zero.clone()]
    );
}

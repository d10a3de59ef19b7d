//! Reading: daily range fill, any-period aggregation, summary, tier limits,
//! read-your-writes before and after the scheduled aggregation.

use crate::common;

use chrono::Duration;
use common::*;
use proxy_metrics::handlers;
use serde_json::{Value, json};

async fn range(h: &Harness, token: &str, proxy: &str, start: &str, end: &str) -> (u16, Value) {
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/daily")
        .param("proxyId", proxy)
        .query("startDate", start)
        .query("endDate", end)
        .bearer(token)
        .build();
    let (s, b, _) = parts(handlers::get_daily_range(&h.app, req).await);
    (s, b)
}

async fn aggregation(
    h: &Harness,
    token: &str,
    proxy: &str,
    start: &str,
    end: &str,
) -> (u16, Value) {
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/aggregation")
        .param("proxyId", proxy)
        .query("periodStart", start)
        .query("periodEnd", end)
        .bearer(token)
        .build();
    let (s, b, _) = parts(handlers::get_aggregation(&h.app, req).await);
    (s, b)
}

async fn summary(h: &Harness, token: &str, proxy: &str) -> (u16, Value) {
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/summary")
        .param("proxyId", proxy)
        .bearer(token)
        .build();
    let (s, b, _) = parts(handlers::get_summary(&h.app, req).await);
    (s, b)
}

fn days_ago(n: i64) -> String {
    (now() - Duration::days(n)).format("%Y-%m-%d").to_string()
}

fn at_days_ago(n: i64, hour: u32) -> String {
    let day = (now() - Duration::days(n)).date_naive();
    day.and_hms_opt(hour, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ev(ts: &str, requests: u64, samples: &[f64]) -> Value {
    json!({"eventType": "latency", "timestamp": ts,
           "metrics": {"requestCount": requests, "successCount": requests,
                       "latencySamplesMs": samples, "dataTransferredBytes": 10 * requests}})
}

#[tokio::test]
async fn range_fills_every_day_in_order() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    for (days, reqs) in [(5, 7u64), (2, 11), (1, 13)] {
        let (s, b) = h
            .record(
                &t,
                "p1",
                json!({"events": [ev(&at_days_ago(days, 10), reqs, &[5.0, 6.0])]}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = range(&h, &t, "p1", &days_ago(6), &days_ago(0)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["count"], 7);
    assert_eq!(b["startDate"], days_ago(6));
    assert_eq!(b["endDate"], days_ago(0));
    let days: Vec<&Value> = b["metrics"].as_array().unwrap().iter().collect();
    let dates: Vec<String> = days
        .iter()
        .map(|d| d["date"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dates, (0..7).rev().map(days_ago).collect::<Vec<_>>());
    let requests: Vec<u64> = days
        .iter()
        .map(|d| d["requestCount"].as_u64().unwrap())
        .collect();
    assert_eq!(requests, vec![0, 7, 0, 0, 11, 13, 0]);
    // an empty day: zero counts, null ratios and latencies
    assert_eq!(days[0]["successRate"], Value::Null);
    assert_eq!(days[0]["p95LatencyMs"], Value::Null);
    assert_eq!(days[0]["eventCount"], 0);
}

#[tokio::test]
async fn aggregation_merges_sketches_and_sums() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    // day A: 1000 fast samples; day B: 50 slow samples
    let fast: Vec<f64> = (0..1000).map(|i| 10.0 + (i % 50) as f64 * 0.1).collect();
    let slow: Vec<f64> = (0..50).map(|i| 900.0 + i as f64).collect();
    h.record(&t, "p1", ev(&at_days_ago(3, 8), 1000, &fast))
        .await;
    h.record(&t, "p1", ev(&at_days_ago(2, 8), 50, &slow)).await;
    let (s, b) = aggregation(&h, &t, "p1", &days_ago(4), &days_ago(1)).await;
    assert_eq!(s, 200, "{b}");
    let m = &b["metrics"];
    assert_eq!(m["daysWithData"], 2, "{b}");
    assert_eq!(m["totalRequestCount"], 1050);
    assert_eq!(m["totalDataTransferredBytes"], 10_500);
    let mut all: Vec<f64> = fast.iter().chain(&slow).copied().collect();
    all.sort_by(f64::total_cmp);
    for (field, q) in [
        ("p50LatencyMs", 0.5),
        ("p95LatencyMs", 0.95),
        ("p99LatencyMs", 0.99),
    ] {
        let exact = all[(q * (all.len() as f64 - 1.0)) as usize];
        let got = m[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing: {b}"));
        assert!(
            (got - exact).abs() / exact <= 0.01,
            "{field}: {got} vs exact {exact}"
        );
    }
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    assert!((m["averageLatencyMs"].as_f64().unwrap() - mean).abs() < 1e-6);
    assert_eq!(m["minLatencyMs"], 10.0);
    assert_eq!(m["maxLatencyMs"], 949.0);
}

#[tokio::test]
async fn tier_limits_and_strict_dates() {
    let h = Harness::start().await;
    let free = token("alice", json!({}));
    let pro = token("alice", json!({"tier": "pro"}));
    let odd = token("alice", json!({"tier": "platinum"}));
    h.register(&pro, "p1").await;
    let (s, b) = range(&h, &free, "p1", "2024-01-01", "2024-01-31").await;
    assert_eq!((s, b["tier"].as_str()), (200, Some("free")));
    let (s, b) = range(&h, &free, "p1", "2024-01-01", "2024-02-01").await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    let (s, b) = range(&h, &odd, "p1", "2024-01-01", "2024-02-01").await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    let (s, b) = aggregation(&h, &pro, "p1", "2024-01-01", "2024-12-31").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = aggregation(&h, &pro, "p1", "2024-01-01", "2025-01-01").await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    let (s, b) = range(&h, &pro, "p1", "2024-01-10", "2024-01-09").await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let (s, b) = range(&h, &pro, "p1", "2024-02-30", "2024-03-01").await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/daily")
        .param("proxyId", "p1")
        .bearer(&pro)
        .build();
    let (s, b, _) = parts(handlers::get_daily_range(&h.app, req).await);
    assert_error(s, &b, 400, "INVALID_REQUEST");
}

#[tokio::test]
async fn summary_windows() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    let now = now();
    let iso = |d: Duration| (now - d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let batch = json!({"events": [
        {"eventType": "request", "timestamp": iso(Duration::minutes(10)),
         "metrics": {"requestCount": 10, "successCount": 9, "errorCount": 1, "totalLatencyMs": 100,
                     "concurrentConnections": 4}},
        {"eventType": "request", "timestamp": iso(Duration::hours(3)),
         "metrics": {"requestCount": 100, "successCount": 100, "totalLatencyMs": 5000,
                     "concurrentConnections": 9}},
        {"eventType": "request", "timestamp": iso(Duration::hours(30)),
         "metrics": {"requestCount": 1000, "successCount": 1000}}
    ]});
    let (s, b) = h.record(&t, "p1", batch).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = summary(&h, &t, "p1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["lastHour"]["requestCount"], 10);
    assert_eq!(b["lastHour"]["errorCount"], 1);
    assert_eq!(b["lastHour"]["successRate"], 0.9);
    assert_eq!(b["lastHour"]["averageLatencyMs"], 10.0);
    assert_eq!(b["last24Hours"]["requestCount"], 110);
    assert_eq!(b["last24Hours"]["averageLatencyMs"], 5100.0 / 110.0);
    assert_eq!(b["concurrentConnections"], 4);
    assert_eq!(b["lastEventAt"], iso(Duration::minutes(10)));
}

#[tokio::test]
async fn summary_of_a_silent_proxy_has_nulls() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "quiet").await;
    let (s, b) = summary(&h, &t, "quiet").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["lastHour"]["requestCount"], 0);
    assert_eq!(b["lastHour"]["successRate"], Value::Null);
    assert_eq!(b["lastHour"]["p95LatencyMs"], Value::Null);
    assert_eq!(b["concurrentConnections"], Value::Null);
    assert_eq!(b["lastEventAt"], Value::Null);
}

#[tokio::test]
async fn reads_need_scope_and_ownership() {
    let h = Harness::start().await;
    let owner = user_token("alice");
    h.register(&owner, "p1").await;
    let writer_only = token("alice", json!({"scope": "metrics:write"}));
    let (s, b) = range(&h, &writer_only, "p1", "2024-01-01", "2024-01-02").await;
    assert_error(s, &b, 403, "FORBIDDEN");
    let other_proxy_token = token("alice", json!({"proxy_id": "p2"}));
    let (s, b) = summary(&h, &other_proxy_token, "p1").await;
    assert_error(s, &b, 403, "FORBIDDEN");
    let mallory = user_token("mallory");
    for (s, b) in [
        range(&h, &mallory, "p1", "2024-01-01", "2024-01-02").await,
        aggregation(&h, &mallory, "p1", "2024-01-01", "2024-01-02").await,
        summary(&h, &mallory, "p1").await,
        summary(&h, &mallory, "nobody").await,
    ] {
        assert_error(s, &b, 404, "NOT_FOUND");
    }
}

#[tokio::test]
async fn summary_latest_figures_come_from_an_older_day() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p1").await;
    let ts = at_days_ago(3, 10);
    let event = json!({"eventType": "connection", "timestamp": ts,
                       "metrics": {"concurrentConnections": 5, "connectionCount": 2}});
    assert_eq!(h.record(&t, "p1", event).await.0, 201);
    let (s, b) = summary(&h, &t, "p1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["last24Hours"]["requestCount"], 0);
    assert_eq!(b["concurrentConnections"], 5);
    assert_eq!(b["lastEventAt"], ts.replace('Z', ".000Z"));
}

//! `/metrics`' counters since registration (contract v3): exact, never
//! down (across the aggregation, across midnight), history included.

use crate::common;

use std::collections::BTreeMap;

use chrono::Duration;
use common::*;
use proxy_metrics::aggregate;
use proxy_metrics::domain::event::{Event, EventType};
use proxy_metrics::domain::tier::Tier;
use proxy_metrics::handlers;
use serde_json::json;

fn text(response: lambda_http::Response<lambda_http::Body>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        lambda_http::Body::Binary(b) => String::from_utf8(b.clone()).expect("UTF-8 body"),
        _ => String::new(),
    };
    (status, body)
}

/// (metric name, status class or "") → value, for `proxy`.
async fn counters(h: &Harness, token: &str, proxy: &str) -> BTreeMap<(String, String), f64> {
    let req = Req::new("GET", "/metrics").bearer(token).build();
    let (status, text) = text(handlers::get_prometheus_metrics(&h.app, req).await);
    assert_eq!(status, 200, "{text}");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse_at(lines, now()).expect("exposition parses");
    let mut out = BTreeMap::new();
    for sample in scrape.samples {
        if !sample.metric.ends_with("_total") || sample.labels.get("proxy") != Some(proxy) {
            continue;
        }
        let class = sample.labels.get("status_class").unwrap_or("").to_string();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            other => panic!("{} is not a counter: {other:?}", sample.metric),
        };
        out.insert((sample.metric, class), value);
    }
    out
}

fn get(m: &BTreeMap<(String, String), f64>, name: &str, class: &str) -> f64 {
    *m.get(&(name.to_string(), class.to_string()))
        .unwrap_or_else(|| panic!("{name}{{{class}}} missing in {m:?}"))
}

fn event(at: chrono::DateTime<chrono::Utc>, requests: u64, errors: u64) -> serde_json::Value {
    json!({"eventType": "request", "timestamp": iso(at),
           "metrics": {"requestCount": requests, "successCount": requests - errors,
                       "errorCount": errors, "dataTransferredBytes": 100 * requests,
                       "dataReceivedBytes": 10 * requests}})
}

#[tokio::test]
async fn counters_hold_every_event_and_never_go_down() {
    let h = Harness::start().await;
    let t = user_token("u1");
    h.register(&t, "p1").await;
    let n = now();
    // yesterday and today: counters do not restart at midnight
    let mut with_status = event(n - Duration::minutes(1), 10, 2);
    with_status["metrics"]["statusCounts"] = json!({"2xx": 6, "4xx": 2, "5xx": 2});
    let first = json!({"events": [event(n - Duration::days(1), 5, 1), with_status]});
    assert_eq!(h.record(&t, "p1", first).await.0, 201);
    let mut seen: Vec<BTreeMap<(String, String), f64>> = Vec::new();
    let expect = |requests: f64, errors: f64, s2xx: f64, s4xx: f64, s5xx: f64| {
        move |m: &BTreeMap<(String, String), f64>| {
            assert_eq!(get(m, "proxy_metrics_errors_total", ""), errors, "{m:?}");
            assert_eq!(get(m, "proxy_metrics_requests_total", "2xx"), s2xx, "{m:?}");
            assert_eq!(get(m, "proxy_metrics_requests_total", "4xx"), s4xx, "{m:?}");
            assert_eq!(get(m, "proxy_metrics_requests_total", "5xx"), s5xx, "{m:?}");
            assert_eq!(get(m, "proxy_metrics_requests_total", "1xx"), 0.0);
            assert_eq!(
                get(m, "proxy_metrics_data_transferred_bytes_total", ""),
                100.0 * requests
            );
            assert_eq!(
                get(m, "proxy_metrics_data_received_bytes_total", ""),
                10.0 * requests
            );
        }
    };
    let check = expect(15.0, 3.0, 4.0 + 6.0, 2.0, 1.0 + 2.0);
    let m = counters(&h, &t, "p1").await;
    check(&m);
    seen.push(m);
    aggregate::run_all(&h.app.store).await.unwrap();
    let m = counters(&h, &t, "p1").await;
    check(&m);
    seen.push(m);
    // more, pending beside what was folded; then folded too
    assert_eq!(
        h.record(&t, "p1", event(n - Duration::seconds(5), 4, 4))
            .await
            .0,
        201
    );
    let check = expect(19.0, 7.0, 10.0, 2.0, 7.0);
    let m = counters(&h, &t, "p1").await;
    check(&m);
    seen.push(m);
    aggregate::run_all(&h.app.store).await.unwrap();
    aggregate::run_all(&h.app.store).await.unwrap();
    let m = counters(&h, &t, "p1").await;
    check(&m);
    seen.push(m);
    for pair in seen.windows(2) {
        for (k, v) in &pair[0] {
            assert!(pair[1][k] >= *v, "{k:?} went down: {v} -> {}", pair[1][k]);
        }
    }
}

#[tokio::test]
async fn counters_include_the_days_folded_before_they_existed() {
    let h = Harness::start().await;
    let t = user_token("u1");
    h.register(&t, "p1").await;
    // Days materialised as a build before the counters left them: day
    // items, and no totals item (stored and folded, then the item deleted).
    let n = now();
    let events: Vec<Event> = (0..3)
        .map(|i| Event {
            event_id: format!("e{i}"),
            event_type: EventType::Request,
            timestamp_ms: (n - Duration::days(i)).timestamp_millis(),
            healthy: true,
            request_count: 10,
            success_count: 9,
            error_count: 1,
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
        })
        .collect();
    h.store_events("p1", Tier::Pro, &events, 1).await;
    aggregate::run_all(&h.app.store).await.unwrap();
    h.client
        .delete_item()
        .table_name(TABLE)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("TOTALS#p1".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("TOTALS".into()),
        )
        .send()
        .await
        .unwrap();
    let m = counters(&h, &t, "p1").await;
    assert_eq!(get(&m, "proxy_metrics_errors_total", ""), 3.0);
    // a new event: its fold creates the item from the days, plus itself
    assert_eq!(h.record(&t, "p1", event(n, 2, 2)).await.0, 201);
    aggregate::run_all(&h.app.store).await.unwrap();
    let m = counters(&h, &t, "p1").await;
    assert_eq!(get(&m, "proxy_metrics_errors_total", ""), 5.0);
    assert_eq!(get(&m, "proxy_metrics_requests_total", "2xx"), 27.0);
}

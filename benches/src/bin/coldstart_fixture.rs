//! The storage a cold-start measurement needs (`scripts/coldstart`): dynoxide
//! on `127.0.0.1:$PORT` holding the template's table, a registered proxy with
//! a materialised day, and the API Gateway events (every read function's
//! included) of the measured requests
//! (with a token) written to `$OUT_DIR`. Serves until its stdin closes.
//!
//! ```sh
//! PORT=8471 OUT_DIR=target/coldstart cargo run --release -p integration-tests --example coldstart_fixture
//! ```

#[path = "../../../tests/tests/common/mod.rs"]
mod common;

use common::{Harness, Req, day_str, iso, now, parts, token};
use serde_json::{Value, json};

/// The secret the measured functions are started with (`JWT_SECRET`).
const SECRET: &str = common::SECRET;

fn event(
    method: &str,
    route: &str,
    path: &str,
    params: Value,
    headers: Value,
    body: Option<String>,
) -> Value {
    json!({
        "version": "2.0", "routeKey": format!("{method} {route}"), "rawPath": path, "rawQueryString": "",
        "headers": headers, "pathParameters": params,
        "requestContext": {"accountId": "123456789012", "apiId": "local", "domainName": "localhost",
                           "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "coldstart"},
                           "requestId": "r", "routeKey": format!("{method} {route}"), "stage": "$default",
                           "time": "27/Nov/2026:00:00:00 +0000", "timeEpoch": 0},
        "body": body, "isBase64Encoded": false,
    })
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8471);
    let out = std::path::PathBuf::from(
        std::env::var("OUT_DIR").unwrap_or_else(|_| "target/coldstart".into()),
    );
    std::fs::create_dir_all(&out).unwrap();
    let db = local_stack::memory_database(common::TABLE).unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = local_stack::spawn_server(listener, db);
    // Seed through the handlers, on the real clock (the measured functions run on it).
    let h = Harness::start_with_endpoint(&format!("http://127.0.0.1:{port}")).await;
    // a token valid for a day, on the real clock
    let t = token(
        "bench",
        json!({"tier": "pro", "exp": now().timestamp() + 86_400}),
    );
    assert_eq!(h.register(&t, "edge").await.0, 201);
    let events: Vec<Value> = (0..60)
        .map(|i| json!({"eventType": "request", "timestamp": iso(now() - chrono::Duration::seconds(10 * i)),
                        "dimensions": {"route": format!("/r/{}", i % 5)},
                        "metrics": {"requestCount": 10, "successCount": 9, "errorCount": 1,
                                    "latencySamplesMs": [5.0 + i as f64, 12.0, 30.0]}}))
        .collect();
    assert_eq!(h.record(&t, "edge", json!({"events": events})).await.0, 201);
    proxy_metrics::aggregate::run_all(&h.app.store)
        .await
        .unwrap();
    let day = day_str(now().date_naive());
    let auth = json!({"host": "localhost", "authorization": format!("Bearer {t}"), "content-type": "application/json"});
    let batch: Vec<Value> = (0..6)
        .map(|i| json!({"eventType": "request", "timestamp": iso(now() - chrono::Duration::seconds(10 * i)),
                        "healthy": true,
                        "metrics": {"requestCount": 100, "successCount": 95, "errorCount": 5,
                                    "totalLatencyMs": 5000, "minLatencyMs": 10, "maxLatencyMs": 500,
                                    "latencySamplesMs": [12.5, 48, 51.2],
                                    "dataTransferredBytes": 123456, "dataReceivedBytes": 654321,
                                    "connectionCount": 12, "concurrentConnections": 7,
                                    "errorMessage": "upstream timeout"}}))
        .collect();
    let mut record_headers = auth.clone();
    record_headers["producer-id"] = json!("coldstart");
    record_headers["producer-sequence"] = json!("0");
    for (name, event) in [
        (
            "list-proxies",
            event("GET", "/proxies", "/proxies", json!({}), auth.clone(), None),
        ),
        (
            "get-daily-metrics",
            event(
                "GET",
                "/proxy/metrics/{proxyId}/daily/{date}",
                &format!("/proxy/metrics/edge/daily/{day}"),
                json!({"proxyId": "edge", "date": day}),
                auth.clone(),
                None,
            ),
        ),
        (
            "record-metrics",
            event(
                "POST",
                "/proxy/metrics/{proxyId}/record",
                "/proxy/metrics/edge/record",
                json!({"proxyId": "edge"}),
                record_headers,
                Some(json!({"events": batch}).to_string()),
            ),
        ),
        (
            "export-otlp-metrics",
            event(
                "POST",
                "/proxy/metrics/{proxyId}/v1/metrics",
                "/proxy/metrics/edge/v1/metrics",
                json!({"proxyId": "edge"}),
                auth.clone(),
                Some(otlp_export().to_string()),
            ),
        ),
    ] {
        std::fs::write(out.join(format!("{name}.json")), event.to_string()).unwrap();
    }
    // The other read functions, each with the query a dashboard sends.
    let week_ago = day_str(now().date_naive() - chrono::Duration::days(6));
    let series_from = iso(now() - chrono::Duration::hours(24));
    let series_to = iso(now());
    for (name, path, query) in [
        (
            "get-daily-range",
            "daily",
            vec![("startDate", week_ago.as_str()), ("endDate", day.as_str())],
        ),
        (
            "get-aggregation",
            "aggregation",
            vec![
                ("periodStart", week_ago.as_str()),
                ("periodEnd", day.as_str()),
            ],
        ),
        ("get-summary", "summary", vec![]),
        (
            "get-breakdown",
            "breakdown",
            vec![
                ("by", "route"),
                ("startDate", week_ago.as_str()),
                ("endDate", day.as_str()),
            ],
        ),
        (
            "get-series",
            "series",
            vec![
                ("from", series_from.as_str()),
                ("to", series_to.as_str()),
                ("step", "5m"),
            ],
        ),
    ] {
        let mut e = event(
            "GET",
            &format!("/proxy/metrics/{{proxyId}}/{path}"),
            &format!("/proxy/metrics/edge/{path}"),
            json!({"proxyId": "edge"}),
            auth.clone(),
            None,
        );
        let params: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        e["rawQueryString"] = json!(
            query
                .iter()
                .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A").replace('+', "%2B")))
                .collect::<Vec<_>>()
                .join("&")
        );
        e["queryStringParameters"] = Value::Object(params);
        std::fs::write(out.join(format!("{name}.json")), e.to_string()).unwrap();
    }
    // The fixture answers one request itself, to check the events are sound.
    let req = Req::new("GET", "/proxies").bearer(&t).build();
    assert_eq!(
        parts(proxy_metrics::handlers::list_proxies(&h.app, req).await).0,
        200
    );
    println!(
        "ready: DYNAMODB_ENDPOINT=http://127.0.0.1:{port} TABLE_NAME={} JWT_SECRET={SECRET}",
        common::TABLE
    );
    // until stdin closes
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
    })
    .await;
    server.abort();
}

/// An OTLP/JSON export of one delta duration histogram over 10 routes: after
/// the first run, every run is answered as duplicates (one state read).
fn otlp_export() -> Value {
    let time = now().timestamp_nanos_opt().unwrap_or_default() - 1_000_000_000;
    let points: Vec<Value> = (0..10)
        .map(|r| {
            json!({
            "attributes": [
                {"key": "http.route", "value": {"stringValue": format!("/api/{r}")}},
                {"key": "http.response.status_code", "value": {"intValue": "200"}}],
            "startTimeUnixNano": (time - 10_000_000_000).to_string(),
            "timeUnixNano": time.to_string(),
            "count": "6", "sum": 0.6,
            "bucketCounts": ["1", "2", "3", "0"],
            "explicitBounds": [0.05, 0.1, 0.25]})
        })
        .collect();
    json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "edge"}}]},
        "scopeMetrics": [{"scope": {"name": "coldstart"}, "metrics": [{
            "name": "http.server.request.duration", "unit": "s",
            "histogram": {"aggregationTemporality": 1, "dataPoints": points}}]}]}]})
}

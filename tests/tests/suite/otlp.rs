//! OTLP/HTTP ingestion through the handlers (API Gateway-shaped requests,
//! dynoxide through the real SDK): protobuf, JSON and gzip bodies, limits,
//! tokens, partial success, exactly once (retries, cumulative resets,
//! concurrent exports), and what the daily object and the breakdown show.

use crate::common;

use std::collections::BTreeMap;

use chrono::Duration;
use common::otlp::*;
use common::*;
use prost::Message;
use proxy_metrics::otlp::proto::*;
use serde_json::{Value, json};

async fn setup() -> (Harness, String) {
    let h = Harness::start().await;
    let t = user_token("alice");
    assert_eq!(h.register(&t, "edge").await.0, 201);
    (h, t)
}

async fn daily(h: &Harness, t: &str) -> Value {
    let (s, b) = h.daily(t, "edge", &day_str(at(0).date_naive())).await;
    assert_eq!(s, 200, "{b}");
    b["metrics"].clone()
}

async fn routes(h: &Harness, t: &str) -> BTreeMap<String, (u64, u64)> {
    let day = day_str(at(0).date_naive());
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/breakdown")
        .param("proxyId", "edge")
        .query("by", "route")
        .query("startDate", &day)
        .query("endDate", &day)
        .bearer(t);
    let (s, b, _) = parts(proxy_metrics::handlers::get_breakdown(&h.app, req.build()).await);
    assert_eq!(s, 200, "{b}");
    b["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                (
                    v["requestCount"].as_u64().unwrap(),
                    v["errorCount"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_protobuf_export_lands_in_the_daily_object_and_the_breakdown() {
    let (h, t) = setup().await;
    let a = latencies(300, 1);
    let b = latencies(120, 2);
    let e = latencies(30, 3);
    let request = export(
        "edge",
        vec![duration_histogram(
            TEMPORALITY_DELTA,
            vec![
                explicit_point(&a, http_attrs("/users/:id", 200), at(0), at(10)),
                explicit_point(&b, http_attrs("/orders", 404), at(0), at(10)),
                explicit_point(&e, http_attrs("/orders", 503), at(0), at(10)),
            ],
        )],
    );
    let answer = export_proto(&h, &t, "edge", &request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.response(), ExportMetricsServiceResponse::default());
    let m = daily(&h, &t).await;
    assert_eq!(m["requestCount"], 450);
    assert_eq!(m["successCount"], 420);
    assert_eq!(m["errorCount"], 30);
    let all: Vec<f64> = [a, b, e].concat();
    let total_ms: f64 = all.iter().sum::<f64>() * 1000.0;
    let average = m["averageLatencyMs"].as_f64().unwrap();
    assert!((average - total_ms / 450.0).abs() < 0.01, "{average}");
    let got = routes(&h, &t).await;
    assert_eq!(got["/users/:id"], (300, 0));
    assert_eq!(got["/orders"], (150, 30));
}

#[tokio::test]
async fn json_with_64_bit_integers_as_strings_is_read_and_answered_in_json() {
    let (h, t) = setup().await;
    let time = nanos(at(5));
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "traefik"}}]},
        "scopeMetrics": [{"scope": {"name": "traefik"}, "metrics": [
            {"name": "http.server.request.duration", "unit": "s", "histogram": {
                "aggregationTemporality": 2,
                "dataPoints": [{
                    "attributes": [
                        {"key": "http.route", "value": {"stringValue": "/json"}},
                        {"key": "http.response.status_code", "value": {"intValue": "500"}}],
                    "startTimeUnixNano": (time - 5_000_000_000u64).to_string(),
                    "timeUnixNano": time.to_string(),
                    "count": "7", "sum": 0.7,
                    "bucketCounts": ["0", "0", "0", "0", "0", "7", "0", "0", "0", "0", "0", "0", "0", "0", "0"],
                    "explicitBounds": BOUNDS,
                    "someFutureField": {"x": 1}
                }]}},
            {"name": "traefik_open_connections", "gauge": {"dataPoints": [
                {"timeUnixNano": time, "asInt": "3"}]}}
        ]}]
    }]});
    let answer = send(&h, path_req(&t, "edge").json(body), false).await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    let b = answer.json();
    assert_eq!(b["partialSuccess"]["rejectedDataPoints"], "0");
    let message = b["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("traefik_open_connections"), "{message}");
    assert_eq!(b["tier"], "pro");
    let m = daily(&h, &t).await;
    assert_eq!(
        (&m["requestCount"], &m["errorCount"]),
        (&json!(7), &json!(7))
    );
}

#[tokio::test]
async fn gzip_bodies_are_read_and_a_gzip_bomb_is_413() {
    let (h, t) = setup().await;
    let request = export(
        "edge",
        vec![duration_histogram(
            TEMPORALITY_DELTA,
            vec![explicit_point(
                &latencies(40, 4),
                http_attrs("/gz", 200),
                at(0),
                at(3),
            )],
        )],
    );
    let req = path_req(&t, "edge")
        .binary(&gzip(&request.encode_to_vec()), "application/x-protobuf")
        .header("content-encoding", "gzip");
    assert_eq!(send(&h, req, false).await.status, 200);
    assert_eq!(daily(&h, &t).await["requestCount"], 40);

    // 16 MiB of zeros in ~16 KB: refused while decompressing, in each format
    let bomb = gzip(&vec![0u8; 16 * 1024 * 1024]);
    let req = path_req(&t, "edge")
        .binary(&bomb, "application/x-protobuf")
        .header("content-encoding", "gzip");
    let answer = send(&h, req, false).await;
    assert_eq!(answer.status, 413);
    let status = answer.status_message();
    assert_eq!(status.code, 3);
    assert!(status.message.contains("8 MiB"), "{}", status.message);
    let req = path_req(&t, "edge")
        .binary(&bomb, "application/json")
        .header("content-encoding", "gzip");
    let answer = send(&h, req, false).await;
    assert_error(answer.status, &answer.json(), 413, "PAYLOAD_TOO_LARGE");
    // more than 1 MiB as sent
    let big = vec![b' '; 1024 * 1024 + 1];
    let answer = send(
        &h,
        path_req(&t, "edge").binary(&big, "application/json"),
        false,
    )
    .await;
    assert_error(answer.status, &answer.json(), 413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn unknown_content_types_and_bad_bodies_are_refused_in_the_right_format() {
    let (h, t) = setup().await;
    let answer = send(&h, path_req(&t, "edge").binary(b"x", "text/plain"), false).await;
    assert_error(answer.status, &answer.json(), 415, "UNSUPPORTED_MEDIA_TYPE");
    // Who is asking comes first: without a token, 401 whatever the type.
    let anonymous = Req::new("POST", PATH_ROUTE)
        .param("proxyId", "edge")
        .binary(b"x", "text/plain");
    let answer = send(&h, anonymous, false).await;
    assert_error(answer.status, &answer.json(), 401, "UNAUTHORIZED");
    // OTLP/JSON is an object; serde alone would read `[null]` as one.
    let answer = send(
        &h,
        path_req(&t, "edge").binary(b"[null]", "application/json"),
        false,
    )
    .await;
    assert_error(answer.status, &answer.json(), 400, "INVALID_REQUEST");
    let answer = send(
        &h,
        path_req(&t, "edge").binary(&[0x0a, 0xff, 0xff], "application/x-protobuf"),
        false,
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.status_message().code, 3);
    let answer = send(
        &h,
        path_req(&t, "edge").raw("{\"resourceMetrics\": 1}"),
        false,
    )
    .await;
    assert_error(answer.status, &answer.json(), 400, "INVALID_REQUEST");
}

#[tokio::test]
async fn tokens_scopes_and_owners_are_checked_as_for_record() {
    let (h, t) = setup().await;
    let request = export(
        "edge",
        vec![duration_histogram(
            TEMPORALITY_DELTA,
            vec![explicit_point(&[0.1], http_attrs("/", 200), at(0), at(1))],
        )],
    );
    let bytes = request.encode_to_vec();
    let proto = |token: &str| path_req(token, "edge").binary(&bytes, "application/x-protobuf");
    // no token / a bad one: 401
    let answer = send(&h, proto("not-a-jwt"), false).await;
    assert_eq!((answer.status, answer.status_message().code), (401, 16));
    // a token without metrics:write: 403
    let reader = token("alice", json!({"scope": "metrics:read"}));
    assert_eq!(send(&h, proto(&reader), false).await.status, 403);
    // someone else's proxy: 404
    let bob = user_token("bob");
    let answer = send(&h, proto(&bob), false).await;
    assert_eq!((answer.status, answer.status_message().code), (404, 5));
    // a proxy-scoped token for another proxy: 403
    let other = token(
        "alice",
        json!({"proxy_id": "edge-2", "scope": "metrics:write"}),
    );
    assert_eq!(send(&h, proto(&other), false).await.status, 403);
    // POST /v1/metrics: a user token has no proxy: 403
    let answer = send(
        &h,
        token_req(&t).binary(&bytes, "application/x-protobuf"),
        true,
    )
    .await;
    assert_eq!(answer.status, 403);
    assert!(answer.status_message().message.contains("proxy-scoped"));
    // a proxy-scoped token: its proxy
    let own = token(
        "alice",
        json!({"proxy_id": "edge", "scope": "metrics:write"}),
    );
    let answer = send(
        &h,
        token_req(&own).binary(&bytes, "application/x-protobuf"),
        true,
    )
    .await;
    assert_eq!(answer.status, 200);
    // ... of someone else's proxy: 404
    let stolen = token("bob", json!({"proxy_id": "edge", "scope": "metrics:write"}));
    let answer = send(
        &h,
        token_req(&stolen).binary(&bytes, "application/x-protobuf"),
        true,
    )
    .await;
    assert_eq!(answer.status, 404);
    assert_eq!(daily(&h, &t).await["requestCount"], 1);
}

#[tokio::test]
async fn refused_points_are_a_partial_success_and_other_metrics_are_named() {
    let (h, t) = setup().await;
    let old = now() - Duration::days(8);
    let mut broken = explicit_point(&[0.1, 0.2], http_attrs("/b", 200), at(0), at(2));
    broken.count = 3;
    let cpu = Metric {
        name: "process.cpu.time".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                time_unix_nano: nanos(at(2)),
                value: Some(number_data_point::Value::AsDouble(1.0)),
                ..Default::default()
            }],
            aggregation_temporality: TEMPORALITY_CUMULATIVE,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let request = export(
        "edge",
        vec![
            duration_histogram(
                TEMPORALITY_DELTA,
                vec![
                    explicit_point(&[0.1; 5], http_attrs("/a", 200), at(0), at(2)),
                    explicit_point(&[0.1], http_attrs("/old", 200), old, old),
                    broken,
                ],
            ),
            cpu,
        ],
    );
    let answer = export_proto(&h, &t, "edge", &request).await;
    assert_eq!(answer.status, 200);
    let partial = answer.response().partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 2);
    assert!(partial.error_message.contains("2 data points rejected"));
    assert!(partial.error_message.contains("7 days back"));
    assert!(partial.error_message.contains("process.cpu.time"));
    assert_eq!(daily(&h, &t).await["requestCount"], 5);
}

#[tokio::test]
async fn a_retried_export_counts_once_and_a_cumulative_reset_counts_in_full() {
    let (h, t) = setup().await;
    let cumulative = |n: usize, start: i64, time: i64| {
        export(
            "edge",
            vec![duration_histogram(
                TEMPORALITY_CUMULATIVE,
                vec![explicit_point(
                    &latencies(n, 9),
                    http_attrs("/c", 200),
                    at(start),
                    at(time),
                )],
            )],
        )
    };
    let first = cumulative(100, 0, 10);
    assert_eq!(export_proto(&h, &t, "edge", &first).await.status, 200);
    // the exporter did not get the answer and retries: counted once
    assert_eq!(export_proto(&h, &t, "edge", &first).await.status, 200);
    assert_eq!(daily(&h, &t).await["requestCount"], 100);
    // the next cumulative point adds its difference
    assert_eq!(
        export_proto(&h, &t, "edge", &cumulative(160, 0, 20))
            .await
            .status,
        200
    );
    assert_eq!(daily(&h, &t).await["requestCount"], 160);
    // the proxy restarted: a new start, counted in full
    assert_eq!(
        export_proto(&h, &t, "edge", &cumulative(25, 25, 30))
            .await
            .status,
        200
    );
    assert_eq!(daily(&h, &t).await["requestCount"], 185);
    // an older point arriving late is a duplicate
    assert_eq!(
        export_proto(&h, &t, "edge", &cumulative(130, 0, 15))
            .await
            .status,
        200
    );
    assert_eq!(daily(&h, &t).await["requestCount"], 185);
}

#[tokio::test]
async fn concurrent_exports_of_one_resource_never_double_count() {
    let (h, t) = setup().await;
    let other = Harness::start_with_endpoint(&h.endpoint).await;
    for round in 0..4i64 {
        // the same export twice at once (a retry racing its original), and a
        // later cumulative point of the same series racing both
        let n = 50 * (round as usize + 1);
        let same = export(
            "edge",
            vec![duration_histogram(
                TEMPORALITY_CUMULATIVE,
                vec![explicit_point(
                    &latencies(n, 5),
                    http_attrs("/r", 200),
                    at(0),
                    at(10 * round + 2),
                )],
            )],
        );
        let later = export(
            "edge",
            vec![duration_histogram(
                TEMPORALITY_CUMULATIVE,
                vec![explicit_point(
                    &latencies(n + 25, 5),
                    http_attrs("/r", 200),
                    at(0),
                    at(10 * round + 5),
                )],
            )],
        );
        let (a, b, c) = tokio::join!(
            export_proto(&h, &t, "edge", &same),
            export_proto(&other, &t, "edge", &same),
            export_proto(&other, &t, "edge", &later),
        );
        assert_eq!((a.status, b.status, c.status), (200, 200, 200));
        // whichever order they committed in, the series stands at `later`
        assert_eq!(
            daily(&h, &t).await["requestCount"],
            n as u64 + 25,
            "round {round}"
        );
    }
}

#[tokio::test]
async fn the_daily_p95_of_an_exponential_histogram_is_within_the_bound() {
    let (h, t) = setup().await;
    let values = latencies(5000, 21);
    let scale = 3;
    let metric = Metric {
        name: "http.server.request.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![exponential_point(
                &values,
                scale,
                http_attrs("/e", 200),
                at(0),
                at(10),
            )],
            aggregation_temporality: TEMPORALITY_DELTA,
        })),
        ..Default::default()
    };
    // as gzip JSON-free protobuf, then read back
    let answer = export_proto(&h, &t, "edge", &export("edge", vec![metric])).await;
    assert_eq!(answer.status, 200);
    let m = daily(&h, &t).await;
    assert_eq!(m["requestCount"], 5000);
    let base = (-f64::from(scale)).exp2().exp2();
    let bound = (1.0 + (base - 1.0) / (base + 1.0)) * 1.01 - 1.0;
    for (field, q) in [
        ("p50LatencyMs", 0.5),
        ("p95LatencyMs", 0.95),
        ("p99LatencyMs", 0.99),
    ] {
        let truth = exact_quantile(&values, q) * 1000.0;
        let got = m[field].as_f64().unwrap();
        assert!(
            (got - truth).abs() / truth <= bound,
            "{field}: {got} vs exact {truth} (bound {bound:.4})"
        );
    }
}

#[tokio::test]
async fn the_daily_p95_of_explicit_buckets_is_within_its_bucket() {
    let (h, t) = setup().await;
    let values = latencies(5000, 22);
    let request = export(
        "edge",
        vec![duration_histogram(
            TEMPORALITY_DELTA,
            vec![explicit_point(
                &values,
                http_attrs("/x", 200),
                at(0),
                at(10),
            )],
        )],
    );
    assert_eq!(export_proto(&h, &t, "edge", &request).await.status, 200);
    let m = daily(&h, &t).await;
    let truth = exact_quantile(&values, 0.95);
    let i = BOUNDS.iter().position(|b| truth <= *b).unwrap();
    let (lower, upper) = (BOUNDS[i - 1] * 1000.0, BOUNDS[i] * 1000.0);
    let got = m["p95LatencyMs"].as_f64().unwrap();
    assert!(
        got >= lower * 0.99 && got <= upper * 1.01,
        "p95 {got} outside ({lower}, {upper}]"
    );
}

#[tokio::test]
async fn active_requests_and_body_sizes_reach_the_daily_object() {
    let (h, t) = setup().await;
    let sizes = |name: &str, values: &[f64]| {
        let mut m = duration_histogram(
            TEMPORALITY_DELTA,
            vec![explicit_point(values, http_attrs("/s", 200), at(0), at(4))],
        );
        m.name = name.into();
        m.unit = "By".into();
        m
    };
    let active = Metric {
        name: "http.server.active_requests".into(),
        unit: "{request}".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                start_time_unix_nano: nanos(at(0)),
                time_unix_nano: nanos(at(4)),
                value: Some(number_data_point::Value::AsInt(9)),
                ..Default::default()
            }],
            aggregation_temporality: TEMPORALITY_CUMULATIVE,
            is_monotonic: false,
        })),
        ..Default::default()
    };
    let request = export(
        "edge",
        vec![
            sizes("http.server.response.body.size", &[1000.0, 234.0]),
            sizes("http.server.request.body.size", &[50.0]),
            active,
        ],
    );
    let answer = export_proto(&h, &t, "edge", &request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.response().partial_success, None);
    let m = daily(&h, &t).await;
    assert_eq!(m["dataTransferredBytes"], 1234);
    assert_eq!(m["dataReceivedBytes"], 50);
    assert_eq!(m["peakConcurrentConnections"], 9, "{m}");
}

#[tokio::test]
async fn a_proxy_past_its_limit_is_told_when_to_retry() {
    let h = Harness::start_with(&[
        ("RECORD_RATE_PER_PROXY", "0.01"),
        ("RECORD_BURST_PER_PROXY", "1"),
    ])
    .await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let request = export(
        "edge",
        vec![duration_histogram(
            TEMPORALITY_DELTA,
            vec![explicit_point(&[0.1], http_attrs("/", 200), at(0), at(1))],
        )],
    );
    assert_eq!(export_proto(&h, &t, "edge", &request).await.status, 200);
    let answer = export_proto(&h, &t, "edge", &request).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.status_message().code, 8);
    assert!(answer.headers["retry-after"].parse::<u64>().unwrap() >= 1);
}

mod faults {
    use super::*;
    use aws_sdk_dynamodb::config::retry::RetryConfig;
    use common::fault_proxy::{Fault, FaultConfig, FaultProxy};

    /// An app whose store goes through a fault proxy (the deployed
    /// functions' SDK retry setting), and the proxy.
    async fn faulty(h: &Harness) -> (proxy_metrics::App, FaultProxy) {
        let fault = FaultProxy::start(&h.endpoint, 7).await;
        let client = aws_sdk_dynamodb::Client::from_conf(
            sdk_client(&fault.endpoint)
                .config()
                .to_builder()
                .retry_config(RetryConfig::standard().with_max_attempts(2))
                .build(),
        );
        let app = proxy_metrics::App::with_clock(
            &config(&fault.endpoint, &[]),
            client,
            h.app.clock.clone(),
        );
        (app, fault)
    }

    fn one(n: usize, time: i64) -> ExportMetricsServiceRequest {
        export(
            "edge",
            vec![duration_histogram(
                TEMPORALITY_CUMULATIVE,
                vec![explicit_point(
                    &latencies(n, 3),
                    http_attrs("/f", 200),
                    at(0),
                    at(time),
                )],
            )],
        )
    }

    fn proto(t: &str, request: &ExportMetricsServiceRequest) -> Req {
        path_req(t, "edge").binary(&request.encode_to_vec(), "application/x-protobuf")
    }

    #[tokio::test]
    async fn storage_trouble_is_503_with_retry_after_never_500() {
        let (h, t) = setup().await;
        let (app, fault) = faulty(&h).await;
        // throttled on every write: 503, retry later
        fault.set(FaultConfig::always(Fault::Throttling).only(&["TransactWriteItems"]));
        let answer = send_to(&app, proto(&t, &one(10, 2)), false).await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.status_message().code, 14);
        assert!(answer.headers.contains_key("retry-after"));
        // a cancellation we cannot explain (a 500 for record): still 503 here
        fault.set(
            FaultConfig::always(Fault::Cancelled("ValidationError")).only(&["TransactWriteItems"]),
        );
        let answer = send_to(
            &app,
            path_req(&t, "edge").json(
                serde_json::to_value(json!({
                    "resourceMetrics": [{"scopeMetrics": [{"metrics": [{
                        "name": "http.server.request.duration", "unit": "s",
                        "histogram": {"aggregationTemporality": 1, "dataPoints": [{
                            "timeUnixNano": nanos(at(3)).to_string(), "count": "1",
                            "bucketCounts": ["1"], "explicitBounds": []}]}}]}]}]
                }))
                .unwrap(),
            ),
            false,
        )
        .await;
        assert_error(answer.status, &answer.json(), 503, "SERVICE_UNAVAILABLE");
        assert!(answer.headers.contains_key("retry-after"));
        // nothing was counted; the exporter's retry is
        fault.off();
        assert_eq!(
            send_to(&app, proto(&t, &one(10, 2)), false).await.status,
            200
        );
        assert_eq!(daily(&h, &t).await["requestCount"], 10);
    }

    #[tokio::test]
    async fn a_write_whose_answer_was_lost_counts_once() {
        let (h, t) = setup().await;
        let (app, fault) = faulty(&h).await;
        assert_eq!(
            send_to(&app, proto(&t, &one(10, 2)), false).await.status,
            200
        );
        // the transaction commits, its answer never arrives (twice)
        fault.set(
            FaultConfig::scripted(&[Fault::DropAfterForward, Fault::DropAfterForward])
                .only(&["TransactWriteItems"]),
        );
        let answer = send_to(&app, proto(&t, &one(30, 5)), false).await;
        assert_eq!(answer.status, 200);
        // and the exporter retries anyway
        fault.off();
        assert_eq!(
            send_to(&app, proto(&t, &one(30, 5)), false).await.status,
            200
        );
        assert_eq!(daily(&h, &t).await["requestCount"], 30);
        assert!(fault.stats().injected_total() >= 2);
    }
}

/// The store's exactly-once loop itself: two plans against the same state
/// read at once; the second writer loses the version condition, reads the
/// first one's state, plans again and finds its point a duplicate.
#[tokio::test]
async fn a_lost_race_is_planned_again_against_the_winners_state() {
    use proxy_metrics::otlp::map::{self, GroupState, Limits};
    use proxy_metrics::storage::otlp::{MAX_OTLP_STATE_BYTES, Planned};
    use proxy_metrics::storage::{Destination, IDEMPOTENCY_RETENTION};
    use std::sync::atomic::{AtomicU32, Ordering};

    let (h, t) = setup().await;
    let other = Harness::start_with_endpoint(&h.endpoint).await;
    let request = export(
        "edge",
        vec![duration_histogram(
            TEMPORALITY_DELTA,
            vec![explicit_point(
                &latencies(40, 1),
                http_attrs("/race", 200),
                at(0),
                at(9),
            )],
        )],
    );
    let extracted = map::extract(&request);
    let group = &extracted.groups[0];
    let plans = AtomicU32::new(0);
    let to = Destination {
        proxy_id: "edge",
        retention_days: 30,
        marked_at_ms: None,
        dimension_pages: 1,
        dims_since_ms: None,
    };
    let write = |store: &proxy_metrics::storage::Store| {
        let plans = &plans;
        let store = store.clone();
        async move {
            store
                .record_otlp_group(to, 200, group.key, now(), |stored| {
                    plans.fetch_add(1, Ordering::SeqCst);
                    let mut state = stored
                        .map(|b| GroupState::decode(b).unwrap())
                        .unwrap_or_default();
                    let limits = Limits {
                        max_state_bytes: MAX_OTLP_STATE_BYTES,
                        retention: IDEMPOTENCY_RETENTION,
                    };
                    let applied = map::apply(&mut state, group, now(), limits);
                    Planned {
                        state: applied.changed.then(|| state.encode()),
                        report: (applied.accepted, applied.duplicates),
                        events: applied.events,
                    }
                })
                .await
                .unwrap()
        }
    };
    let (a, b) = tokio::join!(write(&h.app.store), write(&other.app.store));
    let mut reports = [a.report, b.report];
    reports.sort();
    assert_eq!(
        reports,
        [(0, 1), (1, 0)],
        "one wrote, the other found a duplicate"
    );
    assert!(
        plans.load(Ordering::SeqCst) >= 3 || a.attempts + b.attempts >= 3,
        "the race was not run: {} plans",
        plans.load(Ordering::SeqCst)
    );
    assert_eq!(daily(&h, &t).await["requestCount"], 40);
}

//! OTLP exports as an exporter sends them, and the handlers' answers.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use lambda_http::Body;
use prost::Message;
use proxy_metrics::otlp::proto::*;
use serde_json::Value;

use super::{Harness, Req, now};

pub const PATH_ROUTE: &str = "/proxy/metrics/{proxyId}/v1/metrics";
pub const TOKEN_ROUTE: &str = "/v1/metrics";

pub const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

pub fn nanos(at: DateTime<Utc>) -> u64 {
    at.timestamp_nanos_opt().unwrap() as u64
}

/// The `i`-th second of a two-minute window that ends at [`now`] and never
/// crosses midnight: every instant lands on today.
pub fn at(i: i64) -> DateTime<Utc> {
    let today = now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    (now() - Duration::seconds(120)).max(today) + Duration::seconds(i)
}

pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

pub fn http_attrs(route: &str, status: i64) -> Vec<KeyValue> {
    vec![
        kv(
            "http.request.method",
            any_value::Value::StringValue("GET".into()),
        ),
        kv("http.route", any_value::Value::StringValue(route.into())),
        kv(
            "http.response.status_code",
            any_value::Value::IntValue(status),
        ),
    ]
}

/// One resource (`service.name`) and one scope holding `metrics`.
pub fn export(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue(service.into()),
                )],
                dropped_attributes_count: 0,
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "test-proxy".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub fn duration_histogram(temporality: i32, points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: "http.server.request.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temporality,
        })),
        ..Default::default()
    }
}

/// An explicit-bucket point of `values` (seconds).
pub fn explicit_point(
    values: &[f64],
    attributes: Vec<KeyValue>,
    start: DateTime<Utc>,
    time: DateTime<Utc>,
) -> HistogramDataPoint {
    let mut counts = vec![0u64; BOUNDS.len() + 1];
    for v in values {
        counts[BOUNDS.iter().position(|b| v <= b).unwrap_or(BOUNDS.len())] += 1;
    }
    HistogramDataPoint {
        attributes,
        start_time_unix_nano: nanos(start),
        time_unix_nano: nanos(time),
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        bucket_counts: counts,
        explicit_bounds: BOUNDS.to_vec(),
        flags: 0,
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
    }
}

/// An exponential point of `values` (seconds) at `scale`.
pub fn exponential_point(
    values: &[f64],
    scale: i32,
    attributes: Vec<KeyValue>,
    start: DateTime<Utc>,
    time: DateTime<Utc>,
) -> ExponentialHistogramDataPoint {
    let base = (-f64::from(scale)).exp2().exp2();
    let index = |v: f64| (v.ln() / base.ln()).ceil() as i32 - 1;
    let offset = values.iter().map(|v| index(*v)).min().unwrap_or(0);
    let top = values.iter().map(|v| index(*v)).max().unwrap_or(0);
    let mut counts = vec![0u64; (top - offset + 1).max(0) as usize];
    for v in values {
        counts[(index(*v) - offset) as usize] += 1;
    }
    ExponentialHistogramDataPoint {
        attributes,
        start_time_unix_nano: nanos(start),
        time_unix_nano: nanos(time),
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        scale,
        zero_count: 0,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        negative: None,
        flags: 0,
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
        zero_threshold: 0.0,
    }
}

/// Log-normal latencies around 80 ms, in seconds (deterministic).
pub fn latencies(n: usize, seed: u64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            (0.08f64.ln() + 0.9 * z).exp()
        })
        .collect()
}

/// The value of rank ⌊q·(n − 1)⌋ (the sketch's rank rule).
pub fn exact_quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
}

pub fn path_req(token: &str, proxy: &str) -> Req {
    Req::new("POST", PATH_ROUTE)
        .param("proxyId", proxy)
        .bearer(token)
}

pub fn token_req(token: &str) -> Req {
    Req::new("POST", TOKEN_ROUTE).bearer(token)
}

/// A handler's answer: status, headers, body bytes.
pub struct Answer {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn response(&self) -> ExportMetricsServiceResponse {
        assert_eq!(self.headers["content-type"], "application/x-protobuf");
        ExportMetricsServiceResponse::decode(self.body.as_slice()).expect("protobuf response")
    }

    pub fn status_message(&self) -> Status {
        assert_eq!(self.headers["content-type"], "application/x-protobuf");
        Status::decode(self.body.as_slice()).expect("google.rpc.Status")
    }
}

/// Sends to the path endpoint (`token_route`: the `/v1/metrics` one).
pub async fn send(h: &Harness, req: Req, token_route: bool) -> Answer {
    send_to(&h.app, req, token_route).await
}

/// [`send`] to any app (e.g. one whose client goes through a fault proxy).
pub async fn send_to(app: &proxy_metrics::App, req: Req, token_route: bool) -> Answer {
    let request = req.build();
    let response = if token_route {
        proxy_metrics::handlers::export_otlp_token_metrics(app, request).await
    } else {
        proxy_metrics::handlers::export_otlp_metrics(app, request).await
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = match response.body() {
        Body::Text(t) => t.as_bytes().to_vec(),
        Body::Binary(b) => b.clone(),
        _ => Vec::new(),
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Exports `request` as protobuf to the path endpoint.
pub async fn export_proto(
    h: &Harness,
    token: &str,
    proxy: &str,
    request: &ExportMetricsServiceRequest,
) -> Answer {
    let req = path_req(token, proxy).binary(&request.encode_to_vec(), "application/x-protobuf");
    send(h, req, false).await
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A "typical proxy": one duration histogram of 10 routes × 5 status classes.
pub fn typical_export(
    temporality: i32,
    start: DateTime<Utc>,
    time: DateTime<Utc>,
    round: u64,
) -> ExportMetricsServiceRequest {
    let mut points = Vec::new();
    for r in 0..10 {
        for (c, status) in [101, 200, 302, 404, 503].into_iter().enumerate() {
            let seed = round * 1000 + r * 10 + c as u64;
            let n = if temporality == TEMPORALITY_CUMULATIVE {
                (round as usize + 1) * 20
            } else {
                20
            };
            let values = latencies(
                n,
                if temporality == TEMPORALITY_CUMULATIVE {
                    r * 10 + c as u64
                } else {
                    seed
                },
            );
            points.push(explicit_point(
                &values,
                http_attrs(&format!("/api/v1/resource-{r}/:id"), status),
                start,
                time,
            ));
        }
    }
    export("edge", vec![duration_histogram(temporality, points)])
}

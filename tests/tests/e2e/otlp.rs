//! OTLP/HTTP ingestion (contract v3, "OTLP/HTTP ingestion") with a real
//! client: the OpenTelemetry Python SDK and its OTLP/HTTP protobuf exporter
//! (pinned in `tests/otel/requirements.txt`, installed into `.venv-otel/` by
//! `scripts/test-tools`, which prints `OTEL_PYTHON=…`) runs
//! `tests/otel/export.py` against the local stack, configured only by the
//! environment a user would set (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
//! `_HEADERS`, `_TEMPORALITY_PREFERENCE`, `_COMPRESSION`). The script records a
//! known set of HTTP server requests (`http.server.request.duration` with
//! `http.route`, `http.response.status_code`, `http.request.method`;
//! `http.server.active_requests`; the body-size histograms; one metric the
//! service does not map) in phases with a forced export after each, the last
//! phase from a restarted `MeterProvider` (a cumulative reset), and prints
//! exactly what it recorded. Then, over HTTP:
//!
//! - the daily object's `requestCount`, `successCount`, `errorCount`,
//!   `statusCounts`, bytes and peak concurrency equal what was recorded,
//!   exactly; its `p95LatencyMs` is within the contract's bound of the exact
//!   p95 (explicit buckets: inside the bucket holding it; exponential: 1 %
//!   on top of the histogram's own relative error at the smallest scale
//!   exported);
//! - the 5-minute series sums to the same counts and bytes;
//! - the breakdown by route equals the recorded counts per route (and its
//!   p95 the bound per route); by status, the five classes;
//! - every export the SDK made, posted again with the same bytes and
//!   headers (a retry), changes nothing — before and after
//!   `aggregate-metrics` (invoked through the watcher's invoke API), which
//!   itself changes nothing;
//!
//! for cumulative and delta temporality, explicit and exponential
//! histograms, plain and gzip bodies, on `POST /proxy/metrics/{id}/v1/metrics`
//! (a write-scoped user token) and on `POST /v1/metrics` (a proxy-scoped
//! token). A gzip OTLP/JSON body built here (64-bit integers as strings and
//! as numbers, enums as integers, unknown fields at every level) is counted
//! once however often it is posted; cumulative JSON points posted out of
//! order count only their newest delta, and a new start time is a reset.
//! The token rules of `/v1/metrics` close the suite.
//!
//! `scripts/test` runs it against the shared stack:
//! `E2E_API_URL=… OTEL_PYTHON=… cargo test -p integration-tests --test e2e -- --ignored otlp::`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use proxy_metrics::clock::Clock;
use serde_json::{Value, json};

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The contract's sketch error (DDSketch, α = 1 %).
const SKETCH_ALPHA: f64 = 0.01;

fn api() -> String {
    std::env::var("E2E_API_URL")
        .expect("E2E_API_URL must point at the local stack (scripts/test sets it)")
        .trim_end_matches('/')
        .to_string()
}

fn real_now() -> DateTime<Utc> {
    Clock::system().now()
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An HS256 token for `sub` (pro tier, 30 minutes) with `extra` claims
/// (`scope`, `proxy_id`).
fn token(sub: &str, extra: Value) -> String {
    let secret =
        std::env::var("E2E_JWT_SECRET").unwrap_or_else(|_| "local-dev-secret-change-me".into());
    let now = real_now().timestamp();
    let mut claims = json!({"sub": sub, "exp": now + 1800, "tier": "pro"});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The run's owner: a user token (all scopes) to register and read, a
/// write-only user token for the proxy path, and proxy-scoped write tokens
/// for `/v1/metrics`.
struct Owner {
    sub: String,
    user: String,
}

impl Owner {
    fn new(run: &str) -> Self {
        let sub = format!("otlp-{run}");
        let user = token(&sub, json!({}));
        Self { sub, user }
    }

    fn writer(&self) -> String {
        token(&self.sub, json!({"scope": "metrics:write"}))
    }

    fn proxy_writer(&self, proxy: &str) -> String {
        token(
            &self.sub,
            json!({"scope": "metrics:write", "proxy_id": proxy}),
        )
    }

    async fn register(&self, proxy: &str) {
        let (s, b) = get_or_post(
            reqwest::Method::POST,
            &format!("{}/proxies", api()),
            &self.user,
            Some(json!({"proxyId": proxy})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
}

async fn get_or_post(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A raw POST: status, content type, body bytes.
async fn post_raw(
    url: &str,
    token: Option<&str>,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    let mut req = reqwest::Client::new().post(url).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await.unwrap_or_default().to_vec();
    (status, content_type, bytes)
}

async fn invoke_aggregation() -> Value {
    let url = format!(
        "{}/2015-03-31/functions/aggregate-metrics/invocations",
        api()
    );
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&json!({"detail": {}}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let report: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["daysFailed"], 0, "{report}");
    report
}

/// A temporary directory, removed on drop (on failure too).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("e2e-otlp-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How the SDK is configured for one run.
#[derive(Clone, Copy, Debug)]
struct Sdk {
    temporality: &'static str,
    aggregation: &'static str,
    compression: &'static str,
}

/// Runs `tests/otel/export.py` with the pinned SDK, exporting to `endpoint`
/// with `token` as a user would configure it; saves every export's bytes in
/// `save` and returns what the script recorded and sent.
fn run_sdk(sdk: Sdk, endpoint: &str, token: &str, save: &TempDir) -> Value {
    let python = std::env::var("OTEL_PYTHON").expect(
        "OTEL_PYTHON must name the Python of the OpenTelemetry SDK's venv \
         (scripts/test-tools installs .venv-otel and prints OTEL_PYTHON=…)",
    );
    let script = std::env::var("OTEL_EXPORT_SCRIPT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/otel/export.py").to_string());
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg("--aggregation")
        .arg(sdk.aggregation)
        .arg("--save-bodies")
        .arg(&save.0)
        .env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint)
        // the W3C baggage form the OTel specification asks for: the space
        // percent-encoded
        .env(
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
            format!("Authorization=Bearer%20{token}"),
        )
        .env("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
        .env(
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            sdk.temporality,
        )
        .env("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", sdk.compression)
        .env("OTEL_SERVICE_NAME", "e2e-otlp-proxy")
        .output()
        .unwrap_or_else(|e| panic!("{python} {script}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} ({sdk:?}) failed: {}\n{stderr}",
        out.status
    );
    let recorded: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{script}: not JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    if !stderr.trim().is_empty() {
        println!("{script} ({sdk:?}) said:\n{stderr}");
    }
    recorded
}

/// Every export the SDK made was taken whole: 200, the answer in the
/// request's content type (protobuf), nothing rejected; the metric the
/// service does not map is named in a `partialSuccess.errorMessage`.
fn assert_exports_accepted(recorded: &Value, sdk: Sdk) {
    let exports = recorded["exports"].as_array().unwrap();
    assert!(
        exports.len() >= 5,
        "one export per phase at least: {exports:?}"
    );
    let mut named_unmapped = false;
    for (i, e) in exports.iter().enumerate() {
        let answer = &e["answer"];
        assert_eq!(answer["status"], 200, "export {i} ({sdk:?}): {e}");
        assert!(
            answer["contentType"]
                .as_str()
                .unwrap()
                .starts_with("application/x-protobuf"),
            "export {i}: answered in the request's content type: {e}"
        );
        assert_eq!(answer["rejectedDataPoints"], 0, "export {i} ({sdk:?}): {e}");
        if sdk.compression == "gzip" {
            assert_eq!(e["contentEncoding"], "gzip", "{e}");
        }
        named_unmapped |= answer["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("e2e.unmapped.requests");
    }
    let with_unmapped = exports
        .iter()
        .any(|e| e["metrics"].to_string().contains("e2e.unmapped.requests"));
    assert!(
        !with_unmapped || named_unmapped,
        "a metric the service ignores is named in partialSuccess.errorMessage: {exports:?}"
    );
}

/// The relative error of an exponential histogram at `scale`:
/// (2^(2^-scale) − 1) / (2^(2^-scale) + 1).
fn exponential_error(scale: i64) -> f64 {
    let base = 2f64.powf(2f64.powi(-(scale as i32)));
    (base - 1.0) / (base + 1.0)
}

/// `got` (ms) against the exact p95 that `recorded` (the script's summary
/// of all requests or of one route) gives: within its explicit bucket
/// (widened by the sketch's 1 %), or within the exponential bound of the
/// order statistics around its rank.
fn assert_p95(got: &Value, recorded: &Value, min_scale: Option<i64>, what: &str) {
    let got = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: p95LatencyMs is {got}"));
    let (low, high) = match recorded.get("p95BucketMs") {
        Some(bucket) => {
            let low = bucket[0].as_f64().unwrap();
            let high = bucket[1].as_f64().unwrap_or(f64::INFINITY);
            (low * (1.0 - SKETCH_ALPHA), high * (1.0 + SKETCH_ALPHA))
        }
        None => {
            let scale = min_scale.expect("an exponential run reports its smallest scale");
            let rel = (1.0 + SKETCH_ALPHA) * (1.0 + exponential_error(scale)) - 1.0;
            (
                recorded["p95LowMs"].as_f64().unwrap() * (1.0 - rel),
                recorded["p95HighMs"].as_f64().unwrap() * (1.0 + rel),
            )
        }
    };
    if what.ends_with("daily") {
        println!(
            "{what}: p95 {got} ms, exact {}..{} ms, allowed [{low:.3}, {high:.3}]",
            recorded["p95LowMs"], recorded["p95HighMs"]
        );
    }
    assert!(
        low <= got && got <= high,
        "{what}: p95 {got} ms outside [{low}, {high}] (exact p95 between {} and {} ms)",
        recorded["p95LowMs"],
        recorded["p95HighMs"]
    );
}

/// What the service shows for `proxy` equals what the script recorded.
async fn assert_shows(owner: &Owner, proxy: &str, day: &str, recorded: &Value, label: &str) {
    let base = format!("{}/proxy/metrics/{proxy}", api());
    let min_scale = recorded["minScale"].as_i64();
    let requests = recorded["requests"].as_u64().unwrap();
    let errors = recorded["errors"].as_u64().unwrap();

    // the daily object
    let (s, b) = get_or_post(
        reqwest::Method::GET,
        &format!("{base}/daily/{day}"),
        &owner.user,
        None,
    )
    .await;
    assert_eq!(s, 200, "{label}: {b}");
    let m = &b["metrics"];
    assert_eq!(m["requestCount"], requests, "{label}: {m}");
    assert_eq!(m["errorCount"], errors, "{label}: {m}");
    assert_eq!(m["successCount"], requests - errors, "{label}: {m}");
    assert_eq!(m["statusCounts"], recorded["statusCounts"], "{label}: {m}");
    assert_eq!(
        m["dataTransferredBytes"], recorded["dataTransferredBytes"],
        "{label}: response body sizes: {m}"
    );
    assert_eq!(
        m["dataReceivedBytes"], recorded["dataReceivedBytes"],
        "{label}: request body sizes: {m}"
    );
    assert_eq!(
        m["peakConcurrentConnections"], recorded["peakActive"],
        "{label}: active requests at the exports {}: {m}",
        recorded["activeLevels"]
    );
    assert_p95(
        &m["p95LatencyMs"],
        recorded,
        min_scale,
        &format!("{label}: daily"),
    );

    // the 5-minute series over the run sums to the same
    let started =
        DateTime::from_timestamp_millis((recorded["startedAt"].as_f64().unwrap() * 1000.0) as i64)
            .unwrap();
    let from = started - chrono::Duration::minutes(10);
    let to = real_now() + chrono::Duration::minutes(10);
    let (s, b) = get_or_post(
        reqwest::Method::GET,
        &format!("{base}/series?from={}&to={}&step=5m", iso(from), iso(to)),
        &owner.user,
        None,
    )
    .await;
    assert_eq!(s, 200, "{label}: {b}");
    let points = b["points"].as_array().unwrap();
    let sum = |field: &str| -> u64 {
        points
            .iter()
            .map(|p| {
                p[field]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{label}: {field}: {p}"))
            })
            .sum()
    };
    assert_eq!(sum("requestCount"), requests, "{label}: series {b}");
    assert_eq!(sum("errorCount"), errors, "{label}: series {b}");
    assert_eq!(
        sum("successCount"),
        requests - errors,
        "{label}: series {b}"
    );
    assert_eq!(
        sum("dataTransferredBytes"),
        recorded["dataTransferredBytes"].as_u64().unwrap(),
        "{label}: series {b}"
    );

    // the breakdown by route: the recorded counts per route, exactly
    let (s, b) = get_or_post(
        reqwest::Method::GET,
        &format!("{base}/breakdown?by=route&startDate={day}&endDate={day}&limit=500"),
        &owner.user,
        None,
    )
    .await;
    assert_eq!(s, 200, "{label}: {b}");
    let shown: BTreeMap<String, &Value> = b["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["requestCount"].as_u64() != Some(0))
        .map(|v| (v["value"].as_str().unwrap().to_string(), v))
        .collect();
    let routes = recorded["routes"].as_object().unwrap();
    assert_eq!(
        shown.keys().collect::<Vec<_>>(),
        routes.keys().collect::<Vec<_>>(),
        "{label}: routes {b}"
    );
    for (route, want) in routes {
        let got = shown[route];
        let (req, err) = (
            want["requests"].as_u64().unwrap(),
            want["errors"].as_u64().unwrap(),
        );
        assert_eq!(got["requestCount"], req, "{label}: {route}: {got}");
        assert_eq!(got["errorCount"], err, "{label}: {route}: {got}");
        assert_eq!(got["successCount"], req - err, "{label}: {route}: {got}");
        assert_p95(
            &got["p95LatencyMs"],
            want,
            min_scale,
            &format!("{label}: route {route}"),
        );
    }
    assert_eq!(
        b["other"]["eventCount"], 0,
        "{label}: nothing past the cap: {b}"
    );

    // the breakdown by status: the five classes
    let (s, b) = get_or_post(
        reqwest::Method::GET,
        &format!("{base}/breakdown?by=status&startDate={day}&endDate={day}"),
        &owner.user,
        None,
    )
    .await;
    assert_eq!(s, 200, "{label}: {b}");
    let by_status: BTreeMap<String, u64> = b["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["requestCount"].as_u64().unwrap(),
            )
        })
        .collect();
    for class in CLASSES {
        assert_eq!(
            by_status.get(class).copied().unwrap_or(0),
            recorded["statusCounts"][class].as_u64().unwrap(),
            "{label}: {class}: {b}"
        );
    }
}

/// Posts every export the SDK made again, byte for byte with its own
/// content type and encoding: each is a duplicate (200, nothing counted).
async fn retry_every_export(recorded: &Value, endpoint: &str, token: &str, label: &str) {
    let bodies = recorded["bodies"].as_array().unwrap();
    assert_eq!(bodies.len(), recorded["exports"].as_array().unwrap().len());
    for (i, saved) in bodies.iter().enumerate() {
        let bytes = std::fs::read(saved["path"].as_str().unwrap()).unwrap();
        let headers: Vec<(String, String)> = saved["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let (s, content_type, body) = post_raw(endpoint, Some(token), &headers, bytes).await;
        assert_eq!(
            s,
            200,
            "{label}: retry of export {i}: {content_type} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            content_type.starts_with("application/x-protobuf"),
            "{label}: retry of export {i}: {content_type}"
        );
    }
}

/// One SDK configuration end to end on a fresh proxy: the script's exports
/// to the proxy's path or to `/v1/metrics`, then reads; every export again (a retry);
/// reads; the aggregation; reads; every export once more; reads.
async fn sdk_case(sdk: Sdk, token_endpoint: bool) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!(
        "e2e-otlp-{}-{}-{}",
        &sdk.temporality[..3],
        &sdk.aggregation[..3],
        &run[..10]
    );
    let owner = Owner::new(&run);
    owner.register(&proxy).await;
    let (endpoint, write) = if token_endpoint {
        (format!("{}/v1/metrics", api()), owner.proxy_writer(&proxy))
    } else {
        (
            format!("{}/proxy/metrics/{proxy}/v1/metrics", api()),
            owner.writer(),
        )
    };
    let day = crate::common::stack::clear_of_midnight()
        .await
        .date_naive()
        .to_string();
    let save = TempDir::new(&run[..8]);
    let recorded = tokio::task::spawn_blocking({
        let (endpoint, write) = (endpoint.clone(), write.clone());
        move || {
            let r = run_sdk(sdk, &endpoint, &write, &save);
            (r, save)
        }
    })
    .await
    .unwrap();
    let (recorded, _save) = recorded;
    let label = format!(
        "{sdk:?} on {}",
        if token_endpoint {
            "/v1/metrics"
        } else {
            "the proxy's path"
        }
    );
    println!(
        "{label}: {} requests ({}), {} exports per phase {}, smallest scale {}, p95 {}..{} ms",
        recorded["requests"],
        recorded["statusCounts"],
        recorded["exports"].as_array().unwrap().len(),
        recorded["exportsPerPhase"],
        recorded["minScale"],
        recorded["p95LowMs"],
        recorded["p95HighMs"]
    );
    assert_eq!(
        recorded["temporality"], sdk.temporality,
        "the SDK ran with the temporality asked for"
    );
    assert_exports_accepted(&recorded, sdk);
    assert_shows(&owner, &proxy, &day, &recorded, &label).await;

    retry_every_export(&recorded, &endpoint, &write, &label).await;
    assert_shows(
        &owner,
        &proxy,
        &day,
        &recorded,
        &format!("{label}, after the retries"),
    )
    .await;

    let report = invoke_aggregation().await;
    println!("{label}: aggregation {report}");
    assert_shows(
        &owner,
        &proxy,
        &day,
        &recorded,
        &format!("{label}, after the aggregation"),
    )
    .await;
    retry_every_export(&recorded, &endpoint, &write, &label).await;
    assert_shows(
        &owner,
        &proxy,
        &day,
        &recorded,
        &format!("{label}, retried over the folded day"),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack and the OpenTelemetry SDK's venv; scripts/test runs it"]
async fn sdk_cumulative_explicit_buckets_on_the_proxy_path_equal_what_it_recorded() {
    let sdk = Sdk {
        temporality: "cumulative",
        aggregation: "explicit",
        compression: "none",
    };
    sdk_case(sdk, false).await;
}

#[tokio::test]
#[ignore = "needs the local stack and the OpenTelemetry SDK's venv; scripts/test runs it"]
async fn sdk_delta_exponential_gzip_on_the_proxy_path_equal_what_it_recorded() {
    let sdk = Sdk {
        temporality: "delta",
        aggregation: "exponential",
        compression: "gzip",
    };
    sdk_case(sdk, false).await;
}

#[tokio::test]
#[ignore = "needs the local stack and the OpenTelemetry SDK's venv; scripts/test runs it"]
async fn sdk_cumulative_exponential_gzip_on_the_token_endpoint_equal_what_it_recorded() {
    let sdk = Sdk {
        temporality: "cumulative",
        aggregation: "exponential",
        compression: "gzip",
    };
    sdk_case(sdk, true).await;
}

#[tokio::test]
#[ignore = "needs the local stack and the OpenTelemetry SDK's venv; scripts/test runs it"]
async fn sdk_delta_explicit_buckets_on_the_token_endpoint_equal_what_it_recorded() {
    let sdk = Sdk {
        temporality: "delta",
        aggregation: "explicit",
        compression: "none",
    };
    sdk_case(sdk, true).await;
}

// ---------------------------------------------------------------------
// A gzip OTLP/JSON body built here.

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt().unwrap()
}

fn string_attr(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// An int attribute, its int64 written as a string (proto3 JSON) or a number.
fn int_attr(key: &str, value: i64, as_string: bool) -> Value {
    let v = if as_string {
        json!(value.to_string())
    } else {
        json!(value)
    };
    json!({"key": key, "value": {"intValue": v}})
}

/// An int64 field as a string or a number (OTLP/JSON accepts both).
fn int64(value: i64, as_string: bool) -> Value {
    if as_string {
        json!(value.to_string())
    } else {
        json!(value)
    }
}

/// A hand-built delta point: route, method, status code, bucket counts,
/// sum (s), and whether its 64-bit integers are written as strings.
type JsonPoint = (&'static str, &'static str, i64, [u64; 5], f64, bool);

/// Explicit bounds of the hand-built duration histograms (seconds).
const JSON_BOUNDS: [f64; 4] = [0.01, 0.1, 0.5, 2.0];

/// One hand-built `http.server.request.duration` point: `buckets` counts
/// per bucket (len = bounds + 1), its sum, times, attributes. Unknown
/// fields ride along, as a newer exporter's would.
#[allow(clippy::too_many_arguments)]
fn duration_point(
    route: &str,
    method: &str,
    status: i64,
    buckets: [u64; 5],
    sum: f64,
    start: DateTime<Utc>,
    time: DateTime<Utc>,
    as_string: bool,
) -> Value {
    let count: u64 = buckets.iter().sum();
    json!({
        "attributes": [
            string_attr("http.route", route),
            string_attr("http.request.method", method),
            int_attr("http.response.status_code", status, as_string),
            string_attr("url.scheme", "https"),
        ],
        "startTimeUnixNano": int64(nanos(start), as_string),
        "timeUnixNano": int64(nanos(time), as_string),
        "count": int64(count as i64, as_string),
        "sum": sum,
        "bucketCounts": buckets.iter().map(|b| int64(*b as i64, as_string)).collect::<Vec<_>>(),
        "explicitBounds": JSON_BOUNDS,
        "flags": 0,
        "exemplars": [],
        "aFieldFromTheFuture": {"nested": [1, "two", {"three": 3}]},
    })
}

/// A size histogram point (`http.server.*.body.size`): only its sum counts.
fn size_point(
    route: &str,
    status: i64,
    count: u64,
    sum: u64,
    start: DateTime<Utc>,
    time: DateTime<Utc>,
) -> Value {
    json!({
        "attributes": [
            string_attr("http.route", route),
            int_attr("http.response.status_code", status, true),
        ],
        "startTimeUnixNano": nanos(start).to_string(),
        "timeUnixNano": nanos(time).to_string(),
        "count": count.to_string(),
        "sum": sum as f64,
        "bucketCounts": [count.to_string()],
        "explicitBounds": [],
    })
}

/// An `ExportMetricsServiceRequest` in OTLP/JSON holding `metrics`, with
/// unknown fields at the request, resource, scope and metric levels.
fn export_request(metrics: Vec<Value>) -> Value {
    json!({
        "resourceMetrics": [{
            "resource": {
                "attributes": [string_attr("service.name", "e2e-json-proxy")],
                "droppedAttributesCount": 0,
                "unknownResourceField": true,
            },
            "scopeMetrics": [{
                "scope": {"name": "e2e-json", "version": "1", "unknownScopeField": "x"},
                "metrics": metrics,
                "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
            }],
            "schemaUrl": "",
            "unknownResourceMetricsField": [1, 2, 3],
        }],
        "unknownTopLevelField": {"a": {"b": null}},
    })
}

/// A histogram metric; `temporality` 1 = delta, 2 = cumulative (an enum as
/// an integer, as OTLP/JSON writes it).
fn histogram(name: &str, unit: &str, temporality: u8, points: Vec<Value>) -> Value {
    json!({
        "name": name,
        "description": "",
        "unit": unit,
        "histogram": {"dataPoints": points, "aggregationTemporality": temporality},
        "metadata": [],
        "unknownMetricField": 42,
    })
}

/// Posts a JSON export gzip-compressed; asserts a full success answered as
/// JSON.
async fn post_json_export(endpoint: &str, token: &str, body: &Value, what: &str) {
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("content-encoding".to_string(), "gzip".to_string()),
    ];
    let (s, content_type, answer) = post_raw(
        endpoint,
        Some(token),
        &headers,
        gzip(body.to_string().as_bytes()),
    )
    .await;
    let text = String::from_utf8_lossy(&answer).to_string();
    assert_eq!(s, 200, "{what}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: answered in the request's content type: {content_type}"
    );
    let answer: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    let rejected = &answer["partialSuccess"]["rejectedDataPoints"];
    assert!(
        rejected.is_null() || *rejected == json!(0) || *rejected == json!("0"),
        "{what}: nothing rejected: {answer}"
    );
}

/// The buckets (ms) holding the order statistics around the p95's rank of
/// a merged explicit histogram.
fn bucket_p95_ms(buckets: &[u64; 5]) -> (f64, f64) {
    let n: u64 = buckets.iter().sum();
    let ranks = [
        (0.95 * (n - 1) as f64).floor() as u64,
        (0.95 * (n - 1) as f64).ceil() as u64,
        ((0.95 * n as f64).ceil() as u64).max(1) - 1,
    ];
    let bucket_of = |rank: u64| {
        let mut seen = 0;
        for (i, c) in buckets.iter().enumerate() {
            seen += c;
            if rank < seen {
                return i;
            }
        }
        unreachable!()
    };
    let lo = bucket_of(*ranks.iter().min().unwrap());
    let hi = bucket_of(*ranks.iter().max().unwrap());
    let lower = if lo == 0 { 0.0 } else { JSON_BOUNDS[lo - 1] };
    let upper = JSON_BOUNDS.get(hi).copied().unwrap_or(f64::INFINITY);
    (lower * 1000.0, upper * 1000.0)
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn a_gzip_otlp_json_body_is_counted_once_and_cumulative_points_by_their_newest_delta() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-otlp-json-{}", &run[..12]);
    let owner = Owner::new(&run);
    owner.register(&proxy).await;
    let endpoint = format!("{}/proxy/metrics/{proxy}/v1/metrics", api());
    let write = owner.writer();
    let now = crate::common::stack::clear_of_midnight().await;
    let day = now.date_naive().to_string();
    let (start, time) = (
        now - chrono::Duration::seconds(20),
        now - chrono::Duration::seconds(10),
    );

    // 1. Delta points over three routes and four status codes.
    //    route, method, status, buckets, sum (s), int64s as strings?
    let delta: Vec<JsonPoint> = vec![
        ("/json/a", "GET", 200, [10, 30, 5, 0, 0], 2.1, true),
        ("/json/a", "GET", 404, [4, 1, 0, 0, 0], 0.04, false),
        ("/json/b/{id}", "POST", 201, [0, 2, 12, 3, 1], 9.5, true),
        ("/json/b/{id}", "POST", 503, [0, 0, 0, 2, 1], 7.0, false),
        ("/json/c", "GET", 302, [6, 0, 0, 0, 0], 0.02, true),
    ];
    let points: Vec<Value> = delta
        .iter()
        .map(|(r, m, s, b, sum, as_string)| {
            duration_point(r, m, *s, *b, *sum, start, time, *as_string)
        })
        .collect();
    let sizes = vec![
        size_point("/json/a", 200, 45, 90_000, start, time),
        size_point("/json/b/{id}", 201, 18, 3_600, start, time),
    ];
    let body = export_request(vec![
        histogram("http.server.request.duration", "s", 1, points),
        histogram("http.server.response.body.size", "By", 1, sizes),
    ]);
    post_json_export(&endpoint, &write, &body, "the delta body").await;
    // a retry of the same body: counted once
    post_json_export(&endpoint, &write, &body, "the delta body, retried").await;

    let mut per_route: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut classes = [0u64; 5];
    let mut merged = [0u64; 5];
    for (route, _, status, buckets, _, _) in &delta {
        let n: u64 = buckets.iter().sum();
        let e = per_route.entry(route.to_string()).or_default();
        e.0 += n;
        if *status >= 500 {
            e.1 += n;
        }
        classes[(*status / 100 - 1) as usize] += n;
        for (m, b) in merged.iter_mut().zip(buckets) {
            *m += b;
        }
    }

    // 2. Cumulative points of one series, out of order: A (10), B (25, the
    //    same start), A again (at or before the last: a duplicate), B again;
    //    then C (4) with a new start, after B: a reset, counted in full.
    let route = "/json/cumulative";
    let s1 = now - chrono::Duration::seconds(60);
    let cumulative = |buckets: [u64; 5], sum: f64, start, at| {
        export_request(vec![histogram(
            "http.server.request.duration",
            "s",
            2,
            vec![duration_point(
                route, "GET", 200, buckets, sum, start, at, true,
            )],
        )])
    };
    let a = cumulative(
        [2, 8, 0, 0, 0],
        0.3,
        s1,
        now - chrono::Duration::seconds(50),
    );
    let b = cumulative(
        [5, 18, 2, 0, 0],
        1.9,
        s1,
        now - chrono::Duration::seconds(40),
    );
    let s2 = now - chrono::Duration::seconds(35);
    let c = cumulative(
        [1, 3, 0, 0, 0],
        0.12,
        s2,
        now - chrono::Duration::seconds(30),
    );
    for (body, what) in [
        (&a, "cumulative A"),
        (&b, "cumulative B"),
        (&a, "cumulative A again, after B"),
        (&b, "cumulative B again"),
        (&c, "cumulative C, a new start"),
        (&c, "cumulative C again"),
    ] {
        post_json_export(&endpoint, &write, body, what).await;
    }
    per_route.insert(route.to_string(), (25 + 4, 0));
    classes[1] += 29;
    for (m, b) in merged.iter_mut().zip([6, 21, 2, 0, 0]) {
        *m += b;
    }

    let requests: u64 = classes.iter().sum();
    let errors = classes[4];
    let (p95_low, p95_high) = bucket_p95_ms(&merged);
    let check = |label: &'static str| {
        let owner = &owner;
        let proxy = &proxy;
        let day = &day;
        let per_route = &per_route;
        async move {
            let base = format!("{}/proxy/metrics/{proxy}", api());
            let (s, b) = get_or_post(
                reqwest::Method::GET,
                &format!("{base}/daily/{day}"),
                &owner.user,
                None,
            )
            .await;
            assert_eq!(s, 200, "{label}: {b}");
            let m = &b["metrics"];
            assert_eq!(m["requestCount"], requests, "{label}: {m}");
            assert_eq!(m["errorCount"], errors, "{label}: {m}");
            assert_eq!(m["successCount"], requests - errors, "{label}: {m}");
            let status: Vec<u64> = CLASSES
                .iter()
                .map(|c| m["statusCounts"][c].as_u64().unwrap())
                .collect();
            assert_eq!(status, classes.to_vec(), "{label}: {m}");
            assert_eq!(m["dataTransferredBytes"], 93_600, "{label}: {m}");
            let p95 = m["p95LatencyMs"].as_f64().unwrap();
            assert!(
                p95_low * (1.0 - SKETCH_ALPHA) <= p95 && p95 <= p95_high * (1.0 + SKETCH_ALPHA),
                "{label}: p95 {p95} ms outside its bucket [{p95_low}, {p95_high}]"
            );
            let (s, b) = get_or_post(
                reqwest::Method::GET,
                &format!("{base}/breakdown?by=route&startDate={day}&endDate={day}"),
                &owner.user,
                None,
            )
            .await;
            assert_eq!(s, 200, "{label}: {b}");
            let shown: BTreeMap<String, (u64, u64)> = b["values"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v["requestCount"].as_u64() != Some(0))
                .map(|v| {
                    (
                        v["value"].as_str().unwrap().to_string(),
                        (
                            v["requestCount"].as_u64().unwrap(),
                            v["errorCount"].as_u64().unwrap(),
                        ),
                    )
                })
                .collect();
            assert_eq!(&shown, per_route, "{label}: {b}");
        }
    };
    check("the JSON exports").await;
    let report = invoke_aggregation().await;
    println!("aggregation {report}");
    check("the JSON exports, after the aggregation").await;
    post_json_export(
        &endpoint,
        &write,
        &body,
        "the delta body, over the folded day",
    )
    .await;
    post_json_export(&endpoint, &write, &b, "cumulative B, over the folded day").await;
    check("the JSON exports, retried over the folded day").await;
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn the_token_endpoint_takes_a_proxy_scoped_write_token_only() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-otlp-auth-{}", &run[..12]);
    let owner = Owner::new(&run);
    owner.register(&proxy).await;
    let now = crate::common::stack::clear_of_midnight().await;
    let body = export_request(vec![histogram(
        "http.server.request.duration",
        "s",
        1,
        vec![duration_point(
            "/auth",
            "GET",
            200,
            [1, 0, 0, 0, 0],
            0.001,
            now - chrono::Duration::seconds(2),
            now - chrono::Duration::seconds(1),
            true,
        )],
    )]);
    let json_headers = vec![("content-type".to_string(), "application/json".to_string())];
    let token_endpoint = format!("{}/v1/metrics", api());
    let send = |url: String, token: Option<String>| {
        let body = body.to_string().into_bytes();
        let headers = json_headers.clone();
        async move {
            let (s, content_type, answer) = post_raw(&url, token.as_deref(), &headers, body).await;
            let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            (s, content_type, answer)
        }
    };

    // no token: 401, the contract's JSON error for a JSON request
    let (s, _, b) = send(token_endpoint.clone(), None).await;
    assert_eq!((s, b["error"].clone()), (401, json!("UNAUTHORIZED")), "{b}");
    // a user token names no proxy: refused, never a guess
    let (s, _, b) = send(token_endpoint.clone(), Some(owner.writer())).await;
    assert!((400..500).contains(&s), "{s} {b}");
    // a proxy-scoped token without metrics:write: 403
    let reader = token(
        &owner.sub,
        json!({"scope": "metrics:read", "proxy_id": proxy}),
    );
    let (s, _, b) = send(token_endpoint.clone(), Some(reader)).await;
    assert_eq!((s, b["error"].clone()), (403, json!("FORBIDDEN")), "{b}");
    // a proxy-scoped token for another proxy on a proxy path: 403
    let (s, _, b) = send(
        format!("{}/proxy/metrics/{proxy}-other/v1/metrics", api()),
        Some(owner.proxy_writer(&proxy)),
    )
    .await;
    assert_eq!((s, b["error"].clone()), (403, json!("FORBIDDEN")), "{b}");
    // someone else's proxy-scoped token naming this proxy: 404 (never reveal)
    let stranger = token(
        &format!("stranger-{run}"),
        json!({"scope": "metrics:write", "proxy_id": proxy}),
    );
    let (s, _, b) = send(token_endpoint.clone(), Some(stranger)).await;
    assert_eq!((s, b["error"].clone()), (404, json!("NOT_FOUND")), "{b}");
    // the owner's proxy-scoped write token: taken, and counted
    let (s, content_type, b) = send(token_endpoint.clone(), Some(owner.proxy_writer(&proxy))).await;
    assert_eq!(s, 200, "{b}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let (s, b) = get_or_post(
        reqwest::Method::GET,
        &format!("{}/proxy/metrics/{proxy}/daily/{}", api(), now.date_naive()),
        &owner.user,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["metrics"]["requestCount"], 1, "{b}");
}

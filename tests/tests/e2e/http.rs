//! End-to-end over HTTP against the running local stack (`scripts/test`
//! starts it and sets `E2E_API_URL`; `E2E_JWT_SECRET` if not the default).

mod alerts;
mod breakdown;
use crate::common;
mod series;
mod unknown_routes;

use chrono::{DateTime, Utc};
use proxy_metrics::clock::Clock;
use serde_json::{Value, json};

/// The local stack runs on the real clock, so this suite does too (never on
/// the harness's pinned instant): every instant here comes from it.
fn real_now() -> DateTime<Utc> {
    Clock::system().now()
}

fn api() -> String {
    std::env::var("E2E_API_URL")
        .expect("E2E_API_URL must point at the local stack (scripts/test sets it)")
}

fn bearer(sub: &str) -> String {
    bearer_of_tier(sub, "pro")
}

/// A user token (all scopes) of `tier` for `sub`, valid for 10 minutes.
fn bearer_of_tier(sub: &str, tier: &str) -> String {
    let secret =
        std::env::var("E2E_JWT_SECRET").unwrap_or_else(|_| "local-dev-secret-change-me".into());
    let now = real_now().timestamp();
    let claims = json!({"sub": sub, "exp": now + 600, "tier": tier});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    format!("Bearer {token}")
}

async fn call(
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, format!("{}{path}", api()));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("local stack reachable");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn register_record_read_over_http() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-{}", &run[..12]);
    let owner = bearer(&format!("owner-{run}"));
    let other = bearer(&format!("other-{run}"));
    // The event is dated explicitly and read back on its own day, so a run
    // that straddles midnight reads the day it wrote.
    let at = real_now();
    let today = common::day_str(at.date_naive());

    let (s, b) = call(
        reqwest::Method::POST,
        "/proxies",
        Some(&owner),
        Some(json!({"proxyId": proxy, "name": "E2E"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    let (s, b) = call(
        reqwest::Method::POST,
        &format!("/proxy/metrics/{proxy}/record"),
        Some(&owner),
        Some(
            json!({"eventType": "request", "eventId": format!("ev-{run}"),
                    "timestamp": common::iso(at),
                    "metrics": {"requestCount": 10, "successCount": 9, "errorCount": 1,
                                "totalLatencyMs": 250, "dataTransferredBytes": 1000}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["recorded"], 1);

    // the same event again is a duplicate, not a second count
    let (s, b) = call(
        reqwest::Method::POST,
        &format!("/proxy/metrics/{proxy}/record"),
        Some(&owner),
        Some(
            json!({"eventType": "request", "eventId": format!("ev-{run}"),
                    "metrics": {"requestCount": 999}}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["duplicates"], 1);

    let (s, b) = call(
        reqwest::Method::GET,
        &format!("/proxy/metrics/{proxy}/daily/{today}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let before = b.clone();
    assert_eq!(b["metrics"]["requestCount"], 10);
    assert_eq!(b["metrics"]["successCount"], 9);
    assert_eq!(b["metrics"]["averageLatencyMs"], 25.0);
    assert_eq!(b["metrics"]["dataTransferredBytes"], 1000);

    let (s, b) = call(
        reqwest::Method::GET,
        &format!("/proxy/metrics/{proxy}/daily/{today}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(b["error"], "NOT_FOUND");

    // the scheduled aggregation, invoked through the watcher's Lambda invoke API
    let scheduled = json!({"version": "0", "id": run, "detail-type": "Scheduled Event",
        "source": "aws.scheduler", "account": "000000000000", "time": common::iso(real_now()),
        "region": "us-east-1", "resources": [], "detail": {}});
    let (s, report) = call(
        reqwest::Method::POST,
        "/2015-03-31/functions/aggregate-metrics/invocations",
        None,
        Some(scheduled),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    // (another test's run may have folded this day already: the stack is shared)
    assert_eq!(report["daysFailed"], 0, "{report}");
    assert!(report["daysMaterialized"].is_u64(), "{report}");
    assert!(report["durationMs"].is_u64(), "{report}");
    let (s, after) = call(
        reqwest::Method::GET,
        &format!("/proxy/metrics/{proxy}/daily/{today}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(after["metrics"]["requestCount"], 10);
    assert_eq!(
        after["metrics"]["p50LatencyMs"],
        before["metrics"]["p50LatencyMs"]
    );
    assert_eq!(after["metrics"]["averageLatencyMs"], 25.0);

    let (s, b) = call(
        reqwest::Method::GET,
        &format!("/proxy/metrics/{proxy}/daily?startDate={today}&endDate={today}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["count"], 1);
    let (s, b) = call(
        reqwest::Method::GET,
        &format!("/proxy/metrics/{proxy}/aggregation?periodStart={today}&periodEnd={today}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["metrics"]["totalRequestCount"], 10);
    let (s, b) = call(
        reqwest::Method::GET,
        &format!("/proxy/metrics/{proxy}/summary"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["last24Hours"]["requestCount"], 10);

    let (s, b) = call(reqwest::Method::GET, "/proxies", None, None).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["code"], "PROXY_METRICS_401");
}

/// A POST with extra headers; status, body and headers.
async fn post_with(path: &str, auth: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", api()))
        .header("authorization", auth)
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("local stack reachable");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn invoke_aggregation(payload: Value) -> (u16, Value) {
    call(
        reqwest::Method::POST,
        "/2015-03-31/functions/aggregate-metrics/invocations",
        None,
        Some(payload),
    )
    .await
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn sequenced_batches_and_aggregation_rules_over_http() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("seq-{}", &run[..12]);
    let owner = bearer(&format!("owner-{run}"));
    let (s, b) = call(
        reqwest::Method::POST,
        "/proxies",
        Some(&owner),
        Some(json!({"proxyId": proxy})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // the events below go up to 50 s back and are read on `at`'s day
    let at = common::stack::clear_of_midnight().await;
    let day = common::day_str(at.date_naive());
    let record = format!("/proxy/metrics/{proxy}/record");
    let batch = |requests: u64| {
        json!({"events": (0..6).map(|i| json!({"eventType": "request",
            "timestamp": common::iso(at - chrono::Duration::seconds(10 * i)),
            "metrics": {"requestCount": requests, "successCount": requests,
                        "latencySamplesMs": [5.0, 7.5, 12.0]}})).collect::<Vec<_>>()})
    };
    let seq = |n: &'static str| [("producer-id", "boot-e2e"), ("producer-sequence", n)];
    let (s, b) = post_with(&record, &owner, &seq("0"), batch(1)).await;
    assert_eq!((s, b["recorded"].clone()), (201, json!(6)), "{b}");
    // the same batch again (a retry whose answer was lost): a duplicate
    let (s, b) = post_with(&record, &owner, &seq("0"), batch(1)).await;
    assert_eq!((s, b["recorded"].clone()), (200, json!(0)), "{b}");
    // a gap names the sequence expected next
    let (s, b) = post_with(&record, &owner, &seq("2"), batch(100)).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"], "SEQUENCE_GAP");
    assert_eq!(b["expectedSequence"], 1);
    let (s, _) = post_with(&record, &owner, &seq("1"), batch(10)).await;
    assert_eq!(s, 201);
    // one header without the other
    let (s, b) = post_with(&record, &owner, &[("producer-id", "x")], batch(1)).await;
    assert_eq!((s, b["error"].clone()), (400, json!("INVALID_REQUEST")));

    let daily = format!("/proxy/metrics/{proxy}/daily/{day}");
    let (s, before) = call(reqwest::Method::GET, &daily, Some(&owner), None).await;
    assert_eq!(s, 200, "{before}");
    assert_eq!(before["metrics"]["requestCount"], 66);
    // the README's fan-out payload: any JSON object, detail.shards optional
    let (s, report) =
        invoke_aggregation(json!({"detail": {"shards": (0..16).collect::<Vec<_>>()}})).await;
    assert_eq!(s, 200, "{report}");
    for field in [
        "proxiesProcessed",
        "daysMaterialized",
        "eventsRead",
        "daysFailed",
        "daysQuarantined",
        "durationMs",
    ] {
        assert!(report[field].is_u64(), "{field} in {report}");
    }
    let (_, after) = call(reqwest::Method::GET, &daily, Some(&owner), None).await;
    assert_eq!(
        after["metrics"], before["metrics"],
        "materialising changes nothing a reader sees"
    );
    // operator commands go through the same invoke API
    let (s, released) = invoke_aggregation(json!({"release": "all"})).await;
    assert_eq!(s, 200, "{released}");
    assert!(released["released"].is_u64());
}

/// A GET with extra headers: status, headers and the body as text.
async fn get_raw(
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", api()));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("local stack reachable");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

fn header_of(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn assert_json_error_over_http(
    (status, headers, body): &(u16, reqwest::header::HeaderMap, String),
    expected: u16,
    kind: &str,
) {
    assert_eq!(*status, expected, "{body}");
    assert_eq!(header_of(headers, "content-type"), "application/json");
    let body: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_eq!(body["error"], kind, "{body}");
    assert_eq!(body["code"], format!("PROXY_METRICS_{expected}"));
}

/// Runs `promtool check metrics` on an exposition when `PROMTOOL` names the
/// binary (`scripts/test` installs Debian's, pinned, and sets it).
fn promtool_check(exposition: &str) {
    let Ok(promtool) = std::env::var("PROMTOOL") else {
        println!("PROMTOOL not set: exposition not linted by promtool");
        return;
    };
    use std::io::Write;
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{promtool}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn exports_and_dashboard_over_http() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("exp-{}", &run[..12]);
    let owner = bearer(&format!("owner-{run}"));
    let (s, b) = call(
        reqwest::Method::POST,
        "/proxies",
        Some(&owner),
        Some(json!({"proxyId": proxy, "name": "Exports, \"E2E\""})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let at = real_now();
    let day = common::day_str(at.date_naive());
    let (s, b) = call(
        reqwest::Method::POST,
        &format!("/proxy/metrics/{proxy}/record"),
        Some(&owner),
        Some(json!({"events": [
            {"eventType": "request", "timestamp": common::iso(at),
             "metrics": {"requestCount": 10, "successCount": 9, "errorCount": 1,
                         "latencySamplesMs": [20.0, 40.0, 60.0], "dataTransferredBytes": 1000,
                         "errorMessage": "upstream timeout, \"retried\""}}]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    // CSV of the range: format=csv, or Accept: text/csv
    let range = format!("/proxy/metrics/{proxy}/daily?startDate={day}&endDate={day}");
    for (path, headers) in [
        (format!("{range}&format=csv"), vec![]),
        (range.clone(), vec![("accept", "text/csv")]),
    ] {
        let (s, h, text) = get_raw(&path, Some(&owner), &headers).await;
        assert_eq!(s, 200, "{text}");
        assert_eq!(header_of(&h, "content-type"), "text/csv; charset=utf-8");
        assert_eq!(
            header_of(&h, "content-disposition"),
            format!("attachment; filename=\"{proxy}-{day}-{day}.csv\"")
        );
        let mut lines = text.split("\r\n");
        let header = lines.next().unwrap();
        assert!(header.starts_with("date,eventCount,requestCount,successCount,errorCount,"));
        assert!(header.ends_with(",uptimePercentage") && !header.contains("topErrors"));
        let row: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(&row[..5], [day.as_str(), "1", "10", "9", "1"], "{text}");
    }
    // errors stay JSON whatever Accept says
    let csv = [("accept", "text/csv")];
    assert_json_error_over_http(
        &get_raw(&format!("{range}&format=xml"), Some(&owner), &csv).await,
        400,
        "INVALID_REQUEST",
    );
    assert_json_error_over_http(
        &get_raw(&format!("{range}&format=csv"), None, &csv).await,
        401,
        "UNAUTHORIZED",
    );
    let stranger = bearer(&format!("stranger-{run}"));
    assert_json_error_over_http(
        &get_raw(&format!("{range}&format=csv"), Some(&stranger), &csv).await,
        404,
        "NOT_FOUND",
    );

    // GET /metrics: the Prometheus text format, this caller's proxy only
    let (s, h, text) = get_raw("/metrics", Some(&owner), &[]).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        header_of(&h, "content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for line in [
        "# TYPE proxy_metrics_today_requests gauge".to_string(),
        format!("proxy_metrics_today_requests{{proxy=\"{proxy}\"}} 10"),
        format!("proxy_metrics_today_errors{{proxy=\"{proxy}\"}} 1"),
        format!("proxy_metrics_today_data_transferred_bytes{{proxy=\"{proxy}\"}} 1000"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }
    assert!(text.contains(&format!(
        "proxy_metrics_last_hour_latency_p50_seconds{{proxy=\"{proxy}\"}} 0.0"
    )));
    assert_eq!(text.matches("proxy=").count(), text.matches(&proxy).count());
    promtool_check(&text);
    assert_json_error_over_http(&get_raw("/metrics", None, &[]).await, 401, "UNAUTHORIZED");

    // GET /dashboard and its files, without a token
    let (s, h, page) = get_raw("/dashboard", None, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(header_of(&h, "content-type"), "text/html; charset=utf-8");
    assert!(header_of(&h, "content-security-policy").starts_with("default-src 'none'; "));
    assert_eq!(header_of(&h, "x-content-type-options"), "nosniff");
    assert!(page.contains("<script src=\"/dashboard/app.js\""));
    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("alerts.js", "text/javascript; charset=utf-8"),
        ("incident.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        let (s, h, body) = get_raw(&format!("/dashboard/{file}"), None, &[]).await;
        assert_eq!(s, 200, "{file}");
        assert_eq!(header_of(&h, "content-type"), content_type, "{file}");
        assert!(!body.is_empty());
        let etag = header_of(&h, "etag");
        let (s, _, _) = get_raw(
            &format!("/dashboard/{file}"),
            None,
            &[("if-none-match", &etag)],
        )
        .await;
        assert_eq!(s, 304, "{file}");
    }
    for missing in ["/dashboard/nope.js", "/dashboard/vendor/uPlot.LICENSE"] {
        assert_json_error_over_http(&get_raw(missing, None, &[]).await, 404, "NOT_FOUND");
    }
}

/// Responses larger than the runtime API's first read (8 KB) arrive whole on
/// every request. With a multi-threaded tokio runtime in the function, the
/// watcher answered about 1 in 70 of them with its own 500 (the fuzzer and
/// the browser test hit it); every function now runs on a current-thread
/// runtime, and this asks 150 times for each of the two largest files.
#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn large_responses_arrive_whole_every_time() {
    let assets =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/assets/dashboard");
    for file in ["app.js", "vendor/uPlot.iife.min.js"] {
        let expected = std::fs::read_to_string(assets.join(file)).expect("dashboard asset");
        assert!(
            expected.len() > 32 * 1024,
            "{file} is no longer a large response"
        );
        let mut failures = Vec::new();
        for attempt in 0..150 {
            let (status, _, body) = get_raw(&format!("/dashboard/{file}"), None, &[]).await;
            if status != 200 || body != expected {
                failures.push((attempt, status, body.len()));
            }
        }
        assert!(
            failures.is_empty(),
            "{file}: (attempt, status, bytes) {failures:?}"
        );
    }
}

//! Exports: the daily range as CSV, `GET /metrics` (Prometheus text), and the
//! dashboard's files — handler tests against dynoxide, on the pinned clock.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use common::*;
use lambda_http::{Body, Response};
use proxy_metrics::aggregate;
use proxy_metrics::domain::rollup::BUCKET_MS;
use proxy_metrics::handlers;
use serde_json::{Value, json};

/// Status, body as text, and headers of a response in any format.
fn raw(response: Response<Body>) -> (u16, String, HashMap<String, String>) {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = match response.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8(b.clone()).expect("UTF-8 body"),
        _ => String::new(),
    };
    (status, body, headers)
}

/// Asserts the contract's JSON error body on a raw response.
fn assert_json_error(
    (status, body, headers): &(u16, String, HashMap<String, String>),
    expected: u16,
    kind: &str,
) {
    assert_eq!(headers["content-type"], "application/json", "{body}");
    let body: Value = serde_json::from_str(body).expect("a JSON error body");
    assert_error(*status, &body, expected, kind);
}

const EXPECTED_COLUMNS: [&str; 23] = [
    "date",
    "eventCount",
    "requestCount",
    "successCount",
    "errorCount",
    "status1xx",
    "status2xx",
    "status3xx",
    "status4xx",
    "status5xx",
    "successRate",
    "averageLatencyMs",
    "minLatencyMs",
    "maxLatencyMs",
    "p50LatencyMs",
    "p95LatencyMs",
    "p99LatencyMs",
    "dataTransferredBytes",
    "dataReceivedBytes",
    "connectionCount",
    "peakConcurrentConnections",
    "averageConcurrentConnections",
    "uptimePercentage",
];

async fn range(
    h: &Harness,
    token: Option<&str>,
    proxy: &str,
    (start, end): (&str, &str),
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, String, HashMap<String, String>) {
    let mut req = Req::new("GET", "/proxy/metrics/{proxyId}/daily")
        .param("proxyId", proxy)
        .query("startDate", start)
        .query("endDate", end);
    for (k, v) in query {
        req = req.query(k, v);
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(t) = token {
        req = req.bearer(t);
    }
    raw(handlers::get_daily_range(&h.app, req.build()).await)
}

/// A proxy with events on two days of a four-day range (and none on the others).
async fn proxy_with_two_days(h: &Harness, token: &str, proxy: &str) -> (String, String) {
    let (s, b) = h.register(token, proxy).await;
    assert_eq!(s, 201, "{b}");
    let n = now();
    let events: Vec<Value> = [(3, 0), (3, 1), (0, 0)]
        .iter()
        .map(|(ago, i)| {
            json!({"eventType": "request", "timestamp": iso(instant_on(day_ago(*ago), *i, 2, n)),
                   "healthy": true,
                   "metrics": {"requestCount": 100, "successCount": 97, "errorCount": 3,
                               "latencySamplesMs": [10.0, 20.0, 30.0, 400.0],
                               "dataTransferredBytes": 1000, "dataReceivedBytes": 2000,
                               "connectionCount": 4, "concurrentConnections": 2,
                               "errorMessage": "upstream \"timeout\", retried"}})
        })
        .collect();
    let (s, b) = h.record(token, proxy, json!({"events": events})).await;
    assert_eq!(s, 201, "{b}");
    (day_str(day_ago(3)), day_str(day_ago(0)))
}

#[tokio::test]
async fn csv_holds_the_json_days_in_contract_order_with_empty_cells_for_null() {
    let h = Harness::start().await;
    let t = user_token("alice");
    let (start, end) = proxy_with_two_days(&h, &t, "edge-eu.1_x").await;

    let (s, json_text, json_headers) =
        range(&h, Some(&t), "edge-eu.1_x", (&start, &end), &[], &[]).await;
    assert_eq!(s, 200, "{json_text}");
    assert_eq!(json_headers["vary"], "Accept");
    let json: Value = serde_json::from_str(&json_text).unwrap();
    let days = json["metrics"].as_array().unwrap();
    assert_eq!(days.len(), 4);

    let (s, text, headers) = range(
        &h,
        Some(&t),
        "edge-eu.1_x",
        (&start, &end),
        &[("format", "csv")],
        &[],
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"edge-eu.1_x-{start}-{end}.csv\"")
    );
    assert_eq!(headers["vary"], "Accept");
    // RFC 4180: CRLF after every record, the header row first.
    assert!(text.ends_with("\r\n"));
    assert_eq!(text.matches("\r\n").count(), 1 + days.len());
    assert!(!text.contains("timestamp") && !text.contains("tier"));
    assert!(!text.contains("topErrors") && !text.contains("timeout"));

    // Read back the way a spreadsheet would: every cell is the JSON value.
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, EXPECTED_COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), days.len());
    for (row, day) in rows.iter().zip(days) {
        for (column, cell) in EXPECTED_COLUMNS.iter().zip(row) {
            let value = match column.strip_prefix("status") {
                Some(class) => &day["statusCounts"][class],
                None => &day[column],
            };
            match value {
                Value::Null => assert_eq!(cell, "", "{column} of {}", day["date"]),
                Value::String(s) => assert_eq!(cell, s, "{column} of {}", day["date"]),
                // (serde_json's parse of the JSON body may be one ulp off)
                Value::Number(n) => {
                    let (got, want) = (cell.parse::<f64>().unwrap(), n.as_f64().unwrap());
                    assert!(
                        (got - want).abs() <= want.abs() * 1e-15,
                        "{column} of {}: {cell} vs {n}",
                        day["date"]
                    );
                }
                other => panic!("{column} is {other}"),
            }
        }
    }
    // the recorded days and an empty one, as a user sees them
    assert_eq!(&rows[0][0], start.as_str());
    assert_eq!(&rows[0][2], "200");
    assert_eq!(&rows[0][10], "0.97");
    assert_eq!(&rows[3][2], "100");
    let empty = &rows[1];
    assert_eq!(&empty[1], "0", "eventCount of an empty day");
    for (i, column) in EXPECTED_COLUMNS.iter().enumerate() {
        if [
            "successRate",
            "averageLatencyMs",
            "p50LatencyMs",
            "averageConcurrentConnections",
        ]
        .contains(column)
        {
            assert_eq!(&empty[i], "", "{column} of an empty day is null");
        }
    }
}

#[tokio::test]
async fn accept_text_csv_selects_csv_and_format_takes_precedence() {
    let h = Harness::start().await;
    let t = user_token("alice");
    let (start, end) = proxy_with_two_days(&h, &t, "edge").await;
    let r = (start.as_str(), end.as_str());
    let csv_type = "text/csv; charset=utf-8";

    let (s, _, headers) = range(&h, Some(&t), "edge", r, &[], &[("accept", "text/csv")]).await;
    assert_eq!((s, headers["content-type"].as_str()), (200, csv_type));
    let (s, _, headers) = range(
        &h,
        Some(&t),
        "edge",
        r,
        &[],
        &[("accept", "text/csv;q=0.9, application/json;q=0.5")],
    )
    .await;
    assert_eq!((s, headers["content-type"].as_str()), (200, csv_type));
    // a browser's Accept and a JSON client's stay JSON
    for accept in [
        "text/html,application/xhtml+xml,*/*;q=0.8",
        "application/json",
        "*/*",
    ] {
        let (s, body, headers) = range(&h, Some(&t), "edge", r, &[], &[("accept", accept)]).await;
        assert_eq!(
            (s, headers["content-type"].as_str()),
            (200, "application/json"),
            "{accept}"
        );
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["count"], 4);
        assert!(body["timestamp"].is_string() && body["tier"] == "pro");
    }
    // format wins over Accept, in any letter case
    let (_, _, headers) = range(
        &h,
        Some(&t),
        "edge",
        r,
        &[("format", "json")],
        &[("accept", "text/csv")],
    )
    .await;
    assert_eq!(headers["content-type"], "application/json");
    let (_, _, headers) = range(&h, Some(&t), "edge", r, &[("format", "CSV")], &[]).await;
    assert_eq!(headers["content-type"], csv_type);
}

#[tokio::test]
async fn csv_requests_get_the_json_ranges_rules_and_json_errors() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    let (start, end) = proxy_with_two_days(&h, &alice, "edge").await;
    let r = (start.as_str(), end.as_str());
    let csv = [("accept", "text/csv")];
    let fmt = [("format", "csv")];

    let bad = range(&h, Some(&alice), "edge", r, &[("format", "xml")], &csv).await;
    assert_json_error(&bad, 400, "INVALID_REQUEST");
    assert!(bad.1.contains("'format'"), "{}", bad.1);
    assert_json_error(
        &range(&h, None, "edge", r, &fmt, &csv).await,
        401,
        "UNAUTHORIZED",
    );
    let writer = token("alice", json!({"scope": "metrics:write"}));
    assert_json_error(
        &range(&h, Some(&writer), "edge", r, &fmt, &csv).await,
        403,
        "FORBIDDEN",
    );
    let other_proxy = token(
        "alice",
        json!({"scope": "metrics:read", "proxy_id": "other"}),
    );
    assert_json_error(
        &range(&h, Some(&other_proxy), "edge", r, &fmt, &csv).await,
        403,
        "FORBIDDEN",
    );
    let bob = user_token("bob");
    assert_json_error(
        &range(&h, Some(&bob), "edge", r, &fmt, &csv).await,
        404,
        "NOT_FOUND",
    );
    assert_json_error(
        &range(&h, Some(&alice), "nope", r, &fmt, &csv).await,
        404,
        "NOT_FOUND",
    );
    assert_json_error(
        &range(&h, Some(&alice), "edge", (&end, &start), &fmt, &csv).await,
        400,
        "INVALID_REQUEST",
    );
    assert_json_error(
        &range(&h, Some(&alice), "edge", ("2024-02-30", &end), &fmt, &csv).await,
        400,
        "INVALID_REQUEST",
    );
    let free = token("alice", json!({"tier": "free"}));
    let long_start = day_str(day_ago(40));
    assert_json_error(
        &range(&h, Some(&free), "edge", (&long_start, &end), &fmt, &csv).await,
        422,
        "RANGE_TOO_LARGE",
    );
    // a proxy's own read token gets its CSV
    let own = token(
        "alice",
        json!({"scope": "metrics:read", "proxy_id": "edge"}),
    );
    let (s, _, headers) = range(&h, Some(&own), "edge", r, &fmt, &[]).await;
    assert_eq!(
        (s, headers["content-type"].as_str()),
        (200, "text/csv; charset=utf-8")
    );
}

// ------------------------------------------------------------------ /metrics

async fn scrape(h: &Harness, token: Option<&str>) -> (u16, String, HashMap<String, String>) {
    let mut req = Req::new("GET", "/metrics");
    if let Some(t) = token {
        req = req.bearer(t);
    }
    raw(handlers::get_prometheus_metrics(&h.app, req.build()).await)
}

/// A parsed exposition: (metric, proxy) → value, of its gauges. Every line
/// that is not a comment must be a sample the parser understood, with a
/// `# HELP`: a gauge labelled with `proxy` and nothing else, or a counter
/// named `…_total` (`tests/suite/counters.rs` reads those).
fn parse_exposition(text: &str) -> BTreeMap<(String, String), f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse_at(lines, now()).expect("exposition parses");
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "unparsed lines in:\n{text}"
    );
    let mut out = BTreeMap::new();
    for sample in scrape.samples {
        assert!(
            scrape.docs.contains_key(&sample.metric),
            "no # HELP for {}",
            sample.metric
        );
        let value = match sample.value {
            prometheus_parse::Value::Gauge(value) => value,
            prometheus_parse::Value::Counter(_) if sample.metric.ends_with("_total") => continue,
            other => panic!("{} is not a gauge or counter: {other:?}", sample.metric),
        };
        let labels: Vec<&String> = sample.labels.keys().collect();
        assert_eq!(labels, ["proxy"], "labels of {}", sample.metric);
        let proxy = sample.labels.get("proxy").unwrap_or_default().to_string();
        let fresh = out.insert((sample.metric.clone(), proxy), value);
        assert!(fresh.is_none(), "{} twice", sample.metric);
    }
    out
}

const FAMILIES: [&str; 12] = [
    "proxy_metrics_today_events",
    "proxy_metrics_today_requests",
    "proxy_metrics_today_successes",
    "proxy_metrics_today_errors",
    "proxy_metrics_today_data_transferred_bytes",
    "proxy_metrics_today_data_received_bytes",
    "proxy_metrics_today_connections",
    "proxy_metrics_last_hour_latency_p50_seconds",
    "proxy_metrics_last_hour_latency_p95_seconds",
    "proxy_metrics_last_hour_latency_p99_seconds",
    "proxy_metrics_last_24h_uptime_ratio",
    "proxy_metrics_last_event_timestamp_seconds",
];

fn value(m: &BTreeMap<(String, String), f64>, metric: &str, proxy: &str) -> Option<f64> {
    m.get(&(metric.to_string(), proxy.to_string())).copied()
}

fn bucket_start(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis().div_euclid(BUCKET_MS) * BUCKET_MS
}

#[tokio::test]
async fn metrics_expose_what_was_recorded_and_parse() {
    // Registered 30 minutes before the scrape; the clock then moves to now().
    let scrape_at = now();
    let registered = scrape_at - Duration::minutes(30);
    let h = Harness::start_at(registered).await;
    let alice_then = token_at("alice", json!({"tier": "pro"}), registered);
    for proxy in ["p-a", "p-idle"] {
        let (s, b) = h.register(&alice_then, proxy).await;
        assert_eq!(s, 201, "{b}");
    }
    let bob_then = token_at("bob", json!({}), registered);
    assert_eq!(h.register(&bob_then, "p-bob").await.0, 201);
    h.app.clock.set(scrape_at);
    let alice = user_token("alice");

    // One healthy event every 5 minutes from the registration on, but at
    // +15 min (that bucket stays down), samples 1..=100 ms in each.
    let samples: Vec<f64> = (1..=100).map(f64::from).collect();
    let mut events = Vec::new();
    for k in [0, 1, 2, 4, 5] {
        let at = registered + Duration::minutes(5 * k);
        events.push(
            json!({"eventType": "request", "timestamp": iso(at), "healthy": true,
            "metrics": {"requestCount": 100, "successCount": 98, "errorCount": 2,
                        "latencySamplesMs": samples, "dataTransferredBytes": 1500,
                        "dataReceivedBytes": 700, "connectionCount": 3}}),
        );
    }
    // an unhealthy event in the +15 min bucket: it does not make it up
    let down_at = registered + Duration::minutes(15);
    events.push(
        json!({"eventType": "error", "timestamp": iso(down_at), "healthy": false,
        "metrics": {"requestCount": 5, "errorCount": 5, "errorMessage": "down, \"hard\""}}),
    );
    let (s, b) = h
        .record(&alice, "p-a", json!({"events": events.clone()}))
        .await;
    assert_eq!(s, 201, "{b}");
    // bob's proxy has events too; alice never sees them
    let (s, _) = h
        .record(
            &user_token("bob"),
            "p-bob",
            json!({"events": [events[0].clone()]}),
        )
        .await;
    assert_eq!(s, 201);
    // part of it materialised, the rest pending: reads combine both
    aggregate::run_all(&h.app.store).await.unwrap();
    let last_at = registered + Duration::minutes(29);
    let (s, _) = h
        .record(
            &alice,
            "p-a",
            json!({"eventType": "connection", "timestamp": iso(last_at),
            "metrics": {"connectionCount": 7}}),
        )
        .await;
    assert_eq!(s, 201);

    let (s, text, headers) = scrape(&h, Some(&alice)).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for family in FAMILIES {
        assert!(
            text.contains(&format!("\n# HELP {family} "))
                || text.starts_with(&format!("# HELP {family} ")),
            "{family}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} gauge\n")),
            "{family}"
        );
    }
    assert!(!text.contains("p-bob"), "{text}");
    let m = parse_exposition(&text);

    // Today's counts: the events dated today (the 30 minutes may straddle midnight).
    let today = scrape_at.date_naive();
    let mut expected = [0u64; 7]; // events, requests, successes, errors, tx, rx, connections
    for e in events
        .iter()
        .chain([&json!({"timestamp": iso(last_at), "metrics": {"connectionCount": 7}})])
    {
        let at = DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
        if at.with_timezone(&Utc).date_naive() != today {
            continue;
        }
        let metric = |k: &str| e["metrics"][k].as_u64().unwrap_or(0);
        for (i, v) in [
            1,
            metric("requestCount"),
            metric("successCount"),
            metric("errorCount"),
            metric("dataTransferredBytes"),
            metric("dataReceivedBytes"),
            metric("connectionCount"),
        ]
        .into_iter()
        .enumerate()
        {
            expected[i] += v;
        }
    }
    for (family, want) in FAMILIES[..7].iter().zip(expected) {
        assert_eq!(value(&m, family, "p-a"), Some(want as f64), "{family}");
        assert_eq!(value(&m, family, "p-idle"), Some(0.0), "{family} of p-idle");
    }
    // Last hour's percentiles, in seconds, within the sketch's 1 %.
    for (p, exact) in [("p50", 0.050), ("p95", 0.095), ("p99", 0.099)] {
        let family = format!("proxy_metrics_last_hour_latency_{p}_seconds");
        let got = value(&m, &family, "p-a").unwrap();
        assert!(
            (got - exact).abs() / exact <= 0.011,
            "{p}: {got} vs {exact}"
        );
        assert_eq!(value(&m, &family, "p-idle"), None, "no latency, no {p}");
    }
    // Uptime: the buckets from the registration's to now's; up are those
    // with a healthy event (`healthy` defaults to true), not the +15 min one.
    let observed = (bucket_start(scrape_at - Duration::milliseconds(1)) - bucket_start(registered))
        / BUCKET_MS
        + 1;
    let healthy: std::collections::BTreeSet<i64> = events
        .iter()
        .chain([&json!({"timestamp": iso(last_at)})])
        .filter(|e| e["healthy"] != false)
        .map(|e| {
            let at = DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
            bucket_start(at.with_timezone(&Utc))
        })
        .collect();
    assert!(!healthy.contains(&bucket_start(down_at)));
    let up = value(&m, "proxy_metrics_last_24h_uptime_ratio", "p-a").unwrap();
    assert_eq!(
        up,
        healthy.len() as f64 / observed as f64,
        "{} of {observed} buckets up",
        healthy.len()
    );
    assert!(up < 1.0);
    // a registered proxy that sent nothing is down, not unknown
    assert_eq!(
        value(&m, "proxy_metrics_last_24h_uptime_ratio", "p-idle"),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "proxy_metrics_last_event_timestamp_seconds", "p-a"),
        Some(last_at.timestamp_millis() as f64 / 1000.0)
    );
    assert_eq!(
        value(&m, "proxy_metrics_last_event_timestamp_seconds", "p-idle"),
        None
    );

    // The same counts as the daily endpoint.
    let (s, daily) = h.daily(&alice, "p-a", &day_str(today)).await;
    assert_eq!(s, 200);
    assert_eq!(
        value(&m, "proxy_metrics_today_requests", "p-a"),
        daily["metrics"]["requestCount"].as_f64()
    );
}

#[tokio::test]
async fn metrics_need_a_read_token_and_show_only_the_callers_proxies() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    for proxy in ["a-1", "a-2"] {
        assert_eq!(h.register(&alice, proxy).await.0, 201);
    }
    assert_eq!(h.register(&user_token("bob"), "b-1").await.0, 201);

    assert_json_error(&scrape(&h, None).await, 401, "UNAUTHORIZED");
    let garbage = scrape(&h, Some("not-a-jwt")).await;
    assert_json_error(&garbage, 401, "UNAUTHORIZED");
    let writer = token(
        "alice",
        json!({"scope": "metrics:write", "proxy_id": "a-1"}),
    );
    assert_json_error(&scrape(&h, Some(&writer)).await, 403, "FORBIDDEN");

    let proxies_of = |text: &str| -> Vec<String> {
        let p: std::collections::BTreeSet<String> = parse_exposition(text)
            .into_keys()
            .map(|(_, proxy)| proxy)
            .collect();
        p.into_iter().collect()
    };
    let (s, text, _) = scrape(&h, Some(&alice)).await;
    assert_eq!(s, 200);
    assert_eq!(proxies_of(&text), ["a-1", "a-2"]);
    let reader = token("alice", json!({"scope": "metrics:read"}));
    assert_eq!(
        proxies_of(&scrape(&h, Some(&reader)).await.1),
        ["a-1", "a-2"]
    );
    // a proxy's own read token: that proxy only
    let own = token("alice", json!({"scope": "metrics:read", "proxy_id": "a-2"}));
    assert_eq!(proxies_of(&scrape(&h, Some(&own)).await.1), ["a-2"]);
    // naming another user's proxy (or no valid id) shows nothing, not that proxy
    for other in ["b-1", "no such/id"] {
        let t = token("alice", json!({"scope": "metrics:read", "proxy_id": other}));
        let (s, text, _) = scrape(&h, Some(&t)).await;
        assert_eq!(s, 200);
        // (a family without series is left out whole: an empty exposition)
        assert_eq!(text, "", "{other}");
    }
    // bob sees his own only
    assert_eq!(
        proxies_of(&scrape(&h, Some(&user_token("bob"))).await.1),
        ["b-1"]
    );
}

#[tokio::test]
async fn a_scrape_of_100_proxies_costs_at_most_6_queries_per_proxy() {
    let h = Harness::start().await;
    let t = user_token("fleet-owner");
    let n = now();
    let (active, idle) = (90, 10);
    for i in 0..active + idle {
        assert_eq!(h.register(&t, &format!("edge-{i:03}")).await.0, 201);
    }
    let batch = |requests: u64| {
        json!({"events": (0..3).map(|k| json!({"eventType": "request",
            "timestamp": iso(n - Duration::seconds(20 * k)),
            "metrics": {"requestCount": requests, "successCount": requests,
                        "latencySamplesMs": [5.0, 7.0, 9.0]}})).collect::<Vec<_>>()})
    };
    for i in 0..active {
        assert_eq!(
            h.record(&t, &format!("edge-{i:03}"), batch(10)).await.0,
            201
        );
    }
    // materialised days and buckets, plus pending chunks for half of them
    aggregate::run_all(&h.app.store).await.unwrap();
    for i in (0..active).step_by(2) {
        assert_eq!(h.record(&t, &format!("edge-{i:03}"), batch(1)).await.0, 201);
    }

    let before = h.app.store.usage();
    let (s, text, _) = scrape(&h, Some(&t)).await;
    let used = h.app.store.usage() - before;
    assert_eq!(s, 200);
    let proxies = active + idle;
    println!(
        "scrape of {proxies} proxies: {} queries, {} calls, {:.1} RRU ({:.2} RRU per proxy)",
        used.queries,
        used.calls,
        used.read_units,
        used.read_units / proxies as f64
    );
    assert!(used.queries <= 6 * proxies as u64, "{used:?}");
    // one list; per proxy with a recent event three (buckets, today's and
    // the totals' pending chunks) and one for the totals' chunks; six for
    // the idle ones: the six days before today, looking for their latest
    // event, and their days (no totals item: no fold since the upgrade)
    assert_eq!(
        used.queries,
        1 + 4 * active as u64 + 6 * idle as u64,
        "{used:?}"
    );
    assert!(used.read_units <= 9.0 * proxies as f64, "{used:?}");
    assert_eq!(used.write_units, 0.0, "a scrape writes nothing");

    let m = parse_exposition(&text);
    let today_requests =
        |i: usize| value(&m, "proxy_metrics_today_requests", &format!("edge-{i:03}"));
    // (all three events of a batch are dated today unless the test runs
    // in the first minute of the day)
    let dated_today = (0..3)
        .filter(|k| (n - Duration::seconds(20 * k)).date_naive() == n.date_naive())
        .count() as f64;
    assert_eq!(today_requests(0), Some(dated_today * 11.0));
    assert_eq!(today_requests(1), Some(dated_today * 10.0));
    assert_eq!(today_requests(active + 1), Some(0.0));
}

// ----------------------------------------------------------------- dashboard

fn dashboard(
    asset: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String, HashMap<String, String>) {
    let mut req = match asset {
        None => Req::new("GET", "/dashboard"),
        Some(a) => Req::new("GET", "/dashboard/{asset+}").param("asset", a),
    };
    for (k, v) in headers {
        req = req.header(k, v);
    }
    raw(handlers::get_dashboard(req.build()))
}

fn asset_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/assets/dashboard")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The policy the assets' README documents, verbatim.
fn documented_csp() -> String {
    asset_file("README.md")
        .lines()
        .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
        .expect("the README states the policy")
        .trim()
        .to_string()
}

#[test]
fn dashboard_serves_the_page_and_its_files_with_their_types_and_headers() {
    let cases = [
        (None, "index.html", "text/html; charset=utf-8"),
        (Some("app.js"), "app.js", "text/javascript; charset=utf-8"),
        (
            Some("alerts.js"),
            "alerts.js",
            "text/javascript; charset=utf-8",
        ),
        (
            Some("incident.js"),
            "incident.js",
            "text/javascript; charset=utf-8",
        ),
        (Some("style.css"), "style.css", "text/css; charset=utf-8"),
        (
            Some("vendor/uPlot.iife.min.js"),
            "vendor/uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        (
            Some("vendor/uPlot.min.css"),
            "vendor/uPlot.min.css",
            "text/css; charset=utf-8",
        ),
    ];
    for (asset, file, content_type) in cases {
        // no token needed (and a stray Authorization header changes nothing)
        for headers in [&[][..], &[("authorization", "Bearer junk")][..]] {
            let (s, body, h) = dashboard(asset, headers);
            assert_eq!(s, 200, "{file}");
            assert_eq!(h["content-type"], content_type, "{file}");
            assert_eq!(body, asset_file(file), "{file} is served as it is");
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h["cache-control"], "no-cache");
            assert!(h["etag"].starts_with('"') && h["etag"].ends_with('"'));
            if asset.is_none() {
                assert_eq!(h["content-security-policy"], documented_csp());
                assert!(!h["content-security-policy"].contains("unsafe"));
            }
        }
    }
}

#[test]
fn dashboard_answers_304_while_a_file_is_unchanged() {
    let (_, _, h) = dashboard(Some("app.js"), &[]);
    let etag = h["etag"].clone();
    let (s, body, h2) = dashboard(Some("app.js"), &[("if-none-match", &etag)]);
    assert_eq!((s, body.as_str()), (304, ""));
    assert_eq!(h2["etag"], etag);
    let (s, _, _) = dashboard(Some("app.js"), &[("if-none-match", "\"stale\"")]);
    assert_eq!(s, 200);
    // another file's tag does not match
    let (s, _, _) = dashboard(Some("style.css"), &[("if-none-match", &etag)]);
    assert_eq!(s, 200);
}

#[test]
fn dashboard_unknown_files_are_the_contracts_404() {
    for asset in [
        "README.md",
        "vendor/uPlot.LICENSE",
        "index.html",
        "../Cargo.toml",
        "app.js/x",
        "APP.JS",
        "favicon.ico",
    ] {
        let response = dashboard(Some(asset), &[]);
        assert_json_error(&response, 404, "NOT_FOUND");
        assert!(
            !response.1.contains(asset),
            "the 404 does not echo the path"
        );
    }
}

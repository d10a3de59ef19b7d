//! Breakdowns over HTTP against the local stack (contract v3): events with
//! routes, upstreams and status classes recorded in plain and sequenced
//! batches; the breakdown by route, upstream and status equals what was
//! recorded before and after `aggregate-metrics` (invoked through the
//! watcher's invoke API) and with events pending over a folded day; sort
//! and limit; `__other__` past a free owner's cap of 20; the contract's
//! 400s and 422s; and a series whose points sum to the breakdown's total.
//!
//! The stack runs on the real clock: every event is dated at one instant
//! taken at the start of a test and read back on that instant's UTC day,
//! so a run that straddles midnight reads the day it wrote.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde_json::{Value, json};

use super::{bearer, bearer_of_tier, call, common, invoke_aggregation, post_with, real_now};

/// A `request` event at `at` with the given dimensions, counts and
/// (optionally) status classes.
fn event(
    at: DateTime<Utc>,
    route: Option<&str>,
    upstream: Option<&str>,
    (requests, errors): (u64, u64),
    status: Option<Value>,
) -> Value {
    let mut e = json!({"eventType": "request", "timestamp": common::iso(at),
        "metrics": {"requestCount": requests, "successCount": requests - errors,
                    "errorCount": errors, "dataTransferredBytes": 100 * requests}});
    let mut dims = serde_json::Map::new();
    if let Some(r) = route {
        dims.insert("route".into(), json!(r));
    }
    if let Some(u) = upstream {
        dims.insert("upstream".into(), json!(u));
    }
    if !dims.is_empty() {
        e["dimensions"] = Value::Object(dims);
    }
    if let Some(s) = status {
        e["metrics"]["statusCounts"] = s;
    }
    e
}

async fn register(owner: &str, proxy: &str) {
    let (s, b) = call(
        reqwest::Method::POST,
        "/proxies",
        Some(owner),
        Some(json!({"proxyId": proxy})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
}

async fn breakdown(owner: &str, proxy: &str, query: &str) -> (u16, Value) {
    call(
        reqwest::Method::GET,
        &format!("/proxy/metrics/{proxy}/breakdown?{query}"),
        Some(owner),
        None,
    )
    .await
}

/// The breakdown of `day` by `key` (plus `extra` query parameters), 200.
async fn by(owner: &str, proxy: &str, key: &str, day: &str, extra: &str) -> Value {
    let (s, b) = breakdown(
        owner,
        proxy,
        &format!("by={key}&startDate={day}&endDate={day}{extra}"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["by"], key, "{b}");
    assert_eq!(b["count"], b["values"].as_array().unwrap().len(), "{b}");
    b
}

/// value → field (a count) of each returned value.
fn column(body: &Value, field: &str) -> BTreeMap<String, u64> {
    body["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let value = v["value"].as_str().unwrap().to_string();
            let n = v[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} of {value}: {body}"));
            (value, n)
        })
        .collect()
}

fn order(body: &Value) -> Vec<&str> {
    body["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn add(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    *map.entry(key.to_string()).or_default() += n;
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn breakdowns_equal_what_was_recorded_before_and_after_the_aggregation_over_http() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-bd-{}", &run[..12]);
    let owner = bearer(&format!("bd-{run}"));
    register(&owner, &proxy).await;
    let at = real_now();
    let day = common::day_str(at.date_naive());
    let record = format!("/proxy/metrics/{proxy}/record");

    // An unknown dimension key rejects the whole batch, naming the key.
    let mut bad = event(at, Some("/a"), None, (1, 0), None);
    bad["dimensions"]["region"] = json!("eu");
    let (s, b) = call(
        reqwest::Method::POST,
        &record,
        Some(&owner),
        Some(json!({"events": [event(at, None, None, (1, 0), None), bad]})),
    )
    .await;
    assert_eq!(
        (s, b["error"].clone()),
        (400, json!("INVALID_REQUEST")),
        "{b}"
    );
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains("events[1]") && message.contains("dimensions.region"),
        "{message}"
    );

    // A plain batch: status classes given, defaulted (successes 2xx,
    // errors 5xx), and an event without dimensions ("(none)").
    let plain = json!({"events": [
        event(at, Some("/api/users/:id"), Some("10.0.3.7:8080"), (50, 2),
              Some(json!({"2xx": 45, "3xx": 3, "5xx": 2}))),
        event(at, Some("/static/:id"), Some("10.0.3.8:8080"), (30, 0), None),
        event(at, None, None, (7, 2), None),
    ]});
    let (s, b) = call(reqwest::Method::POST, &record, Some(&owner), Some(plain)).await;
    assert_eq!((s, b["recorded"].clone()), (201, json!(3)), "{b}");
    // A sequenced batch, then the same sequence again: a duplicate.
    let sequenced = json!({"events": [
        event(at, Some("/api/users/:id"), Some("10.0.3.8:8080"), (20, 5),
              Some(json!({"1xx": 1, "2xx": 12, "4xx": 2, "5xx": 5}))),
        event(at, Some("/login"), Some("10.0.3.7:8080"), (10, 6),
              Some(json!({"4xx": 4, "5xx": 6}))),
    ]});
    let producer = format!("bd-{}", &run[..8]);
    let send = |sequence: &'static str, body: Value| {
        let headers = [
            ("producer-id", producer.as_str()),
            ("producer-sequence", sequence),
        ];
        let (record, owner) = (&record, &owner);
        async move { post_with(record, owner, &headers, body).await }
    };
    let (s, b) = send("0", sequenced.clone()).await;
    assert_eq!((s, b["recorded"].clone()), (201, json!(2)), "{b}");
    let (s, b) = send("0", sequenced).await;
    assert_eq!((s, b["recorded"].clone()), (200, json!(0)), "{b}");

    let mut routes = counts(&[
        ("/api/users/:id", 70),
        ("/static/:id", 30),
        ("/login", 10),
        ("(none)", 7),
    ]);
    let mut upstreams = counts(&[("10.0.3.7:8080", 60), ("10.0.3.8:8080", 50), ("(none)", 7)]);
    let mut status = counts(&[
        ("1xx", 1),
        ("2xx", 45 + 30 + 5 + 12),
        ("3xx", 3),
        ("4xx", 2 + 4),
        ("5xx", 2 + 2 + 5 + 6),
    ]);
    let mut route_errors = counts(&[
        ("/api/users/:id", 7),
        ("/static/:id", 0),
        ("/login", 6),
        ("(none)", 2),
    ]);

    for round in ["pending", "folded", "folded+pending"] {
        if round == "folded" {
            let (s, report) = invoke_aggregation(json!({"detail": {}})).await;
            assert_eq!(s, 200, "{report}");
            assert_eq!(report["daysFailed"], 0, "{report}");
        }
        if round == "folded+pending" {
            // the next sequence, over the folded day
            let more = json!({"events": [
                event(at, Some("/login"), Some("10.0.3.9:8080"), (4, 4), None),
            ]});
            let (s, b) = send("1", more).await;
            assert_eq!((s, b["recorded"].clone()), (201, json!(1)), "{b}");
            add(&mut routes, "/login", 4);
            add(&mut upstreams, "10.0.3.9:8080", 4);
            add(&mut status, "5xx", 4);
            add(&mut route_errors, "/login", 4);
        }
        let by_route = by(&owner, &proxy, "route", &day, "").await;
        assert_eq!(
            column(&by_route, "requestCount"),
            routes,
            "{round}: {by_route}"
        );
        assert_eq!(column(&by_route, "errorCount"), route_errors, "{round}");
        assert_eq!(
            by_route["other"],
            json!({"eventCount": 0, "distinctValues": 0}),
            "{round}"
        );
        let api = &by_route["values"][0];
        assert_eq!(api["value"], "/api/users/:id", "{round}: {by_route}");
        assert_eq!(api["dataTransferredBytes"], 7000, "{round}");
        let rate = api["successRate"].as_f64().unwrap();
        assert!((rate - 63.0 / 70.0).abs() < 1e-9, "{round}: {rate}");
        let by_upstream = by(&owner, &proxy, "upstream", &day, "").await;
        assert_eq!(
            column(&by_upstream, "requestCount"),
            upstreams,
            "{round}: {by_upstream}"
        );
        let by_status = by(&owner, &proxy, "status", &day, "").await;
        assert_eq!(
            column(&by_status, "requestCount"),
            status,
            "{round}: {by_status}"
        );
        assert_eq!(by_status["count"], 5);
        // the daily object's statusCounts say the same
        let (s, daily) = call(
            reqwest::Method::GET,
            &format!("/proxy/metrics/{proxy}/daily/{day}"),
            Some(&owner),
            None,
        )
        .await;
        assert_eq!(s, 200, "{daily}");
        for (class, n) in &status {
            assert_eq!(
                daily["metrics"]["statusCounts"][class.as_str()].as_u64(),
                Some(*n),
                "{round}: {class} {daily}"
            );
        }
        let total: u64 = routes.values().sum();
        assert_eq!(daily["metrics"]["requestCount"], total, "{round}");
    }
    // The aggregation once more: nothing is counted twice.
    let (s, report) = invoke_aggregation(json!({"detail": {}})).await;
    assert_eq!(s, 200, "{report}");
    let by_route = by(&owner, &proxy, "route", &day, "").await;
    assert_eq!(column(&by_route, "requestCount"), routes, "{by_route}");

    // Sort and limit: requests by default, then errors, then error rate.
    assert_eq!(
        order(&by_route),
        ["/api/users/:id", "/static/:id", "/login", "(none)"]
    );
    let top = by(&owner, &proxy, "route", &day, "&limit=2").await;
    assert_eq!(order(&top), ["/api/users/:id", "/static/:id"]);
    assert_eq!(top["count"], 2);
    let errors = by(&owner, &proxy, "route", &day, "&sort=errors&limit=2").await;
    assert_eq!(order(&errors), ["/login", "/api/users/:id"], "{errors}");
    let rate = by(&owner, &proxy, "route", &day, "&sort=errorRate&limit=3").await;
    // /login 10/14, (none) 2/7, /api/users/:id 7/70
    assert_eq!(
        order(&rate),
        ["/login", "(none)", "/api/users/:id"],
        "{rate}"
    );

    // The series of the same day at 5-minute steps sums to the same total.
    let from = at.date_naive().and_time(NaiveTime::MIN).and_utc();
    let to = from + Duration::days(1);
    let (s, series) = call(
        reqwest::Method::GET,
        &format!(
            "/proxy/metrics/{proxy}/series?from={}&to={}&step=5m",
            common::iso(from),
            common::iso(to)
        ),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(s, 200, "{series}");
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 288);
    let sum: u64 = points
        .iter()
        .map(|p| p["requestCount"].as_u64().unwrap())
        .sum();
    let total: u64 = column(&by_route, "requestCount").values().sum();
    assert_eq!(sum, total, "series {sum} vs breakdown {total}");
    assert_eq!(total, 121);

    // The contract's errors: an unknown `by` (400), a range longer than the
    // pro tier's 366 days (422), someone else's proxy (404).
    let (s, b) = breakdown(
        &owner,
        &proxy,
        &format!("by=path&startDate={day}&endDate={day}"),
    )
    .await;
    assert_eq!(
        (s, b["error"].clone()),
        (400, json!("INVALID_REQUEST")),
        "{b}"
    );
    assert_eq!(b["code"], "PROXY_METRICS_400");
    let long_ago = common::day_str((at - Duration::days(400)).date_naive());
    let (s, b) = breakdown(
        &owner,
        &proxy,
        &format!("by=route&startDate={long_ago}&endDate={day}"),
    )
    .await;
    assert_eq!(
        (s, b["error"].clone()),
        (422, json!("RANGE_TOO_LARGE")),
        "{b}"
    );
    assert_eq!(b["code"], "PROXY_METRICS_422");
    let stranger = bearer(&format!("stranger-{run}"));
    let (s, b) = breakdown(
        &stranger,
        &proxy,
        &format!("by=route&startDate={day}&endDate={day}"),
    )
    .await;
    assert_eq!((s, b["error"].clone()), (404, json!("NOT_FOUND")), "{b}");
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn values_past_a_free_owners_cap_count_under_other_over_http() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-cap-{}", &run[..12]);
    let owner = bearer_of_tier(&format!("cap-{run}"), "free");
    register(&owner, &proxy).await;
    let at = real_now();
    let day = common::day_str(at.date_naive());
    let record = format!("/proxy/metrics/{proxy}/record");
    // 25 distinct routes in one batch, the same batch again, then a new route.
    let events: Vec<Value> = (0..25)
        .map(|i| event(at, Some(&format!("/r{i:02}")), None, (2, 0), None))
        .collect();
    for _ in 0..2 {
        let (s, b) = call(
            reqwest::Method::POST,
            &record,
            Some(&owner),
            Some(json!({"events": events.clone()})),
        )
        .await;
        assert_eq!((s, b["recorded"].clone()), (201, json!(25)), "{b}");
    }
    let (s, b) = call(
        reqwest::Method::POST,
        &record,
        Some(&owner),
        Some(event(at, Some("/late"), None, (1, 0), None)),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    for round in ["pending", "folded"] {
        if round == "folded" {
            let (s, report) = invoke_aggregation(json!({"detail": {}})).await;
            assert_eq!(s, 200, "{report}");
            assert_eq!(report["daysFailed"], 0, "{report}");
        }
        let body = by(&owner, &proxy, "route", &day, "&limit=500").await;
        assert_eq!(body["tier"], "free");
        let values = column(&body, "requestCount");
        assert_eq!(values.len(), 21, "{round}: {body}");
        // the first 20 of the batch's order are admitted, the rest are __other__
        for i in 0..20 {
            assert_eq!(values[&format!("/r{i:02}")], 4, "{round}: {body}");
        }
        assert_eq!(values["__other__"], 2 * 5 * 2 + 1, "{round}");
        assert_eq!(
            body["other"],
            json!({"eventCount": 11, "distinctValues": 6}),
            "{round}"
        );
        assert_eq!(values.values().sum::<u64>(), 25 * 2 * 2 + 1, "{round}");
        // __other__ is sorted like any value (21 requests: first)
        assert_eq!(order(&body)[0], "__other__", "{round}");
    }

    // The free tier's longest range is 31 days, both ends inclusive.
    let ok = common::day_str((at - Duration::days(30)).date_naive());
    let (s, b) = breakdown(
        &owner,
        &proxy,
        &format!("by=upstream&startDate={ok}&endDate={day}"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(column(&b, "requestCount"), counts(&[("(none)", 101)]));
    let too_long = common::day_str((at - Duration::days(31)).date_naive());
    let (s, b) = breakdown(
        &owner,
        &proxy,
        &format!("by=upstream&startDate={too_long}&endDate={day}"),
    )
    .await;
    assert_eq!(
        (s, b["error"].clone()),
        (422, json!("RANGE_TOO_LARGE")),
        "{b}"
    );
}

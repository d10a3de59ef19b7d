//! Dimensions, status classes and breakdowns (contract v3): validation,
//! values before and after the aggregation, the cardinality cap (also
//! under concurrent writers of separate instances), percentiles per value.

use crate::common;

use std::collections::BTreeMap;

use chrono::Duration;
use common::*;
use proxy_metrics::aggregate;
use proxy_metrics::handlers;
use serde_json::{Value, json};

async fn breakdown(h: &Harness, token: &str, proxy: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let mut req = Req::new("GET", "/proxy/metrics/{proxyId}/breakdown")
        .param("proxyId", proxy)
        .bearer(token);
    for (k, v) in query {
        req = req.query(k, v);
    }
    let (s, b, _) = parts(handlers::get_breakdown(&h.app, req.build()).await);
    (s, b)
}

fn today_range() -> [(&'static str, String); 2] {
    [("startDate", today()), ("endDate", today())]
}

async fn by(h: &Harness, token: &str, proxy: &str, key: &str, extra: &[(&str, &str)]) -> Value {
    let [(a, start), (b, end)] = today_range();
    let mut query = vec![("by", key), (a, start.as_str()), (b, end.as_str())];
    query.extend_from_slice(extra);
    let (status, body) = breakdown(h, token, proxy, &query).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// value → requestCount.
fn requests(body: &Value) -> BTreeMap<String, u64> {
    body["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["requestCount"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn event(route: Option<&str>, upstream: Option<&str>, requests: u64, errors: u64) -> Value {
    let mut e = json!({
        "eventType": "request",
        "timestamp": now_rfc3339(),
        "metrics": {"requestCount": requests, "successCount": requests - errors, "errorCount": errors},
    });
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
    e
}

#[tokio::test]
async fn dimensions_and_status_counts_are_validated_and_named() {
    let h = Harness::start().await;
    let t = user_token("u1");
    h.register(&t, "p1").await;
    let mut bad = event(Some("/a"), None, 1, 0);
    bad["dimensions"]["rout"] = json!("/b");
    let (s, b) = h
        .record(&t, "p1", json!({"events": [event(None, None, 1, 0), bad]}))
        .await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let msg = b["message"].as_str().unwrap();
    assert!(
        msg.contains("events[1]") && msg.contains("dimensions.rout"),
        "{msg}"
    );
    let mut e = event(None, None, 10, 1);
    e["metrics"]["statusCounts"] = json!({"2xx": 8, "5xx": 1});
    let (s, b) = h.record(&t, "p1", e).await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert!(b["message"].as_str().unwrap().contains("sums to 9"), "{b}");
    let mut long = event(Some(&"x".repeat(257)), None, 1, 0);
    let (s, _) = h.record(&t, "p1", long.clone()).await;
    assert_eq!(s, 400);
    long["dimensions"]["route"] = json!("x".repeat(256));
    let (s, b) = h.record(&t, "p1", long).await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn breakdowns_hold_every_event_before_and_after_the_aggregation() {
    let h = Harness::start().await;
    let t = user_token("u1");
    h.register(&t, "p1").await;
    let mut with_status = event(Some("/b"), Some("10.0.0.2:80"), 10, 3);
    with_status["metrics"]["statusCounts"] = json!({"2xx": 5, "3xx": 1, "4xx": 1, "5xx": 3});
    let batch = json!({"events": [
        event(Some("/a"), Some("10.0.0.1:80"), 4, 1),
        event(Some("/a"), Some("10.0.0.2:80"), 6, 0),
        with_status,
        event(None, None, 7, 2),
    ]});
    let (s, b) = h.record(&t, "p1", batch).await;
    assert_eq!(s, 201, "{b}");
    let expect_routes = BTreeMap::from([
        ("/a".to_string(), 10),
        ("/b".to_string(), 10),
        ("(none)".to_string(), 7),
    ]);
    let expect_upstreams = BTreeMap::from([
        ("10.0.0.1:80".to_string(), 4),
        ("10.0.0.2:80".to_string(), 16),
        ("(none)".to_string(), 7),
    ]);
    // status: 5 + 10 + 5 (defaults: successes 2xx, errors 5xx) …
    let expect_status = BTreeMap::from([
        ("1xx".to_string(), 0),
        ("2xx".to_string(), 3 + 6 + 5 + 5),
        ("3xx".to_string(), 1),
        ("4xx".to_string(), 1),
        ("5xx".to_string(), 1 + 3 + 2),
    ]);
    for round in ["pending", "folded", "folded+pending"] {
        if round == "folded" {
            aggregate::run_all(&h.app.store).await.unwrap();
        }
        if round == "folded+pending" {
            let (s, _) = h.record(&t, "p1", event(Some("/a"), None, 5, 5)).await;
            assert_eq!(s, 201);
        }
        let extra = u64::from(round == "folded+pending") * 5;
        let routes = by(&h, &t, "p1", "route", &[]).await;
        let mut want = expect_routes.clone();
        *want.get_mut("/a").unwrap() += extra;
        assert_eq!(requests(&routes), want, "{round}: {routes}");
        let upstreams = by(&h, &t, "p1", "upstream", &[]).await;
        let mut want = expect_upstreams.clone();
        *want.get_mut("(none)").unwrap() += extra;
        assert_eq!(requests(&upstreams), want, "{round}: {upstreams}");
        let status = by(&h, &t, "p1", "status", &[]).await;
        let mut want = expect_status.clone();
        *want.get_mut("5xx").unwrap() += extra;
        assert_eq!(requests(&status), want, "{round}: {status}");
        assert_eq!(status["count"], 5);
        assert!(status["values"][0]["successRate"].is_null());
        // the daily object says the same
        let (_, day) = h.daily(&t, "p1", &today()).await;
        let sc = &day["metrics"]["statusCounts"];
        for (class, n) in &want {
            assert_eq!(
                sc[class.as_str()].as_u64(),
                Some(*n),
                "{round}: {class} {day}"
            );
        }
        let a = routes["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["value"] == "/a")
            .unwrap();
        assert_eq!(a["errorCount"].as_u64(), Some(1 + extra), "{round}");
        assert_eq!(
            routes["other"],
            json!({"eventCount": 0, "distinctValues": 0})
        );
    }
    // the aggregation once more: nothing counted twice
    aggregate::run_all(&h.app.store).await.unwrap();
    let routes = by(&h, &t, "p1", "route", &[]).await;
    assert_eq!(requests(&routes)["/a"], 15);
}

#[tokio::test]
async fn sort_limit_and_bad_queries() {
    let h = Harness::start().await;
    let t = user_token("u1");
    h.register(&t, "p1").await;
    let events: Vec<Value> = (0..6u64)
        .map(|i| event(Some(&format!("/r{i}")), None, 10 + i, i))
        .collect();
    let (s, _) = h.record(&t, "p1", json!({"events": events})).await;
    assert_eq!(s, 201);
    let top = by(&h, &t, "p1", "route", &[("limit", "2")]).await;
    assert_eq!(top["count"], 2);
    assert_eq!(top["values"][0]["value"], "/r5");
    assert_eq!(top["values"][1]["value"], "/r4");
    let errors = by(
        &h,
        &t,
        "p1",
        "route",
        &[("sort", "errorRate"), ("limit", "1")],
    )
    .await;
    assert_eq!(errors["values"][0]["value"], "/r5");
    let today = today();
    for (query, kind) in [
        (
            vec![("startDate", today.as_str()), ("endDate", today.as_str())],
            "INVALID_REQUEST",
        ),
        (
            vec![("by", "path"), ("startDate", &today), ("endDate", &today)],
            "INVALID_REQUEST",
        ),
        (
            vec![
                ("by", "route"),
                ("startDate", &today),
                ("endDate", &today),
                ("limit", "0"),
            ],
            "INVALID_REQUEST",
        ),
        (
            vec![
                ("by", "route"),
                ("startDate", &today),
                ("endDate", &today),
                ("limit", "501"),
            ],
            "INVALID_REQUEST",
        ),
        (
            vec![
                ("by", "route"),
                ("startDate", &today),
                ("endDate", &today),
                ("sort", "p90"),
            ],
            "INVALID_REQUEST",
        ),
    ] {
        let (s, b) = breakdown(&h, &t, "p1", &query).await;
        assert_error(s, &b, 400, kind);
    }
    let long_ago = day_str(day_ago(400));
    let (s, b) = breakdown(
        &h,
        &t,
        "p1",
        &[
            ("by", "route"),
            ("startDate", &long_ago),
            ("endDate", &today),
        ],
    )
    .await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    // someone else's proxy: 404, like every read
    let (s, b) = breakdown(
        &h,
        &user_token("u2"),
        "p1",
        &[("by", "route"), ("startDate", &today), ("endDate", &today)],
    )
    .await;
    assert_error(s, &b, 404, "NOT_FOUND");
}

#[tokio::test]
async fn values_past_the_cap_go_to_other_never_dropped() {
    let h = Harness::start().await;
    let t = token("u1", json!({"tier": "free"}));
    h.register(&t, "p1").await;
    // 25 distinct routes in one batch, then again, then a new one.
    let events: Vec<Value> = (0..25)
        .map(|i| event(Some(&format!("/r{i:02}")), None, 2, 0))
        .collect();
    for _ in 0..2 {
        let (s, b) = h.record(&t, "p1", json!({"events": events.clone()})).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, _) = h.record(&t, "p1", event(Some("/late"), None, 1, 0)).await;
    assert_eq!(s, 201);
    for round in 0..2 {
        if round == 1 {
            aggregate::run_all(&h.app.store).await.unwrap();
        }
        let body = by(&h, &t, "p1", "route", &[("limit", "500")]).await;
        let values = requests(&body);
        assert_eq!(values.len(), 21, "{body}");
        // the first 20 of the request's order are admitted
        for i in 0..20 {
            assert_eq!(values[&format!("/r{i:02}")], 4, "{body}");
        }
        assert_eq!(values["__other__"], 2 * 5 * 2 + 1);
        assert_eq!(
            body["other"],
            json!({"eventCount": 11, "distinctValues": 6})
        );
        let total: u64 = values.values().sum();
        assert_eq!(total, 25 * 2 * 2 + 1);
    }
}

#[tokio::test]
async fn concurrent_instances_never_admit_more_than_the_cap() {
    let h = Harness::start().await;
    let t = token("u1", json!({"tier": "free"}));
    h.register(&t, "p1").await;
    // Three function instances (own caches) on one table, 60 new routes.
    let others = [
        Harness::start_with_endpoint(&h.endpoint).await,
        Harness::start_with_endpoint(&h.endpoint).await,
    ];
    let apps = [&h.app, &others[0].app, &others[1].app];
    let sends = (0..60).map(|i| {
        let app = apps[i % 3];
        let body = event(Some(&format!("/c{i}")), Some(&format!("u{}", i % 30)), 1, 0);
        let req = record_req(&t, "p1").json(body);
        async move { send_record(app, req).await.0 }
    });
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let routes = by(&h, &t, "p1", "route", &[("limit", "500")]).await;
    let values = requests(&routes);
    assert_eq!(values.len(), 21, "{routes}");
    assert_eq!(values["__other__"], 40);
    assert_eq!(routes["other"]["distinctValues"], 40);
    let upstreams = by(&h, &t, "p1", "upstream", &[("limit", "500")]).await;
    assert_eq!(requests(&upstreams).len(), 21, "{upstreams}");
    assert_eq!(requests(&upstreams).values().sum::<u64>(), 60);
}

#[tokio::test]
async fn percentiles_per_value_come_from_that_values_samples() {
    let h = Harness::start().await;
    let t = user_token("u1");
    h.register(&t, "p1").await;
    let at = now() - Duration::minutes(1);
    let fast: Vec<f64> = (1..=1000).map(f64::from).collect();
    let slow: Vec<f64> = (1..=1000).map(|i| 1000.0 + f64::from(i) * 10.0).collect();
    let mut events = Vec::new();
    for (route, samples) in [("/fast", &fast), ("/slow", &slow)] {
        for part in samples.chunks(250) {
            events.push(json!({
                "eventType": "latency",
                "timestamp": iso(at),
                "dimensions": {"route": route},
                "metrics": {"requestCount": part.len(), "latencySamplesMs": part},
            }));
        }
    }
    let (s, b) = h.record(&t, "p1", json!({"events": events})).await;
    assert_eq!(s, 201, "{b}");
    aggregate::run_all(&h.app.store).await.unwrap();
    let body = by(&h, &t, "p1", "route", &[("sort", "p99")]).await;
    let exact = |v: &[f64], q: f64| v[((q * v.len() as f64).ceil() as usize).max(1) - 1];
    for (i, (route, samples)) in [("/slow", &slow), ("/fast", &fast)].iter().enumerate() {
        let row = &body["values"][i];
        assert_eq!(row["value"], *route, "{body}");
        for (field, q) in [
            ("p50LatencyMs", 0.5),
            ("p95LatencyMs", 0.95),
            ("p99LatencyMs", 0.99),
        ] {
            let got = row[field].as_f64().unwrap();
            let want = exact(samples, q);
            assert!(
                (got - want).abs() <= want * 0.01 + 1e-9,
                "{route} {field}: {got} vs {want}"
            );
        }
    }
}

/// A proxy that never sent a dimension writes no dimension page (its
/// records and runs cost what they did before v3) and its breakdown is its
/// days, `(none)` with the day's own percentiles. Once it sends one, every
/// later chunk counts in the pages: days after that are read from the
/// pages alone (2 queries); a range reaching back reads the days too, and
/// the events recorded before the first dimension count under `(none)`.
#[tokio::test]
async fn a_proxy_without_dimensions_pays_nothing_for_them_and_its_breakdown_is_exact() {
    let day0 = now().date_naive() - Duration::days(3);
    let noon = |day: chrono::NaiveDate| day.and_hms_opt(12, 0, 0).unwrap().and_utc();
    let h = Harness::start_at(noon(day0)).await;
    let t = token_at("u1", json!({"tier": "pro"}), noon(day0));
    h.register(&t, "p1").await;
    let latency = |samples: &[f64], route: Option<&str>| {
        let mut e = json!({
            "eventType": "latency",
            "timestamp": iso(h.app.clock.now() - Duration::minutes(1)),
            "metrics": {"requestCount": samples.len(), "latencySamplesMs": samples},
        });
        if let Some(r) = route {
            e["dimensions"] = json!({"route": r});
        }
        e
    };
    let plain: Vec<f64> = (1..=200).map(|i| f64::from(i) * 3.0).collect();
    let (s, b) = h
        .record(&t, "p1", json!({"events": [latency(&plain, None)]}))
        .await;
    assert_eq!(s, 201, "{b}");
    aggregate::run_all(&h.app.store).await.unwrap();
    let pages = h
        .client
        .query()
        .table_name(TABLE)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S("DIMS#p1".into()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        pages.count(),
        0,
        "no dimension page for a proxy without dimensions"
    );

    let range = |a: chrono::NaiveDate, b: chrono::NaiveDate| (day_str(a), day_str(b));
    let read = |(start, end): (String, String), t: String| {
        let h = &h;
        async move {
            let before = h.app.store.usage();
            let (status, body) = breakdown(
                h,
                &t,
                "p1",
                &[("by", "route"), ("startDate", &start), ("endDate", &end)],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            (body, (h.app.store.usage() - before).queries)
        }
    };
    let (body, _) = read(range(day0, day0), t.clone()).await;
    let (_, daily) = h.daily(&t, "p1", &day_str(day0)).await;
    assert_eq!(
        requests(&body),
        BTreeMap::from([("(none)".to_string(), 200)])
    );
    for field in ["p50LatencyMs", "p95LatencyMs", "p99LatencyMs"] {
        assert_eq!(body["values"][0][field], daily["metrics"][field], "{field}");
    }

    // The first dimension (same day): `/a` and an event without a route.
    let routed: Vec<f64> = (1..=100).map(f64::from).collect();
    let unrouted = [5000.0; 10];
    let (s, b) = h
        .record(
            &t,
            "p1",
            json!({"events": [latency(&routed, Some("/a")), latency(&unrouted, None)]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let expect_day0 = BTreeMap::from([("(none)".to_string(), 210), ("/a".to_string(), 100)]);
    assert_eq!(
        requests(&read(range(day0, day0), t.clone()).await.0),
        expect_day0
    );
    aggregate::run_all(&h.app.store).await.unwrap();
    let (body, _) = read(range(day0, day0), t.clone()).await;
    assert_eq!(requests(&body), expect_day0);
    // `(none)`'s percentiles come from its own samples: the 200 plain ones
    // (3..600 ms) and ten of 5000 ms; p50 is the 105th of 210.
    let p50 = body["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["value"] == "(none)")
        .unwrap()["p50LatencyMs"]
        .as_f64()
        .unwrap();
    assert!((p50 - 315.0).abs() <= 315.0 * 0.01, "{p50}");

    // Two days later: a batch without dimensions counts in the pages now.
    let day2 = day0 + Duration::days(2);
    h.app.clock.set(noon(day2));
    let t2 = token_at("u1", json!({"tier": "pro"}), noon(day2));
    let (s, b) = h
        .record(
            &t2,
            "p1",
            json!({"events": [latency(&plain[..50], None), latency(&routed[..20], Some("/b"))]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    for run in [false, true] {
        if run {
            aggregate::run_all(&h.app.store).await.unwrap();
        }
        let (body, queries) = read(range(day2, day2), t2.clone()).await;
        assert_eq!(
            requests(&body),
            BTreeMap::from([("(none)".to_string(), 50), ("/b".to_string(), 20)])
        );
        assert_eq!(queries, 2, "after the first dimension: the pages alone");
        let (body, queries) = read(range(day0, day2), t2.clone()).await;
        assert_eq!(
            requests(&body),
            BTreeMap::from([
                ("(none)".to_string(), 260),
                ("/a".to_string(), 100),
                ("/b".to_string(), 20)
            ])
        );
        assert!(queries > 2, "reaching back before it: the days too");
    }
}

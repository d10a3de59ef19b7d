//! What a review and a new user found at the edges (issue 13): unknown
//! fields refused, the order token → scope → input, permanent storage
//! failures answered at once, how far back the summary looks.

use crate::common;

use chrono::Duration;
use common::fault_proxy::{Fault, FaultConfig, FaultProxy};
use common::*;
use proxy_metrics::{App, handlers};
use serde_json::{Value, json};

async fn register(h: &Harness, token: &str, body: Value) -> (u16, Value) {
    let req = Req::new("POST", "/proxies")
        .bearer(token)
        .json(body)
        .build();
    let (s, b, _) = parts(handlers::register_proxy(&h.app, req).await);
    (s, b)
}

#[tokio::test]
async fn unknown_fields_are_refused_by_name() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let ts = now_rfc3339();
    for (body, named) in [
        (json!({"eventType": "request", "healty": false}), "healty"),
        (
            json!({"eventType": "request", "event_id": "e-1"}),
            "event_id",
        ),
        (
            json!({"eventType": "request", "timeStamp": ts}),
            "timeStamp",
        ),
        (
            json!({"events": [{"eventType": "request"}], "producer": "x"}),
            "producer",
        ),
        (
            json!({"events": [{"eventType": "request"}, {"eventType": "request", "healty": true}]}),
            "events[1]: 'healty'",
        ),
    ] {
        let (s, b) = h.record(&t, "edge", body.clone()).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
        assert!(
            b["message"].as_str().unwrap().contains(named),
            "{body}: {b}"
        );
    }
    let (s, b) = h.daily(&t, "edge", &today()).await;
    assert_eq!(
        (s, b["metrics"]["eventCount"].clone()),
        (200, json!(0)),
        "nothing was recorded"
    );

    // registration is as strict
    let (s, b) = register(&h, &t, json!({"proxy_id": "typo", "proxyId": "edge-2"})).await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    assert!(b["message"].as_str().unwrap().contains("'proxy_id'"), "{b}");
    let (s, b) = register(&h, &t, json!(["edge-2"])).await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    let (s, _) = register(&h, &t, json!({"proxyId": "edge-2", "name": "EU"})).await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn the_token_and_its_scope_come_before_the_input() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let daily = |token: Option<&str>, date: &str| {
        let mut req = Req::new("GET", "/proxy/metrics/{proxyId}/daily/{date}")
            .param("proxyId", "edge")
            .param("date", date);
        if let Some(token) = token {
            req = req.bearer(token);
        }
        let request = req.build();
        let app = &h.app;
        async move { parts(handlers::get_daily_metrics(app, request).await) }
    };
    let (s, b, _) = daily(None, "2024-02-30").await;
    assert_error(s, &b, 401, "UNAUTHORIZED");
    let writer = token("alice", json!({"scope": "metrics:write"}));
    let (s, b, _) = daily(Some(&writer), "not-a-date").await;
    assert_error(s, &b, 403, "FORBIDDEN");
    let (s, b, _) = daily(Some(&t), "not-a-date").await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
    // and the input before the ownership read: a bad date on another user's
    // proxy is a 400, not a 404
    let mallory = user_token("mallory");
    let (s, b, _) = daily(Some(&mallory), "2024-13-01").await;
    assert_error(s, &b, 400, "INVALID_REQUEST");
}

#[tokio::test]
async fn a_permanent_storage_failure_is_a_500_at_once_not_a_503() {
    let h = Harness::start().await;
    let fault = FaultProxy::start(&h.endpoint, 5).await;
    let app = App::with_clock(
        &config(&fault.endpoint, &[]),
        sdk_client(&fault.endpoint),
        h.app.clock.clone(),
    );
    let t = user_token("alice");
    h.register(&t, "edge").await;
    fault.set(
        FaultConfig::always(Fault::Cancelled("ValidationError")).only(&["TransactWriteItems"]),
    );
    let started = std::time::Instant::now();
    let (s, b, headers) = send_record(
        &app,
        record_req(&t, "edge").json(json!({"eventType": "request"})),
    )
    .await;
    assert_error(s, &b, 500, "INTERNAL_SERVER_ERROR");
    assert_eq!(b["requestId"], "test-request-id");
    assert!(!headers.contains_key("retry-after"));
    assert_eq!(
        fault.stats().requests_of("TransactWriteItems"),
        1,
        "not retried"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // a transient cancellation (a conflict) is retried and lands
    fault.set(
        FaultConfig::scripted(&[Fault::Cancelled("TransactionConflict")])
            .only(&["TransactWriteItems"]),
    );
    let (s, b, _) = send_record(
        &app,
        record_req(&t, "edge").json(json!({"eventType": "request"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
}

#[tokio::test]
async fn the_summary_looks_back_seven_days_for_the_latest_values() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let summary = || {
        let req = Req::new("GET", "/proxy/metrics/{proxyId}/summary")
            .param("proxyId", "edge")
            .bearer(&t)
            .build();
        let app = &h.app;
        async move {
            let (s, b, _) = parts(handlers::get_summary(app, req).await);
            assert_eq!(s, 200, "{b}");
            b
        }
    };
    let at = now() - Duration::days(5);
    let old = json!({"eventType": "connection", "timestamp": iso(at),
                     "metrics": {"concurrentConnections": 42}});
    assert_eq!(h.record(&t, "edge", old).await.0, 201);
    // a newer event without concurrency: the latest reported value is older
    let newer = json!({"eventType": "request", "timestamp": iso(now() - Duration::days(2)),
                       "metrics": {"requestCount": 1}});
    assert_eq!(h.record(&t, "edge", newer).await.0, 201);
    let b = summary().await;
    assert_eq!(b["concurrentConnections"], 42, "{b}");
    assert_eq!(b["lastEventAt"], iso(now() - Duration::days(2)));
    assert_eq!(b["last24Hours"]["requestCount"], 0);
    // folded or not, the same answer
    proxy_metrics::aggregate::run_all(&h.app.store)
        .await
        .unwrap();
    assert_eq!(summary().await["concurrentConnections"], 42);
    // four days on, the concurrency report is 9 days old: out of reach
    h.app.clock.advance(Duration::days(4));
    let later = token_at("alice", json!({"tier": "pro"}), h.app.clock.now());
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/summary")
        .param("proxyId", "edge")
        .bearer(&later)
        .build();
    let (s, b, _) = parts(handlers::get_summary(&h.app, req).await);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["concurrentConnections"], Value::Null, "{b}");
    assert_eq!(
        b["lastEventAt"],
        iso(now() - Duration::days(2)),
        "still within 7 days"
    );
}

#[tokio::test]
async fn a_proxy_recording_past_its_limit_gets_429_after_one_ownership_read() {
    let h = Harness::start_with(&[
        ("RECORD_RATE_PER_PROXY", "2"),
        ("RECORD_BURST_PER_PROXY", "3"),
    ])
    .await;
    let t = user_token("alice");
    h.register(&t, "noisy").await;
    h.register(&t, "quiet").await;
    let one = || json!({"eventType": "request", "metrics": {"requestCount": 1}});
    for _ in 0..3 {
        assert_eq!(h.record(&t, "noisy", one()).await.0, 201);
    }
    let before = h.app.store.usage();
    let (s, b, headers) = send_record(&h.app, record_req(&t, "noisy").json(one())).await;
    assert_error(s, &b, 429, "RATE_LIMITED");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    // The proxy's bucket is taken only once ownership is proven (so nobody
    // else can spend it): a refused record costs that one read, no write.
    let cost = h.app.store.usage() - before;
    assert_eq!(cost.calls, 1, "only the ownership read");
    assert_eq!(cost.write_units, 0.0, "nothing written");
    // another tenant's proxy is not held back
    assert_eq!(h.record(&t, "quiet", one()).await.0, 201);
    // half a second later one more request fits (2 a second)
    h.app.clock.advance(Duration::milliseconds(500));
    assert_eq!(h.record(&t, "noisy", one()).await.0, 201);
    let (s, _) = h.record(&t, "noisy", one()).await;
    assert_eq!(s, 429);
    let (s, b) = h.daily(&t, "noisy", &today()).await;
    assert_eq!((s, b["metrics"]["requestCount"].clone()), (200, json!(4)));
}

#[test]
fn the_limit_settings_are_checked_at_start_up() {
    for bad in ["0", "-1", "fast", "NaN"] {
        let mut vars = std::collections::HashMap::from([
            ("TABLE_NAME".to_string(), "t".to_string()),
            ("JWT_SECRET".to_string(), SECRET.to_string()),
        ]);
        vars.insert("RECORD_RATE_PER_PROXY".into(), bad.into());
        let err = proxy_metrics::app::Config::from_map(&vars).unwrap_err();
        assert!(err.to_string().contains("RECORD_RATE_PER_PROXY"), "{err}");
    }
}

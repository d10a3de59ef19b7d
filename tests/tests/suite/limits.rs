//! Finding 3 of issue 20: no tenant can make another's records 429. The
//! per-proxy record limit is spent only once ownership is proven; every
//! caller has its own limit (keyed by the token's `sub`), taken before the
//! ownership read, so one caller can cause only a bounded number of reads.
//! Handler level, dynoxide, clock pinned and moved by hand.
use crate::common;

use chrono::Duration;
use common::*;
use proxy_metrics::handlers;
use proxy_metrics::ratelimit::{
    DEFAULT_CALLER_BURST, DEFAULT_CALLER_RATE, DEFAULT_RECORD_BURST, DEFAULT_RECORD_RATE,
};
use serde_json::json;

/// A harness with the shipped defaults of both limits (the common harness
/// lifts them out of reach).
async fn with_default_limits() -> Harness {
    let (record_rate, record_burst) = (
        DEFAULT_RECORD_RATE.to_string(),
        DEFAULT_RECORD_BURST.to_string(),
    );
    let (caller_rate, caller_burst) = (
        DEFAULT_CALLER_RATE.to_string(),
        DEFAULT_CALLER_BURST.to_string(),
    );
    Harness::start_with(&[
        ("RECORD_RATE_PER_PROXY", &record_rate),
        ("RECORD_BURST_PER_PROXY", &record_burst),
        ("REQUEST_RATE_PER_CALLER", &caller_rate),
        ("REQUEST_BURST_PER_CALLER", &caller_burst),
    ])
    .await
}

fn one_event() -> serde_json::Value {
    json!({"eventType": "request", "metrics": {"requestCount": 1}})
}

#[tokio::test]
async fn an_attacker_at_50_requests_a_second_never_makes_the_owners_records_429() {
    let h = with_default_limits().await;
    let owner = user_token("victim");
    let attacker = user_token("attacker");
    assert_eq!(h.register(&owner, "victim-edge").await.0, 201);

    // 6 s at 50 requests/s against the victim's proxy id, while the owner
    // records at 5 requests/s (half its proxy's limit).
    const SECONDS: i64 = 6;
    const PER_SECOND: i64 = 50;
    let (mut not_found, mut limited, mut attacker_calls) = (0u64, 0u64, 0u64);
    let mut first_429_at = None;
    let mut owner_statuses = Vec::new();
    for i in 0..SECONDS * PER_SECOND {
        let before = h.app.store.usage();
        let (s, b, headers) = send_record(
            &h.app,
            record_req(&attacker, "victim-edge").json(one_event()),
        )
        .await;
        attacker_calls += (h.app.store.usage() - before).calls;
        match s {
            404 => {
                assert_error(s, &b, 404, "NOT_FOUND");
                not_found += 1;
            }
            429 => {
                assert_error(s, &b, 429, "RATE_LIMITED");
                assert!(headers.contains_key("retry-after"), "{headers:?}");
                first_429_at.get_or_insert(i);
                limited += 1;
            }
            other => panic!("attacker got {other}: {b}"),
        }
        if i % 10 == 0 {
            owner_statuses.push(h.record(&owner, "victim-edge", one_event()).await.0);
        }
        h.app
            .clock
            .advance(Duration::milliseconds(1000 / PER_SECOND));
    }
    assert!(
        owner_statuses.iter().all(|s| *s == 201),
        "the owner's records: {owner_statuses:?}"
    );
    let (s, b) = h.daily(&owner, "victim-edge", &today()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["metrics"]["requestCount"],
        json!(owner_statuses.len()),
        "every owner record counted"
    );
    // The attacker: its burst of 404s first, then 429s; its ownership reads
    // bounded by its own limit (burst + rate × seconds), one read each.
    let burst = DEFAULT_CALLER_BURST as u64;
    let first_429_at = first_429_at.expect("the attacker is limited");
    assert!(
        first_429_at >= burst as i64,
        "404s until the burst is spent"
    );
    let bound = burst + (DEFAULT_CALLER_RATE as u64) * SECONDS as u64 + 1;
    assert!(not_found <= bound, "{not_found} ownership reads > {bound}");
    assert!(
        limited >= (SECONDS * PER_SECOND) as u64 - bound,
        "{limited} 429s"
    );
    assert_eq!(attacker_calls, not_found, "one read per 404, none per 429");
}

#[tokio::test]
async fn a_caller_past_its_limit_is_refused_before_any_read_on_every_owned_route() {
    let h = Harness::start_with(&[
        ("REQUEST_RATE_PER_CALLER", "1"),
        ("REQUEST_BURST_PER_CALLER", "2"),
    ])
    .await;
    let alice = user_token("alice");
    let bob = user_token("bob");
    assert_eq!(h.register(&alice, "alice-edge").await.0, 201);
    // alice spent one token registering; one more read, then she is limited
    assert_eq!(h.daily(&alice, "alice-edge", &today()).await.0, 200);
    let before = h.app.store.usage();
    let day = today();
    let requests = [
        Req::new("GET", "/proxy/metrics/{proxyId}/daily/{date}")
            .param("proxyId", "alice-edge")
            .param("date", &day),
        Req::new("GET", "/proxy/metrics/{proxyId}/summary").param("proxyId", "alice-edge"),
        Req::new("GET", "/proxy/metrics/{proxyId}/aggregation")
            .param("proxyId", "alice-edge")
            .query("periodStart", &day)
            .query("periodEnd", &day),
        Req::new("GET", "/proxy/metrics/{proxyId}/daily")
            .param("proxyId", "alice-edge")
            .query("startDate", &day)
            .query("endDate", &day),
        Req::new("GET", "/proxies"),
        Req::new("GET", "/metrics"),
    ];
    for (i, req) in requests.into_iter().enumerate() {
        let req = req.bearer(&alice).build();
        let response = match i {
            0 => handlers::get_daily_metrics(&h.app, req).await,
            1 => handlers::get_summary(&h.app, req).await,
            2 => handlers::get_aggregation(&h.app, req).await,
            3 => handlers::get_daily_range(&h.app, req).await,
            4 => handlers::list_proxies(&h.app, req).await,
            _ => handlers::get_prometheus_metrics(&h.app, req).await,
        };
        let (s, b, headers) = parts(response);
        assert_error(s, &b, 429, "RATE_LIMITED");
        assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
        assert!(b["message"].as_str().unwrap().contains("caller"), "{b}");
    }
    let (s, b, _) = send_record(&h.app, record_req(&alice, "alice-edge").json(one_event())).await;
    assert_error(s, &b, 429, "RATE_LIMITED");
    let (s, b) = h.register(&alice, "alice-second").await;
    assert_error(s, &b, 429, "RATE_LIMITED");
    assert_eq!(h.app.store.usage().calls, before.calls, "no storage call");
    // another caller is not held back; alice is served again a second later
    assert_eq!(h.register(&bob, "bob-edge").await.0, 201);
    h.app.clock.advance(Duration::seconds(1));
    assert_eq!(h.record(&alice, "alice-edge", one_event()).await.0, 201);
}

#[test]
fn the_caller_limit_settings_are_checked_at_start_up() {
    for name in ["REQUEST_RATE_PER_CALLER", "REQUEST_BURST_PER_CALLER"] {
        for bad in ["0", "-1", "fast", "NaN", "inf"] {
            let vars = std::collections::HashMap::from([
                ("TABLE_NAME".to_string(), "t".to_string()),
                ("JWT_SECRET".to_string(), SECRET.to_string()),
                (name.to_string(), bad.to_string()),
            ]);
            let err = proxy_metrics::app::Config::from_map(&vars).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
    let config = proxy_metrics::app::Config::from_map(&std::collections::HashMap::from([
        ("TABLE_NAME".to_string(), "t".to_string()),
        ("JWT_SECRET".to_string(), SECRET.to_string()),
    ]))
    .unwrap();
    assert_eq!(config.caller_limit.rate, DEFAULT_CALLER_RATE);
    assert_eq!(config.caller_limit.burst, DEFAULT_CALLER_BURST);
}

//! Walking skeleton through the handlers against dynoxide: register, list,
//! record one event, read the day; tenancy and auth errors.

use crate::common;

use common::*;
use proxy_metrics::handlers;
use serde_json::json;

#[tokio::test]
async fn register_list_record_and_read_a_day() {
    let h = Harness::start().await;
    let alice = user_token("alice");

    let (status, body) = h.register(&alice, "edge-eu-1").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["proxy"]["proxyId"], "edge-eu-1");
    assert_eq!(body["proxy"]["ownerId"], "alice");
    assert_eq!(body["proxy"]["name"], "edge-eu-1 name");
    assert_eq!(body["tier"], "pro");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    let req = Req::new("GET", "/proxies").bearer(&alice).build();
    let (status, body, _) = parts(handlers::list_proxies(&h.app, req).await);
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);
    assert_eq!(body["proxies"][0]["proxyId"], "edge-eu-1");

    let (status, body) = h
        .record(
            &alice,
            "edge-eu-1",
            json!({"eventType": "request", "timestamp": now_rfc3339(),
                   "metrics": {"requestCount": 100, "successCount": 95, "errorCount": 5,
                               "totalLatencyMs": 5000, "minLatencyMs": 10, "maxLatencyMs": 500,
                               "dataTransferredBytes": 123456, "dataReceivedBytes": 654321}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["recorded"], 1);
    assert_eq!(body["duplicates"], 0);
    assert_eq!(body["eventType"], "request");
    assert!(body["eventId"].as_str().is_some_and(|id| !id.is_empty()));

    let (status, body) = h.daily(&alice, "edge-eu-1", &today()).await;
    assert_eq!(status, 200, "{body}");
    let m = &body["metrics"];
    assert_eq!(body["date"], today());
    assert_eq!(m["eventCount"], 1);
    assert_eq!(m["requestCount"], 100);
    assert_eq!(m["successCount"], 95);
    assert_eq!(m["errorCount"], 5);
    assert_eq!(m["successRate"], 0.95);
    assert_eq!(m["averageLatencyMs"], 50.0);
    assert_eq!(m["minLatencyMs"], 10.0);
    assert_eq!(m["maxLatencyMs"], 500.0);
    assert_eq!(m["dataTransferredBytes"], 123456);
    assert_eq!(m["dataReceivedBytes"], 654321);
}

#[tokio::test]
async fn ids_are_global_and_other_users_get_404() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    let mallory = user_token("mallory");
    assert_eq!(h.register(&alice, "edge-1").await.0, 201);

    let (status, body) = h.register(&mallory, "edge-1").await;
    assert_error(status, &body, 409, "CONFLICT");
    let (status, body) = h.register(&alice, "edge-1").await;
    assert_error(status, &body, 409, "CONFLICT");

    let (s_other, b_other) = h.daily(&mallory, "edge-1", &today()).await;
    let (s_unknown, b_unknown) = h.daily(&mallory, "no-such-proxy", &today()).await;
    assert_error(s_other, &b_other, 404, "NOT_FOUND");
    assert_error(s_unknown, &b_unknown, 404, "NOT_FOUND");

    let (status, body) = h
        .record(&mallory, "edge-1", json!({"eventType": "request"}))
        .await;
    assert_error(status, &body, 404, "NOT_FOUND");

    // mallory sees none of alice's proxies
    let req = Req::new("GET", "/proxies").bearer(&mallory).build();
    let (_, body, _) = parts(handlers::list_proxies(&h.app, req).await);
    assert_eq!(body["count"], 0);

    // and alice's day has nothing from mallory
    let (_, body) = h.daily(&alice, "edge-1", &today()).await;
    assert_eq!(body["metrics"]["eventCount"], 0);
}

#[tokio::test]
async fn concurrent_registrations_of_one_id_have_one_winner() {
    let h = Harness::start().await;
    let tokens: Vec<String> = (0..8).map(|i| user_token(&format!("user-{i}"))).collect();
    let results =
        futures::future::join_all(tokens.iter().map(|t| h.register(t, "contested"))).await;
    let winners = results.iter().filter(|(s, _)| *s == 201).count();
    let conflicts = results.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((winners, conflicts), (1, 7), "{results:?}");
    // exactly one owner index entry exists
    let mut owners = 0;
    for t in &tokens {
        let req = Req::new("GET", "/proxies").bearer(t).build();
        let (_, body, _) = parts(handlers::list_proxies(&h.app, req).await);
        owners += body["count"].as_u64().unwrap();
    }
    assert_eq!(owners, 1);
}

#[tokio::test]
async fn authentication_failures_are_401() {
    let h = Harness::start().await;
    let cases = [
        None,
        Some("Basic abc".to_string()),
        Some("Bearer not-a-jwt".to_string()),
        Some(format!(
            "Bearer {}",
            token("alice", json!({"exp": now().timestamp() - 3600}))
        )),
        Some(format!("Bearer {}x", user_token("alice"))),
    ];
    for auth in cases {
        let mut req = Req::new("GET", "/proxies");
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let (status, body, _) = parts(handlers::list_proxies(&h.app, req.build()).await);
        assert_error(status, &body, 401, "UNAUTHORIZED");
    }
}

#[tokio::test]
async fn bad_input_is_400_with_the_contract_body() {
    let h = Harness::start().await;
    let alice = user_token("alice");
    for body in [
        json!({}),
        json!({"proxyId": ""}),
        json!({"proxyId": "a/b"}),
        json!({"proxyId": 7}),
    ] {
        let req = Req::new("POST", "/proxies")
            .bearer(&alice)
            .json(body)
            .build();
        let (status, body, _) = parts(handlers::register_proxy(&h.app, req).await);
        assert_error(status, &body, 400, "INVALID_REQUEST");
    }
    let req = Req::new("POST", "/proxies")
        .bearer(&alice)
        .raw("{not json")
        .build();
    let (status, body, _) = parts(handlers::register_proxy(&h.app, req).await);
    assert_error(status, &body, 400, "INVALID_REQUEST");

    assert_eq!(h.register(&alice, "edge-1").await.0, 201);
    let (status, body) = h.daily(&alice, "edge-1", "2024-02-30").await;
    assert_error(status, &body, 400, "INVALID_REQUEST");
}

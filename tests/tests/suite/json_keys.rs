//! Finding 14a of issue 20: a key repeated in one JSON object is a 400 on
//! every JSON body, at any depth — the service never picks one of two values
//! (serde_json alone keeps the last one).
use crate::common;

use common::*;
use proxy_metrics::handlers;
use serde_json::Value;

async fn register_raw(h: &Harness, token: &str, body: &str) -> (u16, Value) {
    let req = Req::new("POST", "/proxies").bearer(token).raw(body).build();
    let (s, b, _) = parts(handlers::register_proxy(&h.app, req).await);
    (s, b)
}

async fn record_raw(h: &Harness, token: &str, body: &str) -> (u16, Value) {
    let (s, b, _) = send_record(&h.app, record_req(token, "edge").raw(body)).await;
    (s, b)
}

fn assert_repeated(s: u16, b: &Value, key: &str) {
    assert_error(s, b, 400, "INVALID_REQUEST");
    let message = b["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("\"{key}\"")) && message.contains("more than once"),
        "{message}"
    );
}

#[tokio::test]
async fn a_registration_repeating_a_key_registers_nothing() {
    let h = Harness::start().await;
    let t = user_token("alice");
    let (s, b) = register_raw(&h, &t, r#"{"proxyId":"a","proxyId":"b"}"#).await;
    assert_repeated(s, &b, "proxyId");
    let (s, b) = register_raw(&h, &t, r#"{"proxyId":"a","name":"x","name":"y"}"#).await;
    assert_repeated(s, &b, "name");
    // the same key written two ways is the same key
    let (s, b) = register_raw(&h, &t, r#"{"proxyId":"a","\u0070roxyId":"b"}"#).await;
    assert_repeated(s, &b, "proxyId");
    assert!(h.app.store.get_proxy("a").await.unwrap().is_none());
    assert!(h.app.store.get_proxy("b").await.unwrap().is_none());
    // distinct keys still register
    assert_eq!(
        register_raw(&h, &t, r#"{"proxyId":"a","name":"x"}"#)
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn a_record_repeating_a_key_at_any_depth_records_nothing() {
    let h = Harness::start().await;
    let t = user_token("alice");
    assert_eq!(h.register(&t, "edge").await.0, 201);
    let cases = [
        (
            r#"{"eventType":"request","eventType":"error","metrics":{"requestCount":1}}"#,
            "eventType",
        ),
        (
            r#"{"eventType":"request","metrics":{"requestCount":1,"errorCount":0,"requestCount":5}}"#,
            "requestCount",
        ),
        (
            r#"{"events":[{"eventType":"request","metrics":{"requestCount":1}},
                          {"eventType":"request","healthy":true,"healthy":false}]}"#,
            "healthy",
        ),
        (
            r#"{"events":[{"eventType":"request"}],"events":[{"eventType":"error"}]}"#,
            "events",
        ),
        (
            r#"{"eventType":"request","dimensions":{"route":"/a","route":"/b"}}"#,
            "route",
        ),
    ];
    for (body, key) in cases {
        let (s, b) = record_raw(&h, &t, body).await;
        assert_repeated(s, &b, key);
    }
    let (s, b) = h.daily(&t, "edge", &today()).await;
    assert_eq!(
        (s, b["metrics"]["eventCount"].clone()),
        (200, 0.into()),
        "{b}"
    );
    // the same key in two different objects is fine
    let body = r#"{"events":[{"eventType":"request","metrics":{"requestCount":1}},
                            {"eventType":"request","metrics":{"requestCount":2}}]}"#;
    assert_eq!(record_raw(&h, &t, body).await.0, 201);
}

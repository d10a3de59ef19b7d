//! Alerts end to end on dynoxide with a pinned clock: rules over the API,
//! `evaluate-alerts` runs (the library function the Lambda calls), and a
//! webhook receiver on 127.0.0.1 that verifies every signature.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, Utc};
use common::{Harness, Req, assert_error, iso, parts, token_at};
use proxy_metrics::alerts::secret::{LOCAL_SECRET_KEY, SecretKey};
use proxy_metrics::alerts::{AlertsConfig, Report, run::run};
use proxy_metrics::domain::alert::webhook::{secret_key, verify};
use proxy_metrics::handlers;
use serde_json::{Value, json};

/// What the receiver saw: (webhook-id, body) of each request whose
/// signature verified; any request that did not verify fails the test.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    /// Statuses to answer with, in order; 200 once empty.
    answers: Arc<Mutex<Vec<u16>>>,
    secret: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Receiver {
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let id = h("webhook-id");
                    let ts: i64 = h("webhook-timestamp").parse().expect("timestamp");
                    let key = state.secret.lock().unwrap().clone().expect("secret set");
                    assert!(
                        verify(&key, &id, ts, &body, &h("webhook-signature")),
                        "signature of {id}"
                    );
                    assert_eq!(h("content-type"), "application/json");
                    let value: Value = serde_json::from_slice(&body).unwrap();
                    state.seen.lock().unwrap().push((id, value));
                    let mut answers = state.answers.lock().unwrap();
                    let code = if answers.is_empty() {
                        200
                    } else {
                        answers.remove(0)
                    };
                    StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn types(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b["type"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A five-minute boundary, so that windows are easy to reason about.
fn aligned() -> DateTime<Utc> {
    let now = common::now().timestamp_millis();
    DateTime::from_timestamp_millis(now - now % 300_000).unwrap()
}

async fn harness(at: DateTime<Utc>) -> (Harness, AlertsConfig) {
    let h = Harness::start_with_at(
        &[
            ("ALERTS_SECRET_KEY", LOCAL_SECRET_KEY),
            ("ALLOW_LOOPBACK_WEBHOOKS", "1"),
        ],
        at,
    )
    .await;
    let config = AlertsConfig {
        key: SecretKey::from_base64(LOCAL_SECRET_KEY).unwrap(),
        allow_loopback: true,
    };
    (h, config)
}

fn user(h: &Harness, sub: &str, tier: &str) -> String {
    token_at(sub, json!({"tier": tier}), h.app.clock.now())
}

async fn create(h: &Harness, token: &str, proxy: &str, rule: Value) -> (u16, Value) {
    let req = Req::new("POST", "/proxies/{proxyId}/alerts")
        .param("proxyId", proxy)
        .bearer(token)
        .json(rule)
        .build();
    let (s, b, _) = parts(handlers::create_alert(&h.app, req).await);
    (s, b)
}

async fn list(h: &Harness, token: &str, proxy: &str) -> Value {
    let req = Req::new("GET", "/proxies/{proxyId}/alerts")
        .param("proxyId", proxy)
        .bearer(token)
        .build();
    let (s, b, _) = parts(handlers::list_alerts(&h.app, req).await);
    assert_eq!(s, 200, "{b}");
    b
}

async fn deliveries(h: &Harness, token: &str, proxy: &str, alert: &str) -> Value {
    let req = Req::new("GET", "/proxies/{proxyId}/alerts/{alertId}/deliveries")
        .param("proxyId", proxy)
        .param("alertId", alert)
        .bearer(token)
        .build();
    let (s, b, _) = parts(handlers::list_deliveries(&h.app, req).await);
    assert_eq!(s, 200, "{b}");
    b
}

async fn errors(h: &Harness, token: &str, proxy: &str, requests: u64, errors: u64) {
    let body = json!({"eventType": "request", "timestamp": iso(h.app.clock.now()),
        "metrics": {"requestCount": requests, "successCount": requests - errors, "errorCount": errors}});
    let (s, b) = h.record(token, proxy, body).await;
    assert_eq!(s, 201, "{b}");
}

async fn evaluate(h: &Harness, config: &AlertsConfig) -> Report {
    run(&h.app.store, config).await.expect("run")
}

fn rule(url: &str, extra: Value) -> Value {
    let mut r = json!({"name": "error rate", "metric": "errorRate", "comparison": "above",
        "threshold": 10, "webhookUrl": url});
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

#[tokio::test]
async fn one_firing_for_m_of_n_none_for_a_spike_one_resolved_after_recovery() {
    let t0 = aligned();
    let (h, config) = harness(t0 + Duration::minutes(1)).await;
    let token = user(&h, "alice", "pro");
    h.register(&token, "edge-1").await;
    let (receiver, url) = Receiver::start().await;
    let (s, created) = create(
        &h,
        &token,
        "edge-1",
        rule(
            &url,
            json!({"evaluations": 3, "breaching": 2, "noData": "ok"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let alert = &created["alert"];
    assert_eq!(
        (
            alert["state"].as_str(),
            alert["windowMinutes"].as_u64(),
            alert["recoveryThreshold"].as_f64()
        ),
        (Some("OK"), Some(5), Some(10.0))
    );
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    *receiver.secret.lock().unwrap() = Some(secret_key(secret).unwrap());
    let alert_id = alert["alertId"].as_str().unwrap().to_string();
    // the secret is shown once: the list never carries it
    assert!(
        !list(&h, &token, "edge-1")
            .await
            .to_string()
            .contains(secret)
    );

    // first evaluation: the windows closed before creation, all quiet
    let r = evaluate(&h, &config).await;
    assert_eq!((r.rules_evaluated, r.state_changes), (1, 0));
    // a second run in the same window evaluates nothing
    assert_eq!(evaluate(&h, &config).await.rules_evaluated, 0);

    // one spike in [t0, t0+5): 1 of 3 windows — no notification
    h.app.clock.set(t0 + Duration::minutes(2));
    errors(&h, &token, "edge-1", 100, 50).await;
    h.app.clock.set(t0 + Duration::seconds(330));
    let r = evaluate(&h, &config).await;
    assert_eq!(
        (r.rules_evaluated, r.state_changes, r.deliveries_attempted),
        (1, 0, 0)
    );
    assert!(receiver.types().is_empty());
    let listed = list(&h, &token, "edge-1").await;
    assert_eq!(listed["alerts"][0]["lastValue"], 50.0);

    // a second breaching window: 2 of 3 → one alert.firing, even with two runs at once
    h.app.clock.set(t0 + Duration::minutes(6));
    errors(&h, &token, "edge-1", 100, 30).await;
    h.app.clock.set(t0 + Duration::seconds(630));
    let (a, b) = tokio::join!(evaluate(&h, &config), evaluate(&h, &config));
    assert_eq!(a.state_changes + b.state_changes, 1);
    assert_eq!(a.deliveries_succeeded + b.deliveries_succeeded, 1);
    evaluate(&h, &config).await;
    assert_eq!(receiver.types(), ["alert.firing"]);
    let (id, body) = receiver.seen.lock().unwrap()[0].clone();
    assert_eq!(id, format!("msg_{alert_id}_1"));
    assert_eq!(body["data"]["state"], "FIRING");
    assert_eq!(body["data"]["previousState"], "OK");
    assert_eq!(body["data"]["value"], 30.0);
    assert_eq!(body["data"]["windowStart"], iso(t0 + Duration::minutes(5)));
    assert_eq!(body["data"]["windowEnd"], iso(t0 + Duration::minutes(10)));
    let listed = list(&h, &token, "edge-1").await;
    assert_eq!(listed["alerts"][0]["state"], "FIRING");
    assert_eq!(
        listed["alerts"][0]["stateSince"],
        iso(t0 + Duration::seconds(630))
    );

    // a good window, then two quiet ones: still FIRING until all 3 are safe
    h.app.clock.set(t0 + Duration::minutes(11));
    errors(&h, &token, "edge-1", 100, 1).await;
    h.app.clock.set(t0 + Duration::seconds(930));
    assert_eq!(evaluate(&h, &config).await.state_changes, 0);
    h.app.clock.set(t0 + Duration::seconds(1530));
    assert_eq!(evaluate(&h, &config).await.state_changes, 1);
    assert_eq!(receiver.types(), ["alert.firing", "alert.resolved"]);
    assert_eq!(
        receiver.seen.lock().unwrap()[1].0,
        format!("msg_{alert_id}_2")
    );

    // the deliveries log, newest first
    let d = deliveries(&h, &token, "edge-1", &alert_id).await;
    assert_eq!(d["count"], 2);
    assert_eq!(d["deliveries"][0]["type"], "alert.resolved");
    assert_eq!(d["deliveries"][0]["status"], "200");
    assert_eq!(d["deliveries"][1]["attempt"], 1);

    // a test delivery, sent at once
    let req = Req::new("POST", "/proxies/{proxyId}/alerts/{alertId}/test")
        .param("proxyId", "edge-1")
        .param("alertId", &alert_id)
        .bearer(&token)
        .build();
    let (s, b, _) = parts(handlers::test_alert(&h.app, req).await);
    assert_eq!(s, 202, "{b}");
    assert_eq!(receiver.types().last().unwrap(), "alert.test");
}

#[tokio::test]
async fn a_500_is_retried_a_410_disables_the_webhook() {
    let t0 = aligned();
    let (h, config) = harness(t0 + Duration::minutes(1)).await;
    let token = user(&h, "bob", "free");
    h.register(&token, "edge-2").await;
    let (receiver, url) = Receiver::start().await;
    receiver.answers.lock().unwrap().extend([500, 200, 410]);
    // no data counts as breaching: the first evaluation fires
    let (s, created) = create(
        &h,
        &token,
        "edge-2",
        rule(&url, json!({"noData": "breaching"})),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    *receiver.secret.lock().unwrap() =
        Some(secret_key(created["secret"].as_str().unwrap()).unwrap());
    let alert_id = created["alert"]["alertId"].as_str().unwrap().to_string();

    let r = evaluate(&h, &config).await;
    assert_eq!(
        (
            r.state_changes,
            r.deliveries_attempted,
            r.deliveries_succeeded
        ),
        (1, 1, 0)
    );
    // not due yet: nothing sent
    assert_eq!(evaluate(&h, &config).await.deliveries_attempted, 0);
    h.app.clock.advance(Duration::seconds(6)); // 5 s ± 10 %
    let r = evaluate(&h, &config).await;
    assert_eq!((r.deliveries_attempted, r.deliveries_succeeded), (1, 1));
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, seen[1].0, "a retry keeps its webhook-id");
    let d = deliveries(&h, &token, "edge-2", &alert_id).await;
    assert_eq!(d["deliveries"][1]["status"], "500");
    assert!(d["deliveries"][1]["nextAttemptAt"].is_string());
    assert_eq!(d["deliveries"][0]["status"], "200");
    assert_eq!(d["deliveries"][0]["attempt"], 2);

    // data comes back: resolved, answered 410 → the webhook is disabled
    errors(&h, &token, "edge-2", 10, 0).await;
    h.app.clock.set(t0 + Duration::seconds(330));
    let r = evaluate(&h, &config).await;
    assert_eq!((r.state_changes, r.deliveries_attempted), (1, 1));
    let listed = list(&h, &token, "edge-2").await;
    assert_eq!(listed["alerts"][0]["webhookDisabled"], true);
    assert_eq!(listed["alerts"][0]["state"], "OK");
    // the next change is recorded but not sent
    h.app.clock.set(t0 + Duration::seconds(630));
    let r = evaluate(&h, &config).await;
    assert_eq!((r.state_changes, r.deliveries_attempted), (1, 0));
    h.app.clock.advance(Duration::hours(30));
    assert_eq!(evaluate(&h, &config).await.deliveries_attempted, 0);
    assert_eq!(receiver.seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn rules_validation_limits_scopes_and_ownership() {
    let (h, _) = harness(aligned()).await;
    let token = user(&h, "carol", "free");
    h.register(&token, "edge-3").await;
    let url = "http://127.0.0.1:9/hook";
    let url_ok = "http://127.0.0.1:65000/hook";
    // port below 1024, private address, bad fields
    for bad in [
        rule(url, json!({})),
        rule("https://10.0.0.1/hook", json!({})),
        rule("https://169.254.169.254/latest", json!({})),
        rule("https://user:pw@hooks.example.com/", json!({})),
        rule(url_ok, json!({"windowMinutes": 7})),
        rule(url_ok, json!({"treshold": 7})),
    ] {
        let (s, b) = create(&h, &token, "edge-3", bad).await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
    }
    // someone else's proxy: 404; read-only token: 403
    let (s, b) = create(
        &h,
        &user(&h, "mallory", "pro"),
        "edge-3",
        rule(url_ok, json!({})),
    )
    .await;
    assert_error(s, &b, 404, "NOT_FOUND");
    let read_only = token_at("carol", json!({"scope": "metrics:read"}), h.app.clock.now());
    let (s, b) = create(&h, &read_only, "edge-3", rule(url_ok, json!({}))).await;
    assert_error(s, &b, 403, "FORBIDDEN");
    // free tier: 10 rules, the 11th is a 409 naming the limit
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (s, b) = create(&h, &token, "edge-3", rule(url_ok, json!({}))).await;
        assert_eq!(s, 201, "{b}");
        ids.push(b["alert"]["alertId"].as_str().unwrap().to_string());
    }
    let (s, b) = create(&h, &token, "edge-3", rule(url_ok, json!({}))).await;
    assert_error(s, &b, 409, "CONFLICT");
    assert!(b["message"].as_str().unwrap().contains("10"), "{b}");
    assert_eq!(list(&h, &read_only, "edge-3").await["count"], 10);
    // delete: 204, then 404; a slot is free again
    let del = |id: &str| {
        Req::new("DELETE", "/proxies/{proxyId}/alerts/{alertId}")
            .param("proxyId", "edge-3")
            .param("alertId", id)
            .bearer(&token)
            .build()
    };
    let response = handlers::delete_alert(&h.app, del(&ids[0])).await;
    assert_eq!(response.status().as_u16(), 204);
    let (s, b, _) = parts(handlers::delete_alert(&h.app, del(&ids[0])).await);
    assert_error(s, &b, 404, "NOT_FOUND");
    let (s, _) = create(&h, &token, "edge-3", rule(url_ok, json!({}))).await;
    assert_eq!(s, 201);
}

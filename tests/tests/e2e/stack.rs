//! The local stack itself, started by each test on free ports (`scripts/test`
//! runs these after building everything; they need cargo-lambda on PATH):
//! against a separately started DynamoDB endpoint, with an inline RS256
//! JWKS, and under several concurrent clients.

use crate::common;

use std::time::{Duration, Instant};

use common::stack::{Stack, root};

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proxy_metrics::clock::Clock;
use serde_json::{Value, json};

fn real_now() -> DateTime<Utc> {
    Clock::system().now()
}

fn hs256(sub: &str) -> String {
    let now = real_now().timestamp();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 600, "tier": "pro"}),
        &EncodingKey::from_secret(b"local-dev-secret-change-me"),
    )
    .unwrap()
}

async fn call(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", stack.url))
        .bearer_auth(token)
        .timeout(Duration::from_secs(30));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the stack answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// Multi-threaded: the test's own DynamoDB server runs while the test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts local stacks; scripts/test runs it"]
async fn the_stack_runs_against_a_separately_started_dynamodb() {
    // a DynamoDB endpoint the stack does not own, without the table yet
    let db = dynoxide::Database::memory().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let _server = local_stack::spawn_server(listener, db);
    let stack = Stack::start(&[("DYNAMODB_ENDPOINT", &endpoint)]);
    assert!(
        stack.log().contains("table proxy-metrics created"),
        "{}",
        stack.log()
    );
    assert!(
        !stack.log().contains("dynoxide) on"),
        "no embedded store: {}",
        stack.log()
    );
    let t = hs256("owner");
    // the event below is dated on receipt and read back after a restart
    let day = crate::common::stack::clear_of_midnight()
        .await
        .format("%Y-%m-%d")
        .to_string();
    let (s, b) = call(
        &stack,
        reqwest::Method::POST,
        "/proxies",
        &t,
        Some(json!({"proxyId": "ext-1"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        &stack,
        reqwest::Method::POST,
        "/proxy/metrics/ext-1/record",
        &t,
        Some(json!({"eventType": "request", "metrics": {"requestCount": 3}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // the data is in the endpoint's table
    let client = common::sdk_client(&endpoint);
    let proxy = client
        .get_item()
        .table_name("proxy-metrics")
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("PROXY#ext-1".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("PROXY".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(proxy.item.is_some());
    drop(stack);
    // a second stack on the same endpoint finds the table and the data
    let stack = Stack::start(&[("DYNAMODB_ENDPOINT", &endpoint)]);
    assert!(
        stack.log().contains("table proxy-metrics found"),
        "{}",
        stack.log()
    );
    let (s, b) = call(
        &stack,
        reqwest::Method::GET,
        &format!("/proxy/metrics/ext-1/daily/{day}"),
        &t,
        None,
    )
    .await;
    assert_eq!(
        (s, b["metrics"]["requestCount"].clone()),
        (200, json!(3)),
        "{b}"
    );
}

#[tokio::test]
#[ignore = "starts local stacks; scripts/test runs it"]
async fn the_stack_takes_an_inline_rs256_jwks() {
    let pem = std::fs::read(root().join("tests/fixtures/rsa-1.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("local-1".into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    // JSON with quotes and commas: it must reach the functions unchanged
    let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
    assert!(jwks.contains(','));
    let stack = Stack::start(&[("JWT_JWKS", &jwks)]);
    assert!(
        !stack.log().contains("export TOKEN"),
        "no HS256 demo token with a JWKS: {}",
        stack.log()
    );
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("local-1".into());
    let now = real_now().timestamp();
    let rs256 =
        jsonwebtoken::encode(&header, &json!({"sub": "owner", "exp": now + 600}), &key).unwrap();
    let (s, b) = call(
        &stack,
        reqwest::Method::POST,
        "/proxies",
        &rs256,
        Some(json!({"proxyId": "jwks-1"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        &stack,
        reqwest::Method::POST,
        "/proxy/metrics/jwks-1/record",
        &rs256,
        Some(json!({"eventType": "request"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // the HS256 demo secret is no key here
    let (s, _) = call(
        &stack,
        reqwest::Method::GET,
        "/proxies",
        &hs256("owner"),
        None,
    )
    .await;
    assert_eq!(s, 401);
}

#[tokio::test]
#[ignore = "starts local stacks; scripts/test runs it"]
async fn the_stack_serves_concurrent_clients_without_timeouts() {
    let stack = Stack::start(&[]);
    let t = hs256("owner");
    let (s, _) = call(
        &stack,
        reqwest::Method::POST,
        "/proxies",
        &t,
        Some(json!({"proxyId": "busy"})),
    )
    .await;
    assert_eq!(s, 201);
    let started = Instant::now();
    let clients = (0..4).map(|c| {
        let stack = &stack;
        let t = t.clone();
        async move {
            for i in 0..25 {
                let (s, b) = if i % 2 == 0 {
                    call(
                        stack,
                        reqwest::Method::POST,
                        "/proxy/metrics/busy/record",
                        &t,
                        Some(json!({"eventType": "request", "metrics": {"requestCount": 1}})),
                    )
                    .await
                } else {
                    call(
                        stack,
                        reqwest::Method::GET,
                        "/proxy/metrics/busy/summary",
                        &t,
                        None,
                    )
                    .await
                };
                assert!(s == 200 || s == 201, "client {c} request {i}: {s} {b}");
            }
        }
    });
    futures::future::join_all(clients).await;
    // a hundred requests from four clients, none timed out (30 s each)
    println!("100 requests from 4 clients in {:?}", started.elapsed());
    let (_, b) = call(
        &stack,
        reqwest::Method::GET,
        "/proxy/metrics/busy/summary",
        &t,
        None,
    )
    .await;
    assert_eq!(b["last24Hours"]["requestCount"], 52);
}

//! Finding 14b of issue 20, in process: the local stack's front door
//! (`infra/local-stack/src/front.rs`) answers a path or method outside the
//! routes of `Cargo.toml`'s watcher router with the contract's 404 at once,
//! and hands every routed request (and the watcher's invoke API) through
//! unchanged — on the same kept-alive connection too. A stand-in upstream
//! plays the watcher; `e2e.rs` checks the real stack.

use std::time::{Duration, Instant};

use axum::extract::Request;
use local_stack::front::{Routes, spawn};
use serde_json::Value;

async fn front() -> String {
    // The stand-in watcher echoes what reached it.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_port = upstream.local_addr().unwrap().port();
    let echo = axum::Router::new().fallback(|request: Request| async move {
        format!("{} {}", request.method(), request.uri())
    });
    tokio::spawn(async move { axum::serve(upstream, echo).await.unwrap() });
    let routes =
        Routes::from_cargo_toml(&local_stack::workspace_root().join("Cargo.toml")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    spawn(listener, routes, upstream_port);
    url
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_contracts_404_at_once() {
    let url = front().await;
    // one client: the same kept-alive connection for known and unknown routes
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for (method, path, forwarded) in [
        ("GET", "/proxy/metrics", false),
        ("DELETE", "/proxies", false),
        ("POST", "/proxies", true),
        ("TRACE", "/proxies", false),
        ("GET", "/proxy/metrics/edge-1/record", false),
        ("POST", "/proxy/metrics/edge-1/record", true),
        ("OPTIONS", "/metrics", false),
        (
            "GET",
            "/proxy/metrics/edge-1/daily?startDate=2024-01-01",
            true,
        ),
        ("GET", "/dashboard/app.js", true),
        ("GET", "/nothing/here", false),
        (
            "POST",
            "/2015-03-31/functions/aggregate-metrics/invocations",
            true,
        ),
    ] {
        let started = Instant::now();
        let response = client
            .request(method.parse().unwrap(), format!("{url}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{method} {path} took {took:?}"
        );
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if forwarded {
            assert_eq!(
                (status, text.as_str()),
                (200, format!("{method} {path}").as_str())
            );
        } else {
            assert_eq!(status, 404, "{method} {path}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"], "NOT_FOUND", "{body}");
            assert_eq!(body["code"], "PROXY_METRICS_404", "{body}");
            assert!(body["message"].as_str().unwrap().contains(method), "{body}");
        }
    }
}

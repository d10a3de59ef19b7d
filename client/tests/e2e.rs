//! The agent against a running API: a generated nginx log of known totals
//! goes in, the daily metrics must come out exactly.
//!
//! Needs a server that supports sequenced batches (contract v2), e.g. the
//! local stack: `E2E_API_URL=http://127.0.0.1:9000 cargo test -p
//! proxy-metrics-client --test e2e -- --ignored`. `E2E_JWT_SECRET` is the
//! stack's HS256 secret (default: the local stack's `local-dev-secret-change-me`).

mod common;

use std::time::Duration;

use common::{Agent, nginx_log, now, temp_dir, write};
use serde_json::{Value, json};

fn api() -> String {
    std::env::var("E2E_API_URL")
        .expect("E2E_API_URL must point at a running API")
        .trim_end_matches('/')
        .to_owned()
}

/// A user token (no scope: all of them) signed with the stack's secret.
fn token(sub: &str) -> String {
    let secret =
        std::env::var("E2E_JWT_SECRET").unwrap_or_else(|_| "local-dev-secret-change-me".into());
    let claims = json!({"sub": sub, "exp": now().timestamp() + 3600, "tier": "pro"});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token signs")
}

#[tokio::test]
#[ignore = "needs a running API with sequenced batches; set E2E_API_URL"]
async fn the_agent_reports_an_nginx_log_exactly() {
    let api = api();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-agent-{}", &run[..12]);
    let token = token(&format!("owner-{run}"));
    let http = reqwest::Client::new();

    let response = http
        .post(format!("{api}/proxies"))
        .bearer_auth(&token)
        .json(&json!({"proxyId": proxy}))
        .send()
        .await
        .expect("API reachable");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 201, "register: {body}");

    // Timestamps a few seconds back: inside the server's window (7 days
    // back, 5 minutes ahead), on the real clock the server also reads.
    let (text, totals) = nginx_log(
        2345,
        now() - chrono::Duration::seconds(3),
        chrono::Duration::seconds(45),
        42,
    );
    assert!(totals.errors > 0 && totals.errors < totals.requests);
    let dir = temp_dir("e2e");
    let log = dir.join("access.log");
    write(&log, &text);

    let state = dir.join("state");
    let agent = Agent::spawn(
        &[
            "--format",
            "nginx",
            "--from-start",
            "--flush-interval",
            "1",
            "--state-dir",
            state.to_str().unwrap(),
            log.to_str().unwrap(),
        ],
        &[
            ("PROXY_METRICS_URL", api.as_str()),
            ("PROXY_METRICS_TOKEN", token.as_str()),
            ("PROXY_ID", proxy.as_str()),
        ],
    );
    agent.wait_started();
    // let it send a few batches while running, not only at shutdown
    tokio::time::sleep(Duration::from_secs(3)).await;
    agent.sigterm();
    let (status, _, stderr) = agent.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(
        stderr.contains("dropped_rejected=0") && stderr.contains("dropped_shutdown=0"),
        "nothing may be dropped:\n{stderr}"
    );

    // Sum over the day(s) the log covers (two if it straddles midnight UTC).
    let (mut requests, mut errors, mut bytes, mut successes) = (0, 0, 0, 0);
    for day in &totals.days {
        let response = http
            .get(format!(
                "{api}/proxy/metrics/{proxy}/daily/{}",
                day.format("%Y-%m-%d")
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("API reachable");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(status.as_u16(), 200, "{body}");
        let m = &body["metrics"];
        requests += m["requestCount"].as_u64().expect("requestCount");
        errors += m["errorCount"].as_u64().expect("errorCount");
        successes += m["successCount"].as_u64().expect("successCount");
        bytes += m["dataTransferredBytes"]
            .as_u64()
            .expect("dataTransferredBytes");
    }
    assert_eq!(requests, totals.requests);
    assert_eq!(errors, totals.errors);
    assert_eq!(successes, totals.requests - totals.errors);
    assert_eq!(bytes, totals.bytes_sent);
    let _ = std::fs::remove_dir_all(dir);
}

//! The agent and its token (issue 24): a token that expires while the agent
//! runs gets 401s, the batches stay buffered and are retried; the token file
//! is renewed and the agent picks it up without a restart — the day's counts
//! equal the log's, and it exits 0 (nothing was lost). A token refused at
//! start-up ends the start at once with a clear message and status 2.
//! `scripts/test` runs it.

use crate::agent_support;
use crate::common;

use std::time::Duration;

use agent_support::*;
use serde_json::json;

const PROXY: &str = "edge-token";

fn expired_token(sub: &str) -> String {
    let now = real_now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": now - 3600, "tier": "pro"}),
        &jsonwebtoken::EncodingKey::from_secret(b"local-dev-secret-change-me"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a local stack and the agent; scripts/test runs it"]
async fn an_expired_token_keeps_the_data_until_the_token_file_is_renewed() {
    let (stack, token) = stack_with_proxy(PROXY).await;
    let dir = temp_dir("agent-token");
    let log = dir.join("access.log");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut totals = Totals::default();
    let state = dir.join("state").to_string_lossy().into_owned();
    let (log_arg, token_arg) = (
        log.to_string_lossy().into_owned(),
        token_file.to_string_lossy().into_owned(),
    );
    let mut child =
        std::process::Command::new(common::stack::root().join("target/debug/proxy-metrics-agent"))
            .args([
                "--from-start",
                "--state-dir",
                &state,
                "--flush-interval",
                "1",
                "--token-file",
                &token_arg,
                &log_arg,
            ])
            .env("PROXY_METRICS_URL", &stack.url)
            .env("PROXY_ID", PROXY)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
            .spawn()
            .expect("target/debug/proxy-metrics-agent");
    let agent_log = || read_agent_log(&dir);
    assert!(
        eventually(Duration::from_secs(30), || agent_log()
            .contains("URL and token accepted"))
        .await,
        "the start-up check passed\n{}",
        agent_log()
    );
    // the token expires (the file now holds an expired one), then lines come
    std::fs::write(&token_file, expired_token("agent-owner") + "\n").unwrap();
    assert!(
        eventually(Duration::from_secs(30), || agent_log()
            .contains("token re-read"))
        .await,
        "{}",
        agent_log()
    );
    append(
        &log,
        &nginx_lines(
            0,
            50,
            real_now() - chrono::Duration::seconds(1),
            &mut totals,
        ),
    );
    assert!(
        eventually(Duration::from_secs(30), || agent_log()
            .contains("the API refused the token"))
        .await,
        "the expired token was refused\n{}",
        agent_log()
    );
    // still buffered, nothing recorded yet
    assert_eq!(day_counts(&stack, &token, PROXY, &totals).await.requests, 0);
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || saved_state(&dir.join("state"))
            .is_some_and(|s| s["pending"].is_null()
                && s["position"]["offset"].as_u64()
                    == std::fs::metadata(&log).ok().map(|m| m.len())))
        .await,
        "delivered with the renewed token\n{}",
        agent_log()
    );
    signal(&child, 15);
    let status = wait_exit(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}\n{}", agent_log());
    assert!(agent_log().contains("token re-read"), "{}", agent_log());
    assert_eq!(
        day_counts(&stack, &token, PROXY, &totals).await,
        totals,
        "{}",
        agent_log()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a local stack and the agent; scripts/test runs it"]
async fn a_token_refused_at_start_up_fails_fast_with_a_clear_message() {
    let (stack, _) = stack_with_proxy("edge-token-start").await;
    let dir = temp_dir("agent-token-start");
    let log = dir.join("access.log");
    append(&log, "");
    let (state, log_arg) = (
        dir.join("state").to_string_lossy().into_owned(),
        log.to_string_lossy().into_owned(),
    );
    let mut child = agent(
        &stack,
        &expired_token("agent-owner"),
        "edge-token-start",
        &dir,
        &["--state-dir", &state, &log_arg],
    );
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    let agent_log = read_agent_log(&dir);
    assert_eq!(status.code(), Some(2), "{agent_log}");
    assert!(
        agent_log.contains("the API refused the token"),
        "{agent_log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

//! The agent catching up on six hours of log against a slow API (every
//! recording transaction delayed 200 ms) with a small buffer: the reader
//! pauses while the buffer is full — the file is the buffer — so nothing is
//! dropped and the day's counts equal the log's. Before issue 24 the reader
//! never waited and a quarter of the observations were dropped.
//! `scripts/test` runs it.

use crate::agent_support;
use crate::common;

use std::time::Duration;

use agent_support::*;
use common::fault_proxy::{Fault, FaultConfig, FaultProxy};
use common::stack::Stack;

const PROXY: &str = "edge-catchup";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a local stack and the agent; scripts/test runs it"]
async fn catching_up_against_a_slow_api_pauses_reading_and_drops_nothing() {
    let db = dynoxide::Database::memory().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = format!("http://{}", listener.local_addr().unwrap());
    let _server = local_stack::spawn_server(listener, db);
    let fault = FaultProxy::start(&store, 24).await;
    let stack = Stack::start(&[("DYNAMODB_ENDPOINT", &fault.endpoint)]);
    let token = hs256("agent-owner");
    let resp = reqwest::Client::new()
        .post(format!("{}/proxies", stack.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"proxyId": PROXY}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    fault.set(
        FaultConfig::always(Fault::Delay(Duration::from_millis(200))).only(&["TransactWriteItems"]),
    );

    let dir = temp_dir("agent-catchup");
    let log = dir.join("access.log");
    // two lines every 10 s over the six hours before now: 2 160 intervals
    let mut totals = Totals::default();
    let mut text = String::new();
    let end = real_now();
    for i in 0..2160 {
        let at = end - chrono::Duration::seconds(10 * (2160 - i));
        text.push_str(&nginx_lines(2 * i as usize, 2, at, &mut totals));
    }
    std::fs::write(&log, text).unwrap();

    let state = dir.join("state").to_string_lossy().into_owned();
    let log_arg = log.to_string_lossy().into_owned();
    let mut child = agent(
        &stack,
        &token,
        PROXY,
        &dir,
        &[
            "--format",
            "nginx",
            "--from-start",
            "--once",
            "--state-dir",
            &state,
            "--buffer-capacity",
            "200",
            "--shutdown-timeout",
            "60",
            &log_arg,
        ],
    );
    let status = wait_exit(&mut child, Duration::from_secs(150)).await;
    let agent_log = read_agent_log(&dir);
    assert!(status.success(), "{status:?}\n{agent_log}");
    assert!(
        agent_log.contains(r#""dropped_buffer_full":0"#),
        "nothing was dropped\n{agent_log}"
    );
    fault.off();
    let got = day_counts(&stack, &token, PROXY, &totals).await;
    assert_eq!(totals.requests, 4320);
    assert_eq!(got, totals, "the day's counts equal the log's\n{agent_log}");
    let _ = std::fs::remove_dir_all(dir);
}

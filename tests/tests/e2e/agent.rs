//! The proxy agent end to end, under storage faults: a local stack whose
//! DynamoDB sits behind the fault proxy (answers dropped after commit,
//! throttling, 500s), the agent tailing a generated nginx log of known
//! totals, SIGTERM while the faults go on — and the day's counts equal the
//! log's exactly. `scripts/test` runs it (it needs the built binaries and
//! cargo-lambda on PATH).

use crate::agent_support::{eventually, read_agent_log};
use crate::common;

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::fault_proxy::{Fault, FaultConfig, FaultProxy};
use common::stack::{Stack, root};
use proxy_metrics::clock::Clock;
use serde_json::{Value, json};

fn real_now() -> DateTime<Utc> {
    Clock::system().now()
}

fn hs256(sub: &str) -> String {
    let now = real_now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 600, "tier": "pro"}),
        &jsonwebtoken::EncodingKey::from_secret(b"local-dev-secret-change-me"),
    )
    .unwrap()
}

#[derive(Default, Debug)]
struct Totals {
    requests: u64,
    errors: u64,
    bytes: u64,
    days: std::collections::BTreeSet<chrono::NaiveDate>,
}

/// `n` lines of nginx's `combined` format plus `$request_time`, spread over
/// the minute before `end`: every 7th a 502, every 11th a 404 (a success
/// from the proxy's point of view).
fn nginx_log(n: usize, end: DateTime<Utc>) -> (String, Totals) {
    let mut text = String::new();
    let mut totals = Totals::default();
    for i in 0..n {
        let at = end - chrono::Duration::milliseconds((60_000 * (n - i) / n) as i64);
        let status = if i % 7 == 0 {
            502
        } else if i % 11 == 0 {
            404
        } else {
            200
        };
        let bytes = (i * 37 % 5000) as u64;
        let _ = writeln!(
            text,
            "203.0.113.{} - - [{}] \"GET /items/{i} HTTP/1.1\" {status} {bytes} \"-\" \"curl/8.5.0\" {:.3}",
            i % 250,
            at.format("%d/%b/%Y:%H:%M:%S +0000"),
            (i % 900) as f64 / 1000.0
        );
        totals.requests += 1;
        totals.errors += u64::from(status >= 500);
        totals.bytes += bytes;
        totals.days.insert(at.date_naive());
    }
    (text, totals)
}

async fn get(stack: &Stack, path: &str, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", stack.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a local stack and the agent; scripts/test runs it"]
async fn the_agent_ends_exact_under_storage_faults_and_sigterm() {
    let db = dynoxide::Database::memory().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = format!("http://{}", listener.local_addr().unwrap());
    let _server = local_stack::spawn_server(listener, db);
    let fault = FaultProxy::start(&store, 77).await;
    let stack = Stack::start(&[("DYNAMODB_ENDPOINT", &fault.endpoint)]);
    let token = hs256("agent-owner");
    let resp = reqwest::Client::new()
        .post(format!("{}/proxies", stack.url))
        .bearer_auth(&token)
        .json(&json!({"proxyId": "edge-agent"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let dir = std::env::temp_dir().join(format!("agent-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let (text, totals) = nginx_log(3000, real_now() - chrono::Duration::seconds(2));
    // the log grows while the agent follows it: a third now, the rest later
    let lines: Vec<&str> = text.lines().collect();
    let thirds: Vec<String> = lines.chunks(1000).map(|c| c.join("\n") + "\n").collect();
    std::fs::write(&log, &thirds[0]).unwrap();

    // The store fails the recording transactions, in this order: every
    // attempt of the first batch commits but its answer is lost (the server
    // answers 503 although the batch landed: the agent's retry is a
    // duplicate); then throttling, a 500, a lost answer the server's own
    // retry gets past; then more of all of them at random.
    let mut script = vec![Fault::DropAfterForward; 6];
    script.extend([
        Fault::Throttling,
        Fault::Throttling,
        Fault::InternalServerError,
        Fault::DropAfterForward,
    ]);
    fault.set(FaultConfig::scripted(&script).only(&["TransactWriteItems"]));
    let agent = Command::new(root().join("target/debug/proxy-metrics-agent"))
        .args([
            "--format",
            "nginx",
            "--from-start",
            "--flush-interval",
            "1",
            "--shutdown-timeout",
            "60",
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .arg(&log)
        .env("PROXY_METRICS_URL", &stack.url)
        .env("PROXY_METRICS_TOKEN", &token)
        .env("PROXY_ID", "edge-agent")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .expect("target/debug/proxy-metrics-agent (scripts/test builds it)");
    // Its signal handlers are installed once it has started (after the
    // start-up check of the API): a SIGTERM before that would kill it.
    assert!(
        eventually(Duration::from_secs(30), || read_agent_log(&dir)
            .contains("proxy-metrics-agent started"))
        .await,
        "the agent did not start\n{}",
        read_agent_log(&dir)
    );
    // batches go out while it runs and the log grows…
    for third in &thirds[1..] {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut file, third.as_bytes()).unwrap();
    }
    fault.set(FaultConfig::random(
        0.3,
        &[
            (Fault::DropAfterForward, 2),
            (Fault::Throttling, 2),
            (Fault::InternalServerError, 1),
        ],
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // …and it is told to stop while the faults go on
    unsafe {
        kill(agent.id() as i32, 15);
    }
    let mut agent = agent;
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent did not stop");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let agent_log = read_agent_log(&dir);
    assert!(status.success(), "{status:?}\n{agent_log}");
    let stats = fault.stats();
    assert!(
        stats.injected_total() >= 10,
        "the scripted faults (and more) were injected: {stats:?}"
    );
    fault.off();

    let (mut requests, mut errors, mut bytes) = (0, 0, 0);
    for day in &totals.days {
        let (s, b) = get(
            &stack,
            &format!("/proxy/metrics/edge-agent/daily/{day}"),
            &token,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        requests += b["metrics"]["requestCount"].as_u64().unwrap();
        errors += b["metrics"]["errorCount"].as_u64().unwrap();
        bytes += b["metrics"]["dataTransferredBytes"].as_u64().unwrap();
    }
    assert_eq!(
        (requests, errors, bytes),
        (totals.requests, totals.errors, totals.bytes),
        "the day's counts equal the log's\n{agent_log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

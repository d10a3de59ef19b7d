//! What the agent's end-to-end tests share: a stack with a registered
//! proxy, the agent as a child process, nginx-like lines of known totals,
//! and the day's counts read back from the API.

#![allow(dead_code)]

pub mod nginx;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::stack::{Stack, root};

pub fn real_now() -> DateTime<Utc> {
    proxy_metrics::clock::Clock::system().now()
}

pub fn hs256(sub: &str) -> String {
    let now = real_now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": now + 900, "tier": "pro"}),
        &jsonwebtoken::EncodingKey::from_secret(b"local-dev-secret-change-me"),
    )
    .unwrap()
}

/// Requests, 5xx errors and bytes sent, and the UTC days they fall on.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub days: std::collections::BTreeSet<chrono::NaiveDate>,
}

/// Lines `first..first + n` of nginx's `combined` format plus
/// `$request_time`, dated `at`: every 7th a 502, every 11th a 404.
pub fn nginx_lines(first: usize, n: usize, at: DateTime<Utc>, totals: &mut Totals) -> String {
    let mut text = String::new();
    for i in first..first + n {
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
    text
}

pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

/// A local stack with proxy `proxy_id` registered to the token's owner.
pub async fn stack_with_proxy(proxy_id: &str) -> (Stack, String) {
    let stack = Stack::start(&[]);
    let token = hs256("agent-owner");
    let resp = reqwest::Client::new()
        .post(format!("{}/proxies", stack.url))
        .bearer_auth(&token)
        .json(&json!({"proxyId": proxy_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    (stack, token)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the agent on `log`; its stderr is appended to `dir/agent.log`.
pub fn agent(stack: &Stack, token: &str, proxy_id: &str, dir: &Path, args: &[&str]) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("agent.log"))
        .unwrap();
    Command::new(root().join("target/debug/proxy-metrics-agent"))
        .args(args)
        .env("PROXY_METRICS_URL", &stack.url)
        .env("PROXY_METRICS_TOKEN", token)
        .env("PROXY_ID", proxy_id)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("target/debug/proxy-metrics-agent (scripts/test builds it)")
}

pub fn signal(child: &Child, signal: i32) {
    unsafe {
        kill(child.id() as i32, signal);
    }
}

pub async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the agent did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `check` holds, polling; false at the deadline.
/// What the agents started with [`agent`] in `dir` have logged so far
/// (empty before the first line).
pub fn read_agent_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// The state file the agent keeps in `state_dir` (there is one per log).
pub fn saved_state(state_dir: &Path) -> Option<Value> {
    let entry = std::fs::read_dir(state_dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
    serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()
}

/// The day's counts summed over `days`.
pub async fn day_counts(stack: &Stack, token: &str, proxy_id: &str, days: &Totals) -> Totals {
    let mut got = Totals {
        days: days.days.clone(),
        ..Totals::default()
    };
    for day in &days.days {
        let resp = reqwest::Client::new()
            .get(format!(
                "{}/proxy/metrics/{proxy_id}/daily/{day}",
                stack.url
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let b: Value = resp.json().await.unwrap();
        got.requests += b["metrics"]["requestCount"].as_u64().unwrap();
        got.errors += b["metrics"]["errorCount"].as_u64().unwrap();
        got.bytes += b["metrics"]["dataTransferredBytes"].as_u64().unwrap();
    }
    got
}

unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

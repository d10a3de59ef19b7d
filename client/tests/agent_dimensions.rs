//! The agent binary's dimensions on the wire (`--dry-run`): routes and
//! upstreams per event from an nginx log, route patterns given by
//! environment, `--no-dimensions`, and batches within the API's limits
//! however many routes an interval holds.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Agent, now, temp_dir, write};
use serde_json::Value;

const FORMAT: &str = r#"$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent rt=$request_time ua="$upstream_addr""#;

/// One line of [`FORMAT`], dated a second into the 10-second interval
/// before the tests' start: every line falls in that one interval, whenever
/// the tests run.
fn line(request_path: &str, status: u16, upstream: &str) -> String {
    static AT: OnceLock<String> = OnceLock::new();
    let at = AT.get_or_init(|| {
        let start = (now().timestamp() / 10 - 1) * 10 + 1;
        chrono::DateTime::from_timestamp(start, 0)
            .unwrap()
            .to_rfc3339()
    });
    format!(
        "10.0.0.1 [{at}] \"GET {request_path} HTTP/1.1\" {status} 10 rt=0.010 ua=\"{upstream}\"\n"
    )
}

/// The dry run's batches.
fn run(log_text: &str, extra_args: &[&str], envs: &[(&str, &str)]) -> Vec<Value> {
    let dir = temp_dir("dims");
    let log = dir.join("access.log");
    write(&log, log_text);
    let format = format!("'{FORMAT}'");
    let mut args = vec![
        "--dry-run",
        "--once",
        "--from-start",
        "--nginx-log-format",
        &format,
    ];
    args.extend(extra_args);
    let log_arg = log.to_string_lossy().into_owned();
    args.push(&log_arg);
    let mut all_envs = vec![("PROXY_ID", "edge-dims")];
    all_envs.extend(envs);
    let (status, stdout, stderr) = Agent::spawn(&args, &all_envs).wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events(batches: &[Value]) -> Vec<Value> {
    batches
        .iter()
        .flat_map(|b| b["events"].as_array().unwrap().clone())
        .collect()
}

/// Requests per (route, upstream) over every event, `-` for a key left out.
fn per_pair(events: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut got = BTreeMap::new();
    for e in events {
        let key = |k: &str| e["dimensions"][k].as_str().unwrap_or("-").to_owned();
        *got.entry((key("route"), key("upstream"))).or_default() +=
            e["metrics"]["requestCount"].as_u64().unwrap();
    }
    got
}

fn pair(route: &str, upstream: &str) -> (String, String) {
    (route.to_owned(), upstream.to_owned())
}

#[test]
fn routes_upstreams_and_status_classes_of_an_nginx_log() {
    let mut text = String::new();
    for i in 0..30 {
        text += &line(&format!("/api/users/{i}?page=2"), 200, "10.0.0.1:80");
    }
    for _ in 0..5 {
        text += &line("/api/users/me", 200, "10.0.0.1:80, 10.0.0.2:80");
    }
    for i in 0..7 {
        text += &line(&format!("/nope/{i}"), 404, "-");
    }
    text += &line("/bad", 502, "10.0.0.2:80");
    let got = events(&run(&text, &[], &[]));
    assert_eq!(
        per_pair(&got),
        BTreeMap::from([
            (pair("/api/users/:id", "10.0.0.1:80"), 30),
            (pair("/api/users/me", "10.0.0.2:80"), 5),
            (pair("/bad", "10.0.0.2:80"), 1),
            (pair("/nope/:id", "-"), 7),
        ])
    );
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    for e in &got {
        let counts = e["metrics"]["statusCounts"].as_object().unwrap();
        let sum: u64 = counts.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(sum, e["metrics"]["requestCount"].as_u64().unwrap(), "{e}");
        for (class, n) in counts {
            *classes.entry(class.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(
        classes,
        BTreeMap::from([("2xx".into(), 35), ("4xx".into(), 7), ("5xx".into(), 1)])
    );
}

#[test]
fn route_patterns_from_the_environment_and_no_dimensions() {
    let mut text = String::new();
    for who in ["me", "alice", "bob"] {
        text += &line(&format!("/api/users/{who}"), 200, "10.0.0.1:80");
    }
    let got = events(&run(
        &text,
        &[],
        &[(
            "PROXY_METRICS_ROUTE_PATTERN",
            "/api/users/me,/api/users/:id",
        )],
    ));
    assert_eq!(
        per_pair(&got),
        BTreeMap::from([
            (pair("/api/users/:id", "10.0.0.1:80"), 2),
            (pair("/api/users/me", "10.0.0.1:80"), 1),
        ])
    );
    let got = events(&run(&text, &["--no-dimensions"], &[]));
    assert_eq!(got.len(), 1, "one event for the interval: {got:?}");
    assert!(got[0].get("dimensions").is_none(), "{}", got[0]);
    assert_eq!(got[0]["metrics"]["statusCounts"]["2xx"], 3);
    let got = events(&run(&text, &[], &[("PROXY_METRICS_NO_DIMENSIONS", "true")]));
    assert_eq!(per_pair(&got), BTreeMap::from([(pair("-", "-"), 3)]));
}

#[test]
fn many_routes_in_one_interval_stay_within_the_batch_limits() {
    let mut text = String::new();
    for i in 0..1200 {
        let _ = write!(text, "{}", line(&format!("/page/r{i}"), 200, "-"));
    }
    let batches = run(&text, &["--buffer-capacity", "4000"], &[]);
    for b in &batches {
        let n = b["events"].as_array().unwrap().len();
        assert!((1..=500).contains(&n), "{n} events in a batch");
        assert!(b.to_string().len() <= 1_000_000);
    }
    let got = events(&batches);
    assert!(batches.len() >= 3, "{} batches", batches.len());
    let pairs = per_pair(&got);
    assert_eq!(pairs.len(), 1200);
    assert!(pairs.values().all(|n| *n == 1));
}

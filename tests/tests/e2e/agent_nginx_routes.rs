//! The agent's dimensions beside a real nginx (Debian's package, on
//! loopback): mixed routes — users behind a proxied upstream, with ids and
//! query strings; static files; UUID-addressed orders; a 404 route and a
//! 502 route — logged with `$upstream_addr`, and the API's breakdowns by
//! route, by upstream and by status class equal what the test counts in
//! nginx's own access log, exactly. `scripts/test` runs it (scripts/test-tools
//! installs nginx).

use crate::agent_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::common::stack::free_port;
use agent_support::nginx::Nginx;
use agent_support::*;
use serde_json::Value;

const PROXY: &str = "edge-nginx-routes";
const FORMAT: &str = r#"$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent rt=$request_time ua="$upstream_addr""#;

/// nginx in front of a backend (another nginx server block): `/api/users/`
/// proxied to the backend, `/static/` and `/orders/` answered by the front,
/// `/bad/` a 502, everything else a 404. Only the front logs.
struct Servers {
    _nginx: Nginx,
    url: String,
    backend: String,
}

impl Servers {
    fn start(dir: &Path) -> Self {
        let (front, back) = (free_port(), free_port());
        let d = dir.display();
        let http = format!(
            r#"  log_format routes '{FORMAT}';
  server {{
    listen 127.0.0.1:{back};
    location / {{ return 200 "user\n"; }}
  }}
  server {{
    listen 127.0.0.1:{front};
    access_log {d}/access.log routes;
    location /api/users/ {{ proxy_pass http://127.0.0.1:{back}; }}
    location /static/ {{ return 200 "css\n"; }}
    location /orders/ {{ return 200 "order\n"; }}
    location /bad/ {{ return 502; }}
    location / {{ return 404; }}
  }}"#
        );
        Self {
            _nginx: Nginx::start(dir, &http, &[front, back]),
            url: format!("http://127.0.0.1:{front}"),
            backend: format!("127.0.0.1:{back}"),
        }
    }
}

/// The paths requested: every kind of segment the agent turns into `:id`,
/// query strings, a trailing slash, and routes of each status class.
fn paths() -> Vec<String> {
    let mut paths = Vec::new();
    for i in 0..60 {
        paths.push(format!("/api/users/{i}?page={}", i % 3));
    }
    for _ in 0..25 {
        paths.push("/static/site.css".into());
    }
    for i in 0..12 {
        paths.push(format!("/orders/{}/", uuid::Uuid::new_v4()));
        paths.push(format!("/missing/{}", 1000 + i));
    }
    for i in 0..9 {
        paths.push(format!("/bad/{i}"));
    }
    paths
}

/// What the test expects nginx's log line to be counted under, worked out
/// here from the logged request on its own: the path without its query,
/// numeric and UUID segments as `:id`, no empty segments.
fn expected_route(request: &str) -> String {
    let target = request.split(' ').nth(1).unwrap();
    let path = target.split('?').next().unwrap();
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let numeric = s.bytes().all(|b| b.is_ascii_digit());
            if numeric || uuid::Uuid::parse_str(s).is_ok() {
                ":id"
            } else {
                s
            }
        })
        .collect();
    format!("/{}", segments.join("/"))
}

/// Requests per route, upstream and status class, counted in nginx's own
/// access log (`… "$request" $status … ua="$upstream_addr"`).
type Counts = BTreeMap<String, u64>;

fn count_log(log: &Path) -> (Counts, Counts, Counts) {
    let (mut routes, mut upstreams, mut classes) = (Counts::new(), Counts::new(), Counts::new());
    for line in std::fs::read_to_string(log).unwrap().lines() {
        let request = line.split('"').nth(1).unwrap();
        let status = line.split('"').nth(2).unwrap().split_whitespace().next();
        let status: u16 = status.unwrap().parse().unwrap();
        let upstream = line.rsplit("ua=\"").next().unwrap().trim_end_matches('"');
        let upstream = if upstream == "-" { "(none)" } else { upstream };
        *routes.entry(expected_route(request)).or_default() += 1;
        *upstreams.entry(upstream.to_owned()).or_default() += 1;
        *classes.entry(format!("{}xx", status / 100)).or_default() += 1;
    }
    (routes, upstreams, classes)
}

/// The API's breakdown by `by` over `days`: requests per value (values
/// with no requests left out).
async fn breakdown(stack_url: &str, token: &str, by: &str, days: &Totals) -> Counts {
    let (first, last) = (days.days.first().unwrap(), days.days.last().unwrap());
    let resp = reqwest::Client::new()
        .get(format!(
            "{stack_url}/proxy/metrics/{PROXY}/breakdown?by={by}&startDate={first}&endDate={last}&limit=500"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    body["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_owned(),
                v["requestCount"].as_u64().unwrap(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts nginx, a local stack and the agent; scripts/test runs it"]
async fn breakdowns_by_route_upstream_and_status_equal_nginx_own_log() {
    let (stack, token) = stack_with_proxy(PROXY).await;
    let dir = temp_dir("agent-nginx-routes");
    let nginx = Servers::start(&dir);
    let mut days = Totals::default();
    days.days.insert(real_now().date_naive());

    let log = dir.join("access.log");
    let client = reqwest::Client::new();
    let mut sent = 0;
    for path in paths() {
        let resp = client
            .get(format!("{}{path}", nginx.url))
            .send()
            .await
            .unwrap();
        assert!(
            [200, 404, 502].contains(&resp.status().as_u16()),
            "{path}: {}",
            resp.status()
        );
        sent += 1;
    }
    let state = dir.join("state");
    let args = [
        "--nginx-log-format",
        &format!("'{FORMAT}'"),
        "--state-dir",
        &state.to_string_lossy(),
        "--flush-interval",
        "1",
        "--poll-ms",
        "50",
        "--from-start",
        &log.to_string_lossy(),
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = agent(&stack, &token, PROXY, &dir, &args);
    let log_len = || std::fs::metadata(&log).map(|m| m.len()).ok();
    assert!(
        eventually(Duration::from_secs(40), || saved_state(&state).is_some_and(
            |s| { s["pending"].is_null() && s["position"]["offset"].as_u64() == log_len() }
        ))
        .await,
        "the agent delivered the whole log"
    );
    signal(&agent, 15);
    let status = wait_exit(&mut agent, Duration::from_secs(30)).await;
    let agent_log = read_agent_log(&dir);
    assert!(status.success(), "{status:?}\n{agent_log}");
    days.days.insert(real_now().date_naive());

    let (routes, upstreams, classes) = count_log(&log);
    assert_eq!(
        routes.values().sum::<u64>(),
        sent,
        "nginx logged every request"
    );
    assert_eq!(
        routes,
        BTreeMap::from([
            ("/api/users/:id".to_owned(), 60),
            ("/bad/:id".to_owned(), 9),
            ("/missing/:id".to_owned(), 12),
            ("/orders/:id".to_owned(), 12),
            ("/static/site.css".to_owned(), 25),
        ]),
        "the log holds the traffic sent"
    );
    assert_eq!(upstreams[&nginx.backend], 60, "{upstreams:?}");
    assert_eq!(classes["5xx"], 9, "{classes:?}");
    assert_eq!(
        breakdown(&stack.url, &token, "route", &days).await,
        routes,
        "by route\n{agent_log}"
    );
    assert_eq!(
        breakdown(&stack.url, &token, "upstream", &days).await,
        upstreams,
        "by upstream\n{agent_log}"
    );
    assert_eq!(
        breakdown(&stack.url, &token, "status", &days).await,
        classes,
        "by status class\n{agent_log}"
    );
    drop(nginx);
    let _ = std::fs::remove_dir_all(dir);
}

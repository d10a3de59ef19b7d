//! A real Prometheus (Debian's `prometheus` server, extracted by
//! `scripts/test-tools`; `PROMETHEUS` names it) scraping the local stack's
//! `GET /metrics` every second with a bearer token from a
//! `credentials_file`, on a free loopback port with its own throw-away data
//! directory (removed, and the server killed, on drop: on failure too).
//!
//! Requests are recorded in several batches, plain and sequenced, each one
//! seen by a scrape before the next, with `aggregate-metrics` run between
//! two of them (through the watcher's invoke API) so that the counters cross
//! a fold. Then, through Prometheus's HTTP API:
//! - the last sample of every counter equals what was recorded;
//! - no counter ever went down: every raw sample of the run in order, and
//!   `resets(...)` = 0;
//! - `sum(increase(proxy_metrics_requests_total{proxy=…}[w]))` equals the
//!   requests recorded, exactly: the window holds the whole series, whose
//!   first sample is 0 (the proxy is registered before Prometheus starts and
//!   the counters are exposed at 0), and the query is evaluated at the last
//!   sample's instant — so `increase()` has nothing to extrapolate at either
//!   end (with a window ending later than the last sample it would scale the
//!   figure up by up to half a scrape interval's worth).
//!
//! `scripts/test` runs it against the shared stack:
//! `E2E_API_URL=… PROMETHEUS=… cargo test -p integration-tests --test e2e -- --ignored prometheus::`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxy_metrics::clock::Clock;
use serde_json::{Value, json};

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn api() -> String {
    std::env::var("E2E_API_URL")
        .expect("E2E_API_URL must point at the local stack (scripts/test sets it)")
}

fn now_seconds() -> f64 {
    Clock::system().now().timestamp_millis() as f64 / 1000.0
}

/// A pro user token for `sub`, valid for 30 minutes.
fn bearer_token(sub: &str) -> String {
    let secret =
        std::env::var("E2E_JWT_SECRET").unwrap_or_else(|_| "local-dev-secret-change-me".into());
    let now = Clock::system().now().timestamp();
    let claims = json!({"sub": sub, "exp": now + 1800, "tier": "pro"});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's Prometheus server scraping `target` (`host:port`) every second
/// with `token` read from a file; killed and its directory removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Self {
        let binary = std::env::var("PROMETHEUS").expect(
            "PROMETHEUS must name Debian's prometheus server binary \
             (scripts/test-tools extracts it and prints PROMETHEUS=…)",
        );
        let dir = std::env::temp_dir().join(format!("prometheus-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: proxy-metrics\n    scheme: http\n\
                 \x20   metrics_path: /metrics\n    authorization:\n      type: Bearer\n\
                 \x20     credentials_file: {}\n    static_configs:\n\
                 \x20     - targets: [\"{target}\"]\n",
                token_file.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("{binary}: {e}")
            });
        Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            let ready = reqwest::get(format!("{}/-/ready", self.url)).await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus did not become ready:\n{}", self.log());
    }

    /// `/api/v1/query` at `time` (seconds; now when `None`): `data`.
    async fn query(&self, promql: &str, time: Option<f64>) -> Value {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("query", promql);
        if let Some(t) = time {
            url.query_pairs_mut()
                .append_pair("time", &format!("{t:.3}"));
        }
        let (status, body) = send(reqwest::Method::GET, url.as_str(), None, &[], None).await;
        assert_eq!(status, 200, "{promql}: {body}");
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"].clone()
    }

    /// The scrape target's health, for failure messages.
    async fn targets(&self) -> String {
        let url = format!("{}/api/v1/targets", self.url);
        let (_, body) = send(reqwest::Method::GET, &url, None, &[], None).await;
        body["data"]["activeTargets"].to_string()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The proxy's counters: (metric, status class or "") → value.
type Counters = BTreeMap<(String, String), f64>;

fn series_key(metric: &Value) -> (String, String) {
    (
        metric["__name__"].as_str().unwrap().to_string(),
        metric["status_class"].as_str().unwrap_or("").to_string(),
    )
}

fn sample_value(pair: &Value) -> f64 {
    pair[1].as_str().unwrap().parse().unwrap()
}

fn counters_selector(proxy: &str) -> String {
    format!("{{__name__=~\"proxy_metrics_.+_total\",proxy=\"{proxy}\"}}")
}

/// What was recorded, as the counters should show it.
#[derive(Default)]
struct Recorded {
    classes: [u64; 5],
    errors: u64,
    transferred: u64,
    received: u64,
}

impl Recorded {
    /// A `request` event of `requests` with `errors` of them failed and
    /// `status` classes when given (else successes 2xx, errors 5xx),
    /// counted here as it is built.
    fn event(&mut self, requests: u64, errors: u64, status: Option<[u64; 5]>) -> Value {
        let (tx, rx) = (1000 * requests + 7, 100 * requests + 3);
        let mut e = json!({"eventType": "request",
            "metrics": {"requestCount": requests, "successCount": requests - errors,
                        "errorCount": errors, "dataTransferredBytes": tx,
                        "dataReceivedBytes": rx}});
        let classes = match status {
            Some(s) => {
                let named: serde_json::Map<String, Value> = CLASSES
                    .iter()
                    .zip(s)
                    .map(|(c, n)| (c.to_string(), json!(n)))
                    .collect();
                e["metrics"]["statusCounts"] = Value::Object(named);
                s
            }
            None => [0, requests - errors, 0, 0, errors],
        };
        for (total, n) in self.classes.iter_mut().zip(classes) {
            *total += n;
        }
        self.errors += errors;
        self.transferred += tx;
        self.received += rx;
        e
    }

    fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    fn counters(&self) -> Counters {
        let mut out = Counters::new();
        for (class, n) in CLASSES.iter().zip(self.classes) {
            out.insert(
                ("proxy_metrics_requests_total".into(), class.to_string()),
                n as f64,
            );
        }
        for (name, n) in [
            ("proxy_metrics_errors_total", self.errors),
            (
                "proxy_metrics_data_transferred_bytes_total",
                self.transferred,
            ),
            ("proxy_metrics_data_received_bytes_total", self.received),
        ] {
            out.insert((name.into(), String::new()), n as f64);
        }
        out
    }
}

/// The latest sample of each of the proxy's counters in the last 10 s:
/// (when it was scraped, in seconds; the counters).
async fn latest(prometheus: &Prometheus, proxy: &str) -> (Vec<f64>, Counters) {
    let data = prometheus
        .query(&format!("{}[10s]", counters_selector(proxy)), None)
        .await;
    let mut at = Vec::new();
    let mut counters = Counters::new();
    for s in data["result"].as_array().unwrap() {
        let last = s["values"].as_array().unwrap().last().unwrap();
        at.push(last[0].as_f64().unwrap());
        counters.insert(series_key(&s["metric"]), sample_value(last));
    }
    (at, counters)
}

/// Waits until Prometheus's latest samples of the proxy's counters were
/// scraped at or after `since` (seconds) and equal `want`; the last values
/// seen in the failure message.
async fn wait_for_scrape(prometheus: &Prometheus, proxy: &str, since: f64, want: &Counters) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Counters::new();
    while Instant::now() < deadline {
        let (at, got) = latest(prometheus, proxy).await;
        if !at.is_empty() && at.iter().all(|t| *t >= since) && &got == want {
            return;
        }
        seen = got;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!(
        "no scrape since {since} showed {want:?}; last seen {seen:?}\ntargets: {}\n{}",
        prometheus.targets().await,
        prometheus.log()
    );
}

#[tokio::test]
#[ignore = "needs the local stack and Debian's prometheus; scripts/test runs it"]
async fn prometheus_scraping_the_stack_reads_exact_counters_that_never_go_down() {
    let api = api();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-prom-{}", &run[..12]);
    let token = bearer_token(&format!("prom-{run}"));
    let (s, b) = send(
        reqwest::Method::POST,
        &format!("{api}/proxies"),
        Some(&token),
        &[],
        Some(json!({"proxyId": proxy})),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    let target = api
        .strip_prefix("http://")
        .expect("E2E_API_URL is http://host:port")
        .trim_end_matches('/');
    let mut prometheus = Prometheus::start(target, &token);
    prometheus.wait_ready().await;
    let started = now_seconds();

    // The counters are exposed at 0 from registration: the series starts there.
    let mut recorded = Recorded::default();
    wait_for_scrape(&prometheus, &proxy, started, &recorded.counters()).await;

    let record = format!("{api}/proxy/metrics/{proxy}/record");
    let producer = format!("prom-{}", &run[..8]);
    // 1. a plain batch
    let batch = json!({"events": [
        recorded.event(40, 2, Some([0, 30, 5, 3, 2])),
        recorded.event(25, 5, None),
    ]});
    let (s, b) = send(
        reqwest::Method::POST,
        &record,
        Some(&token),
        &[],
        Some(batch),
    )
    .await;
    assert_eq!((s, b["recorded"].clone()), (201, json!(2)), "{b}");
    wait_for_scrape(&prometheus, &proxy, started, &recorded.counters()).await;

    // 2. a sequenced batch (and its retry: a duplicate, counted once)
    let batch = json!({"events": [
        recorded.event(12, 1, Some([2, 8, 0, 1, 1])),
        recorded.event(300, 0, None),
        recorded.event(9, 9, Some([0, 0, 0, 0, 9])),
    ]});
    for expected in [201, 200] {
        let headers = [
            ("producer-id", producer.as_str()),
            ("producer-sequence", "0"),
        ];
        let (s, b) = send(
            reqwest::Method::POST,
            &record,
            Some(&token),
            &headers,
            Some(batch.clone()),
        )
        .await;
        assert_eq!(s, expected, "{b}");
    }
    wait_for_scrape(&prometheus, &proxy, started, &recorded.counters()).await;

    // 3. the aggregation folds the day; a scrape after it reads the same
    let (s, report) = send(
        reqwest::Method::POST,
        &format!("{api}/2015-03-31/functions/aggregate-metrics/invocations"),
        None,
        &[],
        Some(json!({"detail": {}})),
    )
    .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["daysFailed"], 0, "{report}");
    println!("aggregation between scrapes: {report}");
    let folded = now_seconds();
    wait_for_scrape(&prometheus, &proxy, folded, &recorded.counters()).await;
    wait_for_scrape(&prometheus, &proxy, folded + 1.5, &recorded.counters()).await;

    // 4. more over the folded day: a sequenced batch and a single event
    let batch = json!({"events": [recorded.event(50, 10, Some([0, 35, 5, 0, 10]))]});
    let headers = [
        ("producer-id", producer.as_str()),
        ("producer-sequence", "1"),
    ];
    let (s, b) = send(
        reqwest::Method::POST,
        &record,
        Some(&token),
        &headers,
        Some(batch),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let single = recorded.event(7, 3, None);
    let (s, b) = send(
        reqwest::Method::POST,
        &record,
        Some(&token),
        &[],
        Some(single),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let last_batch = now_seconds();
    wait_for_scrape(&prometheus, &proxy, last_batch, &recorded.counters()).await;
    // and a few scrapes more, which must not move
    wait_for_scrape(&prometheus, &proxy, last_batch + 3.0, &recorded.counters()).await;
    let want = recorded.counters();
    assert_eq!(recorded.requests(), 443);

    // Every raw sample of the run, in order: from 0, never down, to the
    // recorded figure; the run's intermediate figures are among them.
    let window = (now_seconds() - started).ceil() as u64 + 30;
    let raw = prometheus
        .query(&format!("{}[{window}s]", counters_selector(&proxy)), None)
        .await;
    assert_eq!(raw["resultType"], "matrix", "{raw}");
    let series = raw["result"].as_array().unwrap();
    assert_eq!(series.len(), 8, "{raw}");
    let mut last_at = 0.0_f64;
    for s in series {
        let key = series_key(&s["metric"]);
        let values: Vec<f64> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(sample_value)
            .collect();
        assert_eq!(values[0], 0.0, "{key:?} starts at 0: {values:?}");
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "{key:?} went down: {values:?}"
        );
        assert_eq!(values.last(), want.get(&key), "{key:?}: {values:?}");
        last_at = last_at.max(
            s["values"].as_array().unwrap().last().unwrap()[0]
                .as_f64()
                .unwrap(),
        );
    }
    let two_xx: Vec<f64> = series
        .iter()
        .find(|s| s["metric"]["status_class"] == "2xx")
        .unwrap()["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(sample_value)
        .collect();
    println!(
        "{} scrapes; 2xx went {:?}",
        two_xx.len(),
        two_xx.iter().fold(Vec::new(), |mut steps, v| {
            if steps.last() != Some(v) {
                steps.push(*v);
            }
            steps
        })
    );
    for step in [0.0, 50.0, 358.0, 397.0] {
        assert!(
            two_xx.contains(&step),
            "2xx went through {step}: {two_xx:?}"
        );
    }

    // resets() agrees: no counter ever went down (one query per name:
    // functions drop the name, and the three unlabelled counters would
    // collide).
    for (name, series) in [
        ("proxy_metrics_requests_total", 5),
        ("proxy_metrics_errors_total", 1),
        ("proxy_metrics_data_transferred_bytes_total", 1),
        ("proxy_metrics_data_received_bytes_total", 1),
    ] {
        let resets = prometheus
            .query(
                &format!("resets({name}{{proxy=\"{proxy}\"}}[{window}s])"),
                None,
            )
            .await;
        let resets = resets["result"].as_array().unwrap();
        assert_eq!(resets.len(), series, "{name}: {resets:?}");
        for r in resets {
            assert_eq!(sample_value(&r["value"]), 0.0, "{name}: {r}");
        }
    }

    // The last samples, read as a user would: exact.
    let last = prometheus
        .query(&counters_selector(&proxy), Some(last_at))
        .await;
    let got: Counters = last["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (series_key(&s["metric"]), sample_value(&s["value"])))
        .collect();
    assert_eq!(got, want);

    // increase() over a window holding the whole series, at its last sample:
    // nothing to extrapolate, so exactly the requests recorded.
    let increase = prometheus
        .query(
            &format!("sum(increase(proxy_metrics_requests_total{{proxy=\"{proxy}\"}}[{window}s]))"),
            Some(last_at),
        )
        .await;
    let total = sample_value(&increase["result"][0]["value"]);
    println!("sum(increase(...[{window}s])) at the last sample = {total}");
    assert!(
        (total - recorded.requests() as f64).abs() < 1e-6,
        "increase() = {total}, recorded {}",
        recorded.requests()
    );
    let by_class = prometheus
        .query(
            &format!(
                "sum by (status_class) (increase(proxy_metrics_requests_total{{proxy=\"{proxy}\"}}[{window}s]))"
            ),
            Some(last_at),
        )
        .await;
    for r in by_class["result"].as_array().unwrap() {
        let class = r["metric"]["status_class"].as_str().unwrap();
        let i = CLASSES.iter().position(|c| *c == class).unwrap();
        let got = sample_value(&r["value"]);
        assert!(
            (got - recorded.classes[i] as f64).abs() < 1e-6,
            "increase() of {class}: {got} vs {}",
            recorded.classes[i]
        );
    }
}

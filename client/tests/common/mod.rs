//! Helpers shared by the agent's process-level tests: a generated nginx log
//! with known totals, and the agent binary run as a child process.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use proxy_metrics_client::{Clock, SystemClock};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// "Now", through the client's clock (the agent reads the same one).
pub fn now() -> DateTime<Utc> {
    SystemClock.now()
}

/// What a generated log holds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    /// The UTC days its lines fall on (two if it straddles midnight).
    pub days: BTreeSet<NaiveDate>,
}

/// `n` nginx `main` lines (combined + `$request_time`) spread evenly over
/// the `span` before `end`, with a mix of statuses (5xx are the errors),
/// local-time offsets and sizes. Deterministic for a seed.
pub fn nginx_log(
    n: usize,
    end: DateTime<Utc>,
    span: chrono::Duration,
    seed: u64,
) -> (String, Totals) {
    const STATUSES: &[u16] = &[
        200, 200, 200, 200, 201, 204, 301, 304, 404, 499, 500, 502, 503, 504,
    ];
    const AGENTS: &[&str] = &[
        "curl/8.5.0",
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        "-",
    ];
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut log = String::new();
    let mut totals = Totals::default();
    let start = end - span;
    for i in 0..n {
        let at = start + span * i32::try_from(i).unwrap() / i32::try_from(n).unwrap();
        // nginx writes local time; some servers are not on UTC
        let offset = FixedOffset::east_opt(if i % 2 == 0 { 0 } else { 2 * 3600 }).unwrap();
        let local = at.with_timezone(&offset).format("%d/%b/%Y:%H:%M:%S %z");
        let status = STATUSES[rng.random_range(0..STATUSES.len())];
        let bytes: u64 = if status == 304 || status == 204 {
            0
        } else {
            rng.random_range(0..200_000)
        };
        let request_time = f64::from(rng.random_range(0..2500u32)) / 1000.0;
        let agent = AGENTS[i % AGENTS.len()];
        log.push_str(&format!(
            "203.0.113.{} - - [{local}] \"GET /api/items/{i}?page=2 HTTP/1.1\" {status} {bytes} \"-\" \"{agent}\" {request_time:.3}\n",
            i % 250
        ));
        totals.requests += 1;
        if status >= 500 {
            totals.errors += 1;
        }
        totals.bytes_sent += bytes;
        // whole seconds: nginx's $time_local has no fraction
        let logged = DateTime::from_timestamp(at.timestamp(), 0).unwrap();
        totals.days.insert(logged.date_naive());
    }
    (log, totals)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pm-agent-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The agent binary running as a child, its output collected by threads
/// (so that a full pipe never blocks it).
pub struct Agent {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    started: mpsc::Receiver<()>,
}

impl Agent {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_proxy-metrics-agent"));
        command
            .args(args)
            .env_remove("PROXY_METRICS_URL")
            .env_remove("PROXY_METRICS_TOKEN")
            .env_remove("PROXY_ID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("agent binary runs");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (started_tx, started) = mpsc::channel();
        let mut out = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            sink.lock().unwrap().push_str(&s);
        });
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("proxy-metrics-agent started") {
                    let _ = started_tx.send(());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self {
            child,
            stdout,
            stderr,
            started,
        }
    }

    /// Waits for the agent's "started" line: its signal handlers are in
    /// place, so a SIGTERM from now on flushes instead of killing it.
    pub fn wait_started(&self) {
        if self.started.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("the agent did not start:\n{}", self.stderr.lock().unwrap());
        }
    }

    /// Waits until the agent's stderr holds `text`.
    pub fn wait_for_log(&self, text: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        while !self.stderr.lock().unwrap().contains(text) {
            if Instant::now() > until {
                panic!("no {text:?} in:\n{}", self.stderr.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit; returns its status, stdout and stderr.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String, String) {
        let until = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "the agent did not exit in {timeout:?}:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // let the reader threads see the pipes close
        std::thread::sleep(Duration::from_millis(200));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

/// Sums the contract events of `--dry-run` output (one batch body a line).
pub fn totals_of_batches(stdout: &str) -> Totals {
    let mut t = Totals::default();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let batch: serde_json::Value =
            serde_json::from_str(line).expect("each stdout line is a batch");
        for e in batch["events"].as_array().expect("events") {
            let m = &e["metrics"];
            t.requests += m["requestCount"].as_u64().unwrap();
            t.errors += m["errorCount"].as_u64().unwrap();
            t.bytes_sent += m["dataTransferredBytes"].as_u64().unwrap();
            let ts = e["timestamp"].as_str().unwrap();
            t.days.insert(
                DateTime::parse_from_rfc3339(ts)
                    .unwrap()
                    .with_timezone(&Utc)
                    .date_naive(),
            );
        }
    }
    t
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

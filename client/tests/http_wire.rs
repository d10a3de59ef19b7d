//! The reporter over real HTTP against a scripted server on 127.0.0.1:
//! path, headers, identical bodies on retry, `Retry-After`, `SEQUENCE_GAP`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proxy_metrics_client::{Config, Observation, Reporter};

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Answers each request with the next scripted `(status, extra headers,
/// body)` (201 when the script is done), one request per connection.
fn serve(script: Vec<(u16, &'static str, &'static str)>) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            );
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            log.lock().unwrap().push(Request {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
            });
            let (status, extra, body) = script.next().unwrap_or((201, "", r#"{"recorded":1}"#));
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

fn reporter(url: &str) -> Reporter {
    Reporter::builder(url, "tok.en", "edge-wire-1")
        .config(Config {
            max_batch_events: 1,
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
            ..Config::default()
        })
        .build()
        .unwrap()
}

fn record_two_intervals(r: &Reporter) {
    let now = proxy_metrics_client::Clock::now(&proxy_metrics_client::SystemClock);
    r.record(
        Observation::success()
            .at(now - chrono::Duration::seconds(40))
            .bytes_sent(7),
    );
    r.record(
        Observation::success()
            .at(now - chrono::Duration::seconds(20))
            .bytes_sent(9),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_go_out_with_the_contract_headers_and_retries_honour_retry_after() {
    let (url, seen) = serve(vec![
        (
            503,
            "retry-after: 1\r\n",
            r#"{"error":"SERVICE_UNAVAILABLE","message":"m","code":"PROXY_METRICS_503"}"#,
        ),
        (500, "", "{}"),
        (201, "", r#"{"recorded":1}"#),
        (200, "", r#"{"recorded":0,"duplicates":1}"#),
    ]);
    let r = reporter(&url);
    record_two_intervals(&r);
    let stats = r.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for req in &seen {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/proxy/metrics/edge-wire-1/record");
        assert_eq!(req.header("authorization"), Some("Bearer tok.en"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("producer-id"), Some(r.producer_id()));
        assert!(req.header("idempotency-key").is_none());
    }
    let seqs: Vec<&str> = seen
        .iter()
        .map(|q| q.header("producer-sequence").unwrap())
        .collect();
    assert_eq!(seqs, ["0", "0", "0", "1"]);
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(seen[1].body, seen[2].body);
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(990),
        "Retry-After: 1 was honoured"
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["events"]
    );
    assert_eq!(body["events"][0]["metrics"]["dataTransferredBytes"], 7);
    assert_eq!(
        (
            stats.sent,
            stats.retries,
            stats.duplicates,
            stats.batches_sent
        ),
        (2, 2, 1, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_then_a_gap_over_http() {
    let (url, seen) = serve(vec![
        (
            400,
            "",
            r#"{"error":"INVALID_REQUEST","message":"events[0]: bad","code":"PROXY_METRICS_400"}"#,
        ),
        (
            409,
            "",
            r#"{"error":"SEQUENCE_GAP","message":"expected 0","code":"PROXY_METRICS_409","expectedSequence":0}"#,
        ),
    ]);
    let r = reporter(&url);
    record_two_intervals(&r);
    let stats = r.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    let seqs: Vec<&str> = seen
        .iter()
        .map(|q| q.header("producer-sequence").unwrap())
        .collect();
    assert_eq!(seqs, ["0", "1", "0"]);
    assert_eq!(seen[1].body, seen[2].body);
    assert_eq!(
        (stats.dropped_rejected, stats.sent, stats.sequence_gaps),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_keeps_the_batch_and_retries_it_with_the_new_token() {
    let unauthorized = r#"{"error":"UNAUTHORIZED","message":"expired","code":"PROXY_METRICS_401"}"#;
    let (url, seen) = serve(vec![(401, "", unauthorized), (403, "", "{}")]);
    let r = reporter(&url);
    record_two_intervals(&r);
    // the operator renews the token while the batch waits
    tokio::time::sleep(Duration::from_millis(5)).await;
    r.set_token("new.token").unwrap();
    let stats = r.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    let seqs: Vec<&str> = seen
        .iter()
        .map(|q| q.header("producer-sequence").unwrap())
        .collect();
    assert_eq!(
        seqs,
        ["0", "0", "0", "1"],
        "the refused batch was resent, not dropped"
    );
    assert_eq!(seen[0].body, seen[2].body);
    assert_eq!(seen[3].header("authorization"), Some("Bearer new.token"));
    assert_eq!(
        (stats.sent, stats.dropped_rejected, stats.unauthorized),
        (2, 0, 2)
    );
}

//! What the record tests share: a registered proxy, valid events, and
//! readers of the response and of the day.

use std::collections::HashMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::*;

pub const PROXY: &str = "edge-1";
pub const TWO_POW_53: u64 = 1 << 53;

pub struct Ctx {
    pub h: Harness,
    pub token: String,
}

pub async fn setup() -> Ctx {
    let h = Harness::start().await;
    let token = user_token("alice");
    let (status, body) = h.register(&token, PROXY).await;
    assert_eq!(status, 201, "{body}");
    Ctx { h, token }
}

impl Ctx {
    /// A record request for the proxy, authenticated, without a body yet.
    pub fn req(&self) -> Req {
        record_req(&self.token, PROXY)
    }

    pub async fn send(&self, req: Req) -> (u16, Value, HashMap<String, String>) {
        send_record(&self.h.app, req).await
    }

    pub async fn record(&self, body: Value) -> (u16, Value) {
        self.h.record(&self.token, PROXY, body).await
    }

    /// The daily metrics object of `day`.
    pub async fn day(&self, day: &str) -> Value {
        let (status, body) = self.h.daily(&self.token, PROXY, day).await;
        assert_eq!(status, 200, "{body}");
        body["metrics"].clone()
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn day_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// An instant safely inside the accepted window, and its day.
pub fn recent() -> (DateTime<Utc>, String) {
    let t = now() - Duration::minutes(1);
    (t, day_of(t))
}

/// A valid event: `rc` requests, a tenth of them errors, 100 bytes each.
pub fn ev(id: &str, ts: &str, rc: u64) -> Value {
    json!({"eventType": "request", "eventId": id, "timestamp": ts,
           "metrics": {"requestCount": rc, "successCount": rc - rc / 10, "errorCount": rc / 10,
                       "dataTransferredBytes": rc * 100}})
}

/// `v` with the dotted `path` set to `new` (or removed when `None`).
pub fn with(mut v: Value, path: &str, new: Option<Value>) -> Value {
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap();
    let mut cur = &mut v;
    for k in keys {
        cur = cur.get_mut(k).unwrap();
    }
    let object = cur.as_object_mut().unwrap();
    match new {
        Some(n) => object.insert(last.to_string(), n),
        None => object.remove(last),
    };
    v
}

pub fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

pub fn statuses(body: &Value) -> Vec<&str> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect()
}

pub fn assert_empty_day(m: &Value) {
    assert_eq!(m["eventCount"], 0, "{m}");
    assert_eq!(m["requestCount"], 0, "{m}");
    assert_eq!(m["dataTransferredBytes"], 0, "{m}");
}

/// `n` events ending at `end`, 10 s apart, every metric field set and 3
/// latency samples each: the payload whose cost `tests/cost.rs` asserts and
/// `bench_cost` reports (BENCHMARKS.md, "Storage v2").
pub fn full_events(n: usize, tag: &str, end: DateTime<Utc>) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let at = end - Duration::seconds(10 * (n - 1 - i) as i64);
            json!({"eventType": "request", "eventId": format!("{tag}-{i}"), "timestamp": iso(at),
                   "healthy": true,
                   "metrics": {"requestCount": 100, "successCount": 95, "errorCount": 5,
                               "totalLatencyMs": 5000, "minLatencyMs": 10, "maxLatencyMs": 500,
                               "latencySamplesMs": [12.5 + (i % 50) as f64, 48.0, 51.2 + (i % 7) as f64],
                               "dataTransferredBytes": 123456, "dataReceivedBytes": 654321,
                               "connectionCount": 12, "concurrentConnections": 7,
                               "errorMessage": "upstream timeout"}})
        })
        .collect()
}

/// Records `body` for `proxy` (sequenced when `sequence` is given) and
/// returns what the request cost, as the store meters it. The cost test and
/// `bench_cost` measure through this one path.
pub async fn metered_record(
    h: &Harness,
    token: &str,
    proxy: &str,
    sequence: Option<u64>,
    body: Value,
) -> proxy_metrics::storage::Usage {
    let before = h.app.store.usage();
    let mut req = record_req(token, proxy).json(body);
    if let Some(s) = sequence {
        req = req
            .header("Producer-Id", "boot-1")
            .header("Producer-Sequence", &s.to_string());
    }
    let (s, b, _) = send_record(&h.app, req).await;
    assert_eq!(s, 201, "{b}");
    h.app.store.usage() - before
}

/// Reads proxy `edge` through `route` (today for the one-day route) and
/// returns what the read cost, as the store meters it.
pub async fn metered_read(
    h: &Harness,
    token: &str,
    route: &'static str,
    query: &[(&str, &str)],
) -> proxy_metrics::storage::Usage {
    let before = h.app.store.usage();
    let mut req = Req::new("GET", route)
        .param("proxyId", "edge")
        .bearer(token);
    if route.ends_with("{date}") {
        req = req.param("date", &today());
    }
    for (k, v) in query {
        req = req.query(k, v);
    }
    let request = req.build();
    let response = match route {
        "/proxy/metrics/{proxyId}/daily/{date}" => {
            proxy_metrics::handlers::get_daily_metrics(&h.app, request).await
        }
        "/proxy/metrics/{proxyId}/daily" => {
            proxy_metrics::handlers::get_daily_range(&h.app, request).await
        }
        "/proxy/metrics/{proxyId}/summary" => {
            proxy_metrics::handlers::get_summary(&h.app, request).await
        }
        other => panic!("no metered read for {other}"),
    };
    let (s, b, _) = parts(response);
    assert_eq!(s, 200, "{b}");
    h.app.store.usage() - before
}

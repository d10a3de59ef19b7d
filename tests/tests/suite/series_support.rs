//! What the series tests share: pinned instants, a registered proxy, the
//! series request.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use proxy_metrics::handlers;
use serde_json::{Value, json};

use super::common::*;

pub fn utc(d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 3, d, h, mi, s).unwrap()
}

/// A harness pinned at `registered`, with `proxy` registered then by a
/// `tier` owner, and the clock moved on to `now`; the owner's token (valid
/// for a day from `registered`).
pub async fn registered(
    proxy: &str,
    tier: &str,
    registered: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Harness, String) {
    let h = Harness::start_at(registered).await;
    let exp = (registered + Duration::days(40)).timestamp();
    let t = token_at("alice", json!({"tier": tier, "exp": exp}), registered);
    let (s, b) = h.register(&t, proxy).await;
    assert_eq!(s, 201, "{b}");
    h.app.clock.set(now);
    (h, t)
}

pub async fn series_raw(h: &Harness, t: &str, proxy: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let mut req = Req::new("GET", "/proxy/metrics/{proxyId}/series")
        .param("proxyId", proxy)
        .bearer(t);
    for (k, v) in query {
        req = req.query(k, v);
    }
    let (s, b, _) = parts(handlers::get_series(&h.app, req.build()).await);
    (s, b)
}

/// The points of a series that must answer 200.
pub async fn series(
    h: &Harness,
    t: &str,
    proxy: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: &str,
) -> Vec<Value> {
    let (s, b) = series_raw(
        h,
        t,
        proxy,
        &[("from", &iso(from)), ("to", &iso(to)), ("step", step)],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["step"], step);
    assert_eq!(b["proxyId"], proxy);
    let points = b["points"].as_array().unwrap().clone();
    assert_eq!(b["count"], points.len());
    assert_eq!(b["from"], points[0]["start"]);
    points
}

pub async fn record(h: &Harness, t: &str, proxy: &str, events: Vec<Value>) {
    let (s, b) = h.record(t, proxy, json!({ "events": events })).await;
    assert_eq!(s, 201, "{b}");
}

pub fn starts(points: &[Value]) -> Vec<String> {
    points
        .iter()
        .map(|p| p["start"].as_str().unwrap().to_string())
        .collect()
}

pub fn close(a: &Value, b: f64) -> bool {
    a.as_f64()
        .is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
}

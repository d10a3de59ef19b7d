//! The series endpoint over HTTP (contract v3): a recorded event shows in
//! its five-minute point at once (read-your-writes through the local stack's
//! `get-series` function), every step is present, errors are the contract's.

use chrono::{Duration, SecondsFormat};
use serde_json::json;

use super::{bearer, call, real_now};

#[tokio::test]
#[ignore = "needs the local stack; scripts/test runs it"]
async fn a_recorded_event_shows_in_its_five_minute_point_over_http() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let proxy = format!("e2e-series-{}", &run[..12]);
    let owner = bearer(&format!("series-{run}"));
    let (s, b) = call(
        reqwest::Method::POST,
        "/proxies",
        Some(&owner),
        Some(json!({"proxyId": proxy})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let at = real_now() - Duration::seconds(30);
    let iso = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let (s, b) = call(
        reqwest::Method::POST,
        &format!("/proxy/metrics/{proxy}/record"),
        Some(&owner),
        Some(json!({"eventType": "request", "timestamp": iso(at),
                    "metrics": {"requestCount": 40, "successCount": 38, "errorCount": 2,
                                "latencySamplesMs": [10.0, 20.0, 30.0]}})),
    )
    .await;
    assert_eq!(s, 201, "{b}");

    // The hour around the event at 5-minute steps: 12 or 13 points (the
    // span's start is rounded down), the event in the point holding it.
    let from = at - Duration::minutes(30);
    let to = at + Duration::minutes(30);
    let path = format!(
        "/proxy/metrics/{proxy}/series?from={}&to={}&step=5m",
        iso(from),
        iso(to)
    );
    let (s, b) = call(reqwest::Method::GET, &path, Some(&owner), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["step"], "5m");
    assert_eq!(b["tier"], "pro");
    let points = b["points"].as_array().unwrap();
    assert_eq!(b["count"], points.len());
    assert!((12..=13).contains(&points.len()), "{b}");
    let bucket = at.timestamp_millis().div_euclid(300_000) * 300_000;
    let holding: Vec<_> = points
        .iter()
        .filter(|p| p["requestCount"].as_u64() != Some(0))
        .collect();
    assert_eq!(holding.len(), 1, "{b}");
    assert_eq!(
        holding[0]["start"],
        iso(chrono::DateTime::from_timestamp_millis(bucket).unwrap())
    );
    assert_eq!(holding[0]["errorCount"], 2);
    assert_eq!(holding[0]["successRate"], 0.95);
    assert_eq!(holding[0]["uptimePercentage"], 100.0);

    // An unknown step is the contract's 400.
    let bad = path.replace("step=5m", "step=2m");
    let (s, b) = call(reqwest::Method::GET, &bad, Some(&owner), None).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "INVALID_REQUEST");
    assert_eq!(b["code"], "PROXY_METRICS_400");
}

//! `GET /proxy/metrics/{proxyId}/series`: its limits — 2,016 points, the
//! tier's range for daily steps, raw retention for 5-minute and hourly
//! steps (upgrades included) — and bad input.

use crate::common;
use crate::series_support as support;

use chrono::Duration;
use common::*;
use proxy_metrics::aggregate;
use serde_json::json;
use support::*;

#[tokio::test]
async fn at_most_2016_points_and_one_more_is_422() {
    let now = utc(10, 12, 0, 0);
    let (h, t) = registered("edge", "free", utc(1, 0, 0, 0), now).await;
    // seven days of five-minute points: exactly 2,016, within free retention
    let from = utc(3, 12, 0, 0);
    let points = series(&h, &t, "edge", from, from + Duration::days(7), "5m").await;
    assert_eq!(points.len(), 2016);
    let (s, b) = series_raw(
        &h,
        &t,
        "edge",
        &[
            ("from", &iso(from)),
            (
                "to",
                &iso(from + Duration::days(7) + Duration::milliseconds(1)),
            ),
            ("step", "5m"),
        ],
    )
    .await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    assert!(
        b["message"].as_str().unwrap().contains("2017 points"),
        "{b}"
    );
    // the same cap for hours (checked before the proxy is read: any retention)
    let (s, b) = series_raw(
        &h,
        &t,
        "edge",
        &[
            ("from", "2029-01-01T00:00:00Z"),
            ("to", &iso(utc(1, 0, 0, 0))),
            ("step", "1h"),
        ],
    )
    .await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    // 1d: the caller's tier range (free: 31 days), as for `daily`
    let (s, _) = series_raw(
        &h,
        &t,
        "edge",
        &[
            ("from", &iso(utc(10, 0, 0, 0) - Duration::days(30))),
            ("to", &iso(utc(11, 0, 0, 0))),
            ("step", "1d"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = series_raw(
        &h,
        &t,
        "edge",
        &[
            ("from", &iso(utc(10, 0, 0, 0) - Duration::days(31))),
            ("to", &iso(utc(11, 0, 0, 0))),
            ("step", "1d"),
        ],
    )
    .await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    assert!(b["message"].as_str().unwrap().contains("31"), "{b}");
    // an enterprise caller: 2,016 days, not one more
    let ent = token_at(
        "alice",
        json!({"tier": "enterprise", "exp": (now + Duration::days(1)).timestamp()}),
        now,
    );
    let last = utc(11, 0, 0, 0);
    let (s, b) = series_raw(
        &h,
        &ent,
        "edge",
        &[
            ("from", &iso(last - Duration::days(2016))),
            ("to", &iso(last)),
            ("step", "1d"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["count"], 2016);
    let (s, b) = series_raw(
        &h,
        &ent,
        "edge",
        &[
            ("from", &iso(last - Duration::days(2017))),
            ("to", &iso(last)),
            ("step", "1d"),
        ],
    )
    .await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
}

#[tokio::test]
async fn five_minute_and_hourly_series_reach_back_as_far_as_raw_retention() {
    let now = utc(20, 12, 0, 0);
    let (h, t) = registered("edge", "free", utc(1, 0, 0, 0), now).await;
    // free: 7 days, from midnight of the day 7 days ago
    let earliest = utc(13, 0, 0, 0);
    for step in ["5m", "1h"] {
        let points = series(
            &h,
            &t,
            "edge",
            earliest,
            earliest + Duration::hours(2),
            step,
        )
        .await;
        assert_eq!(points[0]["start"], "2030-03-13T00:00:00.000Z");
        let (s, b) = series_raw(
            &h,
            &t,
            "edge",
            &[
                ("from", &iso(earliest - Duration::milliseconds(1))),
                ("to", &iso(earliest + Duration::hours(2))),
                ("step", step),
            ],
        )
        .await;
        assert_error(s, &b, 422, "RANGE_TOO_LARGE");
        let message = b["message"].as_str().unwrap();
        assert!(
            message.contains("2030-03-13T00:00:00.000Z") && message.contains("7 days"),
            "{message}"
        );
    }
    // daily steps reach back as far as the rollups
    let points = series(&h, &t, "edge", utc(1, 0, 0, 0), utc(2, 0, 0, 0), "1d").await;
    assert_eq!(points.len(), 1);
    // The owner upgrades to pro: buckets written under free are kept 7 days
    // until the aggregation extends them; then 30 days.
    let pro = token_at(
        "alice",
        json!({"tier": "pro", "exp": (now + Duration::days(1)).timestamp()}),
        now,
    );
    let back = |days| now - Duration::days(days);
    let (s, _) = series_raw(
        &h,
        &pro,
        "edge",
        &[
            ("from", &iso(utc(13, 0, 0, 0))),
            ("to", &iso(now)),
            ("step", "1h"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = series_raw(
        &h,
        &pro,
        "edge",
        &[
            ("from", &iso(back(20))),
            ("to", &iso(back(19))),
            ("step", "1h"),
        ],
    )
    .await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("2030-03-13T00:00:00.000Z"),
        "{b}"
    );
    aggregate::run_all(&h.app.store).await.unwrap();
    let (s, b) = series_raw(
        &h,
        &pro,
        "edge",
        &[
            ("from", &iso(back(20))),
            ("to", &iso(back(19))),
            ("step", "1h"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = series_raw(
        &h,
        &pro,
        "edge",
        &[
            ("from", &iso(back(31))),
            ("to", &iso(back(30))),
            ("step", "1h"),
        ],
    )
    .await;
    assert_error(s, &b, 422, "RANGE_TOO_LARGE");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("2030-02-18T00:00:00.000Z"),
        "{b}"
    );
}
#[tokio::test]
async fn bad_input_is_400_before_the_proxy_is_read() {
    let (h, t) = registered("edge", "pro", utc(10, 0, 0, 0), utc(10, 12, 0, 0)).await;
    let ok = [
        ("from", "2030-03-10T10:00:00Z"),
        ("to", "2030-03-10T11:00:00Z"),
        ("step", "5m"),
    ];
    let with = |name: &str, value: Option<&'static str>| -> Vec<(String, String)> {
        let mut q: Vec<(String, String)> = ok
            .iter()
            .filter(|(k, _)| *k != name)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(v) = value {
            q.push((name.to_string(), v.to_string()));
        }
        q
    };
    let cases = [
        with("from", None),
        with("to", None),
        with("step", None),
        with("from", Some("yesterday")),
        with("from", Some("2030-03-10")),
        with("from", Some("2030-03-10T10:00:00")),
        with("from", Some("2030-02-30T10:00:00Z")),
        with("to", Some("1e12")),
        with("from", Some("1969-12-31T23:59:59Z")),
        with("step", Some("1m")),
        with("step", Some("5M")),
        with("step", Some("")),
        with("to", Some("2030-03-10T10:00:00Z")), // from = to
        with("to", Some("2030-03-10T09:00:00Z")), // to before from
    ];
    for query in cases {
        let q: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // on an unknown proxy too: the input is checked before ownership
        for proxy in ["edge", "ghost"] {
            let (s, b) = series_raw(&h, &t, proxy, &q).await;
            assert_error(s, &b, 400, "INVALID_REQUEST");
            assert!(b["message"].as_str().unwrap().len() < 300, "{b}");
        }
    }
    let (s, b) = series_raw(&h, &t, "ghost", &ok).await;
    assert_error(s, &b, 404, "NOT_FOUND");
}

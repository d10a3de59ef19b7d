//! The calendar's edges, at pinned instants: just after and just before
//! midnight UTC, the last day of a month (and of a year), 29 February. Each
//! instant runs the same story — record at the window's edges, read every
//! endpoint, aggregate, read again — and checks every figure against the
//! days computed independently here.
//!
//! The instants lie in the future of any plausible CI run on purpose: raw
//! events carry a TTL counted from their day, and no sweep may ever see them
//! as expired.

use crate::common;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use common::*;
use proxy_metrics::{aggregate, handlers};
use serde_json::{Value, json};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

async fn get(
    h: &Harness,
    token: &str,
    route: &'static str,
    params: &[(&str, &str)],
    query: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = Req::new("GET", route).bearer(token);
    for (k, v) in params {
        req = req.param(k, v);
    }
    for (k, v) in query {
        req = req.query(k, v);
    }
    let request = req.build();
    let response = match route {
        "/proxy/metrics/{proxyId}/daily/{date}" => {
            handlers::get_daily_metrics(&h.app, request).await
        }
        "/proxy/metrics/{proxyId}/daily" => handlers::get_daily_range(&h.app, request).await,
        "/proxy/metrics/{proxyId}/aggregation" => handlers::get_aggregation(&h.app, request).await,
        "/proxy/metrics/{proxyId}/summary" => handlers::get_summary(&h.app, request).await,
        other => panic!("no handler for {other}"),
    };
    let (s, b, _) = parts(response);
    (s, b)
}

/// Every figure of the story that depends on the instant, read over the handlers.
async fn read_all(h: &Harness, token: &str, at: DateTime<Utc>) -> Value {
    let first = (at - Duration::days(7)).date_naive();
    let last = (at + Duration::minutes(5)).date_naive();
    let mut days = serde_json::Map::new();
    let mut day = first;
    while day <= last {
        let (s, b) = get(
            h,
            token,
            "/proxy/metrics/{proxyId}/daily/{date}",
            &[("proxyId", "edge"), ("date", &day_str(day))],
            &[],
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["date"], day_str(day));
        days.insert(day_str(day), b["metrics"].clone());
        day = day.succ_opt().unwrap();
    }
    let range_query = [("startDate", day_str(first)), ("endDate", day_str(last))];
    let (s, range) = get(
        h,
        token,
        "/proxy/metrics/{proxyId}/daily",
        &[("proxyId", "edge")],
        &[
            ("startDate", &range_query[0].1),
            ("endDate", &range_query[1].1),
        ],
    )
    .await;
    assert_eq!(s, 200, "{range}");
    let (s, aggregation) = get(
        h,
        token,
        "/proxy/metrics/{proxyId}/aggregation",
        &[("proxyId", "edge")],
        &[
            ("periodStart", &range_query[0].1),
            ("periodEnd", &range_query[1].1),
        ],
    )
    .await;
    assert_eq!(s, 200, "{aggregation}");
    let (s, summary) = get(
        h,
        token,
        "/proxy/metrics/{proxyId}/summary",
        &[("proxyId", "edge")],
        &[],
    )
    .await;
    assert_eq!(s, 200, "{summary}");
    assert_eq!(
        summary["timestamp"],
        iso(at),
        "responses are stamped with the clock's time"
    );
    json!({"days": days, "range": range["metrics"], "aggregation": aggregation["metrics"],
           "lastHour": summary["lastHour"], "last24Hours": summary["last24Hours"],
           "lastEventAt": summary["lastEventAt"]})
}

/// The story at `at`. The proxy was registered 10 days earlier.
async fn story(at: DateTime<Utc>) {
    let h = Harness::start_at(at - Duration::days(10)).await;
    let owner = token_at("owner", json!({"tier": "pro"}), at - Duration::days(10));
    assert_eq!(h.register(&owner, "edge").await.0, 201);
    h.app.clock.set(at);
    let t = token_at("owner", json!({"tier": "pro"}), at);

    // (offset from `at`, requests): the edges of the accepted window and both
    // sides of the nearest midnight.
    let accepted = [
        (-Duration::days(7) + Duration::seconds(1), 1u64), // oldest accepted
        (-Duration::minutes(3), 10),
        (-Duration::minutes(1), 100),
        (Duration::zero(), 1_000),
        (Duration::minutes(4), 10_000), // newest accepted (proxy clock ahead)
    ];
    let events: Vec<Value> = accepted
        .iter()
        .enumerate()
        .map(|(i, (offset, requests))| {
            json!({"eventType": "request", "eventId": format!("e{i}"), "timestamp": iso(at + *offset),
                   "metrics": {"requestCount": requests, "successCount": requests,
                               "latencySamplesMs": [i as f64 + 1.0]}})
        })
        .collect();
    let (s, b) = h.record(&t, "edge", json!({"events": events})).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["recorded"], accepted.len());
    for (offset, why) in [
        (
            -Duration::days(7) - Duration::seconds(1),
            "7 days in the past",
        ),
        (
            Duration::minutes(5) + Duration::seconds(1),
            "5 minutes in the future",
        ),
    ] {
        let (s, b) = h
            .record(
                &t,
                "edge",
                json!({"eventType": "request", "timestamp": iso(at + offset)}),
            )
            .await;
        assert_error(s, &b, 400, "INVALID_REQUEST");
        assert!(b["message"].as_str().unwrap().contains(why), "{b}");
    }

    // The expected requests of each day, computed here from the instants.
    let mut expected: std::collections::BTreeMap<NaiveDate, u64> = Default::default();
    for (offset, requests) in accepted {
        *expected.entry((at + offset).date_naive()).or_default() += requests;
    }
    let before = read_all(&h, &t, at).await;
    let days = before["days"].as_object().unwrap();
    for (day, metrics) in days {
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
        assert_eq!(
            metrics["requestCount"],
            expected.get(&day).copied().unwrap_or(0),
            "{day} at {at}"
        );
    }
    let range = before["range"].as_array().unwrap();
    assert_eq!(range.len(), days.len(), "every day of the range, in order");
    for (row, (day, metrics)) in range.iter().zip(days) {
        assert_eq!(&row["date"], day);
        assert_eq!(row, metrics, "range and daily agree on {day}");
    }
    assert_eq!(before["aggregation"]["totalRequestCount"], 11_111);
    // the last hour ends at receipt time plus the 5-minute skew allowance
    assert_eq!(before["lastHour"]["requestCount"], 11_110);
    assert_eq!(before["last24Hours"]["requestCount"], 11_110);
    assert_eq!(before["lastEventAt"], iso(at + Duration::minutes(4)));

    // Today's uptime: observed from the day's start (registered long before)
    // to now, the bucket in progress included; healthy where events fell.
    let today = at.date_naive();
    let day_start = today.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let observed = (at - day_start).num_minutes() / 5 + 1;
    let healthy: std::collections::BTreeSet<i64> = accepted
        .iter()
        .map(|(offset, _)| at + *offset)
        .filter(|t| t.date_naive() == today && *t <= at + Duration::minutes(5))
        .map(|t| (t - day_start).num_minutes() / 5)
        .filter(|bucket| *bucket < observed)
        .collect();
    let uptime = days[&day_str(today)]["uptimePercentage"].as_f64().unwrap();
    let want = healthy.len() as f64 / observed as f64 * 100.0;
    assert!(
        (uptime - want).abs() < 1e-9,
        "uptime {uptime} != {want} at {at}"
    );

    // Materialising changes nothing a reader sees.
    let report = aggregate::run_all(&h.app.store).await.unwrap();
    assert_eq!(report.days_materialized as usize, expected.len());
    assert_eq!(read_all(&h, &t, at).await, before);

    // Two hours later the last hour is empty; the last 24 hours still hold it all.
    h.app.clock.advance(Duration::hours(2));
    let later = token_at("owner", json!({"tier": "pro"}), at + Duration::hours(2));
    let (s, summary) = get(
        &h,
        &later,
        "/proxy/metrics/{proxyId}/summary",
        &[("proxyId", "edge")],
        &[],
    )
    .await;
    assert_eq!(s, 200, "{summary}");
    assert_eq!(summary["lastHour"]["requestCount"], 0);
    assert_eq!(summary["last24Hours"]["requestCount"], 11_110);
}

#[tokio::test]
async fn just_after_midnight() {
    story(utc(2031, 6, 10, 0, 2)).await;
}

#[tokio::test]
async fn just_before_midnight() {
    story(utc(2031, 6, 10, 23, 58)).await;
}

#[tokio::test]
async fn last_day_of_a_month() {
    story(utc(2031, 4, 30, 23, 58)).await;
    story(utc(2031, 5, 1, 0, 2)).await;
}

#[tokio::test]
async fn last_day_of_a_year() {
    story(utc(2031, 12, 31, 23, 58)).await;
}

#[tokio::test]
async fn twenty_ninth_of_february() {
    story(utc(2032, 2, 29, 0, 2)).await;
    story(utc(2032, 2, 29, 23, 58)).await;
    story(utc(2032, 3, 1, 0, 2)).await;
}

#[tokio::test]
async fn at_the_suite_default_instant() {
    // whatever PROXY_METRICS_TEST_NOW (or the real clock) says
    story(now()).await;
}

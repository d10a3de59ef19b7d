//! Grouping by (interval, route, upstream), and status classes: what each
//! event says, and that nothing is lost or counted twice across the groups.

use std::collections::BTreeMap;

use super::*;
use crate::Observation;
use chrono::TimeZone;
use proptest::prelude::*;
use rand::SeedableRng;
use serde_json::{Value, json};

fn at(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, 10, 4, 0).unwrap() + chrono::Duration::milliseconds(ms)
}

fn events(intervals: &[Interval]) -> Vec<Value> {
    intervals
        .iter()
        .map(|i| serde_json::to_value(i.to_event(None)).unwrap())
        .collect()
}

#[test]
fn one_event_per_interval_route_and_upstream_with_its_dimensions() {
    let mut a = Aggregator::new(64, 100, SmallRng::seed_from_u64(3));
    let obs = |route: &str, upstream: Option<&str>, status: u16| {
        let mut o = Observation::success().status(status).route(route);
        o.upstream = upstream.map(str::to_owned);
        o.error = status >= 500;
        o
    };
    for (route, upstream, status, ms) in [
        ("/api/users/:id", Some("10.0.0.1:80"), 200, 0),
        ("/api/users/:id", Some("10.0.0.1:80"), 404, 1_000),
        ("/api/users/:id", Some("10.0.0.2:80"), 502, 2_000),
        ("/static/x.css", None, 304, 3_000),
        ("/api/users/:id", Some("10.0.0.1:80"), 200, 12_000),
    ] {
        assert!(
            a.add(Clean::new(obs(route, upstream, status), at(ms)))
                .is_none()
        );
    }
    let got = events(&a.close_all());
    let summary: Vec<(Value, Value, Value, Value)> = got
        .iter()
        .map(|e| {
            (
                e["timestamp"].clone(),
                e["dimensions"].clone(),
                e["metrics"]["requestCount"].clone(),
                e["metrics"]["statusCounts"].clone(),
            )
        })
        .collect();
    let first = json!("2024-01-15T10:04:00Z");
    let second = json!("2024-01-15T10:04:10Z");
    assert_eq!(
        summary,
        [
            (
                first.clone(),
                json!({"route": "/api/users/:id", "upstream": "10.0.0.1:80"}),
                json!(2),
                json!({"2xx": 1, "4xx": 1})
            ),
            (
                first.clone(),
                json!({"route": "/api/users/:id", "upstream": "10.0.0.2:80"}),
                json!(1),
                json!({"5xx": 1})
            ),
            // an unknown upstream is left out, not sent empty
            (
                first,
                json!({"route": "/static/x.css"}),
                json!(1),
                json!({"3xx": 1})
            ),
            (
                second,
                json!({"route": "/api/users/:id", "upstream": "10.0.0.1:80"}),
                json!(1),
                json!({"2xx": 1})
            ),
        ]
    );
    assert_eq!(got[1]["metrics"]["errorCount"], 1);
}

#[test]
fn without_dimensions_one_event_as_before_and_no_dimensions_key() {
    let mut a = Aggregator::new(64, 100, SmallRng::seed_from_u64(3));
    for status in [200, 201, 404, 503] {
        let mut o = Observation::success().status(status);
        o.error = status >= 500;
        a.add(Clean::new(o, at(0)));
    }
    let got = events(&a.close_all());
    assert_eq!(got.len(), 1);
    assert!(got[0].get("dimensions").is_none(), "{}", got[0]);
    assert_eq!(
        got[0]["metrics"]["statusCounts"],
        json!({"2xx": 2, "4xx": 1, "5xx": 1})
    );
}

#[test]
fn status_classes_of_requests_without_a_usable_status() {
    let class = |status: Option<u16>, error: bool| status_class(status, error);
    assert_eq!(class(Some(101), false), 0);
    assert_eq!(class(Some(599), true), 4);
    assert_eq!(class(Some(499), false), 3);
    // no status: the server's own reading (success 2xx, error 5xx)
    assert_eq!(class(None, false), 1);
    assert_eq!(class(None, true), 4);
    // Envoy's 0: an error with a reason is 5xx, a client gone away 4xx
    assert_eq!(class(Some(0), true), 4);
    assert_eq!(class(Some(0), false), 3);
    assert_eq!(class(Some(700), false), 1);
}

#[test]
fn dimension_values_are_made_acceptable_before_grouping() {
    let mut a = Aggregator::new(64, 100, SmallRng::seed_from_u64(3));
    let long = "é".repeat(300);
    a.add(Clean::new(
        Observation::success().route(long).upstream("a\nb"),
        at(0),
    ));
    a.add(Clean::new(Observation::success().route("  "), at(0)));
    let got = events(&a.close_all());
    assert_eq!(got.len(), 2);
    // a blank route is no route
    assert!(got[0].get("dimensions").is_none(), "{}", got[0]);
    let route = got[1]["dimensions"]["route"].as_str().unwrap();
    assert_eq!(route.chars().count(), MAX_DIMENSION_CHARS);
    assert_eq!(got[1]["dimensions"]["upstream"], "a?b");
}

fn observation() -> impl Strategy<Value = (Observation, i64)> {
    (
        prop::option::of(prop::sample::select(vec!["/a", "/b/:id", "/c"])),
        prop::option::of(prop::sample::select(vec!["u1:80", "u2:80"])),
        prop::option::of(prop_oneof![Just(0u16), 100u16..600]),
        any::<bool>(),
        prop::option::of(0.0f64..500.0),
        0i64..40_000,
    )
        .prop_map(|(route, upstream, status, error, latency, ms)| {
            let mut o = Observation::success();
            o.route = route.map(str::to_owned);
            o.upstream = upstream.map(str::to_owned);
            o.status = status;
            o.error = error;
            o.latency_ms = latency;
            (o, ms)
        })
}

type Pair = (Option<String>, Option<String>);

proptest! {
    /// However observations fall into intervals and groups — and however
    /// often the bound on open aggregates closes one early — the events'
    /// counts per (route, upstream) and per status class sum to what was
    /// recorded, and each event's classes sum to its requestCount.
    #[test]
    fn per_route_and_upstream_counts_sum_to_the_totals(
        observations in prop::collection::vec(observation(), 0..300),
        max_open in 1usize..12,
        close_every in 1usize..50,
    ) {
        let mut a = Aggregator::new(max_open, 20, SmallRng::seed_from_u64(9));
        let mut closed = Vec::new();
        let mut expected: BTreeMap<Pair, u64> = BTreeMap::new();
        let mut expected_classes = [0u64; 5];
        for (n, (o, ms)) in observations.iter().enumerate() {
            *expected.entry((o.route.clone(), o.upstream.clone())).or_default() += 1;
            expected_classes[status_class(o.status, o.error)] += 1;
            closed.extend(a.add(Clean::new(o.clone(), at(*ms))));
            if n % close_every == 0 {
                closed.extend(a.close_due(at(*ms).timestamp_millis(), 2_000));
            }
        }
        closed.extend(a.close_all());
        let mut got: BTreeMap<Pair, u64> = BTreeMap::new();
        let mut got_classes = [0u64; 5];
        for e in events(&closed) {
            let m = &e["metrics"];
            let requests = m["requestCount"].as_u64().unwrap();
            prop_assert_eq!(
                m["successCount"].as_u64().unwrap() + m["errorCount"].as_u64().unwrap(),
                requests
            );
            let mut sum = 0;
            for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let n = m["statusCounts"][class].as_u64().unwrap_or(0);
                prop_assert!(m["statusCounts"].get(class).is_none() || n > 0, "zero classes are left out");
                got_classes[i] += n;
                sum += n;
            }
            prop_assert_eq!(sum, requests);
            let dim = |k: &str| e["dimensions"][k].as_str().map(str::to_owned);
            *got.entry((dim("route"), dim("upstream"))).or_default() += requests;
        }
        prop_assert_eq!(got, expected);
        prop_assert_eq!(got_classes, expected_classes);
    }
}

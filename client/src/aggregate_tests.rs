//! Folding observations into events: counts, latencies, messages, bounds.

use super::*;
use crate::Observation;
use chrono::TimeZone;
use rand::SeedableRng;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, 10, 4, 0).unwrap()
}

fn at(ms: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds(ms)
}

fn agg(sample_cap: usize) -> Aggregator {
    Aggregator::new(64, sample_cap, SmallRng::seed_from_u64(7))
}

fn add(a: &mut Aggregator, o: Observation, ms: i64) -> Option<Interval> {
    a.add(Clean::new(o, at(ms)))
}

fn json(i: &Interval) -> serde_json::Value {
    serde_json::to_value(i.to_event(None)).unwrap()
}

#[test]
fn one_event_per_interval_with_counts_bytes_and_latency_folded() {
    let mut a = agg(1000);
    add(
        &mut a,
        Observation::success()
            .latency_ms(10.0)
            .bytes_sent(100)
            .bytes_received(7),
        0,
    );
    add(
        &mut a,
        Observation::success()
            .latency_ms(30.5)
            .bytes_sent(50)
            .new_connections(1),
        4_000,
    );
    add(
        &mut a,
        Observation::failure(Some("upstream timeout".into()))
            .latency_ms(500.0)
            .concurrent_connections(9),
        9_999,
    );
    // next interval
    add(&mut a, Observation::success().latency_ms(1.0), 10_000);
    let closed = a.close_due(at(19_999).timestamp_millis(), 0);
    assert_eq!(closed.len(), 1, "only the first interval has ended");
    let e = json(&closed[0]);
    assert_eq!(e["eventType"], "request");
    assert_eq!(e["timestamp"], "2024-01-15T10:04:00Z");
    assert_eq!(e["healthy"], true);
    let m = &e["metrics"];
    assert_eq!(m["requestCount"], 3);
    assert_eq!(m["successCount"], 2);
    assert_eq!(m["errorCount"], 1);
    assert_eq!(m["totalLatencyMs"], 540.5);
    assert_eq!(m["minLatencyMs"], 10.0);
    assert_eq!(m["maxLatencyMs"], 500.0);
    assert_eq!(
        m["latencySamplesMs"],
        serde_json::json!([10.0, 30.5, 500.0])
    );
    assert_eq!(m["dataTransferredBytes"], 150);
    assert_eq!(m["dataReceivedBytes"], 7);
    assert_eq!(m["connectionCount"], 1);
    assert_eq!(m["concurrentConnections"], 9);
    assert_eq!(m["errorMessage"], "upstream timeout");
    let rest = a.close_all();
    assert_eq!(rest.len(), 1);
    assert_eq!(json(&rest[0])["timestamp"], "2024-01-15T10:04:10Z");
}

#[test]
fn only_contract_fields_and_no_absent_latency_or_concurrency() {
    let mut a = agg(1000);
    add(&mut a, Observation::success().bytes_sent(3), 0);
    let e = json(&a.close_all()[0]);
    let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["eventType", "healthy", "metrics", "timestamp"]);
    let m = e["metrics"].as_object().unwrap();
    let mut mk: Vec<&str> = m.keys().map(String::as_str).collect();
    mk.sort();
    assert_eq!(
        mk,
        [
            "connectionCount",
            "dataReceivedBytes",
            "dataTransferredBytes",
            "errorCount",
            "requestCount",
            "statusCounts",
            "successCount"
        ]
    );
    // without a status, a success is 2xx (the server's own reading)
    assert_eq!(m["statusCounts"], serde_json::json!({"2xx": 1}));
}

#[test]
fn requests_with_and_without_latency_become_separate_events() {
    let mut a = agg(1000);
    add(&mut a, Observation::success().latency_ms(20.0), 1_000);
    add(&mut a, Observation::success(), 2_000);
    add(&mut a, Observation::success(), 3_000);
    let closed = a.close_all();
    assert_eq!(closed.len(), 2);
    let without = json(&closed[0]);
    let with = json(&closed[1]);
    assert_eq!(without["metrics"]["requestCount"], 2);
    assert!(without["metrics"].get("totalLatencyMs").is_none());
    assert_eq!(with["metrics"]["requestCount"], 1);
    assert_eq!(with["metrics"]["totalLatencyMs"], 20.0);
    assert_eq!(with["timestamp"], without["timestamp"]);
}

#[test]
fn unhealthy_once_means_unhealthy_interval_and_latest_concurrency_wins() {
    let mut a = agg(1000);
    add(&mut a, Observation::success().concurrent_connections(5), 0);
    add(
        &mut a,
        Observation::success()
            .healthy(false)
            .concurrent_connections(8),
        1,
    );
    add(&mut a, Observation::success().concurrent_connections(3), 2);
    add(&mut a, Observation::success(), 3);
    let e = json(&a.close_all()[0]);
    assert_eq!(e["healthy"], false);
    assert_eq!(e["metrics"]["concurrentConnections"], 3);
}

#[test]
fn the_most_frequent_error_message_wins_ties_to_the_first() {
    let mut a = agg(1000);
    for m in ["a", "b", "b", "c", "a", "b"] {
        add(&mut a, Observation::failure(Some(m.into())), 0);
    }
    assert_eq!(json(&a.close_all()[0])["metrics"]["errorMessage"], "b");
    for m in ["x", "y", "y", "x"] {
        add(&mut a, Observation::failure(Some(m.into())), 0);
    }
    assert_eq!(json(&a.close_all()[0])["metrics"]["errorMessage"], "x");
}

#[test]
fn a_frequent_message_survives_many_distinct_rare_ones() {
    let mut a = agg(1000);
    for i in 0..200 {
        add(&mut a, Observation::failure(Some(format!("rare {i}"))), 0);
        if i % 4 == 0 {
            add(&mut a, Observation::failure(Some("hot".into())), 0);
        }
    }
    assert_eq!(json(&a.close_all()[0])["metrics"]["errorMessage"], "hot");
}

#[test]
fn samples_are_a_bounded_reservoir_within_min_and_max() {
    let mut a = agg(100);
    for i in 0..10_000 {
        add(
            &mut a,
            Observation::success().latency_ms(f64::from(i) / 7.0),
            0,
        );
    }
    let e = json(&a.close_all()[0]);
    let m = &e["metrics"];
    let samples = m["latencySamplesMs"].as_array().unwrap();
    assert_eq!(samples.len(), 100);
    let (min, max) = (
        m["minLatencyMs"].as_f64().unwrap(),
        m["maxLatencyMs"].as_f64().unwrap(),
    );
    assert_eq!(min, 0.0);
    assert_eq!(max, 1428.429);
    assert!(
        samples
            .iter()
            .all(|s| (min..=max).contains(&s.as_f64().unwrap()))
    );
    // uniform over the interval, not its first 100 requests
    let late = samples
        .iter()
        .filter(|s| s.as_f64().unwrap() > 700.0)
        .count();
    assert!(
        (20..=80).contains(&late),
        "{late} of 100 samples from the second half"
    );
    assert_eq!(m["requestCount"], 10_000);
}

#[test]
fn garbage_is_made_acceptable_before_it_is_folded() {
    let mut a = agg(1000);
    let long = "é".repeat(2000);
    let mut o = Observation::failure(Some(long)).bytes_sent(u64::MAX);
    o.latency_ms = Some(f64::NAN);
    add(&mut a, o, 0);
    let mut o = Observation::success();
    o.latency_ms = Some(-1.0);
    add(&mut a, o, 0);
    add(&mut a, Observation::failure(Some(String::new())), 0);
    let closed = a.close_all();
    assert_eq!(closed.len(), 1, "no latency was valid");
    let e = json(&closed[0]);
    let m = &e["metrics"];
    assert!(m.get("totalLatencyMs").is_none());
    assert_eq!(m["errorMessage"].as_str().unwrap().chars().count(), 1024);
    assert_eq!(m["dataTransferredBytes"].as_u64().unwrap(), MAX_COUNT);
}

#[test]
fn sums_never_pass_2_pow_53_a_full_interval_is_closed_and_reopened() {
    let mut a = agg(1000);
    assert!(add(&mut a, Observation::success().bytes_sent(MAX_COUNT - 1), 0).is_none());
    let closed = add(&mut a, Observation::success().bytes_sent(2), 1).expect("closed early");
    assert_eq!(
        json(&closed)["metrics"]["dataTransferredBytes"].as_u64(),
        Some(MAX_COUNT - 1)
    );
    let rest = a.close_all();
    assert_eq!(json(&rest[0])["metrics"]["dataTransferredBytes"], 2);
}

#[test]
fn open_intervals_are_bounded_the_oldest_closes_early() {
    let mut a = Aggregator::new(3, 10, SmallRng::seed_from_u64(1));
    for i in 0..3 {
        assert!(add(&mut a, Observation::success(), i * INTERVAL_MS).is_none());
    }
    let closed = add(&mut a, Observation::success(), 3 * INTERVAL_MS).expect("oldest closed");
    assert_eq!(closed.key.start_ms, t0().timestamp_millis());
    assert_eq!(a.open_len(), 3);
    assert_eq!(a.pending_observations(), 3);
}

#[test]
fn intervals_close_after_their_end_plus_grace() {
    let mut a = agg(10);
    add(&mut a, Observation::success(), 9_000);
    let end = at(10_000).timestamp_millis();
    assert!(a.close_due(end + 1_999, 2_000).is_empty());
    assert_eq!(a.close_due(end + 2_000, 2_000).len(), 1);
}

#[test]
fn interval_start_floors_also_before_the_epoch() {
    assert_eq!(interval_start(19_999), 10_000);
    assert_eq!(interval_start(-1), -10_000);
}

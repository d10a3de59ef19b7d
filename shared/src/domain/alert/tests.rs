use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::eval::{State, Verdict, classify, evaluate, latest_close, next_state, windows};
use super::target::{Refused, parse, refused};
use super::webhook::{format_secret, retry_delay, secret_key, sign, verify};
use super::*;
use crate::domain::rollup::{BUCKET_MS, Bucket, Stats};

fn body() -> serde_json::Value {
    json!({"name": "errors", "metric": "errorRate", "comparison": "above", "threshold": 5,
           "webhookUrl": "https://hooks.example.com/alerts"})
}

fn spec(extra: serde_json::Value) -> RuleSpec {
    let mut b = body();
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    RuleSpec::from_body(&b, false).unwrap()
}

#[test]
fn defaults_are_the_contracts() {
    let s = spec(json!({}));
    assert_eq!(s.recovery_threshold, 5.0);
    assert_eq!(s.window_minutes, 5);
    assert_eq!((s.breaching, s.evaluations), (1, 1));
    assert_eq!(s.no_data, NoData::NoData);
    let shown = serde_json::to_value(&s).unwrap();
    for field in RULE_FIELDS {
        assert!(shown.get(*field).is_some(), "{field} shown");
    }
}

#[test]
fn invalid_rules_are_refused_with_the_field_named() {
    for (extra, field) in [
        (json!({"metric": "latency"}), "metric"),
        (json!({"comparison": "over"}), "comparison"),
        (json!({"threshold": "5"}), "threshold"),
        (json!({"recoveryThreshold": 6}), "recoveryThreshold"),
        (json!({"windowMinutes": 7}), "windowMinutes"),
        (json!({"breaching": 3, "evaluations": 2}), "breaching"),
        (json!({"evaluations": 11, "breaching": 1}), "evaluations"),
        (json!({"breaching": 0}), "breaching"),
        (json!({"noData": "ignore"}), "noData"),
        (
            json!({"webhookUrl": "http://hooks.example.com/"}),
            "webhookUrl",
        ),
        (json!({"treshold": 1}), "treshold"),
    ] {
        let mut b = body();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        let err = RuleSpec::from_body(&b, false).unwrap_err().to_string();
        assert!(err.contains(field), "{extra}: {err}");
    }
    // recovery on the safe side: below the threshold for "above", above it for "below"
    assert!(
        RuleSpec::from_body(
            &{
                let mut b = body();
                b["recoveryThreshold"] = json!(3);
                b
            },
            false
        )
        .is_ok()
    );
    let mut below = body();
    below["comparison"] = json!("below");
    below["recoveryThreshold"] = json!(3);
    assert!(RuleSpec::from_body(&below, false).is_err());
}

#[test]
fn the_standard_webhooks_test_vector() {
    let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sig = sign(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert!(verify(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
        &format!("v1,bogus {sig}")
    ));
    assert!(!verify(
        &key,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265331,
        br#"{"test": 2432232314}"#,
        &sig
    ));
    assert_eq!(
        format_secret(&key),
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_refused_address_class() {
    for (addr, class) in [
        ("127.0.0.1", Refused::Loopback),
        ("127.9.9.9", Refused::Loopback),
        ("10.1.2.3", Refused::Private),
        ("172.16.0.1", Refused::Private),
        ("172.31.255.255", Refused::Private),
        ("192.168.1.1", Refused::Private),
        ("169.254.1.1", Refused::LinkLocal),
        ("169.254.169.254", Refused::CloudMetadata),
        ("100.64.0.1", Refused::SharedAddressSpace),
        ("100.127.255.255", Refused::SharedAddressSpace),
        ("224.0.0.1", Refused::Multicast),
        ("239.255.255.250", Refused::Multicast),
        ("0.0.0.0", Refused::Unspecified),
        ("255.255.255.255", Refused::Broadcast),
        ("::1", Refused::Loopback),
        ("::", Refused::Unspecified),
        ("fc00::1", Refused::Private),
        ("fd12:3456::1", Refused::Private),
        ("fe80::1", Refused::LinkLocal),
        ("ff02::1", Refused::Multicast),
        ("fd00:ec2::254", Refused::CloudMetadata),
        ("::ffff:127.0.0.1", Refused::Loopback),
        ("::ffff:10.0.0.1", Refused::Private),
        ("::ffff:169.254.169.254", Refused::CloudMetadata),
        ("::ffff:100.64.1.1", Refused::SharedAddressSpace),
    ] {
        assert_eq!(refused(ip(addr)), Some(class), "{addr}");
    }
    for public in [
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
    ] {
        assert_eq!(refused(ip(public)), None, "{public}");
    }
}

#[test]
fn url_rules() {
    let t = parse("https://hooks.example.com/a?b=c#frag", false).unwrap();
    assert_eq!(
        (t.https, t.host.as_str(), t.port, t.path.as_str()),
        (true, "hooks.example.com", 443, "/a?b=c")
    );
    assert_eq!(
        parse("https://hooks.example.com:8443", false).unwrap().port,
        8443
    );
    assert_eq!(
        parse("https://[2606:4700::1111]:443/x", false)
            .unwrap()
            .host,
        "2606:4700::1111"
    );
    for bad in [
        "http://hooks.example.com/",
        "ftp://hooks.example.com/",
        "https://user:pw@hooks.example.com/",
        "https://hooks.example.com:80/",
        "https://hooks.example.com:1023/",
        "https://hooks.example.com:99999/",
        "https://10.0.0.1/",
        "https://[::1]/",
        "https://169.254.169.254/latest/meta-data",
        "https:///nohost",
        "hooks.example.com",
        "https://hooks.example.com/a b",
    ] {
        assert!(parse(bad, false).is_err(), "{bad}");
    }
    // the local stack's switch: http to loopback only
    assert!(parse("http://127.0.0.1:8080/hook", true).is_ok());
    assert!(parse("http://localhost:8080/hook", true).is_ok());
    assert!(parse("http://hooks.example.com:8080/hook", true).is_err());
    assert!(parse("http://10.0.0.1:8080/hook", true).is_err());
}

#[test]
fn retry_schedule_with_jitter() {
    let seconds: Vec<i64> = (1..=9)
        .map(|a| retry_delay(a, 0.0).unwrap().num_seconds())
        .collect();
    assert_eq!(
        seconds,
        [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    );
    assert_eq!(retry_delay(10, 0.0), None);
    assert_eq!(retry_delay(0, 0.0), None);
    assert_eq!(retry_delay(1, 1.0).unwrap().num_milliseconds(), 5500);
    assert_eq!(retry_delay(1, -1.0).unwrap().num_milliseconds(), 4500);
    assert_eq!(retry_delay(9, 7.0).unwrap().num_seconds(), 95040);
}

fn bucket(requests: u64, errors: u64) -> Bucket {
    Bucket {
        stats: Stats {
            event_count: 1,
            request_count: requests,
            success_count: requests - errors,
            error_count: errors,
            ..Stats::default()
        },
        healthy: true,
    }
}

#[test]
fn windows_are_closed_and_aligned() {
    let now = Utc.with_ymd_and_hms(2024, 1, 15, 10, 7, 30).unwrap();
    let close = latest_close(now, 5);
    assert_eq!(
        close,
        Utc.with_ymd_and_hms(2024, 1, 15, 10, 5, 0)
            .unwrap()
            .timestamp_millis()
    );
    assert_eq!(
        latest_close(now, 60),
        Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0)
            .unwrap()
            .timestamp_millis()
    );
    let s = spec(json!({"windowMinutes": 15, "evaluations": 3, "breaching": 2}));
    let w = windows(latest_close(now, 15), &s);
    assert_eq!(w.len(), 3);
    assert_eq!(
        w[2].1,
        Utc.with_ymd_and_hms(2024, 1, 15, 10, 0, 0)
            .unwrap()
            .timestamp_millis()
    );
    assert_eq!(
        w[0].0,
        Utc.with_ymd_and_hms(2024, 1, 15, 9, 15, 0)
            .unwrap()
            .timestamp_millis()
    );
}

#[test]
fn m_of_n_fires_a_single_spike_does_not() {
    let s = spec(json!({"evaluations": 3, "breaching": 2}));
    let t0 = 1_700_000_100_000i64 - 1_700_000_100_000i64 % BUCKET_MS;
    let mut buckets = BTreeMap::new();
    buckets.insert(t0, bucket(100, 1));
    buckets.insert(t0 + BUCKET_MS, bucket(100, 50)); // one spike
    buckets.insert(t0 + 2 * BUCKET_MS, bucket(100, 1));
    let e = evaluate(&s, State::Ok, t0 + 3 * BUCKET_MS, &buckets);
    assert_eq!(e.state, State::Ok);
    assert_eq!(e.value, Some(1.0));
    buckets.insert(t0 + 2 * BUCKET_MS, bucket(100, 20)); // a second one: 2 of 3
    let e = evaluate(&s, State::Ok, t0 + 3 * BUCKET_MS, &buckets);
    assert_eq!(e.state, State::Firing);
    assert_eq!(e.value, Some(20.0));
    assert_eq!(e.window, (t0 + 2 * BUCKET_MS, t0 + 3 * BUCKET_MS));
}

#[test]
fn hysteresis_needs_every_window_safe_of_the_recovery_threshold() {
    let s =
        spec(json!({"threshold": 10, "recoveryThreshold": 5, "evaluations": 2, "breaching": 2}));
    use Verdict::*;
    assert_eq!(classify(&s, Some(7.0)), Between);
    assert_eq!(classify(&s, Some(5.0)), Safe);
    assert_eq!(classify(&s, Some(10.5)), Breach);
    assert_eq!(
        next_state(&s, State::Firing, &[Breach, Between]),
        State::Firing
    );
    assert_eq!(
        next_state(&s, State::Firing, &[Safe, Between]),
        State::Firing
    );
    assert_eq!(next_state(&s, State::Firing, &[Safe, Safe]), State::Ok);
    assert_eq!(next_state(&s, State::Ok, &[Between, Between]), State::Ok);
    let below = spec(
        json!({"metric": "uptimePercentage", "comparison": "below", "threshold": 90, "recoveryThreshold": 99}),
    );
    assert_eq!(classify(&below, Some(95.0)), Between);
    assert_eq!(classify(&below, Some(80.0)), Breach);
    assert_eq!(classify(&below, Some(100.0)), Safe);
}

#[test]
fn no_data_counts_as_the_rule_says() {
    let t = 1_700_000_000_000i64 - 1_700_000_000_000i64 % BUCKET_MS;
    let empty = BTreeMap::new();
    let s = spec(json!({}));
    assert_eq!(evaluate(&s, State::Ok, t, &empty).state, State::NoData);
    assert_eq!(evaluate(&s, State::Firing, t, &empty).state, State::NoData);
    let ok = spec(json!({"noData": "ok"}));
    assert_eq!(evaluate(&ok, State::Firing, t, &empty).state, State::Ok);
    let breaching = spec(json!({"noData": "breaching"}));
    assert_eq!(
        evaluate(&breaching, State::Ok, t, &empty).state,
        State::Firing
    );
    // data back after no data: OK
    let mut buckets = BTreeMap::new();
    buckets.insert(t - BUCKET_MS, bucket(10, 0));
    assert_eq!(evaluate(&s, State::NoData, t, &buckets).state, State::Ok);
    assert_eq!(State::parse("NO_DATA"), Some(State::NoData));
}

#[test]
fn metrics_of_a_window() {
    use super::eval::window_value;
    let t = 1_700_000_000_000i64 - 1_700_000_000_000i64 % (15 * 60_000);
    let mut buckets = BTreeMap::new();
    buckets.insert(t, bucket(100, 10));
    buckets.insert(t + BUCKET_MS, bucket(300, 10));
    let end = t + 15 * 60_000;
    assert_eq!(window_value(Metric::ErrorRate, &buckets, t, end), Some(5.0));
    assert_eq!(
        window_value(Metric::RequestCount, &buckets, t, end),
        Some(400.0)
    );
    let uptime = window_value(Metric::UptimePercentage, &buckets, t, end).unwrap();
    assert!((uptime - 200.0 / 3.0).abs() < 1e-9);
    assert_eq!(window_value(Metric::P95LatencyMs, &buckets, t, end), None);
    assert_eq!(
        window_value(Metric::ErrorRate, &buckets, end, end + BUCKET_MS),
        None
    );
    assert_eq!(rule_limit(crate::domain::tier::Tier::Pro), 50);
}

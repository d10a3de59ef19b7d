//! The OTLP mapping without I/O: decoding, percentiles against exact ones
//! of generated data, and the per-series state (duplicates, cumulative
//! deltas, resets, the state's bound).

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::map::{self, GroupState, Limits, REASON_STATE_FULL};
use super::proto::*;

pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

pub(super) fn ns(at: DateTime<Utc>) -> u64 {
    at.timestamp_nanos_opt().unwrap_or_default() as u64
}

pub(super) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

pub(super) fn attrs(route: &str, status: i64) -> Vec<KeyValue> {
    vec![
        kv("http.route", any_value::Value::StringValue(route.into())),
        kv(
            "http.response.status_code",
            any_value::Value::IntValue(status),
        ),
        kv(
            "http.request.method",
            any_value::Value::StringValue("GET".into()),
        ),
    ]
}

pub(super) fn export(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("edge".into()),
                )],
                dropped_attributes_count: 0,
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "proxy".into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub(super) fn histogram(temporality: i32, points: Vec<HistogramDataPoint>) -> Metric {
    Metric {
        name: map::REQUEST_DURATION.into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temporality,
        })),
        ..Default::default()
    }
}

pub(super) const BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// An explicit-bucket point of `values` (seconds).
pub(super) fn explicit_point(
    values: &[f64],
    start: u64,
    time: u64,
    a: Vec<KeyValue>,
) -> HistogramDataPoint {
    let mut counts = vec![0u64; BOUNDS.len() + 1];
    for v in values {
        let i = BOUNDS.iter().position(|b| v <= b).unwrap_or(BOUNDS.len());
        counts[i] += 1;
    }
    HistogramDataPoint {
        attributes: a,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        bucket_counts: counts,
        explicit_bounds: BOUNDS.to_vec(),
        flags: 0,
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
    }
}

/// An exponential point of `values` (seconds) at `scale`.
pub(super) fn exponential_point(
    values: &[f64],
    scale: i32,
    time: u64,
) -> ExponentialHistogramDataPoint {
    let base = (-f64::from(scale)).exp2().exp2();
    let index = |v: f64| (v.ln() / base.ln()).ceil() as i32 - 1;
    let offset = values.iter().map(|v| index(*v)).min().unwrap_or(0);
    let top = values.iter().map(|v| index(*v)).max().unwrap_or(0);
    let mut counts = vec![0u64; (top - offset + 1) as usize];
    for v in values {
        counts[(index(*v) - offset) as usize] += 1;
    }
    ExponentialHistogramDataPoint {
        attributes: attrs("/api/x", 200),
        start_time_unix_nano: time - 10_000_000_000,
        time_unix_nano: time,
        count: values.len() as u64,
        sum: Some(values.iter().sum()),
        scale,
        zero_count: 0,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        negative: None,
        flags: 0,
        min: None,
        max: None,
        zero_threshold: 0.0,
    }
}

/// Log-normal latencies around 80 ms (seconds).
pub(super) fn latencies(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let z: f64 = (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0;
            (0.08f64.ln() + 0.9 * z).exp()
        })
        .collect()
}

/// The sketch's rank rule on exact data: value of rank ⌊q·(n − 1)⌋.
pub(super) fn exact(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(q * (sorted.len() as f64 - 1.0)) as usize]
}

pub(super) fn limits() -> Limits {
    Limits {
        max_state_bytes: 350 * 1024,
        retention: Duration::days(8),
    }
}

pub(super) fn run(state: &mut GroupState, request: &ExportMetricsServiceRequest) -> map::Applied {
    let extracted = map::extract(request);
    let mut total = map::Applied {
        report: extracted.report.clone(),
        ..Default::default()
    };
    for group in &extracted.groups {
        let a = map::apply(state, group, now(), limits());
        total.events.extend(a.events);
        total.accepted += a.accepted;
        total.duplicates += a.duplicates;
        total.report.merge(a.report);
        total.changed |= a.changed;
    }
    total
}

pub(super) fn requests(applied: &map::Applied) -> u64 {
    applied.events.iter().map(|e| e.request_count).sum()
}

#[test]
pub(super) fn explicit_bucket_percentiles_fall_in_their_bucket() {
    let values = latencies(20_000, 7);
    let t = ns(now());
    let request = export(vec![histogram(
        TEMPORALITY_DELTA,
        vec![explicit_point(
            &values,
            t - 10_000_000_000,
            t,
            attrs("/a", 200),
        )],
    )]);
    let applied = run(&mut GroupState::default(), &request);
    assert_eq!(applied.events.len(), 1);
    let sketch = applied.events[0].latency_sketch.clone().unwrap();
    assert_eq!(sketch.count(), 20_000);
    for q in [0.5, 0.9, 0.95, 0.99] {
        let truth = exact(&values, q);
        let i = BOUNDS
            .iter()
            .position(|b| truth <= *b)
            .unwrap_or(BOUNDS.len());
        let lower = if i == 0 { 0.0 } else { BOUNDS[i - 1] } * 1000.0;
        let upper = BOUNDS.get(i).copied().unwrap_or(f64::MAX) * 1000.0;
        let got = sketch.quantile(q).unwrap();
        assert!(
            got >= lower * 0.99 && got <= upper * 1.01,
            "q{q}: {got} ms outside its bucket ({lower}, {upper}] of the exact {} ms",
            truth * 1000.0
        );
    }
    // the sum is exact, in milliseconds
    let total: f64 = values.iter().sum::<f64>() * 1000.0;
    assert!((applied.events[0].total_latency_ms.unwrap() - total).abs() < 1e-6 * total);
}

#[test]
pub(super) fn exponential_percentiles_stay_within_the_contract_bound() {
    for scale in [0, 2, 3, 5] {
        let values = latencies(20_000, 11 + scale as u64);
        let t = ns(now());
        let metric = Metric {
            name: map::REQUEST_DURATION.into(),
            unit: "s".into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![exponential_point(&values, scale, t)],
                aggregation_temporality: TEMPORALITY_DELTA,
            })),
            ..Default::default()
        };
        let applied = run(&mut GroupState::default(), &export(vec![metric]));
        let sketch = applied.events[0].latency_sketch.clone().unwrap();
        let bound = (1.0 + map::exponential_error(scale)) * 1.01 - 1.0 + 1e-9;
        for q in [0.5, 0.9, 0.95, 0.99] {
            let truth = exact(&values, q) * 1000.0;
            let got = sketch.quantile(q).unwrap();
            let error = (got - truth).abs() / truth;
            assert!(
                error <= bound,
                "scale {scale} q{q}: {got} vs {truth} ({error:.4} > {bound:.4})"
            );
        }
    }
}

#[test]
pub(super) fn cumulative_points_become_deltas_and_a_retry_counts_once() {
    let start = ns(now() - Duration::minutes(5));
    let t1 = ns(now() - Duration::seconds(20));
    let t2 = ns(now() - Duration::seconds(10));
    let first = latencies(100, 1);
    let mut both = first.clone();
    both.extend(latencies(50, 2));
    let p1 = export(vec![histogram(
        TEMPORALITY_CUMULATIVE,
        vec![explicit_point(&first, start, t1, attrs("/a", 200))],
    )]);
    let p2 = export(vec![histogram(
        TEMPORALITY_CUMULATIVE,
        vec![explicit_point(&both, start, t2, attrs("/a", 200))],
    )]);
    let mut state = GroupState::default();
    let a = run(&mut state, &p1);
    assert_eq!((a.accepted, requests(&a)), (1, 100));
    // a retry of the first export: a duplicate, nothing counted
    let again = run(&mut state, &p1);
    assert_eq!(
        (again.accepted, again.duplicates, requests(&again)),
        (0, 1, 0)
    );
    assert!(!again.changed);
    // the next cumulative point adds its delta only
    let b = run(&mut state, &p2);
    assert_eq!((b.accepted, requests(&b)), (1, 50));
    let sketch = b.events[0].latency_sketch.clone().unwrap();
    assert_eq!(sketch.count(), 50);
    let delta_sum: f64 = both[100..].iter().sum::<f64>() * 1000.0;
    assert!((b.events[0].total_latency_ms.unwrap() - delta_sum).abs() < 1e-6 * delta_sum);
    // and its state survives an encode/decode
    let decoded = GroupState::decode(&state.encode()).unwrap();
    assert_eq!(decoded, state);
}

#[test]
pub(super) fn a_new_start_time_is_a_reset_counted_in_full() {
    let start = ns(now() - Duration::minutes(5));
    let restart = ns(now() - Duration::seconds(30));
    let t1 = ns(now() - Duration::seconds(40));
    let t2 = ns(now() - Duration::seconds(10));
    let mut state = GroupState::default();
    let p1 = export(vec![histogram(
        TEMPORALITY_CUMULATIVE,
        vec![explicit_point(
            &latencies(500, 3),
            start,
            t1,
            attrs("/a", 503),
        )],
    )]);
    let a = run(&mut state, &p1);
    assert_eq!(requests(&a), 500);
    assert_eq!(a.events[0].error_count, 500);
    assert_eq!(a.events[0].status_counts, Some([0, 0, 0, 0, 500]));
    // the process restarted: fewer requests, a new start
    let p2 = export(vec![histogram(
        TEMPORALITY_CUMULATIVE,
        vec![explicit_point(
            &latencies(30, 4),
            restart,
            t2,
            attrs("/a", 503),
        )],
    )]);
    let b = run(&mut state, &p2);
    assert_eq!(requests(&b), 30);
    // counts going down without a new start are a reset too
    let t3 = ns(now() - Duration::seconds(5));
    let p3 = export(vec![histogram(
        TEMPORALITY_CUMULATIVE,
        vec![explicit_point(
            &latencies(7, 5),
            restart,
            t3,
            attrs("/a", 503),
        )],
    )]);
    assert_eq!(requests(&run(&mut state, &p3)), 7);
}

#[test]
pub(super) fn delta_points_are_deduplicated_by_time_per_series() {
    let t = ns(now() - Duration::seconds(10));
    let request = export(vec![histogram(
        TEMPORALITY_DELTA,
        vec![
            explicit_point(&latencies(10, 1), t - 10_000_000_000, t, attrs("/a", 200)),
            explicit_point(&latencies(20, 2), t - 10_000_000_000, t, attrs("/b", 404)),
        ],
    )]);
    let mut state = GroupState::default();
    let a = run(&mut state, &request);
    assert_eq!((a.accepted, requests(&a)), (2, 30));
    let routes: Vec<_> = a
        .events
        .iter()
        .map(|e| e.dimensions.route.clone())
        .collect();
    assert!(routes.contains(&Some("/a".into())) && routes.contains(&Some("/b".into())));
    let b = run(&mut state, &request);
    assert_eq!((b.accepted, b.duplicates), (0, 2));
    // attribute order does not make another series
    let mut reordered = request.clone();
    if let Some(metric::Data::Histogram(h)) =
        &mut reordered.resource_metrics[0].scope_metrics[0].metrics[0].data
    {
        h.data_points[0].attributes.reverse();
    }
    assert_eq!(run(&mut state, &reordered).duplicates, 2);
}

#[test]
pub(super) fn exponential_cumulative_deltas_survive_a_lower_scale() {
    let t1 = ns(now() - Duration::seconds(20));
    let t2 = ns(now() - Duration::seconds(10));
    let first = latencies(300, 8);
    let mut both = first.clone();
    both.extend(latencies(200, 9));
    let metric = |p: ExponentialHistogramDataPoint| Metric {
        name: map::REQUEST_DURATION.into(),
        unit: "s".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p],
            aggregation_temporality: TEMPORALITY_CUMULATIVE,
        })),
        ..Default::default()
    };
    let p1 = exponential_point(&first, 4, t1);
    let mut p2 = exponential_point(&both, 3, t2);
    // the same run (same start); the SDK lowered its scale meanwhile
    p2.start_time_unix_nano = p1.start_time_unix_nano;
    let mut state = GroupState::default();
    assert_eq!(requests(&run(&mut state, &export(vec![metric(p1)]))), 300);
    let b = run(&mut state, &export(vec![metric(p2)]));
    assert_eq!(requests(&b), 200);
    assert_eq!(b.events[0].latency_sketch.as_ref().unwrap().count(), 200);
}

#[test]
pub(super) fn active_requests_and_body_sizes_map_and_others_are_named() {
    let t = ns(now() - Duration::seconds(10));
    let sum = |name: &str, v: f64| Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![],
                start_time_unix_nano: t - 1,
                time_unix_nano: t,
                value: Some(number_data_point::Value::AsDouble(v)),
                flags: 0,
            }],
            aggregation_temporality: TEMPORALITY_CUMULATIVE,
            is_monotonic: false,
        })),
        ..Default::default()
    };
    let mut sizes = histogram(
        TEMPORALITY_DELTA,
        vec![explicit_point(&[100.0, 2000.0], t - 1, t, attrs("/a", 200))],
    );
    sizes.name = map::RESPONSE_BODY_SIZE.into();
    sizes.unit = "By".into();
    let request = export(vec![
        sum(map::ACTIVE_REQUESTS, 7.0),
        sizes,
        sum("envoy_cluster_upstream_cx_total", 3.0),
        sum("process.cpu.time", 1.0),
    ]);
    let a = run(&mut GroupState::default(), &request);
    assert_eq!(a.accepted, 2);
    assert_eq!(a.report.rejected, 0);
    let message = a.report.message().unwrap();
    assert!(
        message.contains("envoy_cluster_upstream_cx_total"),
        "{message}"
    );
    assert!(message.contains("process.cpu.time"), "{message}");
    assert!(a.events.iter().any(|e| e.concurrent_connections == Some(7)));
    assert!(a.events.iter().any(|e| e.data_transferred_bytes == 2100));
}

#[test]
pub(super) fn bad_points_are_rejected_and_the_state_is_bounded() {
    let t = ns(now() - Duration::seconds(10));
    let mut broken = explicit_point(&[0.1], t - 1, t, attrs("/a", 200));
    broken.count = 5;
    let old = ns(now() - Duration::days(8));
    let request = export(vec![histogram(
        TEMPORALITY_DELTA,
        vec![
            broken,
            explicit_point(&[0.1], old - 1, old, attrs("/b", 200)),
        ],
    )]);
    let a = run(&mut GroupState::default(), &request);
    assert_eq!((a.accepted, a.report.rejected), (0, 2));
    let message = a.report.message().unwrap();
    assert!(message.starts_with("2 data points rejected"), "{message}");
    // a tiny state bound: the second new series is refused, known ones go on
    let mut state = GroupState::default();
    let small = Limits {
        max_state_bytes: 40,
        retention: Duration::days(8),
    };
    let two = export(vec![histogram(
        TEMPORALITY_DELTA,
        vec![
            explicit_point(&[0.1], t - 1, t, attrs("/a", 200)),
            explicit_point(&[0.1], t - 1, t, attrs("/b", 200)),
        ],
    )]);
    let extracted = map::extract(&two);
    let applied = map::apply(&mut state, &extracted.groups[0], now(), small);
    assert_eq!((applied.accepted, applied.report.rejected), (1, 1));
    assert!(applied.report.reasons.contains_key(REASON_STATE_FULL));
}

#[test]
fn a_known_series_may_not_grow_the_state_past_its_bound() {
    let start = ns(now() - Duration::minutes(5));
    let t1 = ns(now() - Duration::seconds(20));
    let t2 = ns(now() - Duration::seconds(10));
    let mut first = explicit_point(&[0.1; 3], start, t1, attrs("/a", 200));
    first.bucket_counts.clear();
    first.explicit_bounds.clear();
    let second = explicit_point(&latencies(300, 1), start, t2, attrs("/a", 200));
    let mut state = GroupState::default();
    let group = |p: HistogramDataPoint| {
        map::extract(&export(vec![histogram(TEMPORALITY_CUMULATIVE, vec![p])])).groups[0].clone()
    };
    let a = map::apply(&mut state, &group(first), now(), limits());
    assert_eq!(a.accepted, 1);
    let tight = Limits {
        max_state_bytes: state.encoded_len() + 4,
        retention: Duration::days(8),
    };
    let before = state.clone();
    let b = map::apply(&mut state, &group(second), now(), tight);
    assert_eq!((b.accepted, b.report.rejected), (0, 1));
    assert_eq!(state, before, "the series keeps its last state");
}

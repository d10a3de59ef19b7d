//! Property tests of event validation (`parse_event`, `parse_record_body`):
//! every generated valid event passes and keeps its values; every event with
//! one of the contract's violations fails with a message naming the field,
//! alone and inside a batch (where the message names its index).

use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, TimeZone, Utc};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use proxy_metrics::domain::ValidationError;
use proxy_metrics::domain::event::{
    Event, EventType, MAX_COUNT, MAX_ERROR_MESSAGE_CHARS, MAX_EVENTS_PER_BATCH,
    MAX_SAMPLES_PER_EVENT, parse_event, parse_record_body,
};
use serde_json::{Map, Value, json};

/// A fixed "now", so every run checks the same window.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, 12, 0, 0).unwrap()
}

const WEEK_MS: i64 = 7 * 86_400_000;
const FIVE_MIN_MS: i64 = 5 * 60_000;

const COUNT_FIELDS: [&str; 7] = [
    "requestCount",
    "successCount",
    "errorCount",
    "dataTransferredBytes",
    "dataReceivedBytes",
    "connectionCount",
    "concurrentConnections",
];
const LATENCY_FIELDS: [&str; 3] = ["totalLatencyMs", "minLatencyMs", "maxLatencyMs"];
const METRIC_FIELDS: [&str; 12] = [
    "requestCount",
    "successCount",
    "errorCount",
    "totalLatencyMs",
    "minLatencyMs",
    "maxLatencyMs",
    "latencySamplesMs",
    "dataTransferredBytes",
    "dataReceivedBytes",
    "connectionCount",
    "concurrentConnections",
    "errorMessage",
];

#[derive(Debug, Clone)]
enum Stamp {
    Absent,
    /// RFC 3339 in a zone `zone_min` minutes east of UTC.
    Rfc3339 {
        offset_ms: i64,
        zone_min: i32,
    },
    EpochMs(i64),
}

impl Stamp {
    fn offset_ms(&self) -> i64 {
        match self {
            Stamp::Absent => 0,
            Stamp::Rfc3339 { offset_ms, .. } | Stamp::EpochMs(offset_ms) => *offset_ms,
        }
    }
}

fn stamp_json(offset_ms: i64, zone_min: Option<i32>) -> Value {
    let at = now() + Duration::milliseconds(offset_ms);
    match zone_min {
        None => json!(at.timestamp_millis()),
        Some(0) => json!(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        Some(z) => json!(
            at.with_timezone(&FixedOffset::east_opt(z * 60).unwrap())
                .to_rfc3339_opts(SecondsFormat::Millis, false)
        ),
    }
}

/// A valid event, field by field (`None`: the field is absent).
#[derive(Debug, Clone)]
struct Spec {
    event_type: EventType,
    event_id: Option<String>,
    stamp: Stamp,
    healthy: Option<bool>,
    success: Option<u64>,
    error: Option<u64>,
    /// requestCount = success + error + extra, when given.
    request_extra: Option<u64>,
    total_latency: Option<f64>,
    min_latency: Option<f64>,
    max_latency: Option<f64>,
    samples: Option<Vec<f64>>,
    transferred: Option<u64>,
    received: Option<u64>,
    connections: Option<u64>,
    concurrent: Option<u64>,
    error_message: Option<String>,
    /// Whether `metrics` is written even when it would be empty.
    empty_metrics: bool,
}

impl Spec {
    fn request_count(&self) -> Option<u64> {
        self.request_extra
            .map(|x| self.success.unwrap_or(0) + self.error.unwrap_or(0) + x)
    }

    fn to_json(&self) -> Value {
        let mut event = Map::new();
        event.insert("eventType".into(), json!(self.event_type.as_str()));
        if let Some(id) = &self.event_id {
            event.insert("eventId".into(), json!(id));
        }
        match &self.stamp {
            Stamp::Absent => {}
            Stamp::Rfc3339 {
                offset_ms,
                zone_min,
            } => {
                event.insert("timestamp".into(), stamp_json(*offset_ms, Some(*zone_min)));
            }
            Stamp::EpochMs(offset_ms) => {
                event.insert("timestamp".into(), stamp_json(*offset_ms, None));
            }
        }
        if let Some(h) = self.healthy {
            event.insert("healthy".into(), json!(h));
        }
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        };
        put("requestCount", self.request_count().map(|v| json!(v)));
        put("successCount", self.success.map(|v| json!(v)));
        put("errorCount", self.error.map(|v| json!(v)));
        put("totalLatencyMs", self.total_latency.map(|v| json!(v)));
        put("minLatencyMs", self.min_latency.map(|v| json!(v)));
        put("maxLatencyMs", self.max_latency.map(|v| json!(v)));
        put("latencySamplesMs", self.samples.as_ref().map(|v| json!(v)));
        put("dataTransferredBytes", self.transferred.map(|v| json!(v)));
        put("dataReceivedBytes", self.received.map(|v| json!(v)));
        put("connectionCount", self.connections.map(|v| json!(v)));
        put("concurrentConnections", self.concurrent.map(|v| json!(v)));
        put(
            "errorMessage",
            self.error_message.as_ref().map(|v| json!(v)),
        );
        if !m.is_empty() || self.empty_metrics {
            event.insert("metrics".into(), Value::Object(m));
        }
        Value::Object(event)
    }

    /// Asserts that `e` is this spec, validated; `key` was the header value.
    fn check(&self, e: &Event, key: Option<&str>) {
        assert_eq!(e.event_type, self.event_type);
        match self.event_id.as_deref().or(key) {
            Some(id) => assert_eq!(e.event_id, id),
            None => assert!(uuid::Uuid::parse_str(&e.event_id).is_ok(), "{}", e.event_id),
        }
        assert_eq!(
            e.timestamp_ms,
            now().timestamp_millis() + self.stamp.offset_ms()
        );
        assert_eq!(e.healthy, self.healthy.unwrap_or(true));
        let success = self.success.unwrap_or(0);
        let error = self.error.unwrap_or(0);
        assert_eq!(e.success_count, success);
        assert_eq!(e.error_count, error);
        assert_eq!(
            e.request_count,
            self.request_count().unwrap_or(success + error)
        );
        assert_eq!(e.total_latency_ms, self.total_latency);
        assert_eq!(e.min_latency_ms, self.min_latency);
        assert_eq!(e.max_latency_ms, self.max_latency);
        let samples = self.samples.clone().unwrap_or_default();
        match &e.latency_sketch {
            None => assert!(samples.is_empty()),
            Some(s) => {
                assert_eq!(s.count(), samples.len() as u64);
                let lo = samples.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = samples.iter().copied().fold(0.0, f64::max);
                let (smin, smax) = (s.min().unwrap(), s.max().unwrap());
                assert!((smin - lo).abs() <= lo * 0.01 + 1e-9, "{smin} vs {lo}");
                assert!((smax - hi).abs() <= hi * 0.01 + 1e-9, "{smax} vs {hi}");
            }
        }
        assert_eq!(e.data_transferred_bytes, self.transferred.unwrap_or(0));
        assert_eq!(e.data_received_bytes, self.received.unwrap_or(0));
        assert_eq!(e.connection_count, self.connections.unwrap_or(0));
        assert_eq!(e.concurrent_connections, self.concurrent);
        assert_eq!(
            e.error_message.as_deref(),
            self.error_message.as_deref().filter(|m| !m.is_empty())
        );
    }
}

fn event_type() -> impl Strategy<Value = EventType> {
    prop_oneof![
        Just(EventType::Request),
        Just(EventType::Error),
        Just(EventType::Connection),
        Just(EventType::Latency),
    ]
}

fn event_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,128}"
}

fn stamp() -> impl Strategy<Value = Stamp> {
    let offset = prop_oneof![
        1 => Just(-WEEK_MS),
        1 => Just(FIVE_MIN_MS),
        8 => -WEEK_MS..=FIVE_MIN_MS,
    ];
    prop_oneof![
        1 => Just(Stamp::Absent),
        2 => (offset.clone(), prop_oneof![Just(0), -720i32..=840])
            .prop_map(|(offset_ms, zone_min)| Stamp::Rfc3339 { offset_ms, zone_min }),
        1 => offset.prop_map(Stamp::EpochMs),
    ]
}

/// A count, sometimes at the limits.
fn count(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0..1000u64, 1 => Just(max), 1 => 0..=max]
}

/// A latency with at most 12 significant digits, so that its JSON text
/// parses back to the very same f64.
fn latency() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0u64..100_000).prop_map(|v| v as f64),
        (0u64..1_000_000_000).prop_map(|v| v as f64 / 1000.0),
    ]
}

fn error_message() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,40}",
        1 => Just("é".repeat(MAX_ERROR_MESSAGE_CHARS)),
        1 => Just("x".repeat(MAX_ERROR_MESSAGE_CHARS)),
        1 => Just(String::new()),
    ]
}

/// Latency fields: min/max each maybe given; samples inside [min, max] when
/// both are given, anywhere >= 0 otherwise.
type LatencyFields = (Option<f64>, Option<f64>, Option<f64>, Option<Vec<f64>>);

fn latencies() -> impl Strategy<Value = LatencyFields> {
    (
        proptest::option::of(latency()),
        latency(),
        latency(),
        any::<(bool, bool)>(),
        proptest::option::of(vec(0.0..=1.0f64, 0..40)),
    )
        .prop_map(|(total, lo, width, (has_min, has_max), fractions)| {
            // 3 decimals at most, like every generated latency
            let hi = ((lo + width) * 1000.0).round() / 1000.0;
            let samples = fractions.map(|fs| {
                fs.into_iter()
                    .map(|f| {
                        let v = lo + f * width;
                        // keep the samples' text short as well
                        ((v * 1000.0).round() / 1000.0).clamp(lo, hi)
                    })
                    .collect()
            });
            (total, has_min.then_some(lo), has_max.then_some(hi), samples)
        })
}

prop_compose! {
    fn spec()(
        (event_type, event_id, stamp, healthy) in (
            event_type(),
            proptest::option::of(event_id()),
            stamp(),
            proptest::option::of(any::<bool>()),
        ),
        (success, error, request_extra) in (
            proptest::option::of(count(MAX_COUNT / 4)),
            proptest::option::of(count(MAX_COUNT / 4)),
            proptest::option::of(count(MAX_COUNT / 2)),
        ),
        (total_latency, min_latency, max_latency, samples) in latencies(),
        (transferred, received, connections, concurrent) in (
            proptest::option::of(count(MAX_COUNT)),
            proptest::option::of(count(MAX_COUNT)),
            proptest::option::of(count(MAX_COUNT)),
            proptest::option::of(count(MAX_COUNT)),
        ),
        error_message in proptest::option::of(error_message()),
        empty_metrics in any::<bool>(),
    ) -> Spec {
        Spec {
            event_type, event_id, stamp, healthy, success, error, request_extra,
            total_latency, min_latency, max_latency, samples,
            transferred, received, connections, concurrent, error_message, empty_metrics,
        }
    }
}

fn batch_body(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

fn invalid_message(result: Result<impl std::fmt::Debug, ValidationError>) -> String {
    match result {
        Err(ValidationError::Invalid(message)) => message,
        other => panic!("expected 400 INVALID_REQUEST, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_events_pass_and_keep_their_values(spec in spec()) {
        let value = spec.to_json();
        let event = parse_event(&value, None, now())
            .unwrap_or_else(|m| panic!("{m}\n{value}"));
        spec.check(&event, None);

        // the same event as a single-event body, through its JSON text
        let body = serde_json::to_vec(&value).unwrap();
        let parsed = parse_record_body(&body, None, now()).unwrap();
        prop_assert!(parsed.single);
        prop_assert_eq!(parsed.events.len(), 1);
        spec.check(&parsed.events[0], None);

        // with the Idempotency-Key header: as the id, or equal to the body's
        let key = spec.event_id.clone().unwrap_or_else(|| "header-key.1".into());
        let parsed = parse_record_body(&body, Some(&key), now()).unwrap();
        spec.check(&parsed.events[0], Some(&key));
    }

    #[test]
    fn valid_batches_pass_in_order(specs in vec(spec(), 1..12)) {
        let values: Vec<Value> = specs.iter().map(Spec::to_json).collect();
        let parsed = parse_record_body(&batch_body(&values), None, now()).unwrap();
        prop_assert!(!parsed.single);
        prop_assert_eq!(parsed.events.len(), specs.len());
        for (spec, event) in specs.iter().zip(&parsed.events) {
            spec.check(event, None);
        }
    }
}

/// One of the contract's violations, with what it needs.
#[derive(Debug, Clone)]
enum Violation {
    UnknownEventType(String),
    MissingEventType,
    EventIdBadChar {
        at: usize,
        bad: char,
    },
    EventIdTooLong(usize),
    TooOld {
        extra_ms: i64,
        zone: Option<i32>,
    },
    TooFarAhead {
        extra_ms: i64,
        zone: Option<i32>,
    },
    NotAnInstant(String),
    CountsExceedRequest {
        request: u64,
        success: u64,
        over: u64,
    },
    DerivedRequestAbove2p53 {
        success: u64,
    },
    MinAboveMax {
        max: f64,
        by: f64,
    },
    SampleOutside {
        lo: f64,
        width: f64,
        n: usize,
        at: usize,
        below: bool,
        by: f64,
    },
    TooManySamples(usize),
    NegativeCount {
        field: usize,
        value: i64,
    },
    FractionalCount {
        field: usize,
        whole: u32,
    },
    CountAbove2p53 {
        field: usize,
        value: u64,
    },
    NegativeLatency {
        field: usize,
        value: f64,
    },
    ErrorMessageTooLong {
        len: usize,
        c: char,
    },
    UnknownMetric(String),
    WrongType {
        field: usize,
        value: usize,
    },
}

/// Fields that get a value of the wrong type, and the wrong values.
const TYPED_FIELDS: [&str; 10] = [
    "eventType",
    "eventId",
    "timestamp",
    "healthy",
    "metrics",
    "metrics.requestCount",
    "metrics.concurrentConnections",
    "metrics.minLatencyMs",
    "metrics.latencySamplesMs",
    "metrics.errorMessage",
];

fn wrong_value(field: &str, pick: usize) -> Value {
    let candidates: Vec<Value> = match field {
        "eventType" | "eventId" | "metrics.errorMessage" => {
            vec![json!(7), json!(true), json!({"a": 1}), json!(["request"])]
        }
        "timestamp" => vec![json!(true), json!({"ms": 1}), json!([2024]), json!(1.5)],
        "healthy" => vec![json!("true"), json!(1), json!([true]), json!({})],
        "metrics" => vec![json!([]), json!("requestCount=1"), json!(1), json!(true)],
        "metrics.latencySamplesMs" => {
            vec![
                json!("1,2"),
                json!(3),
                json!([1, "2"]),
                json!([[1]]),
                json!({"0": 1}),
            ]
        }
        _ => vec![json!("12"), json!(true), json!([12]), json!({"v": 12})],
    };
    candidates[pick % candidates.len()].clone()
}

fn violation() -> impl Strategy<Value = Violation> {
    let field = |n: usize| 0..n;
    prop_oneof![
        "[a-z_]{1,12}"
            .prop_filter("a known type", |s| EventType::parse(s).is_none())
            .prop_map(Violation::UnknownEventType),
        Just(Violation::MissingEventType),
        (
            0..128usize,
            prop_oneof![
                Just(' '),
                Just('/'),
                Just('#'),
                Just('?'),
                Just('é'),
                Just('\n'),
                Just('"'),
                Just('+'),
                Just('@'),
                Just('%'),
                Just('\u{0}'),
                Just('💥'),
            ]
        )
            .prop_map(|(at, bad)| Violation::EventIdBadChar { at, bad }),
        (129..400usize).prop_map(Violation::EventIdTooLong),
        (1..30 * 86_400_000i64, proptest::option::of(-720i32..=840))
            .prop_map(|(extra_ms, zone)| Violation::TooOld { extra_ms, zone }),
        (1..30 * 86_400_000i64, proptest::option::of(-720i32..=840))
            .prop_map(|(extra_ms, zone)| Violation::TooFarAhead { extra_ms, zone }),
        prop_oneof![
            Just("2024-01-15".to_string()),
            Just("2024-01-15T12:00:00".to_string()),
            Just("2024-13-01T00:00:00Z".to_string()),
            Just("2024-01-15T25:00:00Z".to_string()),
            Just("1705320000000".to_string()),
            Just(String::new()),
            "[a-z ]{1,20}",
        ]
        .prop_map(Violation::NotAnInstant),
        (0..=MAX_COUNT / 2, 0..=MAX_COUNT / 2, 1..=1000u64).prop_map(|(request, s, over)| {
            Violation::CountsExceedRequest {
                request,
                success: s.min(request),
                over,
            }
        }),
        (1..=MAX_COUNT).prop_map(|success| Violation::DerivedRequestAbove2p53 { success }),
        (latency(), 0.001..1e4f64).prop_map(|(max, by)| Violation::MinAboveMax { max, by }),
        (
            latency(),
            latency(),
            1..40usize,
            any::<prop::sample::Index>(),
            any::<bool>(),
            0.5..1e4f64
        )
            .prop_map(|(lo, width, n, at, below, by)| Violation::SampleOutside {
                lo,
                width,
                n,
                at: at.index(n),
                below,
                by,
            }),
        (MAX_SAMPLES_PER_EVENT + 1..MAX_SAMPLES_PER_EVENT + 20).prop_map(Violation::TooManySamples),
        (field(COUNT_FIELDS.len()), i64::MIN..0)
            .prop_map(|(field, value)| Violation::NegativeCount { field, value }),
        (field(COUNT_FIELDS.len()), any::<u32>())
            .prop_map(|(field, whole)| Violation::FractionalCount { field, whole }),
        (field(COUNT_FIELDS.len()), MAX_COUNT + 1..=u64::MAX)
            .prop_map(|(field, value)| Violation::CountAbove2p53 { field, value }),
        (field(LATENCY_FIELDS.len()), -1e9..-1e-6f64)
            .prop_map(|(field, value)| Violation::NegativeLatency { field, value }),
        (
            MAX_ERROR_MESSAGE_CHARS + 1..MAX_ERROR_MESSAGE_CHARS + 50,
            any::<char>()
        )
            .prop_map(|(len, c)| Violation::ErrorMessageTooLong { len, c }),
        "[a-zA-Z_]{1,20}"
            .prop_filter("a known metric", |s| !METRIC_FIELDS.contains(&s.as_str()))
            .prop_map(Violation::UnknownMetric),
        (field(TYPED_FIELDS.len()), 0..8usize)
            .prop_map(|(field, value)| Violation::WrongType { field, value }),
    ]
}

fn metrics_of(event: &mut Value) -> &mut Map<String, Value> {
    if !event.get("metrics").is_some_and(Value::is_object) {
        event["metrics"] = json!({});
    }
    event["metrics"].as_object_mut().unwrap()
}

/// Applies the violation to a valid event; returns what the message must name.
fn apply(violation: &Violation, event: &mut Value) -> String {
    match violation {
        Violation::UnknownEventType(t) => {
            event["eventType"] = json!(t);
            "eventType".into()
        }
        Violation::MissingEventType => {
            event.as_object_mut().unwrap().remove("eventType");
            "eventType".into()
        }
        Violation::EventIdBadChar { at, bad } => {
            let mut id: Vec<char> = "abcdefghij".repeat(13).chars().take(128).collect();
            id[*at] = *bad;
            event["eventId"] = json!(id.into_iter().collect::<String>());
            "eventId".into()
        }
        Violation::EventIdTooLong(len) => {
            event["eventId"] = json!("a".repeat(*len));
            "eventId".into()
        }
        Violation::TooOld { extra_ms, zone } => {
            event["timestamp"] = stamp_json(-WEEK_MS - extra_ms, *zone);
            "7 days".into()
        }
        Violation::TooFarAhead { extra_ms, zone } => {
            event["timestamp"] = stamp_json(FIVE_MIN_MS + extra_ms, *zone);
            "5 minutes".into()
        }
        Violation::NotAnInstant(text) => {
            event["timestamp"] = json!(text);
            "timestamp".into()
        }
        Violation::CountsExceedRequest {
            request,
            success,
            over,
        } => {
            let m = metrics_of(event);
            m.insert("requestCount".into(), json!(request));
            m.insert("successCount".into(), json!(success));
            m.insert("errorCount".into(), json!(request - success + over));
            "requestCount".into()
        }
        Violation::DerivedRequestAbove2p53 { success } => {
            let m = metrics_of(event);
            m.remove("requestCount");
            m.insert("successCount".into(), json!(success));
            m.insert("errorCount".into(), json!(MAX_COUNT + 1 - success));
            "requestCount".into()
        }
        Violation::MinAboveMax { max, by } => {
            let m = metrics_of(event);
            m.insert("maxLatencyMs".into(), json!(max));
            m.insert("minLatencyMs".into(), json!(max + by));
            "minLatencyMs".into()
        }
        Violation::SampleOutside {
            lo,
            width,
            n,
            at,
            below,
            by,
        } => {
            let hi = lo + width;
            let mut samples = vec![json!(lo); *n];
            let outside = if *below && *lo >= *by {
                lo - by
            } else {
                hi + by
            };
            samples[*at] = json!(outside);
            let m = metrics_of(event);
            m.insert("minLatencyMs".into(), json!(lo));
            m.insert("maxLatencyMs".into(), json!(hi));
            m.insert("latencySamplesMs".into(), json!(samples));
            format!("latencySamplesMs[{at}]")
        }
        Violation::TooManySamples(n) => {
            let m = metrics_of(event);
            m.remove("minLatencyMs");
            m.remove("maxLatencyMs");
            m.insert("latencySamplesMs".into(), json!(vec![1.5; *n]));
            "latencySamplesMs".into()
        }
        Violation::NegativeCount { field, value } => {
            metrics_of(event).insert(COUNT_FIELDS[*field].into(), json!(value));
            COUNT_FIELDS[*field].into()
        }
        Violation::FractionalCount { field, whole } => {
            metrics_of(event).insert(COUNT_FIELDS[*field].into(), json!(*whole as f64 + 0.5));
            COUNT_FIELDS[*field].into()
        }
        Violation::CountAbove2p53 { field, value } => {
            metrics_of(event).insert(COUNT_FIELDS[*field].into(), json!(value));
            COUNT_FIELDS[*field].into()
        }
        Violation::NegativeLatency { field, value } => {
            let m = metrics_of(event);
            // keep min <= max out of the way: only the sign is wrong
            m.remove("minLatencyMs");
            m.remove("maxLatencyMs");
            m.remove("latencySamplesMs");
            m.insert(LATENCY_FIELDS[*field].into(), json!(value));
            LATENCY_FIELDS[*field].into()
        }
        Violation::ErrorMessageTooLong { len, c } => {
            metrics_of(event).insert("errorMessage".into(), json!(c.to_string().repeat(*len)));
            "errorMessage".into()
        }
        Violation::UnknownMetric(name) => {
            metrics_of(event).insert(name.clone(), json!(1));
            format!("metrics.{name}")
        }
        Violation::WrongType { field, value } => {
            let path = TYPED_FIELDS[*field];
            let wrong = wrong_value(path, *value);
            match path.strip_prefix("metrics.") {
                Some(name) => {
                    let m = metrics_of(event);
                    if name == "minLatencyMs" {
                        m.remove("maxLatencyMs");
                    }
                    m.insert(name.into(), wrong);
                    name.into()
                }
                None => {
                    event[path] = wrong;
                    path.into()
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn each_violation_fails_naming_the_field(
        spec in spec(),
        violation in violation(),
        others in vec(spec(), 0..6),
        position in any::<prop::sample::Index>(),
    ) {
        let mut bad = spec.to_json();
        let names = apply(&violation, &mut bad);

        let message = parse_event(&bad, None, now()).expect_err("a violation must fail");
        prop_assert!(message.contains(&names), "{:?}: {:?} does not name {}", violation, message, names);

        let single = serde_json::to_vec(&bad).unwrap();
        let message = invalid_message(parse_record_body(&single, None, now()).map(|b| b.events.len()));
        prop_assert!(message.contains(&names), "{message}");

        // inside a batch of valid events: the batch fails, naming the index
        let mut events: Vec<Value> = others.iter().map(Spec::to_json).collect();
        let index = position.index(events.len() + 1);
        events.insert(index, bad);
        let message = invalid_message(
            parse_record_body(&batch_body(&events), None, now()).map(|b| b.events.len()),
        );
        let prefix = format!("events[{index}]: ");
        prop_assert!(message.starts_with(&prefix), "{message}");
        prop_assert!(message.contains(&names), "{message}");
    }

    #[test]
    fn idempotency_key_rules(spec in spec(), key in event_id(), others in vec(spec(), 0..4)) {
        let mut value = spec.to_json();
        let body_id = format!("{key}x");
        value["eventId"] = json!(body_id);
        let body = serde_json::to_vec(&value).unwrap();
        let message = invalid_message(parse_record_body(&body, Some(&key), now()).map(|b| b.events.len()));
        prop_assert!(message.contains("Idempotency-Key"), "{message}");

        let mut events: Vec<Value> = others.iter().map(Spec::to_json).collect();
        events.push(spec.to_json());
        let message = invalid_message(
            parse_record_body(&batch_body(&events), Some(&key), now()).map(|b| b.events.len()),
        );
        prop_assert!(message.contains("Idempotency-Key"), "{message}");
    }
}

#[test]
fn batch_size_limits() {
    let one = json!({"eventType": "request"});
    let body = batch_body(&vec![one.clone(); MAX_EVENTS_PER_BATCH]);
    assert_eq!(
        parse_record_body(&body, None, now()).unwrap().events.len(),
        MAX_EVENTS_PER_BATCH
    );
    let body = batch_body(&vec![one; MAX_EVENTS_PER_BATCH + 1]);
    assert!(matches!(
        parse_record_body(&body, None, now()),
        Err(ValidationError::TooLarge(_))
    ));
    let message =
        invalid_message(parse_record_body(&batch_body(&[]), None, now()).map(|b| b.events.len()));
    assert!(message.contains("events"), "{message}");
}

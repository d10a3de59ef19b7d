//! Metric events: parsing the record body, validating it as the contract
//! lists, and the validated form that storage packs.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::dimensions::{Dimensions, StatusCounts, parse_dimensions, parse_status_counts};
use super::sketch::LatencySketch;
use super::{ValidationError, excerpt};

pub const MAX_EVENTS_PER_BATCH: usize = 500;
pub const MAX_SAMPLES_PER_EVENT: usize = 10_000;
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1024;
pub const MAX_EVENT_ID_CHARS: usize = 128;
/// Counts above 2^53 cannot round-trip through JSON numbers.
pub const MAX_COUNT: u64 = 1 << 53;
/// How far back an event may be dated: the late-data window.
pub const LATE_WINDOW: Duration = Duration::days(7);
/// How far ahead an event may be dated (proxy clock skew).
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Request,
    Error,
    Connection,
    Latency,
}

impl EventType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "request" => Some(Self::Request),
            "error" => Some(Self::Error),
            "connection" => Some(Self::Connection),
            "latency" => Some(Self::Latency),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Error => "error",
            Self::Connection => "connection",
            Self::Latency => "latency",
        }
    }
}

/// A validated event, as stored (latency samples already folded into a sketch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub event_type: EventType,
    /// Event time, epoch milliseconds UTC.
    pub timestamp_ms: i64,
    pub healthy: bool,
    pub request_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub total_latency_ms: Option<f64>,
    pub min_latency_ms: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub latency_sketch: Option<LatencySketch>,
    pub data_transferred_bytes: u64,
    pub data_received_bytes: u64,
    pub connection_count: u64,
    pub concurrent_connections: Option<u64>,
    pub error_message: Option<String>,
    /// Route and upstream (v3); absent keys count as `(none)`.
    #[serde(default)]
    pub dimensions: Dimensions,
    /// `statusCounts` as sent (v3); see [`Event::status_counts`].
    #[serde(default)]
    pub status_counts: Option<StatusCounts>,
}

impl Event {
    /// Requests by status class: as sent, else successes as 2xx and errors
    /// as 5xx (the contract's default).
    pub fn status_counts(&self) -> StatusCounts {
        self.status_counts
            .unwrap_or([0, self.success_count, 0, 0, self.error_count])
    }

    pub fn timestamp(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.timestamp_ms).unwrap_or_default()
    }

    /// The UTC day the event belongs to.
    pub fn day(&self) -> chrono::NaiveDate {
        self.timestamp().date_naive()
    }
}

/// What a record request carried, after validation.
#[derive(Debug)]
pub struct RecordBody {
    pub events: Vec<Event>,
    /// A single-event body (the original shape) rather than `{"events": [...]}`.
    pub single: bool,
}

/// Parses and validates a record body. `idempotency_key` is the header value.
/// A batch is all-or-nothing: the first bad event rejects it, naming its index.
pub fn parse_record_body(
    body: &[u8],
    idempotency_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<RecordBody, ValidationError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ValidationError::invalid(format!("The body is not valid JSON: {e}.")))?;
    let Value::Object(object) = value else {
        return Err(ValidationError::invalid(
            "The body must be a JSON object: one event or {\"events\": [...]}.",
        ));
    };
    if let Some(events) = object.get("events") {
        // A typo next to "events" must not vanish silently either.
        reject_unknown(&object, BATCH_FIELDS, "the batch")?;
        let Value::Array(items) = events else {
            return Err(ValidationError::invalid(
                "'events' must be an array of events.",
            ));
        };
        if idempotency_key.is_some() {
            return Err(ValidationError::invalid(
                "The Idempotency-Key header applies to a single-event body; give each event of a batch its own eventId.",
            ));
        }
        if items.is_empty() {
            return Err(ValidationError::invalid(
                "'events' must hold at least one event.",
            ));
        }
        if items.len() > MAX_EVENTS_PER_BATCH {
            return Err(ValidationError::TooLarge(format!(
                "A batch holds at most {MAX_EVENTS_PER_BATCH} events; this one has {}.",
                items.len()
            )));
        }
        let events = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                parse_event(item, None, now).map_err(|message| {
                    ValidationError::invalid(format!("events[{index}]: {message}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBody {
            events,
            single: false,
        })
    } else {
        let event = parse_event(&Value::Object(object), idempotency_key, now)
            .map_err(ValidationError::Invalid)?;
        Ok(RecordBody {
            events: vec![event],
            single: true,
        })
    }
}

/// Validates one event; the error is a sentence naming the field.
pub fn parse_event(
    value: &Value,
    idempotency_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Event, String> {
    let Value::Object(object) = value else {
        return Err("an event must be a JSON object.".into());
    };
    // `"healty": false` would inflate uptime, `"event_id"` would let a retry
    // count twice, `"timeStamp"` would land on the wrong day: refuse them.
    if let Some(unknown) = object.keys().find(|k| !EVENT_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "'{}' is not a field of an event (known: {}).",
            excerpt(unknown),
            EVENT_FIELDS.join(", ")
        ));
    }
    let event_type = match object.get("eventType") {
        None | Some(Value::Null) => return Err("'eventType' is required.".into()),
        Some(Value::String(s)) => EventType::parse(s).ok_or_else(|| {
            format!(
                "'eventType' must be one of request, error, connection, latency; got '{}'.",
                excerpt(s)
            )
        })?,
        Some(_) => return Err("'eventType' must be a string.".into()),
    };
    let body_id = match object.get("eventId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("'eventId' must be a string.".into()),
    };
    let event_id = match (body_id, idempotency_key) {
        (Some(a), Some(b)) if a != b => {
            return Err(
                "the Idempotency-Key header and the body's eventId differ; send one, or the same value in both."
                    .into(),
            );
        }
        (Some(id), _) | (None, Some(id)) => {
            validate_event_id(id)?;
            id.to_string()
        }
        (None, None) => uuid::Uuid::new_v4().to_string(),
    };
    let timestamp_ms = match object.get("timestamp") {
        None | Some(Value::Null) => now.timestamp_millis(),
        Some(v) => {
            let at = parse_instant(v).map_err(|m| format!("'timestamp' {m}"))?;
            if at < now - LATE_WINDOW {
                return Err(format!(
                    "'timestamp' {} is more than 7 days in the past.",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ));
            }
            if at > now + FUTURE_TOLERANCE {
                return Err(format!(
                    "'timestamp' {} is more than 5 minutes in the future.",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ));
            }
            at.timestamp_millis()
        }
    };
    let healthy = match object.get("healthy") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("'healthy' must be true or false.".into()),
    };
    let empty = Map::new();
    let metrics = match object.get("metrics") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err("'metrics' must be an object.".into()),
    };
    let m = parse_metrics(metrics)?;
    let dimensions = parse_dimensions(object.get("dimensions"))?;
    Ok(Event {
        event_id,
        event_type,
        timestamp_ms,
        healthy,
        request_count: m.request_count,
        success_count: m.success_count,
        error_count: m.error_count,
        total_latency_ms: m.total_latency_ms,
        min_latency_ms: m.min_latency_ms,
        max_latency_ms: m.max_latency_ms,
        latency_sketch: m.sketch,
        data_transferred_bytes: m.data_transferred_bytes,
        data_received_bytes: m.data_received_bytes,
        connection_count: m.connection_count,
        concurrent_connections: m.concurrent_connections,
        error_message: m.error_message,
        dimensions,
        status_counts: m.status_counts,
    })
}

/// The fields of an event; any other is refused (contract v2).
pub const EVENT_FIELDS: &[&str] = &[
    "eventType",
    "eventId",
    "timestamp",
    "healthy",
    "metrics",
    "dimensions",
];
/// The fields of a batch envelope.
pub const BATCH_FIELDS: &[&str] = &["events"];

/// Refuses a body field that is not one of `known`, naming it.
pub fn reject_unknown(
    object: &Map<String, Value>,
    known: &[&str],
    what: &str,
) -> Result<(), ValidationError> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ValidationError::invalid(format!(
            "'{}' is not a field of {what} (known: {}).",
            excerpt(unknown),
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

pub use super::sequence::{MAX_PRODUCER_ID_CHARS, check_unique_event_ids, parse_sequence_headers};

pub fn validate_event_id(id: &str) -> Result<(), String> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if id.is_empty() || id.len() > MAX_EVENT_ID_CHARS || !ok_chars {
        return Err(format!(
            "'eventId' must be 1-{MAX_EVENT_ID_CHARS} characters of A-Z a-z 0-9 . _ : -."
        ));
    }
    Ok(())
}

/// An RFC 3339 string or epoch milliseconds.
pub fn parse_instant(value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                format!(
                    "'{}' is not an RFC 3339 instant such as 2024-01-15T10:04:05Z.",
                    excerpt(s)
                )
            }),
        Value::Number(n) => n
            .as_i64()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(|| "must be whole epoch milliseconds.".to_string()),
        _ => Err("must be an RFC 3339 string or epoch milliseconds.".into()),
    }
}

struct Metrics {
    request_count: u64,
    success_count: u64,
    error_count: u64,
    total_latency_ms: Option<f64>,
    min_latency_ms: Option<f64>,
    max_latency_ms: Option<f64>,
    sketch: Option<LatencySketch>,
    data_transferred_bytes: u64,
    data_received_bytes: u64,
    connection_count: u64,
    concurrent_connections: Option<u64>,
    error_message: Option<String>,
    status_counts: Option<StatusCounts>,
}

const METRIC_FIELDS: &[&str] = &[
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
    "statusCounts",
];

fn parse_metrics(m: &Map<String, Value>) -> Result<Metrics, String> {
    if let Some(unknown) = m.keys().find(|k| !METRIC_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "'metrics.{}' is not a known metric (known: {}).",
            excerpt(unknown),
            METRIC_FIELDS.join(", ")
        ));
    }
    let count = |name: &str| -> Result<Option<u64>, String> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= MAX_COUNT => Ok(Some(v)),
                Some(_) => Err(format!("'metrics.{name}' is above 2^53.")),
                None => Err(format!("'metrics.{name}' must be a whole number >= 0.")),
            },
            Some(_) => Err(format!("'metrics.{name}' must be a whole number >= 0.")),
        }
    };
    let latency = |name: &str| -> Result<Option<f64>, String> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
                _ => Err(format!("'metrics.{name}' must be a finite number >= 0.")),
            },
            Some(_) => Err(format!(
                "'metrics.{name}' must be a number of milliseconds."
            )),
        }
    };
    let success_count = count("successCount")?.unwrap_or(0);
    let error_count = count("errorCount")?.unwrap_or(0);
    let request_count = match count("requestCount")? {
        Some(r) => r,
        None if success_count + error_count > MAX_COUNT => {
            return Err(format!(
                "requestCount (absent, so successCount + errorCount = {}) is above 2^53.",
                success_count + error_count
            ));
        }
        None => success_count + error_count,
    };
    if success_count + error_count > request_count {
        return Err(format!(
            "successCount ({success_count}) + errorCount ({error_count}) exceeds requestCount ({request_count})."
        ));
    }
    let status_counts = parse_status_counts(m.get("statusCounts"), request_count, MAX_COUNT)?;
    let total_latency_ms = latency("totalLatencyMs")?;
    let min_latency_ms = latency("minLatencyMs")?;
    let max_latency_ms = latency("maxLatencyMs")?;
    if let (Some(min), Some(max)) = (min_latency_ms, max_latency_ms)
        && min > max
    {
        return Err(format!(
            "minLatencyMs ({min}) is greater than maxLatencyMs ({max})."
        ));
    }
    let sketch = match m.get("latencySamplesMs") {
        None | Some(Value::Null) => None,
        Some(Value::Array(samples)) => {
            if samples.len() > MAX_SAMPLES_PER_EVENT {
                return Err(format!(
                    "'metrics.latencySamplesMs' holds {} samples; at most {MAX_SAMPLES_PER_EVENT} are accepted per event.",
                    samples.len()
                ));
            }
            let mut sketch = LatencySketch::new();
            for (i, s) in samples.iter().enumerate() {
                let v = s
                    .as_f64()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        format!("'metrics.latencySamplesMs[{i}]' must be a finite number >= 0.")
                    })?;
                if let (Some(min), Some(max)) = (min_latency_ms, max_latency_ms)
                    && (v < min || v > max)
                {
                    return Err(format!(
                        "'metrics.latencySamplesMs[{i}]' ({v}) lies outside [minLatencyMs, maxLatencyMs] = [{min}, {max}]."
                    ));
                }
                sketch.add(v);
            }
            (!sketch.is_empty()).then_some(sketch)
        }
        Some(_) => return Err("'metrics.latencySamplesMs' must be an array of numbers.".into()),
    };
    let error_message = match m.get("errorMessage") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_ERROR_MESSAGE_CHARS {
                return Err(format!(
                    "'metrics.errorMessage' is longer than {MAX_ERROR_MESSAGE_CHARS} characters."
                ));
            }
            (!s.is_empty()).then(|| s.clone())
        }
        Some(_) => return Err("'metrics.errorMessage' must be a string.".into()),
    };
    Ok(Metrics {
        request_count,
        success_count,
        error_count,
        total_latency_ms,
        min_latency_ms,
        max_latency_ms,
        sketch,
        data_transferred_bytes: count("dataTransferredBytes")?.unwrap_or(0),
        data_received_bytes: count("dataReceivedBytes")?.unwrap_or(0),
        connection_count: count("connectionCount")?.unwrap_or(0),
        concurrent_connections: count("concurrentConnections")?,
        error_message,
        status_counts,
    })
}

//! The JSON logs: Envoy's `json_format` and any JSON-lines log named by a
//! [`JsonMapping`](super::JsonMapping).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{JsonMapping, LogRecord, Malformed, flags_of, parse_nginx_time, parse_rfc3339};

fn parse_object(line: &str) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_str(line) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Malformed("not a JSON object")),
        Err(_) => Err(Malformed("not valid JSON")),
    }
}

/// A field by key, or else by dotted path.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = obj.get(parts.next()?)?;
    for part in parts {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

/// A number, given as a JSON number or a numeric string; unset (`null`,
/// `"-"`, `""`) is `None`.
fn number(v: Option<&Value>, what: &'static str) -> Result<Option<f64>, Malformed> {
    let n = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) if s.is_empty() || s == "-" => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match n {
        Some(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        _ => Err(Malformed(what)),
    }
}

fn json_status(v: Option<&Value>) -> Result<u16, Malformed> {
    let status = number(v, "status is not a number")?.ok_or(Malformed("no status"))?;
    if status == 0.0 {
        return Ok(0);
    }
    if status.fract() != 0.0 || !(100.0..=599.0).contains(&status) {
        return Err(Malformed("status is not an HTTP status"));
    }
    Ok(status as u16)
}

fn json_bytes(v: Option<&Value>) -> Result<u64, Malformed> {
    match number(v, "byte count is not a number")? {
        None => Ok(0),
        Some(b) if b.fract() == 0.0 && b < 1.8e19 => Ok(b as u64),
        Some(_) => Err(Malformed("byte count is not a whole number")),
    }
}

/// A time: RFC 3339, nginx's `$time_local`, or epoch seconds / ms / µs / ns
/// (told apart by size).
fn json_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    match v? {
        Value::String(s) => parse_rfc3339(s)
            .or_else(|| parse_nginx_time(s))
            .or_else(|| s.parse::<f64>().ok().and_then(epoch)),
        Value::Number(n) => n.as_f64().and_then(epoch),
        _ => None,
    }
}

fn epoch(v: f64) -> Option<DateTime<Utc>> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let ms = if v < 1e11 {
        v * 1e3
    } else if v < 1e14 {
        v
    } else if v < 1e17 {
        v / 1e3
    } else {
        v / 1e6
    };
    DateTime::from_timestamp_millis(ms.round() as i64)
}

pub(super) fn parse_envoy_json(line: &str) -> Result<LogRecord, Malformed> {
    let obj = parse_object(line)?;
    let flags = match obj.get("response_flags") {
        Some(Value::String(s)) => flags_of(s),
        _ => None,
    };
    Ok(LogRecord {
        time: obj
            .get("start_time")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339),
        status: json_status(obj.get("response_code"))?,
        latency_ms: number(obj.get("duration"), "duration is not a number")?,
        bytes_sent: json_bytes(obj.get("bytes_sent"))?,
        bytes_received: json_bytes(obj.get("bytes_received"))?,
        flags,
        route_name: text(obj.get("route_name")),
        target: text(obj.get("path")),
        upstream: text(obj.get("upstream_host")),
    })
}

pub(super) fn parse_json(m: &JsonMapping, line: &str) -> Result<LogRecord, Malformed> {
    let obj = parse_object(line)?;
    let get = |name: &Option<String>| name.as_deref().and_then(|n| field(&obj, n));
    Ok(LogRecord {
        time: json_time(get(&m.time_field)),
        status: json_status(field(&obj, &m.status_field))?,
        latency_ms: number(get(&m.duration_field), "duration is not a number")?
            .map(|v| m.duration_unit.to_ms(v)),
        bytes_sent: json_bytes(get(&m.bytes_sent_field))?,
        bytes_received: json_bytes(get(&m.bytes_received_field))?,
        flags: None,
        route_name: None,
        target: text(get(&m.route_field)),
        upstream: text(get(&m.upstream_field)),
    })
}

/// A set string field; unset (`null`, `"-"`, `""`, absent, not a string) is
/// `None`.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() && s != "-" => Some(s.clone()),
        _ => None,
    }
}

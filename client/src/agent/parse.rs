//! Access-log lines → request observations.
//!
//! Formats:
//!
//! - **nginx**: the `combined` format with `$request_time` as the last field
//!   (`log_format main '$remote_addr - $remote_user [$time_local] "$request"
//!   $status $body_bytes_sent "$http_referer" "$http_user_agent"
//!   $request_time';`). Plain `combined` (no request time) is accepted too:
//!   its requests just carry no latency. Extra fields between the user
//!   agent and the request time are ignored.
//! - **envoy**: Envoy's default format, as JSON (`json_format` with the
//!   default format's fields: `start_time`, `method`, `path`, `protocol`,
//!   `response_code`, `response_flags`, `bytes_received`, `bytes_sent`,
//!   `duration`, `upstream_service_time`, `x_forwarded_for`, `user_agent`,
//!   `request_id`, `authority`, `upstream_host`) or as the default text
//!   line (`[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%
//!   %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED%
//!   %BYTES_SENT% %DURATION% …`); a line starting with `{` is JSON. Only
//!   `start_time`, `response_code`, `response_flags`, `bytes_received`,
//!   `bytes_sent` and `duration` are read; numbers may be JSON numbers or
//!   strings, unset values `null`, `"-"` or absent.
//! - **json**: any JSON-lines log, with its fields named by a [`JsonMapping`].
//!
//! What a line means:
//!
//! - A status ≥ 500 is an error. 4xx are successes: the proxy did its job
//!   (a client asking for a missing page or sending a bad request is not a
//!   proxy failure); counting them as errors would make every scanner on the
//!   internet look like an outage. Envoy's status 0 ("no response was sent")
//!   is an error when Envoy gives a reason flag other than `DC` (downstream
//!   disconnected: the client went away, like nginx's 499); with no flag or
//!   only `DC` it is not.
//! - Latency: nginx `$request_time` (seconds), Envoy `duration` (ms).
//! - Bytes: nginx `$body_bytes_sent` → `dataTransferredBytes` (nginx's
//!   combined format has no received bytes); Envoy `bytes_sent` /
//!   `bytes_received` → `dataTransferredBytes` / `dataReceivedBytes`.
//! - Time: the line's own (`$time_local`, `start_time`) when it parses, else
//!   the time the line was read.
//! - A line that does not have the format's shape is [`Malformed`]; blank
//!   lines are skipped silently.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use crate::Observation;

/// How to read a generic JSON log: which field holds what. A name is looked
/// up as a key first, then as a dotted path into nested objects
/// (`request.duration`).
#[derive(Clone, Debug, PartialEq)]
pub struct JsonMapping {
    pub time_field: Option<String>,
    pub status_field: String,
    pub duration_field: Option<String>,
    pub duration_unit: DurationUnit,
    pub bytes_sent_field: Option<String>,
    pub bytes_received_field: Option<String>,
}

impl Default for JsonMapping {
    /// The names of nginx's variables, as in a typical
    /// `log_format json escape=json '{"time":"$time_iso8601","status":$status,…}'`.
    fn default() -> Self {
        Self {
            time_field: Some("time".into()),
            status_field: "status".into(),
            duration_field: Some("request_time".into()),
            duration_unit: DurationUnit::Seconds,
            bytes_sent_field: Some("body_bytes_sent".into()),
            bytes_received_field: Some("request_length".into()),
        }
    }
}

/// The unit of a JSON log's duration field.
impl JsonMapping {
    /// Caddy's access log (`log` directive, JSON encoder): `ts` (epoch
    /// seconds), `status`, `duration` (seconds), `size` (bytes sent),
    /// `bytes_read` (bytes received).
    pub fn caddy() -> Self {
        Self {
            time_field: Some("ts".into()),
            status_field: "status".into(),
            duration_field: Some("duration".into()),
            duration_unit: DurationUnit::Seconds,
            bytes_sent_field: Some("size".into()),
            bytes_received_field: Some("bytes_read".into()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationUnit {
    Seconds,
    Millis,
    Micros,
    Nanos,
}

impl DurationUnit {
    fn to_ms(self, v: f64) -> f64 {
        match self {
            DurationUnit::Seconds => v * 1000.0,
            DurationUnit::Millis => v,
            DurationUnit::Micros => v / 1000.0,
            DurationUnit::Nanos => v / 1_000_000.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    Nginx,
    /// An nginx `log_format` (see [`crate::agent::nginx_format`]).
    NginxLogFormat(Box<crate::agent::nginx_format::NginxFormat>),
    Envoy,
    Json(JsonMapping),
}

/// One parsed access-log line.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    /// The line's own time, when it had one that parsed.
    pub time: Option<DateTime<Utc>>,
    pub status: u16,
    pub latency_ms: Option<f64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Envoy's response flags (`UF`, `UT,URX`, …), when set.
    pub flags: Option<String>,
}

impl LogRecord {
    /// Whether the request failed from the proxy's point of view (see the
    /// module docs).
    pub fn is_error(&self) -> bool {
        match self.status {
            500.. => true,
            0 => self.flags.as_deref().is_some_and(|f| f != "DC"),
            _ => false,
        }
    }

    pub fn to_observation(&self) -> Observation {
        let mut o = if self.is_error() {
            let message = match (&self.flags, self.status) {
                (Some(f), 0) => format!("no response ({f})"),
                (Some(f), s) => format!("HTTP {s} ({f})"),
                (None, s) => format!("HTTP {s}"),
            };
            Observation::failure(Some(message))
        } else {
            Observation::success()
        };
        o.at = self.time;
        o.latency_ms = self.latency_ms;
        o.bytes_sent = self.bytes_sent;
        o.bytes_received = self.bytes_received;
        o
    }
}

/// Why a line was skipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed log line: {0}")]
pub struct Malformed(pub &'static str);

/// Parses one line (without its newline). `Ok(None)` for a blank line.
pub fn parse_line(format: &Format, line: &str) -> Result<Option<LogRecord>, Malformed> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    match format {
        Format::Nginx => parse_nginx(line),
        Format::NginxLogFormat(f) => f.parse(line),
        Format::Envoy if line.trim_start().starts_with('{') => parse_envoy_json(line),
        Format::Envoy => parse_envoy_text(line),
        Format::Json(mapping) => parse_json(mapping, line),
    }
    .map(Some)
}

/// Splits a log line into its space-separated, `[bracketed]` and
/// `"quoted"` fields.
struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Fields<'a> {
    fn new(line: &'a str) -> Self {
        Self {
            rest: line.trim_start(),
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let s = self.rest.trim_start();
        if s.is_empty() {
            return None;
        }
        let end = s.find(' ').unwrap_or(s.len());
        self.rest = &s[end..];
        Some(&s[..end])
    }

    /// `[…]`: the text inside the brackets.
    fn bracketed(&mut self) -> Option<&'a str> {
        let s = self.rest.trim_start().strip_prefix('[')?;
        let end = s.find(']')?;
        self.rest = &s[end + 1..];
        Some(&s[..end])
    }

    /// `"…"`: the text inside the quotes, which may hold `\"` escapes (nginx
    /// writes `\x22` by default, `\"` with `escape=json`).
    fn quoted(&mut self) -> Option<&'a str> {
        let s = self.rest.trim_start().strip_prefix('"')?;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    self.rest = &s[i + 1..];
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        None
    }

    fn rest(&self) -> &'a str {
        self.rest.trim()
    }
}

fn parse_status(s: &str) -> Result<u16, Malformed> {
    match s.parse::<u16>() {
        Ok(v) if s.len() == 3 && (100..=599).contains(&v) => Ok(v),
        _ => Err(Malformed("status is not a 3-digit HTTP status")),
    }
}

/// A byte count; `-` (unset) is 0.
fn parse_bytes(s: &str) -> Result<u64, Malformed> {
    if s == "-" {
        return Ok(0);
    }
    s.parse()
        .map_err(|_| Malformed("byte count is not a number"))
}

/// A duration; `-` or empty (unset) is `None`.
fn parse_duration(s: &str, unit: DurationUnit) -> Result<Option<f64>, Malformed> {
    if s.is_empty() || s == "-" {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(unit.to_ms(v))),
        _ => Err(Malformed("duration is not a number")),
    }
}

/// nginx's `$time_local`: `15/Jan/2024:10:04:05 +0100`.
fn parse_nginx_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        // nginx's $time_iso8601 has an offset; some loggers drop it (UTC)
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

fn parse_nginx(line: &str) -> Result<LogRecord, Malformed> {
    let mut f = Fields::new(line);
    f.token().ok_or(Malformed("no remote address"))?;
    f.token().ok_or(Malformed("no ident field"))?;
    f.token().ok_or(Malformed("no remote user"))?;
    let time = f.bracketed().ok_or(Malformed("no [time_local]"))?;
    f.quoted().ok_or(Malformed("no quoted request"))?;
    let status = parse_status(f.token().ok_or(Malformed("no status"))?)?;
    let bytes_sent = parse_bytes(f.token().ok_or(Malformed("no body_bytes_sent"))?)?;
    f.quoted().ok_or(Malformed("no quoted referer"))?;
    f.quoted().ok_or(Malformed("no quoted user agent"))?;
    let latency_ms = match f.rest().rsplit(' ').next() {
        // `main`'s last field, "$http_x_forwarded_for": no request time.
        Some(last) if last.ends_with('"') => None,
        Some(last) => parse_duration(last, DurationUnit::Seconds)?,
        None => None,
    };
    Ok(LogRecord {
        time: parse_nginx_time(time),
        status,
        latency_ms,
        bytes_sent,
        bytes_received: 0,
        flags: None,
    })
}

fn flags_of(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s != "-").then(|| s.chars().take(64).collect())
}

fn parse_envoy_text(line: &str) -> Result<LogRecord, Malformed> {
    let mut f = Fields::new(line);
    let time = f.bracketed().ok_or(Malformed("no [START_TIME]"))?;
    f.quoted().ok_or(Malformed("no quoted request line"))?;
    let status = f.token().ok_or(Malformed("no response code"))?;
    let status = match status {
        "0" => 0,
        s => parse_status(s)?,
    };
    let flags = flags_of(f.token().ok_or(Malformed("no response flags"))?);
    let mut received = f.token().ok_or(Malformed("no bytes received"))?;
    if received.parse::<u64>().is_err() && received != "-" {
        // Istio's default: %RESPONSE_CODE_DETAILS%
        // %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
        // come before the bytes.
        f.token()
            .ok_or(Malformed("no connection termination details"))?;
        f.quoted()
            .ok_or(Malformed("no quoted upstream failure reason"))?;
        received = f.token().ok_or(Malformed("no bytes received"))?;
    }
    let bytes_received = parse_bytes(received)?;
    let bytes_sent = parse_bytes(f.token().ok_or(Malformed("no bytes sent"))?)?;
    let latency_ms = parse_duration(
        f.token().ok_or(Malformed("no duration"))?,
        DurationUnit::Millis,
    )?;
    Ok(LogRecord {
        time: parse_rfc3339(time),
        status,
        latency_ms,
        bytes_sent,
        bytes_received,
        flags,
    })
}

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

fn parse_envoy_json(line: &str) -> Result<LogRecord, Malformed> {
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
    })
}

fn parse_json(m: &JsonMapping, line: &str) -> Result<LogRecord, Malformed> {
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
    })
}

#[cfg(test)]
#[path = "parse_format_tests.rs"]
mod format_tests;

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

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
    let bytes_received = parse_bytes(f.token().ok_or(Malformed("no bytes received"))?)?;
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
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn nginx(line: &str) -> Result<Option<LogRecord>, Malformed> {
        parse_line(&Format::Nginx, line)
    }

    fn envoy(line: &str) -> Result<Option<LogRecord>, Malformed> {
        parse_line(&Format::Envoy, line)
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn nginx_main_format_with_request_time() {
        let r = nginx(r#"203.0.113.7 - - [15/Jan/2024:11:04:05 +0100] "GET /api/items?id=3 HTTP/1.1" 200 5123 "-" "curl/8.5.0" 0.012"#)
            .unwrap()
            .unwrap();
        assert_eq!(r.time, Some(utc(2024, 1, 15, 10, 4, 5)));
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes_sent, 5123);
        assert_eq!(r.latency_ms, Some(12.0));
        assert!(!r.is_error());
    }

    #[test]
    fn nginx_lines_as_they_really_look() {
        let lines = [
            // user, referer and an agent full of spaces and parentheses
            r#"198.51.100.23 - alice [15/Jan/2024:10:04:05 +0000] "POST /login HTTP/2.0" 302 0 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36" 0.104"#,
            // an IPv6 client and an escaped quote in the request (nginx writes \x22)
            r#"2001:db8::1 - - [15/Jan/2024:10:04:05 +0000] "GET /search?q=\x22rust\x22 HTTP/1.1" 404 153 "-" "-" 0.000"#,
            // a TLS handshake sent to a plain-HTTP port
            r#"192.0.2.9 - - [15/Jan/2024:10:04:05 +0000] "\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03" 400 157 "-" "-" 0.001"#,
            // escape=json writes \" inside quotes
            r#"192.0.2.9 - - [15/Jan/2024:10:04:05 +0000] "GET /a\"b HTTP/1.1" 200 1 "-" "ua \"x\"" 1.5"#,
            // the client went away
            r#"192.0.2.10 - - [15/Jan/2024:10:04:05 +0000] "GET /slow HTTP/1.1" 499 0 "-" "curl/8" 30.001"#,
        ];
        let parsed: Vec<LogRecord> = lines.iter().map(|l| nginx(l).unwrap().unwrap()).collect();
        assert_eq!(
            parsed.iter().map(|r| r.status).collect::<Vec<_>>(),
            [302, 404, 400, 200, 499]
        );
        assert_eq!(parsed[0].latency_ms, Some(104.0));
        assert_eq!(parsed[3].latency_ms, Some(1500.0));
        assert_eq!(parsed[4].latency_ms, Some(30001.0));
        assert!(
            parsed.iter().all(|r| !r.is_error()),
            "4xx are not proxy errors"
        );
    }

    #[test]
    fn nginx_errors_and_missing_values() {
        let r = nginx(
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 502 552 "-" "curl/8" -"#,
        )
        .unwrap()
        .unwrap();
        assert!(r.is_error());
        assert_eq!(r.latency_ms, None);
        let o = r.to_observation();
        assert!(o.error);
        assert_eq!(o.error_message.as_deref(), Some("HTTP 502"));
        assert_eq!(o.bytes_sent, 552);
        // plain combined: no request time at all
        let r = nginx(
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 - "-" "curl/8""#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.latency_ms, r.bytes_sent), (None, 0));
        // a time that does not parse leaves the receipt time
        let r = nginx(r#"10.0.0.1 - - [yesterday] "GET / HTTP/1.1" 200 1 "-" "-" 0.1"#)
            .unwrap()
            .unwrap();
        assert_eq!(r.time, None);
    }

    #[test]
    fn malformed_nginx_lines_are_refused_not_guessed() {
        for line in [
            "garbage",
            r#"10.0.0.1 - - 15/Jan/2024:10:04:05 "GET / HTTP/1.1" 200 1 "-" "-" 0.1"#,
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1 200 1 "-" "-" 0.1"#,
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" OK 1 "-" "-" 0.1"#,
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 2000 1 "-" "-" 0.1"#,
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 -5 "-" "-" 0.1"#,
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-" fast"#,
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 1 "-" "-" NaN"#,
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 200 1"#,
            // a line cut in the middle (a truncated write)
            r#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HT"#,
        ] {
            assert!(nginx(line).is_err(), "{line}");
        }
        assert_eq!(nginx("   "), Ok(None));
        assert_eq!(nginx(""), Ok(None));
    }

    #[test]
    fn envoy_default_format_as_json() {
        let line = r#"{"start_time":"2024-01-15T10:04:05.123Z","method":"GET","path":"/api/v1/items","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","bytes_received":0,"bytes_sent":2345,"duration":17,"upstream_service_time":"15","x_forwarded_for":null,"user_agent":"curl/8.5.0","request_id":"8a3c7e5c-6f2b-4d8e-9c3a-1b2d3e4f5a6b","authority":"api.example.com","upstream_host":"10.0.3.7:8080"}"#;
        let r = envoy(line).unwrap().unwrap();
        assert_eq!(
            r.time,
            Some(utc(2024, 1, 15, 10, 4, 5) + chrono::Duration::milliseconds(123))
        );
        assert_eq!(
            (
                r.status,
                r.bytes_sent,
                r.bytes_received,
                r.latency_ms,
                r.flags.clone()
            ),
            (200, 2345, 0, Some(17.0), None)
        );
        // numbers as strings (older Envoys, or a format written with quotes)
        let line = r#"{"start_time":"2024-01-15T10:04:05.123Z","response_code":"503","response_flags":"UF,URX","bytes_received":"120","bytes_sent":"91","duration":"5003"}"#;
        let r = envoy(line).unwrap().unwrap();
        assert_eq!(
            (r.status, r.bytes_received, r.latency_ms),
            (503, 120, Some(5003.0))
        );
        assert!(r.is_error());
        assert_eq!(
            r.to_observation().error_message.as_deref(),
            Some("HTTP 503 (UF,URX)")
        );
    }

    #[test]
    fn envoy_status_zero_is_an_error_only_with_a_reason_other_than_dc() {
        let zero = |flags: &str| {
            envoy(&format!(
                r#"{{"start_time":"2024-01-15T10:04:05.000Z","response_code":0,"response_flags":{flags},"bytes_received":0,"bytes_sent":0,"duration":null}}"#
            ))
            .unwrap()
            .unwrap()
        };
        assert!(!zero(r#""DC""#).is_error());
        assert!(!zero(r#""-""#).is_error());
        assert!(!zero("null").is_error());
        let uc = zero(r#""UC""#);
        assert!(uc.is_error());
        assert_eq!(uc.latency_ms, None);
        assert_eq!(
            uc.to_observation().error_message.as_deref(),
            Some("no response (UC)")
        );
    }

    #[test]
    fn envoy_default_text_format() {
        let line = r#"[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80""#;
        let r = envoy(line).unwrap().unwrap();
        assert_eq!(
            r.time,
            Some(utc(2016, 4, 15, 20, 17, 0) + chrono::Duration::milliseconds(310))
        );
        assert_eq!(
            (
                r.status,
                r.bytes_received,
                r.bytes_sent,
                r.latency_ms,
                r.flags
            ),
            (204, 154, 0, Some(226.0), None)
        );
        let line = r#"[2024-01-15T10:04:05.001Z] "GET / HTTP/1.1" 503 UH 0 19 0 - "-" "curl/8" "id" "host" "-""#;
        let r = envoy(line).unwrap().unwrap();
        assert!(r.is_error());
        assert_eq!(r.flags.as_deref(), Some("UH"));
    }

    #[test]
    fn malformed_envoy_lines() {
        for line in [
            r#"{"start_time":"2024-01-15T10:04:05.000Z""#,
            r#"{"response_code":"abc","bytes_sent":1}"#,
            r#"{"bytes_sent":1}"#,
            r#"{"response_code":200,"bytes_sent":-1}"#,
            r#"{"response_code":200,"bytes_sent":1.5}"#,
            r#"{"response_code":200,"duration":"slow"}"#,
            r#"[1,2,3]"#,
            r#"[2024-01-15T10:04:05.001Z] "GET / HTTP/1.1" abc - 0 19 0"#,
            r#"[2024-01-15T10:04:05.001Z] "GET / HTTP/1.1" 200 -"#,
            "not a log line",
        ] {
            assert!(envoy(line).is_err(), "{line}");
        }
    }

    #[test]
    fn generic_json_with_a_mapping() {
        // Caddy's JSON access log
        let caddy = JsonMapping {
            time_field: Some("ts".into()),
            status_field: "status".into(),
            duration_field: Some("duration".into()),
            duration_unit: DurationUnit::Seconds,
            bytes_sent_field: Some("size".into()),
            bytes_received_field: Some("bytes_read".into()),
        };
        let line = r#"{"level":"info","ts":1705313045.5,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"127.0.0.1","method":"GET","uri":"/","headers":{"Accept":["*/*"]}},"bytes_read":12,"user_id":"","duration":0.0025,"size":10,"status":200,"resp_headers":{"Server":["Caddy"]}}"#;
        let r = parse_line(&Format::Json(caddy), line).unwrap().unwrap();
        assert_eq!(
            r.time,
            Some(utc(2024, 1, 15, 10, 4, 5) + chrono::Duration::milliseconds(500))
        );
        assert_eq!((r.status, r.bytes_sent, r.bytes_received), (200, 10, 12));
        assert_eq!(r.latency_ms, Some(2.5));

        // the defaults: nginx variables in a JSON log_format
        let line = r#"{"time":"2024-01-15T11:04:05+01:00","status":"504","request_time":"60.001","body_bytes_sent":"0","request_length":"411"}"#;
        let r = parse_line(&Format::Json(JsonMapping::default()), line)
            .unwrap()
            .unwrap();
        assert_eq!(r.time, Some(utc(2024, 1, 15, 10, 4, 5)));
        assert_eq!(
            (r.status, r.bytes_received, r.latency_ms),
            (504, 411, Some(60001.0))
        );
        assert!(r.is_error());

        // epoch milliseconds, a millisecond duration, no bytes fields
        let m = JsonMapping {
            time_field: Some("t".into()),
            duration_field: Some("ms".into()),
            duration_unit: DurationUnit::Millis,
            bytes_sent_field: None,
            bytes_received_field: None,
            ..JsonMapping::default()
        };
        let r = parse_line(
            &Format::Json(m.clone()),
            r#"{"t":1705313045000,"status":201,"ms":7}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.time, Some(utc(2024, 1, 15, 10, 4, 5)));
        assert_eq!(r.latency_ms, Some(7.0));
        assert!(parse_line(&Format::Json(m.clone()), r#"{"t":1,"code":201}"#).is_err());
        // a dotted name reaches into nested objects
        let nested = JsonMapping {
            status_field: "http.response.status_code".into(),
            ..m.clone()
        };
        let r = parse_line(
            &Format::Json(nested),
            r#"{"http":{"response":{"status_code":500}}}"#,
        )
        .unwrap()
        .unwrap();
        assert!(r.is_error());
        assert!(parse_line(&Format::Json(m), "{not json").is_err());
    }
}

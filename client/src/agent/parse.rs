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
//!   `bytes_sent` and `duration` are read, and for the dimensions
//!   `route_name` (else `path`) and `upstream_host` (the text line's
//!   `"%UPSTREAM_HOST%"`); numbers may be JSON numbers or strings, unset
//!   values `null`, `"-"` or absent.
//! - The route and upstream ([`LogRecord::to_observation_with`]) follow
//!   [`crate::agent::route`].
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

use super::route::{RouteRules, dimension_value, upstream_of};
use crate::Observation;

#[path = "parse_json.rs"]
mod json;

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
    /// The request target (`$request_uri`, Caddy's `request.uri`) or the
    /// whole request line (`$request`): the route's source.
    pub route_field: Option<String>,
    /// The upstream (`$upstream_addr`: its last one is taken).
    pub upstream_field: Option<String>,
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
            route_field: Some("request_uri".into()),
            upstream_field: Some("upstream_addr".into()),
        }
    }
}

/// The unit of a JSON log's duration field.
impl JsonMapping {
    /// Caddy's access log (`log` directive, JSON encoder): `ts` (epoch
    /// seconds), `status`, `duration` (seconds), `size` (bytes sent),
    /// `bytes_read` (bytes received), `request.uri` (the route's source).
    pub fn caddy() -> Self {
        Self {
            time_field: Some("ts".into()),
            status_field: "status".into(),
            duration_field: Some("duration".into()),
            duration_unit: DurationUnit::Seconds,
            bytes_sent_field: Some("size".into()),
            bytes_received_field: Some("bytes_read".into()),
            route_field: Some("request.uri".into()),
            upstream_field: None,
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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogRecord {
    /// The line's own time, when it had one that parsed.
    pub time: Option<DateTime<Utc>>,
    pub status: u16,
    pub latency_ms: Option<f64>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Envoy's response flags (`UF`, `UT,URX`, …), when set.
    pub flags: Option<String>,
    /// A route named by the proxy itself (Envoy's `route_name`): the route
    /// as is, before any pattern.
    pub route_name: Option<String>,
    /// The request line (`GET /a?b HTTP/1.1`) or target (`/a?b`) as logged.
    pub target: Option<String>,
    /// The upstream as logged (nginx's list of the upstreams tried).
    pub upstream: Option<String>,
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
        o.status = Some(self.status);
        o.latency_ms = self.latency_ms;
        o.bytes_sent = self.bytes_sent;
        o.bytes_received = self.bytes_received;
        o
    }

    /// The observation with its route and upstream (see
    /// [`crate::agent::route`]).
    pub fn to_observation_with(&self, routes: &RouteRules) -> Observation {
        let mut o = self.to_observation();
        o.route = match (&self.route_name, &self.target) {
            (Some(name), _) => dimension_value(name),
            (None, Some(target)) => routes.route_of(target),
            (None, None) => None,
        };
        o.upstream = self.upstream.as_deref().and_then(upstream_of);
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
        Format::Envoy if line.trim_start().starts_with('{') => json::parse_envoy_json(line),
        Format::Envoy => parse_envoy_text(line),
        Format::Json(mapping) => json::parse_json(mapping, line),
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
    let request = f.quoted().ok_or(Malformed("no quoted request"))?;
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
        target: Some(request.to_owned()),
        ..LogRecord::default()
    })
}

fn flags_of(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty() && s != "-").then(|| s.chars().take(64).collect())
}

fn parse_envoy_text(line: &str) -> Result<LogRecord, Malformed> {
    let mut f = Fields::new(line);
    let time = f.bracketed().ok_or(Malformed("no [START_TIME]"))?;
    let request = f.quoted().ok_or(Malformed("no quoted request line"))?;
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
    // Then %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
    // "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
    // "%UPSTREAM_HOST%" (the default's and Istio's); a line cut short has
    // no upstream, not a malformed one.
    f.token();
    let upstream = (0..4)
        .try_for_each(|_| f.quoted().map(drop))
        .and_then(|()| f.quoted())
        .filter(|u| !u.is_empty() && *u != "-")
        .map(str::to_owned);
    Ok(LogRecord {
        time: parse_rfc3339(time),
        status,
        latency_ms,
        bytes_sent,
        bytes_received,
        flags,
        route_name: None,
        target: Some(request.to_owned()),
        upstream,
    })
}

#[cfg(test)]
#[path = "parse_format_tests.rs"]
mod format_tests;

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "parse_dims_tests.rs"]
mod dims_tests;

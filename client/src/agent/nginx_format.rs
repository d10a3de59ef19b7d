//! nginx's `log_format`, compiled: give the agent the format string as it
//! is written in nginx.conf (or a preset name) and it reads those lines.
//!
//! A format is literals and variables. A variable's value runs up to the
//! next literal (the last one's to the end of the line); the upstream
//! variables may hold lists (`10.0.0.1:80, 10.0.0.2:80 : 10.0.1.1:80`,
//! nginx's separators for retries and internal redirects), so their value
//! runs over `, ` and ` : ` too. Read:
//!
//! - `$status`; `$time_local`, `$time_iso8601` or `$msec` for the time;
//! - `$request_time` (seconds) for the latency — or `$upstream_response_time`
//!   when told so ([`LatencyFrom::Upstream`]), its list summed (the time
//!   spent on all the upstreams tried);
//! - `$body_bytes_sent` (or `$bytes_sent` when the format has no
//!   `$body_bytes_sent`) for the bytes sent, `$request_length` for the bytes
//!   received;
//! - the route from `$request` (else `$request_uri`, else `$uri`); the
//!   upstream from `$proxy_upstream_name` (ingress-nginx's service name,
//!   stable while its pods come and go) else `$upstream_addr` (its last
//!   upstream tried) — see [`crate::agent::route`];
//! - everything else (`$remote_addr`, `$http_*`, …) is matched and skipped.

use chrono::{DateTime, Utc};

use super::parse::{LogRecord, Malformed};

/// nginx's own `combined`.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;
/// The `main` of nginx.org's packages, the Docker image and RHEL.
pub const MAIN: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for""#;
/// ingress-nginx's default, `upstreaminfo`.
pub const INGRESS_NGINX: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"#;

/// Which time is the latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LatencyFrom {
    /// `$request_time`: what the client waited.
    #[default]
    Request,
    /// `$upstream_response_time`, summed over the upstreams tried.
    Upstream,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NginxFormat {
    parts: Vec<Part>,
    latency: LatencyFrom,
    bytes_var: &'static str,
}

impl NginxFormat {
    /// Compiles a `log_format` string, or a preset: `combined`, `main`,
    /// `ingress-nginx` (also `upstreaminfo`). Quotes around the string as
    /// written in nginx.conf (`'…'` pieces) are taken off.
    pub fn compile(format: &str, latency: LatencyFrom) -> Result<Self, String> {
        let text = match format.trim() {
            "combined" => COMBINED.to_owned(),
            "main" => MAIN.to_owned(),
            "ingress-nginx" | "upstreaminfo" => INGRESS_NGINX.to_owned(),
            other => unquote(other),
        };
        let parts = split(&text);
        let has = |name: &str| parts.iter().any(|p| *p == Part::Var(name.to_owned()));
        if !has("status") {
            return Err("the log_format has no $status".into());
        }
        let needed = match latency {
            LatencyFrom::Request => "request_time",
            LatencyFrom::Upstream => "upstream_response_time",
        };
        if !has(needed) {
            tracing::warn!("the log_format has no ${needed}: requests are counted without latency");
        }
        let bytes_var = if has("body_bytes_sent") {
            "body_bytes_sent"
        } else {
            "bytes_sent"
        };
        Ok(Self {
            parts,
            latency,
            bytes_var,
        })
    }

    pub fn parse(&self, line: &str) -> Result<LogRecord, Malformed> {
        let mut rest = line;
        let mut record = LogRecord::default();
        let mut status = None;
        // The route's source, best first; the upstream likewise.
        let mut targets: [Option<&str>; 3] = [None; 3];
        let mut upstreams: [Option<&str>; 2] = [None; 2];
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(text) => {
                    rest = rest
                        .strip_prefix(text.as_str())
                        .ok_or(Malformed("the line does not match the log_format"))?;
                }
                Part::Var(name) => {
                    let next = match self.parts.get(i + 1) {
                        Some(Part::Literal(l)) => Some(l.as_str()),
                        // Two variables side by side: the first ends at a space.
                        Some(Part::Var(_)) => Some(" "),
                        None => None,
                    };
                    let value = take_value(rest, next, is_list(name));
                    rest = &rest[value.len()..];
                    match name.as_str() {
                        "status" => status = Some(value),
                        "time_local" => record.time = parse_time_local(value),
                        "time_iso8601" => record.time = parse_iso(value),
                        "msec" => record.time = parse_msec(value),
                        "request_length" => record.bytes_received = bytes(value)?,
                        "request" => targets[0] = Some(value),
                        "request_uri" => targets[1] = Some(value),
                        "uri" => targets[2] = Some(value),
                        "proxy_upstream_name" => upstreams[0] = Some(value),
                        "upstream_addr" => upstreams[1] = Some(value),
                        n if n == self.bytes_var => record.bytes_sent = bytes(value)?,
                        "request_time" if self.latency == LatencyFrom::Request => {
                            record.latency_ms = seconds_sum(value)?
                        }
                        "upstream_response_time" if self.latency == LatencyFrom::Upstream => {
                            record.latency_ms = seconds_sum(value)?
                        }
                        _ => {}
                    }
                }
            }
        }
        let set = |v: &&str| !v.is_empty() && *v != "-";
        record.target = targets.into_iter().flatten().find(set).map(str::to_owned);
        record.upstream = upstreams.into_iter().flatten().find(set).map(str::to_owned);
        let status = status.ok_or(Malformed("no $status"))?;
        record.status = status
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s) || *s == 0)
            .ok_or(Malformed("$status is not an HTTP status"))?;
        Ok(record)
    }
}

/// `'$a - $b '\n  '"$c"'` (the pieces as written in nginx.conf) → the text.
fn unquote(s: &str) -> String {
    if !s.starts_with('\'') {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut inside = false;
    for c in s.chars() {
        match c {
            '\'' => inside = !inside,
            c if inside => out.push(c),
            _ => {}
        }
    }
    out
}

fn split(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            literal.push(c);
            continue;
        }
        let braced = chars.peek().is_some_and(|(_, c)| *c == '{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some((_, c)) = chars.peek() {
            if c.is_ascii_alphanumeric() || *c == '_' {
                name.push(*c);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek().is_some_and(|(_, c)| *c == '}') {
            chars.next();
        }
        if name.is_empty() {
            literal.push('$');
            continue;
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(std::mem::take(&mut literal)));
        }
        parts.push(Part::Var(name));
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    parts
}

fn is_list(name: &str) -> bool {
    name.starts_with("upstream_")
}

/// The value at the start of `rest`: up to `next` (or the end); a list
/// variable's value also runs over nginx's `, ` and ` : ` separators.
fn take_value<'a>(rest: &'a str, next: Option<&str>, list: bool) -> &'a str {
    let Some(next) = next else {
        return rest;
    };
    let mut from = 0;
    loop {
        let Some(at) = rest[from..].find(next).map(|i| i + from) else {
            return rest;
        };
        if list {
            let after = &rest[at..];
            if rest[..at].ends_with(',') && after.starts_with(' ') {
                from = at + 1;
                continue;
            }
            if after.starts_with(" : ") {
                from = at + 3;
                continue;
            }
        }
        return &rest[..at];
    }
}

fn bytes(v: &str) -> Result<u64, Malformed> {
    if v == "-" {
        return Ok(0);
    }
    v.parse()
        .map_err(|_| Malformed("a byte count is not a number"))
}

/// Seconds (`0.123`), or nginx's list of them (`0.1, 0.2 : 0.05`) summed, in
/// milliseconds; `-` alone is no value.
fn seconds_sum(v: &str) -> Result<Option<f64>, Malformed> {
    let mut total = 0.0;
    let mut any = false;
    for piece in v.split([',', ':']).map(str::trim) {
        if piece == "-" || piece.is_empty() {
            continue;
        }
        let s: f64 = piece
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or(Malformed("a time is not a number of seconds"))?;
        total += s;
        any = true;
    }
    Ok(any.then_some(total * 1000.0))
}

fn parse_time_local(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%d/%b/%Y:%H:%M:%S %z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_iso(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_msec(s: &str) -> Option<DateTime<Utc>> {
    let v: f64 = s.parse().ok()?;
    DateTime::from_timestamp_millis((v * 1000.0).round() as i64)
}

#[cfg(test)]
#[path = "nginx_format_tests.rs"]
mod tests;

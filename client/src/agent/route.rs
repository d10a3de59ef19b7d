//! Where a request's counts belong (contract v3 `dimensions`): its route
//! and its upstream, as the agent reads them from an access log.
//!
//! **Route** — from the request target (nginx's `$request`, `$request_uri`,
//! Envoy's path, Caddy's `request.uri`):
//!
//! 1. The target is cut at `?` or `#` (the query never names a route); an
//!    absolute-form target (`http://host/a/b`, a forward proxy's) keeps its
//!    path only; `*` (`OPTIONS *`) is the route `*`; an authority-form target
//!    (`CONNECT host:443`) is its authority as written.
//! 2. With route patterns ([`RouteRules::new`]), the first pattern that
//!    matches the path is the route, as written (`/api/users/:id`). A path no
//!    pattern matches falls back to step 3: a new endpoint still shows up
//!    under a readable name rather than vanishing into one bucket.
//! 3. Otherwise the path is normalised segment by segment: empty segments
//!    (`//`, a trailing `/`) are dropped — `/users/` and `/users` are one
//!    route — and a segment that is an identifier becomes `:id`: all digits,
//!    a UUID, 16 or more hex digits (a hash), or 24 or more characters of
//!    the base64/url-safe alphabet with at least one digit and one letter (a
//!    token; a long slug without digits stays). Percent-encoding is left as
//!    written (`%20` is not decoded: the route is what the log says).
//!
//! A malformed request line (`-`, a TLS handshake sent to a plain port, no
//! method) has no route: the event omits the key and the server counts it
//! under `(none)`. Routes are kept to 256 characters (cut on a character
//! boundary), control characters replaced by `?` — the server's rules for a
//! dimension value.
//!
//! **Upstream** — nginx's `$upstream_addr` lists every upstream tried
//! (`a:80, b:80` for retries, `… : c:80` across internal redirects, `-`
//! where none was): the **last one tried** is the upstream, the one whose
//! answer the client got. Envoy: `upstream_host`.

pub use crate::aggregate::{MAX_DIMENSION_CHARS, dimension_value};

/// What an identifier segment becomes.
pub const ID_SEGMENT: &str = ":id";

/// How routes are named: the operator's patterns, then normalisation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteRules {
    patterns: Vec<Pattern>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    text: String,
    segments: Vec<PatternSegment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    Literal(String),
    /// `:name` or `*`: exactly one segment.
    One,
    /// A final `**`: whatever is left, nothing included.
    Rest,
}

impl RouteRules {
    /// Rules with `patterns` (each `/…`; `:name` or `*` matches one
    /// segment, a final `**` the rest), tried in order.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| Pattern::compile(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Patterns from a file: one a line; blank lines and `#` comments skipped.
    pub fn parse_file(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    /// The route of a request target (`/a/1?x=y`, `*`, `host:443`, an
    /// absolute URL); `None` when it is no target at all.
    pub fn route_of_target(&self, target: &str) -> Option<String> {
        let target = target.trim();
        let path = match target.split(['?', '#']).next().unwrap_or("") {
            "*" => return Some("*".into()),
            p if p.starts_with('/') => p,
            p => match p.split_once("://") {
                Some((scheme, rest)) if is_scheme(scheme) => {
                    rest.find('/').map_or("/", |i| &rest[i..])
                }
                // authority-form (CONNECT): host:port as written
                _ if is_authority(p) => return dimension_value(p),
                _ => return None,
            },
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if let Some(p) = self.patterns.iter().find(|p| p.matches(&segments)) {
            return Some(p.text.clone());
        }
        let mut route = String::with_capacity(path.len());
        for s in &segments {
            route.push('/');
            route.push_str(if is_identifier(s) { ID_SEGMENT } else { s });
        }
        if route.is_empty() {
            route.push('/');
        }
        dimension_value(&route)
    }

    /// The route of an HTTP request line (nginx's `$request`: `GET /a?b
    /// HTTP/1.1`; HTTP/0.9's has no protocol); `None` for `-` or garbage.
    pub fn route_of_request(&self, request: &str) -> Option<String> {
        let (method, rest) = request.trim().split_once(' ')?;
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
            return None;
        }
        let rest = rest.trim();
        // The protocol is the last word; a target with a space in it (a
        // broken client) keeps its first word.
        let target = match rest.rsplit_once(' ') {
            Some((t, proto)) if proto.starts_with("HTTP/") => t,
            _ => rest,
        };
        let target = target.split(' ').next().unwrap_or("");
        if method != "CONNECT"
            && !target.starts_with('/')
            && target != "*"
            && !target.contains("://")
        {
            return None;
        }
        self.route_of_target(target)
    }

    /// A target given either way (a JSON log's field may hold `$request`
    /// or `$request_uri`).
    pub fn route_of(&self, target_or_request: &str) -> Option<String> {
        let v = target_or_request.trim();
        if v.starts_with('/') || v == "*" || v.contains("://") {
            self.route_of_target(v)
        } else {
            self.route_of_request(v)
        }
    }
}

impl Pattern {
    fn compile(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.starts_with('/') {
            return Err(format!("route pattern {text:?} must start with '/'"));
        }
        if text.chars().count() > MAX_DIMENSION_CHARS || text.chars().any(char::is_control) {
            return Err(format!(
                "route pattern {text:?} must be at most {MAX_DIMENSION_CHARS} printable characters"
            ));
        }
        let raw: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            segments.push(match *s {
                "**" if i + 1 == raw.len() => PatternSegment::Rest,
                "**" => return Err(format!("route pattern {text:?}: '**' only at the end")),
                "*" => PatternSegment::One,
                s if s.starts_with(':') && s.len() > 1 => PatternSegment::One,
                s => PatternSegment::Literal(s.to_owned()),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    fn matches(&self, path: &[&str]) -> bool {
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                PatternSegment::Rest => return true,
                PatternSegment::One if i < path.len() => {}
                PatternSegment::Literal(l) if path.get(i) == Some(&l.as_str()) => {}
                _ => return false,
            }
            i += 1;
        }
        i == path.len()
    }
}

/// Whether a path segment names one thing among many (see the module docs).
pub fn is_identifier(segment: &str) -> bool {
    let s = segment.as_bytes();
    let all = |f: fn(&u8) -> bool| s.iter().all(f);
    if all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(segment) || (s.len() >= 16 && all(u8::is_ascii_hexdigit)) {
        return true;
    }
    s.len() >= 24
        && all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'=' | b'.'))
        && s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_alphabetic)
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `host:port`, `[v6]:port`: no slash, no space, a port.
fn is_authority(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.contains(['/', ' '])
        }
        None => false,
    }
}

/// The upstream of nginx's `$upstream_addr` (or any list in its form): the
/// last one tried; `None` when none was (`-`, empty).
pub fn upstream_of(addr: &str) -> Option<String> {
    addr.split(", ")
        .flat_map(|group| group.split(" : "))
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "-")
        .last()
        .and_then(dimension_value)
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;

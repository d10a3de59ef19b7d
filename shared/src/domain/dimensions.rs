//! Where an event's counts belong (contract v3): its `dimensions` (route,
//! upstream) and its `statusCounts`, parsed and validated; what a day keeps
//! per dimension value; and the cardinality cap's values.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::excerpt;
use super::rollup::Stats;
use super::tier::Tier;

/// The value of a key an event does not give.
pub const NONE_VALUE: &str = "(none)";
/// Where events with a value past the cardinality cap are counted.
pub const OTHER_VALUE: &str = "__other__";
pub const MAX_DIMENSION_VALUE_CHARS: usize = 256;
/// The overflowed values a day remembers per key to count them (64-bit
/// hashes, ~9 bytes each stored): past this many, `distinctValues` stops
/// growing (documented as "at least").
pub const MAX_OTHER_DISTINCT_TRACKED: usize = 10_000;

/// The dimension keys, in the order a chunk stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DimensionKey {
    Route,
    Upstream,
}

impl DimensionKey {
    pub const ALL: [DimensionKey; 2] = [DimensionKey::Route, DimensionKey::Upstream];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Upstream => "upstream",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Distinct values per proxy, UTC day and key, by the owner's tier.
pub fn cardinality_cap(tier: Tier) -> usize {
    match tier {
        Tier::Free => 20,
        Tier::Pro => 200,
        Tier::Enterprise => 2_000,
    }
}

/// Pages a day's values of one key are stored in (by value hash), so that
/// the largest tier's values (2,000 × up to 256 characters and a sketch)
/// stay far below DynamoDB's 400 KB item limit. Written into each chunk, so
/// a tier change mid-day never makes a reader look in the wrong page.
pub fn dimension_pages(tier: Tier) -> u8 {
    match tier {
        Tier::Free | Tier::Pro => 1,
        Tier::Enterprise => 8,
    }
}

/// A stable 64-bit hash of a value (FNV-1a: the same in every process and
/// release), for the cap's membership and the overflow's distinct count.
pub fn value_hash(value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The page of `value` among `pages`.
pub fn page_of(value: &str, pages: u8) -> u8 {
    (value_hash(value) % u64::from(pages.max(1))) as u8
}

/// An event's dimensions as sent (`None`: the key was not given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimensions {
    pub route: Option<String>,
    pub upstream: Option<String>,
    /// Per key ([`DimensionKey::ALL`] order): the hash of the value sent,
    /// when it was past the cap and now reads `__other__`.
    #[serde(default)]
    pub overflow: [Option<u64>; 2],
}

impl Dimensions {
    fn slot(&mut self, key: DimensionKey) -> (&mut Option<String>, &mut Option<u64>) {
        match key {
            DimensionKey::Route => (&mut self.route, &mut self.overflow[0]),
            DimensionKey::Upstream => (&mut self.upstream, &mut self.overflow[1]),
        }
    }

    /// The hash of the value that went to `__other__` for `key`, if one did.
    pub fn overflowed(&self, key: DimensionKey) -> Option<u64> {
        match key {
            DimensionKey::Route => self.overflow[0],
            DimensionKey::Upstream => self.overflow[1],
        }
    }

    /// Counts the event under `__other__` for `key` (its value is past the
    /// cap), remembering which value it was.
    pub fn send_to_other(&mut self, key: DimensionKey) {
        let (value, overflow) = self.slot(key);
        if let Some(v) = value.as_deref()
            && v != OTHER_VALUE
        {
            *overflow = Some(value_hash(v));
            *value = Some(OTHER_VALUE.to_string());
        }
    }

    pub fn get(&self, key: DimensionKey) -> Option<&str> {
        match key {
            DimensionKey::Route => self.route.as_deref(),
            DimensionKey::Upstream => self.upstream.as_deref(),
        }
    }

    /// The value the event counts under for `key`.
    pub fn value_of(&self, key: DimensionKey) -> &str {
        self.get(key).unwrap_or(NONE_VALUE)
    }
}

/// `dimensions`: an object of `route` and `upstream`, each 1–256 printable
/// characters; any other key is refused (a typo must not vanish).
pub fn parse_dimensions(value: Option<&Value>) -> Result<Dimensions, String> {
    let object = match value {
        None | Some(Value::Null) => return Ok(Dimensions::default()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err("'dimensions' must be an object such as {\"route\": \"/api/users/:id\", \"upstream\": \"10.0.3.7:8080\"}.".into()),
    };
    if let Some(unknown) = object.keys().find(|k| DimensionKey::parse(k).is_none()) {
        return Err(format!(
            "'dimensions.{}' is not a dimension (known: route, upstream).",
            excerpt(unknown)
        ));
    }
    let one = |key: DimensionKey| -> Result<Option<String>, String> {
        let name = key.as_str();
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let chars = s.chars().count();
                if chars == 0 || chars > MAX_DIMENSION_VALUE_CHARS {
                    return Err(format!(
                        "'dimensions.{name}' must be 1-{MAX_DIMENSION_VALUE_CHARS} characters; got {chars}."
                    ));
                }
                if s.chars().any(char::is_control) {
                    return Err(format!(
                        "'dimensions.{name}' must be printable (no control characters)."
                    ));
                }
                Ok(Some(s.clone()))
            }
            Some(_) => Err(format!("'dimensions.{name}' must be a string.")),
        }
    };
    Ok(Dimensions {
        route: one(DimensionKey::Route)?,
        upstream: one(DimensionKey::Upstream)?,
        overflow: [None; 2],
    })
}

/// Requests by status class: `1xx` … `5xx`.
pub type StatusCounts = [u64; 5];
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `metrics.statusCounts`: the five classes (absent ones 0, others
/// refused), summing to `requestCount`.
pub fn parse_status_counts(
    value: Option<&Value>,
    request_count: u64,
    max_count: u64,
) -> Result<Option<StatusCounts>, String> {
    let object: &Map<String, Value> = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(
                "'metrics.statusCounts' must be an object such as {\"2xx\": 95, \"5xx\": 5}."
                    .into(),
            );
        }
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !STATUS_CLASSES.contains(&k.as_str()))
    {
        return Err(format!(
            "'metrics.statusCounts.{}' is not a status class (known: {}).",
            excerpt(unknown),
            STATUS_CLASSES.join(", ")
        ));
    }
    let mut counts = [0u64; 5];
    for (i, class) in STATUS_CLASSES.iter().enumerate() {
        counts[i] = match object.get(*class) {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= max_count => v,
                Some(_) => return Err(format!("'metrics.statusCounts.{class}' is above 2^53.")),
                None => {
                    return Err(format!(
                        "'metrics.statusCounts.{class}' must be a whole number >= 0."
                    ));
                }
            },
            Some(_) => {
                return Err(format!(
                    "'metrics.statusCounts.{class}' must be a whole number >= 0."
                ));
            }
        };
    }
    let sum = counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
    if sum != request_count {
        return Err(format!(
            "'metrics.statusCounts' sums to {sum}, but requestCount is {request_count}; they must be equal."
        ));
    }
    Ok(Some(counts))
}

/// Adds `b` into `a`, saturating.
pub fn add_status(a: &mut StatusCounts, b: &StatusCounts) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

/// What a request (or a day) holds of one dimension key: each value's
/// figures, and which values went to [`OTHER_VALUE`] (hashes, bounded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyValues {
    pub values: BTreeMap<String, Stats>,
    pub other_hashes: BTreeSet<u64>,
}

impl KeyValues {
    pub fn merge(&mut self, other: &KeyValues) {
        for (value, stats) in &other.values {
            match self.values.get_mut(value) {
                Some(s) => s.merge(stats),
                None => {
                    self.values.insert(value.clone(), stats.clone());
                }
            }
        }
        self.add_other_hashes(other.other_hashes.iter().copied());
    }

    /// Counts under `(none)` the events of `total` (everything recorded in
    /// the range) that no value here holds: those of the parts that wrote
    /// no dimension pages, recorded before the proxy's first dimension.
    /// Exact for the additive figures; the percentiles from the sketch's
    /// bins, exact unless a sketch collapsed (see `LatencySketch::without`).
    pub fn add_unpaged(&mut self, total: &Stats) {
        let mut paged = Stats::default();
        for stats in self.values.values() {
            paged.merge(stats);
        }
        if total.event_count <= paged.event_count {
            return;
        }
        let rest = if paged.event_count == 0 {
            // Nothing paged (the common case of a proxy without
            // dimensions): the day's figures whole, min and max included.
            total.clone()
        } else {
            total.without(&paged)
        };
        match self.values.get_mut(NONE_VALUE) {
            Some(none) => none.merge(&rest),
            None => {
                self.values.insert(NONE_VALUE.to_string(), rest);
            }
        }
    }

    pub fn add_other_hashes(&mut self, hashes: impl IntoIterator<Item = u64>) {
        for h in hashes {
            if self.other_hashes.len() >= MAX_OTHER_DISTINCT_TRACKED {
                break;
            }
            self.other_hashes.insert(h);
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.values
            .iter()
            .map(|(k, s)| k.len() + std::mem::size_of::<Stats>() + 48 + s.heap_bytes())
            .sum::<usize>()
            + self.other_hashes.len() * 24
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dimensions_are_checked_by_key_and_length() {
        let d =
            parse_dimensions(Some(&json!({"route": "/a/:id", "upstream": "10.0.0.1:80"}))).unwrap();
        assert_eq!(d.value_of(DimensionKey::Route), "/a/:id");
        assert_eq!(
            Dimensions::default().value_of(DimensionKey::Upstream),
            NONE_VALUE
        );
        let e = parse_dimensions(Some(&json!({"rout": "/a"}))).unwrap_err();
        assert!(e.contains("'dimensions.rout'"), "{e}");
        assert!(parse_dimensions(Some(&json!({"route": ""}))).is_err());
        assert!(parse_dimensions(Some(&json!({"route": "x".repeat(257)}))).is_err());
        assert!(parse_dimensions(Some(&json!({"route": "x".repeat(256)}))).is_ok());
        assert!(parse_dimensions(Some(&json!({"route": "a\nb"}))).is_err());
        assert!(parse_dimensions(Some(&json!({"route": 3}))).is_err());
        assert!(parse_dimensions(Some(&json!(["route"]))).is_err());
    }

    #[test]
    fn status_counts_sum_to_the_requests() {
        let ok = parse_status_counts(Some(&json!({"2xx": 95, "5xx": 5})), 100, 1 << 53).unwrap();
        assert_eq!(ok, Some([0, 95, 0, 0, 5]));
        let e = parse_status_counts(Some(&json!({"2xx": 95})), 100, 1 << 53).unwrap_err();
        assert!(e.contains("sums to 95"), "{e}");
        assert!(parse_status_counts(Some(&json!({"6xx": 1})), 1, 1 << 53).is_err());
        assert!(parse_status_counts(Some(&json!({"2xx": -1})), 1, 1 << 53).is_err());
        assert_eq!(parse_status_counts(None, 7, 1 << 53), Ok(None));
    }

    fn stats_of(requests: u64, errors: u64, latencies: &[f64]) -> Stats {
        let mut s = Stats {
            event_count: 1,
            request_count: requests,
            success_count: requests - errors,
            error_count: errors,
            ..Stats::default()
        };
        for &ms in latencies {
            s.sketch.add(ms);
            s.latency_total_ms += ms;
            s.latency_weight += 1;
        }
        s
    }

    #[test]
    fn unpaged_events_count_under_none_exactly() {
        let routed = stats_of(10, 1, &[5.0, 7.0, 9.0]);
        let none_in_pages = stats_of(4, 0, &[100.0, 120.0]);
        let unpaged = stats_of(20, 3, &[1.0, 300.0, 301.0, 302.0, 2.5]);
        let mut total = Stats::default();
        for s in [&routed, &none_in_pages, &unpaged] {
            total.merge(s);
        }
        let mut values = KeyValues::default();
        values.values.insert("/a".into(), routed.clone());
        values
            .values
            .insert(NONE_VALUE.into(), none_in_pages.clone());
        values.add_unpaged(&total);
        let mut expected = none_in_pages.clone();
        expected.merge(&unpaged);
        let none = &values.values[NONE_VALUE];
        assert_eq!(none.event_count, 2);
        assert_eq!(none.request_count, 24);
        assert_eq!(none.error_count, 3);
        assert_eq!(none.latency_weight, 7);
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(none.percentile(q), expected.percentile(q), "q {q}");
        }
        assert_eq!(values.values["/a"], routed, "explicit values untouched");
        // Nothing unpaged: nothing added; nothing paged: the total whole.
        let before = values.clone();
        values.add_unpaged(&{
            let mut t = routed.clone();
            t.merge(&expected);
            t
        });
        assert_eq!(values, before);
        let mut empty = KeyValues::default();
        empty.add_unpaged(&total);
        assert_eq!(empty.values[NONE_VALUE], total);
    }

    #[test]
    fn hashes_and_pages_are_stable() {
        assert_eq!(value_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(value_hash("/a"), value_hash("/a"));
        assert_ne!(value_hash("/a"), value_hash("/b"));
        assert_eq!(page_of("/anything", 1), 0);
        let pages: BTreeSet<u8> = (0..100).map(|i| page_of(&format!("/r{i}"), 8)).collect();
        assert_eq!(pages.len(), 8);
    }
}

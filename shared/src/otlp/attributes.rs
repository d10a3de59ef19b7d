//! Series identity and the attributes the mapping reads (`http.route`,
//! `http.response.status_code`, a duration's unit).

use super::map::{ROUTE_ATTRIBUTE, STATUS_ATTRIBUTE};
use super::proto::{AnyValue, KeyValue, any_value};
use crate::domain::dimensions::MAX_DIMENSION_VALUE_CHARS;

/// A stable 64-bit FNV-1a hash (the same in every process and release).
#[derive(Clone, Copy)]
pub(super) struct Fnv(pub(super) u64);

impl Fnv {
    pub(super) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    pub(super) fn bytes(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }
    /// A length-prefixed field: `("ab", "c")` and `("a", "bc")` differ.
    pub(super) fn field(self, bytes: &[u8]) -> Self {
        self.bytes(&(bytes.len() as u64).to_le_bytes()).bytes(bytes)
    }
    pub(super) fn value(self, value: Option<&AnyValue>) -> Self {
        use any_value::Value as V;
        match value.and_then(|v| v.value.as_ref()) {
            None => self.field(b"n"),
            Some(V::StringValue(s)) => self.field(b"s").field(s.as_bytes()),
            Some(V::BoolValue(b)) => self.field(b"b").field(&[u8::from(*b)]),
            Some(V::IntValue(i)) => self.field(b"i").field(&i.to_le_bytes()),
            Some(V::DoubleValue(d)) => self.field(b"d").field(&d.to_bits().to_le_bytes()),
            Some(V::BytesValue(b)) => self.field(b"y").field(b),
            Some(V::ArrayValue(a)) => a.values.iter().fold(
                self.field(b"a")
                    .field(&(a.values.len() as u64).to_le_bytes()),
                |h, v| h.value(Some(v)),
            ),
            Some(V::KvlistValue(l)) => self.field(b"k").attributes(&l.values),
        }
    }
    /// Attributes in key order: the same set in another order is the same series.
    pub(super) fn attributes(self, attributes: &[KeyValue]) -> Self {
        let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        sorted.into_iter().fold(
            self.field(&(attributes.len() as u64).to_le_bytes()),
            |h, kv| h.field(kv.key.as_bytes()).value(kv.value.as_ref()),
        )
    }
}

pub(super) fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// `http.route` as a dimension value: printable, at most 256 characters.
pub(super) fn route_of(attributes: &[KeyValue]) -> Option<String> {
    let Some(any_value::Value::StringValue(route)) =
        attribute(attributes, ROUTE_ATTRIBUTE).and_then(|v| v.value.as_ref())
    else {
        return None;
    };
    let clean: String = route
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DIMENSION_VALUE_CHARS)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// `http.response.status_code` (an int, or a string of one) as its class.
pub(super) fn status_class_of(attributes: &[KeyValue]) -> Option<usize> {
    let code = match attribute(attributes, STATUS_ATTRIBUTE).and_then(|v| v.value.as_ref())? {
        any_value::Value::IntValue(i) => *i,
        any_value::Value::StringValue(s) => s.trim().parse().ok()?,
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 => *d as i64,
        _ => return None,
    };
    (100..600)
        .contains(&code)
        .then(|| (code / 100 - 1) as usize)
}

/// Milliseconds per unit of a duration histogram (UCUM, as the semantic
/// conventions write it; none given means seconds, the convention's unit).
pub(super) fn to_ms(unit: &str) -> Option<f64> {
    match unit {
        "s" | "" => Some(1000.0),
        "ms" => Some(1.0),
        "us" | "µs" => Some(0.001),
        "ns" => Some(0.000_001),
        _ => None,
    }
}

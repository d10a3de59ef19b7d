//! Refuses a JSON text that repeats a key within one object, at any depth.
//!
//! serde_json (like most parsers) keeps the last of two values for the same
//! key, so `{"proxyId":"a","proxyId":"b"}` would register `b` while a proxy,
//! a log or a WAF in front of us may have read `a`. The contract makes such a
//! body a 400: the service never picks one of two values.
//!
//! One pass of serde_json's own tokenizer with a visitor that keeps the keys
//! of each open object in a set: linear in the body, memory at most the keys
//! of the objects on the current path (≤ the body), nesting bounded by
//! serde_json's recursion limit (128). Nothing is built but those sets.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// Characters of a repeated key shown in the message (a key may be huge).
const SHOWN_KEY_CHARS: usize = 64;

/// `Some(message)` when `body` repeats a key inside one object. A body that
/// is not valid JSON gives `None`: the parser that reads it afterwards
/// reports that error, with its usual message.
pub fn repeated_key(body: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    match AnyValue.deserialize(&mut deserializer) {
        Ok(()) => None,
        // Only the visitor raises data errors (it accepts every JSON type);
        // syntax and end-of-input errors are the real parser's to report.
        Err(e) if e.is_data() => Some(e.to_string()),
        Err(_) => None,
    }
}

/// Walks any JSON value, checking every object on the way.
#[derive(Clone, Copy)]
struct AnyValue;

impl<'de> DeserializeSeed<'de> for AnyValue {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnyValue {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(AnyValue)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        // Keys compared after unescaping: "a" and "\u0061" are the same key.
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = entries.next_key::<String>()? {
            if seen.contains(&key) {
                let shown: String = key.chars().take(SHOWN_KEY_CHARS).collect();
                let more = if shown.len() < key.len() { "…" } else { "" };
                return Err(A::Error::custom(format!(
                    "the key \"{shown}{more}\" appears more than once in one object"
                )));
            }
            entries.next_value_seed(AnyValue)?;
            seen.insert(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::repeated_key;

    #[test]
    fn a_repeated_key_is_found_at_any_depth() {
        for body in [
            r#"{"proxyId":"a","proxyId":"b"}"#,
            r#"{"eventType":"request","eventType":"error"}"#,
            r#"{"metrics":{"requestCount":1,"requestCount":2}}"#,
            r#"{"events":[{"a":1},{"b":{"c":[{"d":1,"d":1}]}}]}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let message = repeated_key(body.as_bytes());
            assert!(
                message
                    .as_deref()
                    .is_some_and(|m| m.contains("more than once")),
                "{body}: {message:?}"
            );
        }
        let message = repeated_key(br#"{"x":0,"proxyId":"a","proxyId":"b"}"#).unwrap();
        assert!(message.contains("\"proxyId\""), "{message}");
    }

    #[test]
    fn distinct_keys_and_other_json_pass() {
        for body in [
            r#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}"#,
            r#"[1, "x", null, true, -1.5e3, {}]"#,
            r#""just a string""#,
            r#"{"a":1,"A":2}"#,
        ] {
            assert_eq!(repeated_key(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn malformed_json_is_left_to_the_parser() {
        for body in ["{", r#"{"a":1,"b""#, "nul", "", r#"{"a":1} trailing"#] {
            assert_eq!(repeated_key(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn a_long_key_is_shown_cut() {
        let key = "k".repeat(10_000);
        let body = format!(r#"{{"{key}":1,"{key}":2}}"#);
        let message = repeated_key(body.as_bytes()).unwrap();
        assert!(message.len() < 200, "{message}");
    }
}

//! Pure domain logic: events, validation, rollups, sketches, uptime.

pub mod alert;
pub mod dimensions;
pub mod event;
pub mod rollup;
pub mod sequence;
pub mod series;
pub mod sketch;
pub mod tier;

use chrono::NaiveDate;

/// Why input was refused: the domain's own error, which knows nothing of
/// HTTP (`error.rs` maps it to 400 and 413).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// Malformed or inconsistent input.
    #[error("{0}")]
    Invalid(String),
    /// More than the contract accepts in one request.
    #[error("{0}")]
    TooLarge(String),
}

impl ValidationError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

pub const MAX_PROXY_ID_CHARS: usize = 128;
pub const MAX_PROXY_NAME_CHARS: usize = 256;

/// `proxyId`: 1–128 characters of `[A-Za-z0-9._-]`. Checked before an id
/// reaches any storage key.
pub fn validate_proxy_id(id: &str) -> Result<(), ValidationError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_PROXY_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::invalid(format!(
            "proxyId must be 1-{MAX_PROXY_ID_CHARS} characters of A-Z a-z 0-9 . _ -."
        )))
    }
}

/// Longest excerpt of a caller's value that an error message quotes.
pub const MAX_QUOTED_CHARS: usize = 64;

/// A caller-supplied value as error messages quote it: at most
/// [`MAX_QUOTED_CHARS`] characters, then `…`. Messages stay short whatever
/// was sent (the fuzz target checks it: a 1 MiB `eventType` used to come
/// back in full).
pub fn excerpt(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

/// A strict `YYYY-MM-DD` UTC day (`2024-02-30` is refused).
pub fn parse_day(field: &str, value: &str) -> Result<NaiveDate, ValidationError> {
    let shaped = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    shaped
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| {
            ValidationError::invalid(format!(
                "{field} '{}' is not a valid date in YYYY-MM-DD form.",
                excerpt(value)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_ids() {
        assert!(validate_proxy_id("edge-eu-1").is_ok());
        assert!(validate_proxy_id("a.b_c-D9").is_ok());
        assert!(validate_proxy_id(&"x".repeat(128)).is_ok());
        assert!(validate_proxy_id(&"x".repeat(129)).is_err());
        assert!(validate_proxy_id("").is_err());
        assert!(validate_proxy_id("a#b").is_err());
        assert!(validate_proxy_id("a/b").is_err());
        assert!(validate_proxy_id("é").is_err());
    }

    #[test]
    fn days_are_strict() {
        assert_eq!(
            parse_day("date", "2024-01-15").unwrap(),
            NaiveDate::from_ymd_opt(2024, 1, 15).unwrap()
        );
        for bad in [
            "2024-02-30",
            "2024-1-15",
            "20240115",
            "2024-01-15T00:00:00Z",
            "",
            "yesterday",
        ] {
            assert!(parse_day("date", bad).is_err(), "{bad}");
        }
        assert!(parse_day("date", "2024-02-29").is_ok());
    }

    #[test]
    fn quoted_values_are_bounded() {
        assert_eq!(excerpt("short"), "short");
        let exact = "é".repeat(MAX_QUOTED_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = "é".repeat(MAX_QUOTED_CHARS + 1);
        assert_eq!(excerpt(&long), format!("{}…", "é".repeat(MAX_QUOTED_CHARS)));
        let message = parse_day("date", &"9".repeat(100_000))
            .unwrap_err()
            .to_string();
        assert!(message.len() < 200, "{message}");
    }
}

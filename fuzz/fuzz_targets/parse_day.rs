//! `parse_day` on arbitrary strings: never panics, accepts exactly the
//! strict `YYYY-MM-DD` days that exist, and round-trips what it accepts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_metrics::domain::parse_day;
use proxy_metrics::domain::ValidationError;

fuzz_target!(|value: &str| {
    match parse_day("date", value) {
        Ok(day) => {
            // strict shape: only what it prints back
            assert_eq!(day.format("%Y-%m-%d").to_string(), value);
            assert_eq!(value.len(), 10);
        }
        Err(error) => {
            assert!(matches!(error, ValidationError::Invalid(_)), "{error:?}");
            let message = error.to_string();
            assert!(
                message.chars().count() <= 1024,
                "unbounded message ({} chars)",
                message.chars().count()
            );
        }
    }
});

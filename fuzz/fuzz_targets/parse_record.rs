//! `parse_record_body` on arbitrary bytes and an optional idempotency key.
//!
//! Beyond "never panics", every accepted body must satisfy the contract's
//! rules (the validated `Event` is what storage packs and rollups trust), and
//! every refusal must be a 400 or 413 whose message stays bounded.

#![no_main]

use arbitrary::Arbitrary;
use chrono::{DateTime, Duration, Utc};
use libfuzzer_sys::fuzz_target;
use proxy_metrics::domain::event::{
    self, MAX_COUNT, MAX_ERROR_MESSAGE_CHARS, MAX_EVENTS_PER_BATCH, MAX_SAMPLES_PER_EVENT,
    parse_record_body,
};
use proxy_metrics::domain::ValidationError;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    idempotency_key: Option<&'a str>,
    body: &'a [u8],
}

/// A fixed "now", so that a crash reproduces whatever the day.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_705_320_245, 0).unwrap_or_default() // 2024-01-15T12:04:05Z
}

/// Longest error message the fuzzer tolerates: messages may quote the
/// offending value, but only a bounded excerpt of it.
const MAX_MESSAGE_CHARS: usize = 1024;

fuzz_target!(|input: Input| {
    let now = now();
    match parse_record_body(input.body, input.idempotency_key, now) {
        Ok(body) => {
            assert!(!body.events.is_empty() && body.events.len() <= MAX_EVENTS_PER_BATCH);
            if body.single {
                assert_eq!(body.events.len(), 1);
            }
            for e in &body.events {
                assert!(event::validate_event_id(&e.event_id).is_ok(), "{e:?}");
                if let (true, Some(key)) = (body.single, input.idempotency_key) {
                    assert_eq!(e.event_id, key);
                }
                let at = e.timestamp();
                assert!(
                    at >= now - Duration::days(7) && at <= now + Duration::minutes(5),
                    "{e:?}"
                );
                assert_eq!(e.timestamp_ms, at.timestamp_millis());
                assert!(e.request_count <= MAX_COUNT);
                assert!(e.success_count + e.error_count <= e.request_count, "{e:?}");
                for n in [
                    e.data_transferred_bytes,
                    e.data_received_bytes,
                    e.connection_count,
                ] {
                    assert!(n <= MAX_COUNT);
                }
                assert!(e.concurrent_connections.is_none_or(|c| c <= MAX_COUNT));
                for l in [e.total_latency_ms, e.min_latency_ms, e.max_latency_ms]
                    .into_iter()
                    .flatten()
                {
                    assert!(l.is_finite() && l >= 0.0, "{e:?}");
                }
                if let (Some(min), Some(max)) = (e.min_latency_ms, e.max_latency_ms) {
                    assert!(min <= max, "{e:?}");
                }
                if let Some(sketch) = &e.latency_sketch {
                    assert!(sketch.count() >= 1 && sketch.count() <= MAX_SAMPLES_PER_EVENT as u64);
                    let q = sketch.quantile(0.5);
                    assert!(q.is_some_and(|q| q.is_finite() && q >= 0.0), "{q:?}");
                }
                if let Some(m) = &e.error_message {
                    assert!(!m.is_empty() && m.chars().count() <= MAX_ERROR_MESSAGE_CHARS);
                }
            }
        }
        Err(error) => {
            assert!(
                matches!(
                    error,
                    ValidationError::Invalid(_) | ValidationError::TooLarge(_)
                ),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(!message.is_empty());
            assert!(
                message.chars().count() <= MAX_MESSAGE_CHARS,
                "unbounded error message ({} chars)",
                message.chars().count()
            );
        }
    }
});

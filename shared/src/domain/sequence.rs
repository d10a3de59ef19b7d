//! Sequenced batches (an idempotent producer): the `Producer-Id` and
//! `Producer-Sequence` headers, and the rule on event ids inside a batch.

use super::event::{Event, MAX_COUNT};
use super::{ValidationError, excerpt};

/// `Producer-Id`: 1–64 characters of `[A-Za-z0-9._:-]`.
pub const MAX_PRODUCER_ID_CHARS: usize = 64;

/// The `Producer-Id` and `Producer-Sequence` headers: both or neither.
pub fn parse_sequence_headers(
    producer_id: Option<&str>,
    sequence: Option<&str>,
) -> Result<Option<(String, u64)>, ValidationError> {
    let (id, sequence) = match (producer_id, sequence) {
        (None, None) => return Ok(None),
        (Some(id), Some(seq)) => (id, seq),
        _ => {
            return Err(ValidationError::invalid(
                "Producer-Id and Producer-Sequence go together: send both headers or neither.",
            ));
        }
    };
    let id_ok = !id.is_empty()
        && id.len() <= MAX_PRODUCER_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !id_ok {
        return Err(ValidationError::invalid(format!(
            "Producer-Id must be 1-{MAX_PRODUCER_ID_CHARS} characters of A-Z a-z 0-9 . _ : -."
        )));
    }
    let number = sequence
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_COUNT && sequence.trim().bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            ValidationError::invalid(format!(
                "Producer-Sequence must be a whole number from 0 to 2^53; got '{}'.",
                excerpt(sequence)
            ))
        })?;
    Ok(Some((id.to_string(), number)))
}

/// In a sequenced batch the sequence is the idempotency key: `eventId`s only
/// label events, and must not repeat within the batch.
pub fn check_unique_event_ids(events: &[Event]) -> Result<(), ValidationError> {
    let mut seen = std::collections::HashMap::new();
    for (index, event) in events.iter().enumerate() {
        if let Some(first) = seen.insert(event.event_id.as_str(), index) {
            return Err(ValidationError::invalid(format!(
                "events[{index}]: eventId '{}' repeats events[{first}]; ids must be unique within a sequenced batch.",
                excerpt(&event.event_id)
            )));
        }
    }
    Ok(())
}

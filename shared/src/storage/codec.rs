//! Stored bodies: postcard behind a format byte, so a layout change can tell
//! old bodies from new ones.

use super::days::{StoredBucket, StoredDay};
use super::dims::StoredDims;
use super::error::StorageError;
use super::totals::StoredTotals;
use crate::domain::dimensions::StatusCounts;
use crate::domain::rollup::{DayPart, PartDims};

/// Bodies written by the v1 layout (events, v1 rollups): read by the migration only.
pub const FORMAT_V1: u8 = 1;
/// Bodies of the v2 layout (chunks, days, buckets).
pub const FORMAT_V2: u8 = 2;

pub fn encode_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    encode_with(FORMAT_V2, value)
}

pub fn encode_with<T: serde::Serialize>(format: u8, value: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_extend(value, vec![format])
        .map_err(|e| StorageError::Internal(format!("encoding a stored body: {e}")))
}

pub fn decode_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    decode_with(FORMAT_V2, bytes)
}

pub fn decode_with<T: serde::de::DeserializeOwned>(
    format: u8,
    bytes: &[u8],
) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((f, rest)) if *f == format => postcard::from_bytes(rest)
            .map_err(|e| StorageError::Internal(format!("decoding a stored body: {e}"))),
        Some((f, _)) => Err(StorageError::Internal(format!(
            "stored body has format {f}, expected {format}"
        ))),
        None => Err(StorageError::Internal("stored body is empty".into())),
    }
}

/// A stored body. Most are plain postcard; a type that grew fields in v3
/// keeps them in a trailer after its v2 fields ([`Trailed`]), so a body
/// written before still decodes (postcard has no optional fields).
pub trait StoredBody: Sized {
    fn encode(&self) -> Result<Vec<u8>, StorageError>;
    fn decode(bytes: &[u8]) -> Result<Self, StorageError>;
}

/// A type whose v3 fields are skipped by serde and stored as a trailer.
pub trait Trailed: serde::Serialize + serde::de::DeserializeOwned {
    type Trailer: serde::Serialize + serde::de::DeserializeOwned + Default + PartialEq;
    fn trailer(&self) -> &Self::Trailer;
    fn set_trailer(&mut self, trailer: Self::Trailer);
}

pub fn encode_trailed<T: Trailed>(value: &T) -> Result<Vec<u8>, StorageError> {
    let bytes = encode_body(value)?;
    if *value.trailer() == T::Trailer::default() {
        return Ok(bytes);
    }
    postcard::to_extend(value.trailer(), bytes)
        .map_err(|e| StorageError::Internal(format!("encoding a stored body: {e}")))
}

pub fn decode_trailed<T: Trailed>(bytes: &[u8]) -> Result<T, StorageError> {
    let corrupt =
        |e: postcard::Error| StorageError::Internal(format!("decoding a stored body: {e}"));
    match bytes.split_first() {
        Some((f, rest)) if *f == FORMAT_V2 => {
            let (mut value, tail) = postcard::take_from_bytes::<T>(rest).map_err(corrupt)?;
            if !tail.is_empty() {
                value.set_trailer(postcard::from_bytes(tail).map_err(corrupt)?);
            }
            Ok(value)
        }
        _ => decode_body(bytes),
    }
}

impl Trailed for DayPart {
    type Trailer = PartDims;
    fn trailer(&self) -> &PartDims {
        &self.dims
    }
    fn set_trailer(&mut self, trailer: PartDims) {
        self.dims = trailer;
    }
}

impl Trailed for StoredDay {
    type Trailer = StatusCounts;
    fn trailer(&self) -> &StatusCounts {
        &self.rollup.status
    }
    fn set_trailer(&mut self, trailer: StatusCounts) {
        self.rollup.status = trailer;
    }
}

macro_rules! trailed_body {
    ($($t:ty),*) => {$(
        impl StoredBody for $t {
            fn encode(&self) -> Result<Vec<u8>, StorageError> {
                encode_trailed(self)
            }
            fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
                decode_trailed(bytes)
            }
        }
    )*};
}

macro_rules! plain_body {
    ($($t:ty),*) => {$(
        impl StoredBody for $t {
            fn encode(&self) -> Result<Vec<u8>, StorageError> {
                encode_body(self)
            }
            fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
                decode_body(bytes)
            }
        }
    )*};
}

trailed_body!(DayPart, StoredDay);
plain_body!(StoredBucket, StoredDims, StoredTotals);

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;
    use crate::domain::event::{Event, EventType};
    use crate::domain::rollup::Rollup;
    use crate::domain::sketch::LatencySketch;

    #[test]
    fn rollups_round_trip_compactly() {
        let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        let at = |h| Utc.with_ymd_and_hms(2024, 1, 15, h, 0, 0).unwrap();
        let mut sketch = LatencySketch::new();
        (0..10_000).for_each(|i| sketch.add(1.0 + f64::from(i).sqrt() * 7.0));
        let event = Event {
            event_id: "e1".into(),
            event_type: EventType::Request,
            timestamp_ms: at(5).timestamp_millis(),
            healthy: true,
            request_count: 10_000,
            success_count: 10_000,
            error_count: 0,
            total_latency_ms: None,
            min_latency_ms: None,
            max_latency_ms: None,
            latency_sketch: Some(sketch),
            data_transferred_bytes: 0,
            data_received_bytes: 0,
            connection_count: 0,
            concurrent_connections: None,
            dimensions: Default::default(),
            status_counts: None,
            error_message: None,
        };
        let rollup = Rollup::of_events(day, &[event]);
        assert_eq!(rollup.status, [0, 10_000, 0, 0, 0]);
        let stored = StoredDay {
            rollup: rollup.clone(),
            folded: Vec::new(),
        };
        let bytes = stored.encode().unwrap();
        assert!(bytes.len() < 2_000, "rollup is {} bytes", bytes.len());
        let back = StoredDay::decode(&bytes).unwrap().rollup;
        assert_eq!(back, rollup);
        // A day written before v3 (no trailer) still decodes: no status.
        let v2 = StoredDay::decode(&encode_body(&stored).unwrap()).unwrap();
        assert_eq!(v2.rollup.status, [0; 5]);
        assert_eq!(v2.rollup.stats, rollup.stats);
        assert_eq!(back.stats.percentile(0.99), rollup.stats.percentile(0.99));
        assert_eq!(
            back.uptime_buckets(day, None, at(23)),
            rollup.uptime_buckets(day, None, at(23))
        );
    }
}

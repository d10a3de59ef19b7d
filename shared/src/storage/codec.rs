//! Stored bodies: postcard behind a format byte, so a layout change can tell
//! old bodies from new ones.

use crate::error::ApiError;

/// Bodies written by the v1 layout (events, v1 rollups): read by the migration only.
pub const FORMAT_V1: u8 = 1;
/// Bodies of the v2 layout (chunks, days, buckets).
pub const FORMAT_V2: u8 = 2;

pub fn encode_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    encode_with(FORMAT_V2, value)
}

pub fn encode_with<T: serde::Serialize>(format: u8, value: &T) -> Result<Vec<u8>, ApiError> {
    postcard::to_extend(value, vec![format])
        .map_err(|e| ApiError::Internal(format!("encoding a stored body: {e}")))
}

pub fn decode_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    decode_with(FORMAT_V2, bytes)
}

pub fn decode_with<T: serde::de::DeserializeOwned>(
    format: u8,
    bytes: &[u8],
) -> Result<T, ApiError> {
    match bytes.split_first() {
        Some((f, rest)) if *f == format => postcard::from_bytes(rest)
            .map_err(|e| ApiError::Internal(format!("decoding a stored body: {e}"))),
        Some((f, _)) => Err(ApiError::Internal(format!(
            "stored body has format {f}, expected {format}"
        ))),
        None => Err(ApiError::Internal("stored body is empty".into())),
    }
}

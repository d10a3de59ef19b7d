//! An export's body: which format it is in, gzip within the limits, and
//! the decoded request; and the responses in the request's format.

use std::io::Read;

use prost::Message;

use super::proto::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse, Status,
};
use crate::error::ApiError;

/// The largest body accepted as sent (the contract's 1 MiB).
pub const MAX_COMPRESSED_BYTES: usize = 1024 * 1024;
/// The largest body accepted once decompressed (8 MiB).
pub const MAX_DECOMPRESSED_BYTES: usize = 8 * 1024 * 1024;

pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

/// The format of a request, which is also its response's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// From `Content-Type` (parameters ignored); anything else is a 415.
    pub fn of(content_type: Option<&str>) -> Result<Self, ApiError> {
        let media = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match media.as_str() {
            PROTOBUF => Ok(Self::Protobuf),
            JSON => Ok(Self::Json),
            "" => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type is required: {PROTOBUF} or {JSON}."
            ))),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type must be {PROTOBUF} or {JSON}, not '{}'.",
                crate::domain::excerpt(other)
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => PROTOBUF,
            Self::Json => JSON,
        }
    }
}

/// The body's bytes as the exporter encoded them: gunzipped when
/// `Content-Encoding: gzip`, the limits checked as the bytes come (a small
/// gzip bomb is refused after 8 MiB of output, never inflated whole).
pub fn decompress(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    if body.len() > MAX_COMPRESSED_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "The body is {} bytes; at most {MAX_COMPRESSED_BYTES} (1 MiB) are accepted.",
            body.len()
        )));
    }
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| ApiError::invalid("The body is not valid gzip."))?;
            if out.len() > MAX_DECOMPRESSED_BYTES {
                return Err(ApiError::PayloadTooLarge(format!(
                    "The body decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes (8 MiB)."
                )));
            }
            Ok(out)
        }
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding must be gzip or identity, not '{}'.",
            crate::domain::excerpt(other)
        ))),
    }
}

/// The export request, from bytes already decompressed.
pub fn decode(format: Format, bytes: &[u8]) -> Result<ExportMetricsServiceRequest, ApiError> {
    match format {
        Format::Protobuf => ExportMetricsServiceRequest::decode(bytes).map_err(|e| {
            ApiError::invalid(format!(
                "The body is not a valid protobuf ExportMetricsServiceRequest: {e}."
            ))
        }),
        // An object: serde would also read a struct from an array (`[null]`).
        Format::Json if bytes.trim_ascii_start().first() != Some(&b'{') => Err(ApiError::invalid(
            "The body is not a valid OTLP/JSON ExportMetricsServiceRequest: a JSON object is expected.",
        )),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::invalid(format!(
                "The body is not a valid OTLP/JSON ExportMetricsServiceRequest: {e}."
            ))
        }),
    }
}

/// The body of a 200: `ExportMetricsServiceResponse`, with `partialSuccess`
/// when points were refused or metrics ignored. JSON adds the contract's
/// `timestamp` and `tier` (OTLP clients ignore unknown fields).
pub fn success_body(
    format: Format,
    rejected: u64,
    message: Option<String>,
    envelope: (&str, &str),
) -> Vec<u8> {
    let partial = (rejected > 0 || message.is_some()).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: message.unwrap_or_default(),
    });
    match format {
        Format::Protobuf => ExportMetricsServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        Format::Json => {
            let mut body = serde_json::Map::new();
            if let Some(p) = partial {
                // int64 as a string, as the protobuf JSON mapping writes it.
                body.insert(
                    "partialSuccess".into(),
                    serde_json::json!({
                        "rejectedDataPoints": p.rejected_data_points.to_string(),
                        "errorMessage": p.error_message,
                    }),
                );
            }
            body.insert("timestamp".into(), envelope.0.into());
            body.insert("tier".into(), envelope.1.into());
            serde_json::Value::Object(body).to_string().into_bytes()
        }
    }
}

/// The gRPC code of an error status (`google.rpc.Code`).
fn grpc_code(status: u16) -> i32 {
    match status {
        400 | 413 | 415 => 3, // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 5,             // NOT_FOUND
        429 => 8,             // RESOURCE_EXHAUSTED
        503 => 14,            // UNAVAILABLE
        _ => 13,              // INTERNAL
    }
}

/// An error for a protobuf request: `google.rpc.Status`, same status and
/// `Retry-After` as the JSON error.
pub fn status_body(error: &ApiError, request_id: Option<&str>) -> Vec<u8> {
    let body = error.body(request_id);
    Status {
        code: grpc_code(error.status()),
        message: body.message,
        details: Vec::new(),
    }
    .encode_to_vec()
}

//! The one error type every handler returns, and its single mapping to HTTP.
//!
//! Messages are written for the API's users: they never carry SDK dumps,
//! table names or stack traces. Internal details go to the log only.

/// Seconds a client is told to wait after storage was throttled or unavailable.
pub const RETRY_AFTER_SECONDS: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A sequenced batch skipped sequence numbers: the producer must send
    /// `expected` next.
    #[error("The batch skips sequence numbers: the next sequence of this producer is {expected}.")]
    SequenceGap { expected: u64 },
    /// A sequenced batch repeats the producer's last accepted sequence with
    /// a different body: a restarted sender reusing its id.
    #[error(
        "Sequence {sequence} of this producer was already accepted with a different body; a restarted sender must take a new Producer-Id."
    )]
    SequenceConflict { sequence: u64 },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    RangeTooLarge(String),
    /// A body in a format (or encoding) the endpoint does not read (OTLP).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A proxy recording faster than its limit: retry after this many seconds.
    #[error("This proxy is recording faster than its limit; retry after {retry_after} s.")]
    RateLimited { retry_after: u64 },
    /// A caller (token `sub`) sending faster than its own limit.
    #[error("This caller is sending requests faster than its limit; retry after {retry_after} s.")]
    CallerRateLimited { retry_after: u64 },
    /// Storage throttled or unavailable after our own retries.
    #[error("storage unavailable: {0}")]
    ServiceUnavailable(String),
    /// Anything else. The string is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Conflict(_) | Self::SequenceGap { .. } | Self::SequenceConflict { .. } => 409,
            Self::PayloadTooLarge(_) => 413,
            Self::UnsupportedMediaType(_) => 415,
            Self::RangeTooLarge(_) => 422,
            Self::RateLimited { .. } | Self::CallerRateLimited { .. } => 429,
            Self::ServiceUnavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// Seconds a client should wait before retrying, when it should.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::ServiceUnavailable(_) => Some(u64::from(RETRY_AFTER_SECONDS)),
            Self::RateLimited { retry_after } | Self::CallerRateLimited { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The contract's `error` kind and `code`.
    pub fn kind_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest(_) => ("INVALID_REQUEST", "PROXY_METRICS_400"),
            Self::Unauthorized(_) => ("UNAUTHORIZED", "PROXY_METRICS_401"),
            Self::Forbidden(_) => ("FORBIDDEN", "PROXY_METRICS_403"),
            Self::NotFound(_) => ("NOT_FOUND", "PROXY_METRICS_404"),
            Self::Conflict(_) => ("CONFLICT", "PROXY_METRICS_409"),
            Self::SequenceGap { .. } => ("SEQUENCE_GAP", "PROXY_METRICS_409"),
            Self::SequenceConflict { .. } => ("SEQUENCE_CONFLICT", "PROXY_METRICS_409"),
            Self::PayloadTooLarge(_) => ("PAYLOAD_TOO_LARGE", "PROXY_METRICS_413"),
            Self::UnsupportedMediaType(_) => ("UNSUPPORTED_MEDIA_TYPE", "PROXY_METRICS_415"),
            Self::RangeTooLarge(_) => ("RANGE_TOO_LARGE", "PROXY_METRICS_422"),
            Self::RateLimited { .. } | Self::CallerRateLimited { .. } => {
                ("RATE_LIMITED", "PROXY_METRICS_429")
            }
            Self::ServiceUnavailable(_) => ("SERVICE_UNAVAILABLE", "PROXY_METRICS_503"),
            Self::Internal(_) => ("INTERNAL_SERVER_ERROR", "PROXY_METRICS_500"),
        }
    }

    /// The sentence shown to the caller.
    fn public_message(&self) -> String {
        match self {
            Self::ServiceUnavailable(_) => {
                "The metrics store is busy or unavailable; retry after the indicated delay."
                    .to_string()
            }
            Self::Internal(_) => "An unexpected error occurred; it has been logged.".to_string(),
            other => other.to_string(),
        }
    }

    /// The contract's error body; `request_id` is echoed on 500s so an
    /// operator can find the log line (which this also writes).
    pub fn body(&self, request_id: Option<&str>) -> ErrorBody {
        match self {
            Self::Internal(detail) => {
                tracing::error!(request_id, detail = %detail, "internal error");
            }
            Self::ServiceUnavailable(detail) => {
                tracing::warn!(request_id, detail = %detail, "storage unavailable");
            }
            _ => {}
        }
        let (kind, code) = self.kind_and_code();
        ErrorBody {
            error: kind,
            message: self.public_message(),
            code,
            request_id: match self {
                Self::Internal(_) => request_id.map(str::to_string),
                _ => None,
            },
            expected_sequence: match self {
                Self::SequenceGap { expected } => Some(*expected),
                _ => None,
            },
        }
    }

    /// The HTTP response for this error.
    #[cfg(feature = "http")]
    pub fn into_response(
        self,
        request_id: Option<&str>,
    ) -> lambda_http::Response<lambda_http::Body> {
        use lambda_http::{Body, Response};
        let body = serde_json::to_string(&self.body(request_id)).unwrap_or_default();
        let mut builder = Response::builder()
            .status(self.status())
            .header("content-type", "application/json");
        if let Some(seconds) = self.retry_after() {
            builder = builder.header("retry-after", seconds.to_string());
        }
        builder
            .body(Body::Text(body))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

/// `{"error", "message", "code"}`, plus `requestId` on a 500 and
/// `expectedSequence` on a `SEQUENCE_GAP`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_sequence: Option<u64>,
}

impl From<crate::domain::ValidationError> for ApiError {
    fn from(error: crate::domain::ValidationError) -> Self {
        match error {
            crate::domain::ValidationError::Invalid(message) => Self::InvalidRequest(message),
            crate::domain::ValidationError::TooLarge(message) => Self::PayloadTooLarge(message),
        }
    }
}

/// Storage's failures as the contract's errors: the one place they meet.
impl From<crate::storage::StorageError> for ApiError {
    fn from(error: crate::storage::StorageError) -> Self {
        use crate::storage::StorageError as S;
        match error {
            S::Unavailable(detail) => Self::ServiceUnavailable(detail),
            S::TooLarge(message) => Self::PayloadTooLarge(message),
            S::Conflict(message) => Self::Conflict(message),
            S::Corrupt(detail) | S::Internal(detail) => Self::Internal(detail),
        }
    }
}

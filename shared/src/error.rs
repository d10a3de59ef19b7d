//! The one error type every handler returns, and its single mapping to HTTP.
//!
//! Messages are written for the API's users: they never carry SDK dumps,
//! table names or stack traces. Internal details go to the log only.

use lambda_http::{Body, Response, http::StatusCode};
use serde_json::json;

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
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    RangeTooLarge(String),
    /// A proxy recording faster than its limit: retry after this many seconds.
    #[error("This proxy is recording faster than its limit; retry after {retry_after} s.")]
    RateLimited { retry_after: u64 },
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

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::SequenceGap { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RangeTooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::PayloadTooLarge(_) => ("PAYLOAD_TOO_LARGE", "PROXY_METRICS_413"),
            Self::RangeTooLarge(_) => ("RANGE_TOO_LARGE", "PROXY_METRICS_422"),
            Self::RateLimited { .. } => ("RATE_LIMITED", "PROXY_METRICS_429"),
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

    /// The HTTP response for this error; `request_id` is echoed on 500s so an
    /// operator can find the log line.
    pub fn into_response(self, request_id: Option<&str>) -> Response<Body> {
        let (kind, code) = self.kind_and_code();
        let status = self.status();
        match &self {
            Self::Internal(detail) => {
                tracing::error!(request_id, detail = %detail, "internal error");
            }
            Self::ServiceUnavailable(detail) => {
                tracing::warn!(request_id, detail = %detail, "storage unavailable");
            }
            _ => {}
        }
        let mut body = json!({"error": kind, "message": self.public_message(), "code": code});
        if let (Self::Internal(_), Some(id)) = (&self, request_id) {
            body["requestId"] = json!(id);
        }
        if let Self::SequenceGap { expected } = &self {
            body["expectedSequence"] = json!(expected);
        }
        let mut builder = Response::builder()
            .status(status)
            .header("content-type", "application/json");
        match &self {
            Self::ServiceUnavailable(_) => {
                builder = builder.header("retry-after", RETRY_AFTER_SECONDS.to_string());
            }
            Self::RateLimited { retry_after } => {
                builder = builder.header("retry-after", retry_after.to_string());
            }
            _ => {}
        }
        builder
            .body(Body::Text(body.to_string()))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

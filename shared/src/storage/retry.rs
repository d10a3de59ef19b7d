//! Bounded, jittered retries around storage calls, and what counts as
//! retryable: throttling and transient faults are; a request DynamoDB refuses
//! as invalid is not (retrying it could only fail again, so it is a 500 at
//! once rather than a 503 inviting the client to retry forever).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::AttributeValue;
use rand::Rng;

use super::error::StorageError;

/// Attempts at one storage call before answering 503.
pub const MAX_ATTEMPTS: u32 = 6;
const BACKOFF_BASE_MS: u64 = 25;
const BACKOFF_CAP_MS: u64 = 800;

/// Whether a failed call is worth another attempt.
pub enum Failure {
    Retryable(String),
    Fatal(StorageError),
}

const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "TransactionConflictException",
];

/// Cancellation reasons of a transaction that another attempt can get past.
const RETRYABLE_CANCELLATIONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

pub fn classify<E, R>(operation: &str, error: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::Retryable(format!("{operation}: {error:?}"))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("");
            if RETRYABLE_CODES.contains(&code) || code.is_empty() {
                Failure::Retryable(format!("{operation}: {code}"))
            } else {
                Failure::Fatal(StorageError::Internal(format!("{operation}: {error:?}")))
            }
        }
        _ => Failure::Fatal(StorageError::Internal(format!("{operation}: {error:?}"))),
    }
}

/// Full-jitter exponential backoff before attempt `attempt` (1-based).
pub async fn backoff(attempt: u32) {
    let cap = BACKOFF_CAP_MS.min(BACKOFF_BASE_MS << attempt.min(10));
    let wait = rand::rng().random_range(0..=cap);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Runs `call` with bounded, jittered retries; gives up with 503.
pub async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut last = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        match call().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retryable(why)) => {
                tracing::debug!(attempt, why = %why, "retrying storage call");
                last = why;
                if attempt < MAX_ATTEMPTS {
                    backoff(attempt).await;
                }
            }
        }
    }
    Err(StorageError::Unavailable(last))
}

/// One action's reason in a cancelled transaction, with the item as it was
/// when the action asked for it (`ReturnValuesOnConditionCheckFailure`).
#[derive(Debug, Clone)]
pub struct Cancellation {
    pub code: String,
    pub item: Option<HashMap<String, AttributeValue>>,
}

impl Cancellation {
    pub fn condition_failed(&self) -> bool {
        self.code == "ConditionalCheckFailed"
    }
}

/// The per-action reasons of a cancelled transaction, `None` if the error is
/// something else.
pub fn cancellations<R>(error: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<Cancellation>> {
    match error {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancel) => Some(
                cancel
                    .cancellation_reasons()
                    .iter()
                    .map(|r| Cancellation {
                        code: r.code().unwrap_or("None").to_string(),
                        item: r.item().cloned(),
                    })
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}

/// What to do with a cancellation that failed no condition we asked about:
/// retry it if every reason is transient, else give up with a 500.
pub fn cancelled(operation: &str, reasons: &[Cancellation]) -> Failure {
    let codes: Vec<&str> = reasons.iter().map(|r| r.code.as_str()).collect();
    let permanent = codes
        .iter()
        .any(|c| *c != "None" && !RETRYABLE_CANCELLATIONS.contains(c));
    let why = format!("{operation} cancelled: {codes:?}");
    if permanent {
        Failure::Fatal(StorageError::Internal(why))
    } else {
        Failure::Retryable(why)
    }
}

//! What can go wrong in storage, in storage's own terms. The HTTP edge maps
//! it to the contract's errors in one place (`crate::error`).

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Throttled or unavailable after our own retries: worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A write that can never fit DynamoDB's item or transaction limits,
    /// decided before anything was written.
    #[error("{0}")]
    TooLarge(String),
    /// A conditional create found the key taken.
    #[error("{0}")]
    Conflict(String),
    /// Stored data that cannot be decoded (a format this build does not know,
    /// or damage): the item is skipped and quarantined, never guessed at.
    #[error("unreadable stored data: {0}")]
    Corrupt(String),
    /// Anything else (a request DynamoDB refuses as invalid, an encoding bug).
    #[error("storage error: {0}")]
    Internal(String),
}

impl StorageError {
    /// Whether another attempt later may succeed (throttling, outages).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

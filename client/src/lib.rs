//! Proxy-side client of the proxy-metrics API (contract v3).
//!
//! A proxy calls [`Reporter::record`] once per request; the reporter folds
//! requests into one event per 10-second interval and (route, upstream)
//! pair, with its status classes ([`aggregate`] documents every choice) and a background task sends the events as **sequenced
//! batches**: `POST {url}/proxy/metrics/{proxyId}/record` with body
//! `{"events": [...]}` and the headers `Producer-Id` (a fresh UUID per
//! process) and `Producer-Sequence` (0, 1, 2, … per batch).
//!
//! # Delivery
//!
//! - A batch goes every `flush_interval` (60 s), or as soon as 500 events
//!   are ready; at most 500 events and 1 000 000 bytes per batch.
//! - No answer, 5xx, 429, 503 (and 408): the *same* body is retried with the
//!   *same* sequence, after a full-jitter exponential backoff that honours
//!   `Retry-After`, each wait capped (30 s). The server answers a sequence
//!   it has already recorded with 200 and every event `"duplicate"`: an
//!   earlier attempt landed, so the batch counts as sent and nothing is
//!   counted twice.
//!   A `Retry-After` is obeyed past that cap (up to 10 minutes,
//!   `retry::MAX_RETRY_AFTER`), with jitter on top.
//! - 401/403: the token is refused; the batch is kept and retried like a
//!   5xx (counted in `unauthorized`), with the token current at each attempt
//!   ([`Reporter::set_token`]).
//! - 409 `SEQUENCE_CONFLICT` (this sequence was accepted with another
//!   body): logged, dropped as `dropped_conflict`, never retried.
//! - Any other 4xx (and a 409 that is neither): logged, dropped
//!   (`dropped_rejected`), and the next batch takes the next sequence.
//! - Memory is bounded: a fixed number of open intervals, a fixed-capacity
//!   buffer of closed ones (the oldest is dropped and counted when full), and
//!   the one batch in flight.
//!
//! # Sequence gaps
//!
//! `409 {"error": "SEQUENCE_GAP", "expectedSequence": N}` says the server
//! holds this producer's batches up to `N - 1` only, and recorded nothing of
//! this request. The reporter sends **the same body again with sequence
//! `N`**, and numbers the following batches `N + 1`, `N + 2`, …
//!
//! Why this cannot count anything twice: the server's last sequence for a
//! producer only grows, and it records a batch only as `last + 1`. So "last
//! is `N - 1`" means no batch of ours numbered `N` or above was ever
//! recorded — not this batch under its original number (an earlier attempt
//! whose answer was lost would have made last ≥ that number, and the answer
//! would have been "duplicate", not a gap), and not any batch we believe
//! sent (those were acknowledged, so last ≥ their numbers; a gap below them
//! cannot happen). Sequences `N … S - 1` were batches the server refused
//! (dropped as rejected) or never received. Resending under `N` therefore
//! records this batch exactly once.
//!
//! When does it happen? Mostly after a rejected batch: the server does not
//! advance past a batch it refused, while the reporter does (it cannot know
//! whether an *earlier* attempt of that batch landed before, say, a token
//! expired — reusing the number for the next batch could then have that
//! batch acknowledged as a "duplicate" and silently lost; moving on is the
//! safe direction, and the gap answer closes the hole). It can also happen
//! if the server lost its producer state partially. A gap whose expected
//! sequence is not below the batch's own is inconsistent and the batch is
//! dropped as rejected rather than resent under a higher number; a batch
//! re-based more than 3 times in a row is dropped too.
//!
//! # Time
//!
//! Wall-clock time comes from a [`Clock`] ([`SystemClock`] unless the
//! builder is given another): intervals, the 7-day window the server
//! accepts (older observations are dropped as `dropped_stale`), and
//! observations dated more than a minute ahead (re-dated to now).
//! Waiting uses tokio's monotonic timers.

pub mod agent;
pub mod aggregate;
mod batch;
pub mod clock;
mod journal;
mod observation;
mod reporter;
pub mod retry;

pub use batch::Batch;
pub use clock::{Clock, ManualClock, SystemClock};
pub use observation::Observation;
pub use reporter::{Backlog, Config, MAX_BATCH_EVENTS, Reporter, ReporterBuilder, Stats};

/// Why a reporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("a Reporter must be built inside a tokio runtime")]
    NoRuntime,
    #[error("state file: {0}")]
    State(String),
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

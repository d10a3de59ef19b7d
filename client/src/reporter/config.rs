//! The reporter's options and counters, and the checks on them.

use std::time::Duration;

use serde::Serialize;

use crate::Error;

/// The server's largest batch.
pub const MAX_BATCH_EVENTS: usize = 500;
/// The server refuses bodies over 1 MiB; batches stay under this, leaving
/// room for a gateway's own accounting.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1_000_000;
pub(super) const MAX_BODY_BYTES: usize = 1 << 20;
/// The server accepts events up to 7 days old; older ones are dropped here
/// an hour before that, so a batch is not refused whole (and lost) because
/// one of its events crossed the line while it waited.
pub(super) const STALE_AFTER: chrono::Duration = chrono::Duration::hours(7 * 24 - 1);
/// The server accepts events up to 5 minutes ahead of its clock; a time more
/// than this ahead of ours is a broken source clock and is replaced by "now".
pub(super) const FUTURE_SLACK: chrono::Duration = chrono::Duration::minutes(1);
/// How often the task looks for ended intervals.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// How often drops are logged at most (they are counted every time).
pub(super) const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// A batch re-based this many times in a row on `SEQUENCE_GAP` answers is
/// dropped: the server's answers are not converging.
pub(super) const MAX_GAP_REBASES: u32 = 3;
/// At most this much of a response body is read (answers are small; a
/// misbehaving gateway must not make the reporter buffer megabytes).
pub(super) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Options of a [`Reporter`]. `Config::default()` is what
/// [`Reporter::new`] uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How often closed intervals are sent (a full batch goes at once).
    pub flush_interval: Duration,
    /// Closed intervals (events) waiting to be sent. When full, the oldest
    /// is dropped and counted in `dropped_buffer_full`.
    pub buffer_capacity: usize,
    /// Events per batch, 1–500.
    pub max_batch_events: usize,
    /// Body size per batch, at most 1 MiB.
    pub max_batch_bytes: usize,
    /// Latency samples kept per interval (reservoir), at most 10 000.
    pub max_samples_per_interval: usize,
    /// Intervals aggregated at once; past that the oldest closes early
    /// (only replaying old logs or wild timestamps get there).
    pub max_open_intervals: usize,
    /// How long after its end an interval still takes late observations.
    pub close_grace: Duration,
    /// First retry waits up to this (full jitter), doubling per retry …
    pub base_backoff: Duration,
    /// … up to this per wait, a server's `Retry-After` included.
    pub max_backoff: Duration,
    /// Attempts per batch before it is dropped (`dropped_gave_up`); `None`
    /// retries until it is accepted, rejected or the reporter shuts down.
    pub max_attempts: Option<u32>,
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// How long [`Reporter::shutdown`] may take to send what is buffered.
    pub shutdown_timeout: Duration,
    /// When set, an idle reporter (nothing recorded for this long) sends a
    /// healthy event with no requests, so that the server's uptime does not
    /// count a quiet proxy as down. Off by default: only a reporter that
    /// lives inside the proxy knows the proxy is up.
    pub heartbeat: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(60),
            buffer_capacity: 1000,
            max_batch_events: MAX_BATCH_EVENTS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_samples_per_interval: 1000,
            max_open_intervals: 64,
            close_grace: Duration::from_secs(2),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_attempts: None,
            request_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            heartbeat: None,
        }
    }
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_owned()));
        if self.flush_interval.is_zero() {
            return bad("flush_interval must be positive");
        }
        if self.buffer_capacity == 0 {
            return bad("buffer_capacity must be at least 1");
        }
        if !(1..=MAX_BATCH_EVENTS).contains(&self.max_batch_events) {
            return bad("max_batch_events must be 1-500 (the server's limit)");
        }
        if !(1024..=MAX_BODY_BYTES).contains(&self.max_batch_bytes) {
            return bad("max_batch_bytes must be 1 KiB-1 MiB (the server's limit)");
        }
        if self.max_samples_per_interval > crate::aggregate::MAX_SAMPLES_PER_EVENT {
            return bad("max_samples_per_interval must be at most 10000 (the server's limit)");
        }
        if self.max_open_intervals == 0 {
            return bad("max_open_intervals must be at least 1");
        }
        if self.max_backoff.is_zero() || self.base_backoff > self.max_backoff {
            return bad("max_backoff must be positive and at least base_backoff");
        }
        if self.max_attempts == Some(0) {
            return bad("max_attempts must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be positive");
        }
        if self.heartbeat.is_some_and(|h| h.is_zero()) {
            return bad("heartbeat must be positive");
        }
        Ok(())
    }
}

impl Stats {
    /// Observations lost, all causes together (not `left_for_next_run`:
    /// those are delivered by the next run).
    pub fn dropped(&self) -> u64 {
        self.dropped_buffer_full
            + self.dropped_rejected
            + self.dropped_conflict
            + self.dropped_stale
            + self.dropped_gave_up
            + self.dropped_shutdown
    }
}

/// Counters, in **observations** (calls to [`Reporter::record`]) unless
/// said otherwise. Once the reporter has shut down,
/// `recorded = sent + dropped_* + left_for_next_run` exactly; before, the
/// difference is `pending`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Calls to `record()`.
    pub recorded: u64,
    /// Acknowledged by the server (recorded, or found already recorded).
    pub sent: u64,
    /// Lost because the buffer was full (the oldest interval goes first).
    pub dropped_buffer_full: u64,
    /// Lost because the server refused their batch (a 4xx, see `classify`).
    pub dropped_rejected: u64,
    /// Lost because they were older than the server accepts (7 days).
    pub dropped_stale: u64,
    /// Lost because their batch ran out of `max_attempts`.
    pub dropped_gave_up: u64,
    /// Recorded after `shutdown()`, or still unsent at its deadline.
    pub dropped_shutdown: u64,
    /// Lost because the server holds another body under their batch's
    /// sequence (409 `SEQUENCE_CONFLICT`: this producer's numbering and the
    /// server's disagree; see `retry::Outcome::SequenceConflict`).
    pub dropped_conflict: u64,
    /// With a state file: not sent by this run, and not lost — after the
    /// last checkpoint (read again at the next start) or saved batches
    /// (replayed at the next start).
    pub left_for_next_run: u64,
    /// Observations dated more than a minute ahead, re-dated to "now".
    pub restamped_future: u64,
    /// Waiting: in open intervals, the buffer, or the batch in flight.
    pub pending: u64,
    /// Contract events acknowledged.
    pub events_sent: u64,
    /// Batches acknowledged (including duplicates).
    pub batches_sent: u64,
    /// Batches the server answered as already recorded (an earlier attempt
    /// had landed; nothing was counted twice).
    pub duplicates: u64,
    /// Attempts after a batch's first.
    pub retries: u64,
    /// 401/403 answers (the batch was kept and retried).
    pub unauthorized: u64,
    /// `SEQUENCE_GAP` answers (each re-based a batch).
    pub sequence_gaps: u64,
    /// Events in the buffer now, and the most it ever held.
    pub buffered: u64,
    pub buffered_peak: u64,
    /// When a batch was last acknowledged (Unix ms; 0: never).
    pub last_acknowledged_ms: i64,
}

pub(super) fn validate_proxy_id(id: &str) -> Result<(), Error> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "proxy id {id:?} must be 1-128 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

//! The reporter: `record()` folds observations into intervals under a short
//! lock; a background task closes intervals, batches them and sends the
//! batches in order as one idempotent producer.
//!
//! One file a job: `config` (options, counters, the builder), this file (the
//! handle and the state it shares with the task), `transport` (how an
//! attempt goes out), `flush` (the task's loop: closing intervals, when to
//! send) and `delivery` (sending one batch until it is settled).

mod builder;
mod config;
mod delivery;
mod flush;
#[cfg(test)]
mod script;
mod segments;
#[cfg(test)]
mod state_tests;
#[cfg(test)]
mod tests;
mod transport;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::aggregate::{Aggregator, Clean, Interval};
use crate::batch::{ReadyEvent, RingBuffer};
use crate::clock::{Clock, SystemClock};
use crate::{Error, Observation};

pub use builder::ReporterBuilder;
pub use config::{Config, MAX_BATCH_EVENTS, Stats};
use config::{FUTURE_SLACK, STALE_AFTER};
use transport::check_token;

pub(super) struct State {
    aggregator: Aggregator,
    ready: RingBuffer,
    stats: Stats,
    /// Observations of the batch being sent.
    in_flight: u64,
    closed: bool,
    next_event_id: u64,
    /// Last record() or heartbeat, for the heartbeat.
    last_activity_ms: i64,
    /// Checkpoints not yet sent, oldest first: the events before each (in
    /// `ready`, after the previous one's) stand for the source up to it.
    marks: VecDeque<Mark>,
    /// Events in `ready` after the last mark.
    unmarked: usize,
}

/// A source position cut by [`Reporter::checkpoint`].
pub(super) struct Mark {
    /// Events in `ready` between the previous mark and this one.
    events: usize,
    position: serde_json::Value,
}

/// How full the reporter is, for a reader that must pause rather than
/// overflow it (see [`Reporter::backlog`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    /// Closed events waiting to be sent, and the buffer's capacity.
    pub buffered: usize,
    pub capacity: usize,
    /// Intervals still open (each becomes an event when closed).
    pub open: usize,
    /// Events after the last checkpoint (closed and open).
    pub since_checkpoint: usize,
}

impl State {
    /// Serialises a closed interval into the buffer (see [`State::push`]).
    fn queue(&mut self, interval: Interval, producer_id: &str) {
        let id = self.next_event_id(producer_id);
        let event = serialise(&interval, id);
        self.push(event);
    }

    fn next_event_id(&mut self, producer_id: &str) -> String {
        let id = format!("{producer_id}:{}", self.next_event_id);
        self.next_event_id += 1;
        id
    }

    /// Queues a serialised interval; an evicted oldest event is counted as
    /// dropped.
    fn push(&mut self, event: Result<ReadyEvent, u64>) {
        match event {
            Ok(event) => {
                self.unmarked += 1;
                if let Some(old) = self.ready.push(event) {
                    self.stats.dropped_buffer_full += old.observations;
                    // The evicted event was the oldest: it belonged to the
                    // oldest segment still waiting.
                    match self.marks.front_mut() {
                        Some(mark) if mark.events > 0 => mark.events -= 1,
                        _ => self.unmarked = self.unmarked.saturating_sub(1),
                    }
                }
            }
            Err(observations) => self.stats.dropped_rejected += observations,
        }
    }

    fn snapshot(&self) -> Stats {
        let mut s = self.stats;
        s.pending = self.aggregator.pending_observations()
            + self.ready.pending_observations()
            + self.in_flight;
        s.buffered = self.ready.len() as u64;
        s.buffered_peak = self.ready.peak() as u64;
        s
    }
}

/// The contract event of a closed interval as JSON bytes; `Err` holds its
/// observations if it could not be serialised.
pub(super) fn serialise(interval: &Interval, event_id: String) -> Result<ReadyEvent, u64> {
    match serde_json::to_vec(&interval.to_event(Some(event_id))) {
        Ok(json) => Ok(ReadyEvent {
            json,
            observations: interval.observations,
            start_ms: interval.key.start_ms,
        }),
        Err(e) => {
            // Not expected (the event is plain data); never fatal.
            error!(error = %e, "could not serialise an interval; dropped");
            Err(interval.observations)
        }
    }
}

pub(super) struct Shared {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    config: Config,
    producer_id: String,
    /// record() wakes the task when a full batch is ready.
    wake: Notify,
    /// `Some(deadline)` once shutdown has begun.
    deadline: watch::Sender<Option<Instant>>,
    /// Counts [`Reporter::set_token`] calls: a batch refused with 401/403
    /// is retried as soon as the token is renewed, not after its backoff.
    token_renewals: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters and queues:
        // still usable, so carry on rather than poison every later call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sends observations to the proxy-metrics API as pre-aggregated,
/// sequenced batches. Cheap to clone (all clones share one buffer and one
/// background task). Needs a tokio runtime.
///
/// ```no_run
/// # async fn demo() -> Result<(), proxy_metrics_client::Error> {
/// use proxy_metrics_client::{Observation, Reporter};
/// let reporter = Reporter::new("https://api.example.com", "<jwt>", "edge-eu-1")?;
/// reporter.record(Observation::success().latency_ms(12.5).bytes_sent(5120));
/// reporter.record(Observation::failure(Some("upstream timeout".into())).latency_ms(30_000.0));
/// let stats = reporter.shutdown().await; // flushes what is buffered
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

pub(super) struct Inner {
    shared: Arc<Shared>,
    /// Where the source resumes, from the state file.
    resume: Option<serde_json::Value>,
    journaled: bool,
    token: Arc<RwLock<String>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last handle is gone without `shutdown()`: let the task flush
    /// what it has within the shutdown deadline, then end.
    fn drop(&mut self) {
        begin_shutdown(&self.shared);
    }
}

pub(super) fn begin_shutdown(shared: &Shared) {
    shared.lock().closed = true;
    let deadline = Instant::now() + shared.config.shutdown_timeout;
    shared.deadline.send_if_modified(|d| {
        if d.is_none() {
            *d = Some(deadline);
            true
        } else {
            false
        }
    });
    shared.wake.notify_one();
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("producer_id", &self.inner.shared.producer_id)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter with the default [`Config`] sending to `url` (the API base,
    /// e.g. `https://api.example.com`) for proxy `proxy_id` with the bearer
    /// `token`. Call from within a tokio runtime.
    pub fn new(
        url: impl Into<String>,
        token: impl Into<String>,
        proxy_id: impl Into<String>,
    ) -> Result<Self, Error> {
        Self::builder(url, token, proxy_id).build()
    }

    pub fn builder(
        url: impl Into<String>,
        token: impl Into<String>,
        proxy_id: impl Into<String>,
    ) -> ReporterBuilder {
        ReporterBuilder {
            url: url.into(),
            token: token.into(),
            proxy_id: proxy_id.into(),
            config: Config::default(),
            clock: Arc::new(SystemClock),
            dry_run: false,
            state_file: None,
            #[cfg(test)]
            script: None,
        }
    }

    /// Folds one observation into its interval. Never waits on the network
    /// and never grows memory without bound: it takes one short lock, does
    /// O(1) work (O(16) for an error message), and when the buffer of closed
    /// intervals is full the oldest one is dropped and counted.
    pub fn record(&self, observation: Observation) {
        let shared = &self.inner.shared;
        let now = shared.clock.now();
        let mut st = shared.lock();
        st.stats.recorded += 1;
        if st.closed {
            st.stats.dropped_shutdown += 1;
            return;
        }
        let at = match observation.at {
            Some(at) if at > now + FUTURE_SLACK => {
                st.stats.restamped_future += 1;
                now
            }
            Some(at) => at,
            None => now,
        };
        if at < now - STALE_AFTER {
            st.stats.dropped_stale += 1;
            return;
        }
        st.last_activity_ms = now.timestamp_millis();
        if let Some(closed) = st.aggregator.add(Clean::new(observation, at)) {
            st.queue(closed, &shared.producer_id);
            if st.ready.len() >= shared.config.max_batch_events {
                shared.wake.notify_one();
            }
        }
    }

    /// Cuts the source at `position` (opaque here: the agent's file
    /// identity and offset): every open interval is closed, and everything
    /// recorded so far goes out as one *segment* of batches, which only a
    /// reporter with a state file ([`ReporterBuilder::state_file`]) keeps
    /// apart. Its batches are written to the state file before the first
    /// is sent, and `position` is saved once all of them are settled. A
    /// reporter with a state file sends nothing that is not so cut.
    pub fn checkpoint(&self, position: serde_json::Value) {
        let shared = &self.inner.shared;
        let mut st = shared.lock();
        if st.closed {
            return;
        }
        for interval in st.aggregator.close_all() {
            st.queue(interval, &shared.producer_id);
        }
        let events = std::mem::take(&mut st.unmarked);
        st.marks.push_back(Mark { events, position });
        drop(st);
        shared.wake.notify_one();
    }

    /// The buffer's capacity, in events (no lock).
    pub fn backlog_capacity(&self) -> usize {
        self.inner.shared.config.buffer_capacity
    }

    /// How full the buffer is; O(1) under the lock, cheap to call per line.
    pub fn backlog(&self) -> Backlog {
        let st = self.inner.shared.lock();
        let open = st.aggregator.open_len();
        Backlog {
            buffered: st.ready.len(),
            capacity: self.inner.shared.config.buffer_capacity,
            open,
            since_checkpoint: st.unmarked + open,
        }
    }

    /// Where the source resumes, as saved in the state file by an earlier
    /// run (`None` without a state file, or on the first run).
    pub fn resume_position(&self) -> Option<&serde_json::Value> {
        self.inner.resume.as_ref()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.shared.lock().snapshot()
    }

    /// This process's `Producer-Id`.
    pub fn producer_id(&self) -> &str {
        &self.inner.shared.producer_id
    }

    /// Replaces the bearer token (e.g. a short-lived proxy token re-issued);
    /// the next attempt uses it, and a batch waiting to retry after a 401 or
    /// 403 goes at once.
    pub fn set_token(&self, token: impl Into<String>) -> Result<(), Error> {
        let token = token.into();
        check_token(&token)?;
        *self
            .inner
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token;
        self.inner
            .shared
            .token_renewals
            .send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Closes every interval (the current one too), sends everything
    /// buffered within `shutdown_timeout`, then stops the background task.
    /// What could not be sent by then, and anything recorded afterwards, is
    /// counted in `dropped_shutdown`. Idempotent; a second caller waits for
    /// the first to finish.
    pub async fn shutdown(&self) -> Stats {
        let shared = &self.inner.shared;
        begin_shutdown(shared);
        let mut task = self.inner.task.lock().await;
        if let Some(mut handle) = task.take() {
            // The task enforces the deadline itself; this is a safety net
            // should it be stuck somewhere it cannot see the deadline.
            let grace = shared.config.shutdown_timeout + Duration::from_secs(2);
            if tokio::time::timeout(grace, &mut handle).await.is_err() {
                handle.abort();
                let _ = handle.await;
                warn!("reporter task did not stop by its deadline; aborted");
            }
            let mut st = shared.lock();
            let journaled = self.inner.journaled;
            drop_leftovers(&mut st, journaled);
            let stats = st.snapshot();
            info!(
                recorded = stats.recorded,
                sent = stats.sent,
                dropped_buffer_full = stats.dropped_buffer_full,
                dropped_rejected = stats.dropped_rejected,
                dropped_stale = stats.dropped_stale,
                dropped_gave_up = stats.dropped_gave_up,
                dropped_shutdown = stats.dropped_shutdown,
                batches_sent = stats.batches_sent,
                retries = stats.retries,
                "reporter stopped"
            );
        }
        drop(task);
        self.stats()
    }
}

/// Whatever is still held once sending has stopped is lost to this run:
/// count it. With a state file it is not lost (`journaled`): the source is
/// read again from the saved position, the saved batches are replayed.
pub(super) fn drop_leftovers(st: &mut State, journaled: bool) {
    let mut left = st.in_flight;
    st.in_flight = 0;
    left += st
        .aggregator
        .close_all()
        .iter()
        .map(|i| i.observations)
        .sum::<u64>();
    left += st
        .ready
        .drain_all()
        .iter()
        .map(|e| e.observations)
        .sum::<u64>();
    st.marks.clear();
    st.unmarked = 0;
    if journaled {
        st.stats.left_for_next_run += left;
    } else {
        st.stats.dropped_shutdown += left;
    }
}

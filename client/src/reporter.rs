//! The reporter: `record()` folds observations into intervals under a short
//! lock; a background task closes intervals, batches them and sends the
//! batches in order as one idempotent producer.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::aggregate::{Aggregator, Clean, Interval, interval_start};
use crate::batch::{Batch, ReadyEvent, RingBuffer, Sequencer};
use crate::clock::{Clock, SystemClock};
use crate::retry::{Outcome, Reply, backoff, classify, parse_retry_after};
use crate::{Error, Observation};

/// The server's largest batch.
pub const MAX_BATCH_EVENTS: usize = 500;
/// The server refuses bodies over 1 MiB; batches stay under this, leaving
/// room for a gateway's own accounting.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1_000_000;
const MAX_BODY_BYTES: usize = 1 << 20;
/// The server accepts events up to 7 days old; older ones are dropped here
/// an hour before that, so a batch is not refused whole (and lost) because
/// one of its events crossed the line while it waited.
const STALE_AFTER: chrono::Duration = chrono::Duration::hours(7 * 24 - 1);
/// The server accepts events up to 5 minutes ahead of its clock; a time more
/// than this ahead of ours is a broken source clock and is replaced by "now".
const FUTURE_SLACK: chrono::Duration = chrono::Duration::minutes(1);
/// How often the task looks for ended intervals.
const TICK: Duration = Duration::from_secs(1);
/// How often drops are logged at most (they are counted every time).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// A batch re-based this many times in a row on `SEQUENCE_GAP` answers is
/// dropped: the server's answers are not converging.
const MAX_GAP_REBASES: u32 = 3;
/// At most this much of a response body is read (answers are small; a
/// misbehaving gateway must not make the reporter buffer megabytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

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
    fn validate(&self) -> Result<(), Error> {
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

/// Counters, in **observations** (calls to [`Reporter::record`]) unless
/// said otherwise. Once the reporter has shut down,
/// `recorded = sent + dropped_*` exactly; before, the difference is
/// `pending`.
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
    /// `SEQUENCE_GAP` answers (each re-based a batch).
    pub sequence_gaps: u64,
    /// Events in the buffer now, and the most it ever held.
    pub buffered: u64,
    pub buffered_peak: u64,
}

struct State {
    aggregator: Aggregator,
    ready: RingBuffer,
    stats: Stats,
    /// Observations of the batch being sent.
    in_flight: u64,
    closed: bool,
    next_event_id: u64,
    /// Last record() or heartbeat, for the heartbeat.
    last_activity_ms: i64,
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
                if let Some(old) = self.ready.push(event) {
                    self.stats.dropped_buffer_full += old.observations;
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
fn serialise(interval: &Interval, event_id: String) -> Result<ReadyEvent, u64> {
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

struct Shared {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    config: Config,
    producer_id: String,
    /// record() wakes the task when a full batch is ready.
    wake: Notify,
    /// `Some(deadline)` once shutdown has begun.
    deadline: watch::Sender<Option<Instant>>,
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

struct Inner {
    shared: Arc<Shared>,
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

fn begin_shutdown(shared: &Shared) {
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

/// Builds a [`Reporter`] with options other than the defaults.
pub struct ReporterBuilder {
    url: String,
    token: String,
    proxy_id: String,
    config: Config,
    clock: Arc<dyn Clock>,
    dry_run: bool,
    #[cfg(test)]
    script: Option<Arc<script::Script>>,
}

impl ReporterBuilder {
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.config.flush_interval = every;
        self
    }

    pub fn buffer_capacity(mut self, events: usize) -> Self {
        self.config.buffer_capacity = events;
        self
    }

    pub fn max_batch_events(mut self, events: usize) -> Self {
        self.config.max_batch_events = events;
        self
    }

    pub fn max_backoff(mut self, cap: Duration) -> Self {
        self.config.max_backoff = cap;
        self
    }

    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.config.max_attempts = attempts;
        self
    }

    pub fn shutdown_timeout(mut self, deadline: Duration) -> Self {
        self.config.shutdown_timeout = deadline;
        self
    }

    pub fn heartbeat(mut self, every: Option<Duration>) -> Self {
        self.config.heartbeat = every;
        self
    }

    /// Where "now" comes from (the system clock by default).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Print each batch body (one JSON line) to stdout instead of sending
    /// it; every batch then counts as accepted.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    #[cfg(test)]
    fn script(mut self, script: Arc<script::Script>) -> Self {
        self.script = Some(script);
        self
    }

    /// Checks the options and starts the background task on the current
    /// tokio runtime.
    pub fn build(self) -> Result<Reporter, Error> {
        self.config.validate()?;
        validate_proxy_id(&self.proxy_id)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let token = Arc::new(RwLock::new(self.token.clone()));
        let transport = self.transport(&token)?;
        // A fresh producer per process start: the server's sequence state
        // belongs to a producer id, and this process has none of the old
        // one's (contract: "a producer that restarts without its state
        // takes a new Producer-Id").
        let producer_id = uuid::Uuid::new_v4().simple().to_string();
        let now_ms = self.clock.now().timestamp_millis();
        let mut seed = rand::rng();
        let state = State {
            aggregator: Aggregator::new(
                self.config.max_open_intervals,
                self.config.max_samples_per_interval,
                SmallRng::from_rng(&mut seed),
            ),
            ready: RingBuffer::new(self.config.buffer_capacity),
            stats: Stats::default(),
            in_flight: 0,
            closed: false,
            next_event_id: 0,
            last_activity_ms: now_ms,
        };
        let (deadline, deadline_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            clock: self.clock,
            config: self.config,
            producer_id: producer_id.clone(),
            wake: Notify::new(),
            deadline,
        });
        let sender = Sender {
            shared: shared.clone(),
            transport,
            sequencer: Sequencer::new(producer_id),
            rng: SmallRng::from_rng(&mut seed),
            deadline: deadline_rx,
            dropped_logged: 0,
            last_drop_log: None,
        };
        let task = runtime.spawn(sender.run());
        Ok(Reporter {
            inner: Arc::new(Inner {
                shared,
                token,
                task: tokio::sync::Mutex::new(Some(task)),
            }),
        })
    }

    fn transport(&self, token: &Arc<RwLock<String>>) -> Result<Transport, Error> {
        #[cfg(test)]
        if let Some(script) = &self.script {
            return Ok(Transport::Scripted(script.clone()));
        }
        if self.dry_run {
            return Ok(Transport::DryRun);
        }
        let base = reqwest::Url::parse(&self.url)
            .map_err(|e| Error::Config(format!("url {:?}: {e}", self.url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!("url {:?}: not http(s)", self.url)));
        }
        check_token(&self.token)?;
        let endpoint = format!(
            "{}/proxy/metrics/{}/record",
            self.url.trim_end_matches('/'),
            self.proxy_id
        );
        let client = reqwest::Client::builder()
            .timeout(self.config.request_timeout)
            .connect_timeout(self.config.request_timeout.min(Duration::from_secs(5)))
            // A redirected POST may turn into a GET elsewhere: refuse instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("proxy-metrics-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(Transport::Http {
            client,
            endpoint,
            token: token.clone(),
        })
    }
}

fn validate_proxy_id(id: &str) -> Result<(), Error> {
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

fn check_token(token: &str) -> Result<(), Error> {
    if token.is_empty() {
        return Err(Error::Config("token is empty".into()));
    }
    reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map(|_| ())
        .map_err(|_| Error::Config("token holds characters a header cannot carry".into()))
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

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.shared.lock().snapshot()
    }

    /// This process's `Producer-Id`.
    pub fn producer_id(&self) -> &str {
        &self.inner.shared.producer_id
    }

    /// Replaces the bearer token (e.g. a short-lived proxy token re-issued);
    /// the next attempt uses it.
    pub fn set_token(&self, token: impl Into<String>) -> Result<(), Error> {
        let token = token.into();
        check_token(&token)?;
        *self
            .inner
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token;
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
            drop_leftovers(&mut st);
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

/// Whatever is still held once sending has stopped is lost: count it.
fn drop_leftovers(st: &mut State) {
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
    st.stats.dropped_shutdown += left;
}

/// How a batch attempt goes out.
enum Transport {
    Http {
        client: reqwest::Client,
        endpoint: String,
        token: Arc<RwLock<String>>,
    },
    DryRun,
    #[cfg(test)]
    Scripted(Arc<script::Script>),
}

impl Transport {
    async fn send(&self, batch: &Batch) -> Reply {
        match self {
            Transport::Http {
                client,
                endpoint,
                token,
            } => {
                let token = token.read().unwrap_or_else(PoisonError::into_inner).clone();
                let sent = client
                    .post(endpoint)
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("Producer-Id", &batch.producer_id)
                    .header("Producer-Sequence", batch.sequence.to_string())
                    .body(batch.body.clone())
                    .send()
                    .await;
                match sent {
                    Err(e) => Reply::Network(error_chain(&e)),
                    Ok(mut response) => {
                        let status = response.status().as_u16();
                        let retry_after = response
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after);
                        let mut body = Vec::new();
                        // A body cut short still leaves the status, which
                        // is what decides; so read errors end the read only.
                        while body.len() < MAX_RESPONSE_BYTES {
                            match response.chunk().await {
                                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                                Ok(None) | Err(_) => break,
                            }
                        }
                        body.truncate(MAX_RESPONSE_BYTES);
                        Reply::Http {
                            status,
                            retry_after,
                            body,
                        }
                    }
                }
            }
            Transport::DryRun => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let written = out
                    .write_all(&batch.body)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush());
                if let Err(e) = written {
                    warn!(error = %e, "dry run: could not write the batch to stdout");
                }
                Reply::Http {
                    status: 201,
                    retry_after: None,
                    body: Vec::new(),
                }
            }
            #[cfg(test)]
            Transport::Scripted(script) => script.answer(batch),
        }
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// How a batch ended.
enum Settled {
    Accepted {
        duplicate: bool,
    },
    Rejected,
    GaveUp,
    /// The shutdown deadline came first.
    Deadline,
}

/// The background task: closes intervals, builds batches, sends them one at
/// a time, in sequence order.
struct Sender {
    shared: Arc<Shared>,
    transport: Transport,
    sequencer: Sequencer,
    rng: SmallRng,
    deadline: watch::Receiver<Option<Instant>>,
    dropped_logged: u64,
    last_drop_log: Option<Instant>,
}

impl Sender {
    async fn run(mut self) {
        let mut next_flush = Instant::now() + self.shared.config.flush_interval;
        loop {
            let stopping = self.deadline.borrow().is_some();
            if !stopping {
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = tokio::time::sleep(TICK) => {}
                    _ = self.deadline.changed() => {}
                }
            }
            let stopping = self.deadline.borrow().is_some();
            let ready = self.close_intervals(stopping);
            self.log_drops();
            if stopping
                || ready >= self.shared.config.max_batch_events
                || Instant::now() >= next_flush
            {
                let finished = self.send_ready().await;
                next_flush = Instant::now() + self.shared.config.flush_interval;
                if !finished {
                    break;
                }
            }
            if stopping {
                break;
            }
        }
        let mut st = self.shared.lock();
        drop_leftovers(&mut st);
    }

    /// Moves ended intervals (all of them when stopping) to the buffer, adds
    /// a heartbeat when one is due, and returns the buffer's length. The
    /// intervals are serialised between two short locks, not under one long
    /// one, so that `record()` never waits for JSON encoding.
    fn close_intervals(&mut self, all: bool) -> usize {
        let shared = &self.shared;
        let now_ms = shared.clock.now().timestamp_millis();
        let grace_ms = i64::try_from(shared.config.close_grace.as_millis()).unwrap_or(i64::MAX);
        let mut closed = {
            let mut st = shared.lock();
            let mut closed = if all {
                st.aggregator.close_all()
            } else {
                st.aggregator.close_due(now_ms, grace_ms)
            };
            if let Some(every) = shared.config.heartbeat {
                let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
                if !all
                    && closed.is_empty()
                    && st.aggregator.open_len() == 0
                    && now_ms.saturating_sub(st.last_activity_ms) >= every_ms
                {
                    st.last_activity_ms = now_ms;
                    closed.push(Interval::heartbeat(interval_start(now_ms)));
                }
            }
            closed
                .drain(..)
                .map(|i| {
                    let id = st.next_event_id(&shared.producer_id);
                    (i, id)
                })
                .collect::<Vec<_>>()
        };
        let events: Vec<_> = closed
            .drain(..)
            .map(|(interval, id)| serialise(&interval, id))
            .collect();
        let mut st = shared.lock();
        for event in events {
            st.push(event);
        }
        st.ready.len()
    }

    fn log_drops(&mut self) {
        let s = self.shared.lock().snapshot();
        let dropped = s.dropped_buffer_full + s.dropped_stale;
        if dropped > self.dropped_logged
            && self
                .last_drop_log
                .is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY)
        {
            warn!(
                newly_dropped = dropped - self.dropped_logged,
                dropped_buffer_full = s.dropped_buffer_full,
                dropped_stale = s.dropped_stale,
                buffered = s.buffered,
                "observations dropped (buffer full while the API is unreachable, or older than the server accepts)"
            );
            self.dropped_logged = dropped;
            self.last_drop_log = Some(Instant::now());
        }
    }

    /// Sends every batch the buffer holds. False when the shutdown deadline
    /// stopped it.
    async fn send_ready(&mut self) -> bool {
        loop {
            let body = {
                let shared = &self.shared;
                let stale_before = (shared.clock.now() - STALE_AFTER).timestamp_millis();
                let mut st = shared.lock();
                let (body, stale) = st.ready.take_batch(
                    shared.config.max_batch_events,
                    shared.config.max_batch_bytes,
                    stale_before,
                );
                st.stats.dropped_stale += stale.iter().map(|e| e.observations).sum::<u64>();
                if let Some(b) = &body {
                    st.in_flight = b.observations;
                }
                body
            };
            let Some(body) = body else {
                return true;
            };
            let (events, observations) = (body.events as u64, body.observations);
            let (settled, sequence) = self.send(self.sequencer.assign(body)).await;
            let mut st = self.shared.lock();
            st.in_flight = 0;
            match settled {
                Settled::Accepted { duplicate } => {
                    st.stats.sent += observations;
                    st.stats.events_sent += events;
                    st.stats.batches_sent += 1;
                    if duplicate {
                        st.stats.duplicates += 1;
                    }
                }
                Settled::Rejected => st.stats.dropped_rejected += observations,
                Settled::GaveUp => st.stats.dropped_gave_up += observations,
                Settled::Deadline => {
                    st.stats.dropped_shutdown += observations;
                    return false;
                }
            }
            // Rejected batches move the sequence on too: see the crate docs
            // ("Sequence gaps") for why that is the safe direction.
            self.sequencer.settled(sequence);
        }
    }

    /// Sends one batch until it is settled; returns how, and the sequence it
    /// was last sent with (a `SEQUENCE_GAP` answer re-bases it).
    async fn send(&mut self, mut batch: Batch) -> (Settled, u64) {
        let config = &self.shared.config;
        let mut attempts: u32 = 0;
        let mut rebases: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            let reply = tokio::select! {
                biased;
                reply = self.transport.send(&batch) => reply,
                () = until_deadline(&mut self.deadline) => {
                    warn!(sequence = batch.sequence, "shutdown deadline reached while sending a batch");
                    return (Settled::Deadline, batch.sequence);
                }
            };
            match classify(&reply) {
                Outcome::Accepted { duplicate } => {
                    debug!(
                        sequence = batch.sequence,
                        events = batch.events,
                        duplicate,
                        "batch accepted"
                    );
                    return (Settled::Accepted { duplicate }, batch.sequence);
                }
                Outcome::SequenceGap { expected } if expected < batch.sequence => {
                    rebases += 1;
                    self.shared.lock().stats.sequence_gaps += 1;
                    if rebases > MAX_GAP_REBASES {
                        error!(
                            sequence = batch.sequence,
                            expected, "server keeps answering SEQUENCE_GAP; batch dropped"
                        );
                        return (Settled::Rejected, batch.sequence);
                    }
                    // The server has recorded none of this producer's
                    // batches from `expected` on, this one's earlier
                    // attempts included (see the crate docs): send it again
                    // as `expected`, and continue after that.
                    warn!(
                        sequence = batch.sequence,
                        expected,
                        "SEQUENCE_GAP: earlier batches never reached the server; resending this one as the expected sequence"
                    );
                    batch.sequence = expected;
                    attempts = 0;
                }
                Outcome::SequenceGap { expected } => {
                    // Expected at or past what we sent: the server claims to
                    // have it, yet calls it a gap. Inconsistent; resending
                    // under a higher number could record it a second time.
                    error!(
                        sequence = batch.sequence,
                        expected,
                        "SEQUENCE_GAP expecting a sequence not below the batch's; batch dropped"
                    );
                    return (Settled::Rejected, batch.sequence);
                }
                Outcome::Rejected { status, reason } => {
                    error!(
                        sequence = batch.sequence,
                        status,
                        events = batch.events,
                        observations = batch.observations,
                        %reason,
                        "batch rejected by the server; dropped"
                    );
                    return (Settled::Rejected, batch.sequence);
                }
                Outcome::Retry {
                    retry_after,
                    reason,
                } => {
                    if config.max_attempts.is_some_and(|max| attempts >= max) {
                        error!(
                            sequence = batch.sequence,
                            attempts,
                            %reason,
                            "batch still not accepted after max_attempts; dropped"
                        );
                        return (Settled::GaveUp, batch.sequence);
                    }
                    let wait = backoff(
                        attempts,
                        retry_after,
                        config.base_backoff,
                        config.max_backoff,
                        &mut self.rng,
                    );
                    self.shared.lock().stats.retries += 1;
                    warn!(
                        sequence = batch.sequence,
                        attempt = attempts,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        %reason,
                        "batch not accepted; will retry the same batch"
                    );
                    tokio::select! {
                        biased;
                        () = tokio::time::sleep(wait) => {}
                        () = until_deadline(&mut self.deadline) => {
                            warn!(sequence = batch.sequence, "shutdown deadline reached while waiting to retry");
                            return (Settled::Deadline, batch.sequence);
                        }
                    }
                }
            }
        }
    }
}

/// Completes at the shutdown deadline; never before shutdown has begun.
async fn until_deadline(rx: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            Some(at) => {
                tokio::time::sleep_until(at).await;
                return;
            }
            None => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod script {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// A transport that answers from a script and remembers what it got.
    #[derive(Debug, Default)]
    pub struct Script {
        replies: Mutex<VecDeque<Reply>>,
        pub sent: Mutex<Vec<Batch>>,
    }

    impl Script {
        pub fn new(replies: Vec<Reply>) -> Arc<Self> {
            Arc::new(Self {
                replies: Mutex::new(replies.into()),
                sent: Mutex::default(),
            })
        }

        /// The next scripted reply; 201 once the script is exhausted.
        pub fn answer(&self, batch: &Batch) -> Reply {
            self.sent.lock().unwrap().push(batch.clone());
            self.replies
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Reply::Http {
                    status: 201,
                    retry_after: None,
                    body: Vec::new(),
                })
        }

        pub fn sent(&self) -> Vec<Batch> {
            self.sent.lock().unwrap().clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::script::Script;
    use super::*;
    use crate::clock::ManualClock;
    use chrono::{DateTime, TimeZone, Utc};

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 15, 10, 4, 3).unwrap()
    }

    fn http(status: u16, body: &str) -> Reply {
        Reply::Http {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    fn reporter(script: &Arc<Script>, clock: &ManualClock, config: Config) -> Reporter {
        Reporter::builder("http://unused.invalid", "t", "edge-1")
            .config(config)
            .clock(Arc::new(clock.clone()))
            .script(script.clone())
            .build()
            .unwrap()
    }

    fn events_of(b: &Batch) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
        v["events"].as_array().unwrap().clone()
    }

    /// Records one observation in each of `n` consecutive intervals.
    fn record_intervals(r: &Reporter, n: i64) {
        for i in 0..n {
            r.record(
                Observation::success()
                    .at(t0() + chrono::Duration::seconds(10 * i))
                    .bytes_sent(1),
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_are_numbered_from_zero_and_retries_resend_the_same_bytes() {
        let script = Script::new(vec![
            Reply::Network("connection refused".into()),
            http(503, r#"{"error":"SERVICE_UNAVAILABLE"}"#),
            http(201, "{}"),
            http(201, "{}"),
        ]);
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(
            &script,
            &clock,
            Config {
                max_batch_events: 2,
                ..Config::default()
            },
        );
        record_intervals(&r, 3);
        let stats = r.shutdown().await;
        let sent = script.sent();
        let seqs: Vec<u64> = sent.iter().map(|b| b.sequence).collect();
        assert_eq!(seqs, [0, 0, 0, 1]);
        assert_eq!(sent[0].body, sent[1].body);
        assert_eq!(sent[1].body, sent[2].body);
        assert!(sent.iter().all(|b| b.producer_id == r.producer_id()));
        assert_eq!(events_of(&sent[0]).len(), 2);
        assert_eq!(events_of(&sent[3]).len(), 1);
        assert_eq!(stats.recorded, 3);
        assert_eq!(stats.sent, 3);
        assert_eq!(stats.retries, 2);
        assert_eq!(stats.batches_sent, 2);
        assert_eq!(stats.events_sent, 3);
        assert_eq!(stats.pending, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_duplicate_answer_counts_as_sent_and_moves_on() {
        let script = Script::new(vec![
            http(504, ""),
            http(200, r#"{"recorded":0,"duplicates":1}"#),
        ]);
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(&script, &clock, Config::default());
        record_intervals(&r, 1);
        let stats = r.shutdown().await;
        assert_eq!(stats.sent, 1);
        assert_eq!(stats.duplicates, 1);
        assert_eq!(stats.batches_sent, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_batch_is_dropped_and_the_sequence_moves_on() {
        let script = Script::new(vec![http(
            400,
            r#"{"error":"INVALID_REQUEST","message":"bad"}"#,
        )]);
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(
            &script,
            &clock,
            Config {
                max_batch_events: 1,
                ..Config::default()
            },
        );
        record_intervals(&r, 2);
        let stats = r.shutdown().await;
        let seqs: Vec<u64> = script.sent().iter().map(|b| b.sequence).collect();
        assert_eq!(seqs, [0, 1]);
        assert_eq!(stats.dropped_rejected, 1);
        assert_eq!(stats.sent, 1);
        assert_eq!(stats.recorded, stats.sent + stats.dropped_rejected);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sequence_gap_resends_the_same_body_at_the_expected_sequence() {
        // batch 0 rejected (never recorded), so batch 1 meets a gap at 0
        let script = Script::new(vec![
            http(422, "{}"),
            http(
                409,
                r#"{"error":"SEQUENCE_GAP","message":"m","code":"X","expectedSequence":0}"#,
            ),
            http(201, "{}"),
            http(201, "{}"),
        ]);
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(
            &script,
            &clock,
            Config {
                max_batch_events: 1,
                ..Config::default()
            },
        );
        record_intervals(&r, 3);
        let stats = r.shutdown().await;
        let sent = script.sent();
        let seqs: Vec<u64> = sent.iter().map(|b| b.sequence).collect();
        // 0 rejected; 1 → gap → resent as 0; the next batch continues at 1
        assert_eq!(seqs, [0, 1, 0, 1]);
        assert_eq!(sent[1].body, sent[2].body);
        assert_ne!(sent[2].body, sent[3].body);
        assert_eq!(stats.sequence_gaps, 1);
        assert_eq!(stats.sent, 2);
        assert_eq!(stats.dropped_rejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_inconsistent_or_endless_gap_drops_the_batch() {
        let gap = |n: u64| {
            http(
                409,
                &format!(r#"{{"error":"SEQUENCE_GAP","expectedSequence":{n}}}"#),
            )
        };
        let script = Script::new(vec![gap(5)]);
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(&script, &clock, Config::default());
        record_intervals(&r, 1);
        let stats = r.shutdown().await;
        assert_eq!(stats.dropped_rejected, 1);
        assert_eq!(script.sent().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_gives_up() {
        let script = Script::new(vec![http(500, ""), http(500, ""), http(500, "")]);
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(
            &script,
            &clock,
            Config {
                max_attempts: Some(2),
                ..Config::default()
            },
        );
        record_intervals(&r, 1);
        let stats = r.shutdown().await;
        assert_eq!(script.sent().len(), 2);
        assert_eq!(stats.dropped_gave_up, 1);
        assert_eq!(stats.retries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_at_its_deadline_and_counts_what_it_lost() {
        let script = Script::new((0..1000).map(|_| http(503, "")).collect());
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(
            &script,
            &clock,
            Config {
                shutdown_timeout: Duration::from_secs(5),
                ..Config::default()
            },
        );
        record_intervals(&r, 4);
        let started = Instant::now();
        let stats = r.shutdown().await;
        assert!(
            started.elapsed() <= Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(stats.dropped_shutdown, 4);
        assert_eq!(stats.pending, 0);
        // after shutdown, recording only counts
        r.record(Observation::success());
        let stats = r.stats();
        assert_eq!(stats.recorded, 5);
        assert_eq!(stats.dropped_shutdown, 5);
        // a second shutdown is harmless
        assert_eq!(r.shutdown().await.dropped_shutdown, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn intervals_are_sent_every_flush_interval_while_running() {
        let script = Script::new(vec![]);
        let clock = ManualClock::new(t0());
        let r = reporter(&script, &clock, Config::default());
        for s in 0..30 {
            r.record(Observation::success().latency_ms(f64::from(s)));
            clock.advance(chrono::Duration::seconds(1));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(script.sent().is_empty(), "nothing before the first flush");
        clock.advance(chrono::Duration::seconds(31));
        tokio::time::sleep(Duration::from_secs(31)).await;
        let sent = script.sent();
        assert_eq!(sent.len(), 1, "one batch per flush interval");
        let events = events_of(&sent[0]);
        // requests at 10:04:03 … 10:04:32, one a second
        let counts: Vec<u64> = events
            .iter()
            .map(|e| e["metrics"]["requestCount"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, [7, 10, 10, 3]);
        assert_eq!(events[0]["timestamp"], "2024-01-15T10:04:00Z");
        assert_eq!(events[3]["timestamp"], "2024-01-15T10:04:30Z");
        r.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_without_waiting_for_the_flush_interval() {
        let script = Script::new(vec![]);
        // the sixth interval (10:04:50) has not ended yet
        let clock = ManualClock::new(t0() + chrono::Duration::seconds(50));
        let r = reporter(
            &script,
            &clock,
            Config {
                max_batch_events: 5,
                max_open_intervals: 1,
                ..Config::default()
            },
        );
        // one open interval at a time: each new interval closes the previous
        record_intervals(&r, 6);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(script.sent().len(), 1);
        assert_eq!(events_of(&script.sent()[0]).len(), 5);
        r.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn stale_and_future_observations_are_handled_before_the_server_sees_them() {
        let script = Script::new(vec![]);
        let now = t0();
        let clock = ManualClock::new(now);
        let r = reporter(&script, &clock, Config::default());
        r.record(Observation::success().at(now - chrono::Duration::days(8)));
        r.record(Observation::success().at(now + chrono::Duration::hours(2)));
        let stats = r.shutdown().await;
        assert_eq!(stats.dropped_stale, 1);
        assert_eq!(stats.restamped_future, 1);
        assert_eq!(stats.sent, 1);
        let events = events_of(&script.sent()[0]);
        assert_eq!(events[0]["timestamp"], "2024-01-15T10:04:00Z");
    }

    #[tokio::test(start_paused = true)]
    async fn event_ids_are_unique_and_valid() {
        let script = Script::new(vec![]);
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let r = reporter(&script, &clock, Config::default());
        record_intervals(&r, 50);
        r.shutdown().await;
        let events = events_of(&script.sent()[0]);
        let mut ids: Vec<&str> = events
            .iter()
            .map(|e| e["eventId"].as_str().unwrap())
            .collect();
        assert!(ids.iter().all(|id| {
            id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b))
        }));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_reporter_sends_heartbeats_when_asked() {
        let script = Script::new(vec![]);
        let clock = ManualClock::new(t0());
        let r = reporter(
            &script,
            &clock,
            Config {
                heartbeat: Some(Duration::from_secs(60)),
                flush_interval: Duration::from_secs(30),
                ..Config::default()
            },
        );
        for _ in 0..130 {
            clock.advance(chrono::Duration::seconds(1));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        r.shutdown().await;
        let events: Vec<serde_json::Value> = script.sent().iter().flat_map(events_of).collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(
            events
                .iter()
                .all(|e| e["healthy"] == true && e["metrics"]["requestCount"] == 0)
        );
    }

    #[test]
    fn configuration_is_checked() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let bad = |c: Config| {
            Reporter::builder("http://x", "t", "p")
                .config(c)
                .build()
                .is_err()
        };
        assert!(bad(Config {
            max_batch_events: 501,
            ..Config::default()
        }));
        assert!(bad(Config {
            max_batch_bytes: 2 << 20,
            ..Config::default()
        }));
        assert!(bad(Config {
            max_samples_per_interval: 10_001,
            ..Config::default()
        }));
        assert!(bad(Config {
            buffer_capacity: 0,
            ..Config::default()
        }));
        assert!(bad(Config {
            max_attempts: Some(0),
            ..Config::default()
        }));
        assert!(Reporter::new("http://x", "t", "bad id").is_err());
        assert!(Reporter::new("ftp://x", "t", "p").is_err());
        assert!(Reporter::new("http://x", "", "p").is_err());
        assert!(Reporter::new("http://x", "a\nb", "p").is_err());
        assert!(Reporter::new("http://127.0.0.1:9000/", "t", "edge-eu-1").is_ok());
    }

    #[test]
    fn without_a_runtime_building_fails_instead_of_panicking() {
        assert!(matches!(
            Reporter::new("http://x", "t", "p"),
            Err(Error::NoRuntime)
        ));
    }
}

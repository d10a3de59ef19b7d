//! Building a [`Reporter`]: options, then the shared state and the
//! background task.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{Notify, watch};

use super::config::validate_proxy_id;
use super::flush::Sender;
#[cfg(test)]
use super::script;
use super::segments::Journal;
use super::transport::{Transport, check_token};
use super::{Inner, Reporter, Shared, State};
use crate::aggregate::Aggregator;
use crate::batch::{RingBuffer, Sequencer};
use crate::clock::Clock;
use crate::reporter::{Config, Stats};
use crate::{Error, journal};

/// Builds a [`Reporter`] with options other than the defaults.
pub struct ReporterBuilder {
    pub(super) url: String,
    pub(super) token: String,
    pub(super) proxy_id: String,
    pub(super) config: Config,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) dry_run: bool,
    pub(super) state_file: Option<PathBuf>,
    #[cfg(test)]
    pub(super) script: Option<Arc<script::Script>>,
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
    pub(super) fn script(mut self, script: Arc<script::Script>) -> Self {
        self.script = Some(script);
        self
    }

    /// Keep the producer id, the sequence, the source position and the
    /// batches on their way in this file (see the `journal` module), so
    /// that a restart resumes where this run stopped. With it, the reporter
    /// sends only what [`Reporter::checkpoint`] has cut. Ignored in a dry
    /// run (nothing is delivered, so nothing may be marked as delivered).
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
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
        // Without a state file, a fresh producer per process start: the
        // server's sequence state belongs to a producer id, and this process
        // has none of the old one's (contract: "a producer that restarts
        // without its state takes a new Producer-Id"). With one, the saved
        // producer and sequence go on.
        let journal = match (&self.state_file, self.dry_run) {
            (Some(path), false) => Some(self.open_journal(path)?),
            _ => None,
        };
        let producer_id = match &journal {
            Some(j) => j.saved.producer_id.clone(),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let resume = journal.as_ref().and_then(|j| j.saved.resume_at().cloned());
        let journaled = journal.is_some();
        let next_sequence = journal.as_ref().map_or(0, |j| j.next_to_send());
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
            marks: VecDeque::new(),
            unmarked: 0,
        };
        let (deadline, deadline_rx) = watch::channel(None);
        let (token_renewals, token_renewals_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            clock: self.clock,
            config: self.config,
            producer_id: producer_id.clone(),
            wake: Notify::new(),
            deadline,
            token_renewals,
        });
        let sender = Sender {
            shared: shared.clone(),
            transport,
            sequencer: Sequencer::starting_at(producer_id, next_sequence),
            journal,
            rng: SmallRng::from_rng(&mut seed),
            deadline: deadline_rx,
            token_renewals: token_renewals_rx,
            dropped_logged: 0,
            last_drop_log: None,
        };
        let task = runtime.spawn(sender.run());
        Ok(Reporter {
            inner: Arc::new(Inner {
                shared,
                resume,
                journaled,
                token,
                task: tokio::sync::Mutex::new(Some(task)),
            }),
        })
    }

    /// Reads the state file (a fresh producer when there is none) and writes
    /// it back at once: an unwritable state directory fails the start, not
    /// the first checkpoint.
    fn open_journal(&self, path: &Path) -> Result<Journal, Error> {
        let state_error = |e: std::io::Error| Error::State(format!("{}: {e}", path.display()));
        let saved = journal::load(path, &self.proxy_id)
            .map_err(state_error)?
            .unwrap_or_else(|| {
                journal::Saved::fresh(&self.proxy_id, uuid::Uuid::new_v4().simple().to_string())
            });
        journal::store(path, &saved).map_err(state_error)?;
        Ok(Journal {
            path: path.to_owned(),
            saved,
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

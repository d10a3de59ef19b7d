//! The background task's loop: close ended intervals, decide when to send.

use std::sync::Arc;

use rand::rngs::SmallRng;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

use super::config::{DROP_LOG_EVERY, TICK};
use super::segments::Journal;
use super::transport::Transport;
use super::{Shared, drop_leftovers, serialise};
use crate::aggregate::{Interval, interval_start};
use crate::batch::Sequencer;

pub(super) struct Sender {
    pub(super) shared: Arc<Shared>,
    pub(super) transport: Transport,
    pub(super) sequencer: Sequencer,
    /// With a state file: segments only, each written before it is sent.
    pub(super) journal: Option<Journal>,
    pub(super) rng: SmallRng,
    pub(super) deadline: watch::Receiver<Option<Instant>>,
    /// Seen before each attempt; a change ends the wait after a 401/403.
    pub(super) token_renewals: watch::Receiver<u64>,
    pub(super) dropped_logged: u64,
    pub(super) last_drop_log: Option<Instant>,
}

impl Sender {
    pub(super) async fn run(mut self) {
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
            if self.journal.is_some() {
                // Only checkpoints decide what goes: what follows the last
                // one stays unsent, and the source is read again from there.
                self.close_intervals(false);
                self.log_drops();
                if !self.send_segments().await || stopping {
                    break;
                }
                continue;
            }
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
        let journaled = self.journal.is_some();
        let mut st = self.shared.lock();
        drop_leftovers(&mut st, journaled);
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
}

pub(super) async fn until_deadline(rx: &mut watch::Receiver<Option<Instant>>) {
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

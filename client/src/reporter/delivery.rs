//! Delivery: sending each batch until it is settled (accepted, rejected,
//! given up, or out of time), re-basing on `SEQUENCE_GAP`.

use tracing::{debug, error, info, warn};

use super::config::{MAX_GAP_REBASES, STALE_AFTER};
use super::flush::{Sender, until_deadline};
use crate::batch::Batch;
use crate::retry::{Outcome, backoff, classify};

pub(super) enum Settled {
    Accepted {
        duplicate: bool,
    },
    Rejected,
    /// 409 `SEQUENCE_CONFLICT`.
    Conflict,
    GaveUp,
    /// The shutdown deadline came first.
    Deadline,
}

impl Sender {
    /// Sends every batch the buffer holds. False when the shutdown deadline
    /// stopped it.
    pub(super) async fn send_ready(&mut self) -> bool {
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
            self.shared.lock().in_flight = 0;
            if !self.count(&settled, events, observations) {
                self.shared.lock().stats.dropped_shutdown += observations;
                return false;
            }
            // Rejected batches move the sequence on too: see the crate docs
            // ("Sequence gaps") for why that is the safe direction.
            self.sequencer.settled(sequence);
        }
    }

    /// Counts a settled batch; false for [`Settled::Deadline`], which the
    /// caller counts (lost, or left for the next run).
    pub(super) fn count(&self, settled: &Settled, events: u64, observations: u64) -> bool {
        let mut st = self.shared.lock();
        match settled {
            Settled::Accepted { duplicate } => {
                st.stats.sent += observations;
                st.stats.events_sent += events;
                st.stats.batches_sent += 1;
                st.stats.last_acknowledged_ms = self.shared.clock.now().timestamp_millis();
                if *duplicate {
                    st.stats.duplicates += 1;
                }
            }
            Settled::Rejected => st.stats.dropped_rejected += observations,
            Settled::Conflict => st.stats.dropped_conflict += observations,
            Settled::GaveUp => st.stats.dropped_gave_up += observations,
            Settled::Deadline => return false,
        }
        true
    }

    /// Sends one batch until it is settled; returns how, and the sequence it
    /// was last sent with (a `SEQUENCE_GAP` answer re-bases it).
    pub(super) async fn send(&mut self, mut batch: Batch) -> (Settled, u64) {
        let mut attempts: u32 = 0;
        let mut rebases: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            // The token this attempt goes with (or a newer one) counts as
            // seen: only a renewal after it cuts a 401's wait short.
            self.token_renewals.borrow_and_update();
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
                Outcome::Unauthorized { status, reason } => {
                    self.shared.lock().stats.unauthorized += 1;
                    error!(
                        sequence = batch.sequence,
                        status,
                        %reason,
                        "the API refused the token; the batch is kept and retried (an expired token? \
                         the agent re-reads --token-file on change and on SIGHUP)"
                    );
                    if let Some(end) = self
                        .wait_to_retry(&batch, attempts, None, reason, Until::TokenRenewed)
                        .await
                    {
                        return end;
                    }
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
                    // With a state file, the new numbers are saved before
                    // the batch goes out under them.
                    self.rebased(expected);
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
                Outcome::SequenceConflict { reason } => {
                    error!(
                        sequence = batch.sequence,
                        producer_id = %batch.producer_id,
                        events = batch.events,
                        observations = batch.observations,
                        %reason,
                        "SEQUENCE_CONFLICT: the server accepted this sequence with another body; \
                         is this producer's state file shared or restored from an old copy? batch dropped"
                    );
                    return (Settled::Conflict, batch.sequence);
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
                    if let Some(end) = self
                        .wait_to_retry(&batch, attempts, retry_after, reason, Until::Backoff)
                        .await
                    {
                        return end;
                    }
                }
            }
        }
    }

    /// Waits before the next attempt of `batch`; `Some` when it ends here
    /// instead (out of attempts, or the shutdown deadline).
    async fn wait_to_retry(
        &mut self,
        batch: &Batch,
        attempts: u32,
        retry_after: Option<std::time::Duration>,
        reason: String,
        until: Until,
    ) -> Option<(Settled, u64)> {
        let shared = self.shared.clone();
        let config = &shared.config;
        if config.max_attempts.is_some_and(|max| attempts >= max) {
            error!(
                sequence = batch.sequence,
                attempts,
                %reason,
                "batch still not accepted after max_attempts; dropped"
            );
            return Some((Settled::GaveUp, batch.sequence));
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
            () = tokio::time::sleep(wait) => None,
            () = until_deadline(&mut self.deadline) => {
                warn!(sequence = batch.sequence, "shutdown deadline reached while waiting to retry");
                Some((Settled::Deadline, batch.sequence))
            }
            () = token_renewed(&mut self.token_renewals, until) => {
                info!(sequence = batch.sequence, "the token was renewed; retrying now");
                None
            }
        }
    }
}

/// What, besides its backoff, ends the wait before a batch's next attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    Backoff,
    /// The token was refused: a new one is worth trying at once.
    TokenRenewed,
}

/// Resolves when the token changes after the last attempt, if `until` asks
/// for that; otherwise never.
async fn token_renewed(renewals: &mut tokio::sync::watch::Receiver<u64>, until: Until) {
    if until != Until::TokenRenewed || renewals.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

//! Delivery with a state file: the buffer is sent one *segment* at a time
//! (the events up to a [`Reporter::checkpoint`](super::Reporter::checkpoint)),
//! and the state file is written before a segment's first batch goes out
//! (with the batches) and after its last is settled (with the position).
//! The `journal` module says why this makes a crash at any point exact.

use std::path::PathBuf;

use serde_json::Value;
use tracing::{error, info};

use super::config::STALE_AFTER;
use super::flush::Sender;
use crate::batch::Batch;
use crate::journal::{self, Pending, Saved, SavedBatch};

/// The state file and what it holds now.
pub(crate) struct Journal {
    pub path: PathBuf,
    pub saved: Saved,
}

impl Journal {
    /// The sequence the next batch goes out with: the first saved batch's
    /// (replayed first), else the next one.
    pub fn next_to_send(&self) -> u64 {
        self.saved
            .pending
            .as_ref()
            .and_then(|p| p.batches.first())
            .map_or(self.saved.next_sequence, |b| b.sequence)
    }

    fn write(&self) {
        // Not fatal: delivery goes on; only a crash before the next
        // successful write could then replay or re-read less exactly.
        if let Err(e) = journal::store(&self.path, &self.saved) {
            error!(path = %self.path.display(), error = %e, "could not write the state file");
        }
    }
}

impl Sender {
    /// Sends the batches saved by an earlier run (once), then every segment
    /// cut so far. False when the shutdown deadline stopped it.
    pub(super) async fn send_segments(&mut self) -> bool {
        let replay = self.journal.as_mut().and_then(|j| j.saved.pending.take());
        if let Some(pending) = replay {
            let producer = self.sequencer.producer_id().to_owned();
            let batches: Vec<Batch> = pending
                .batches
                .iter()
                .map(|b| b.to_batch(&producer))
                .collect();
            info!(
                batches = batches.len(),
                "replaying the batches the last run saved but may not have delivered"
            );
            if !self.send_segment(batches, pending.position).await {
                return false;
            }
        }
        loop {
            let Some((batches, position)) = self.cut_segment() else {
                return true;
            };
            if !self.send_segment(batches, position).await {
                return false;
            }
        }
    }

    /// Takes the oldest segment out of the buffer as numbered batches.
    fn cut_segment(&mut self) -> Option<(Vec<Batch>, Value)> {
        let shared = &self.shared;
        let stale_before = (shared.clock.now() - STALE_AFTER).timestamp_millis();
        let mut st = shared.lock();
        let mark = st.marks.pop_front()?;
        let mut left = mark.events;
        let mut batches = Vec::new();
        let mut sequence = self.sequencer.next();
        while left > 0 {
            let (body, stale) = st.ready.take_batch(
                shared.config.max_batch_events.min(left),
                shared.config.max_batch_bytes,
                stale_before,
            );
            left = left.saturating_sub(stale.len());
            st.stats.dropped_stale += stale.iter().map(|e| e.observations).sum::<u64>();
            let Some(body) = body else { break };
            left = left.saturating_sub(body.events);
            let mut batch = self.sequencer.assign(body);
            batch.sequence = sequence;
            sequence += 1;
            batches.push(batch);
        }
        st.in_flight = batches.iter().map(|b| b.observations).sum();
        Some((batches, mark.position))
    }

    /// Saves the segment, sends its batches in order, then saves the
    /// position it reaches.
    async fn send_segment(&mut self, mut batches: Vec<Batch>, position: Value) -> bool {
        if !batches.is_empty() {
            self.save_pending(&batches, &position);
        }
        while !batches.is_empty() {
            let batch = batches.remove(0);
            let (events, observations) = (batch.events as u64, batch.observations);
            // What is left of the segment, for a re-base during `send`.
            if let Some(j) = &mut self.journal {
                j.saved.pending = Some(Pending {
                    position: position.clone(),
                    batches: std::iter::once(&batch)
                        .chain(&batches)
                        .map(SavedBatch::of)
                        .collect(),
                });
            }
            let (settled, sequence) = self.send(batch).await;
            {
                let mut st = self.shared.lock();
                st.in_flight = st.in_flight.saturating_sub(observations);
            }
            if !self.count(&settled, events, observations) {
                // Saved: the next start replays them.
                let rest: u64 = batches.iter().map(|b| b.observations).sum();
                self.shared.lock().stats.left_for_next_run += observations + rest;
                return false;
            }
            // Refused batches move the sequence on too (crate docs,
            // "Sequence gaps").
            self.sequencer.settled(sequence);
            // A re-base moved this batch's number: the rest follow it.
            for (i, b) in batches.iter_mut().enumerate() {
                b.sequence = sequence + 1 + i as u64;
            }
        }
        if let Some(j) = &mut self.journal {
            j.saved.position = Some(position);
            j.saved.pending = None;
            j.saved.next_sequence = self.sequencer.next();
            j.write();
        }
        true
    }

    /// Writes the segment's batches (still to be settled) before any of
    /// them goes out under its number.
    fn save_pending(&mut self, batches: &[Batch], position: &Value) {
        let next = self.sequencer.next();
        if let Some(j) = &mut self.journal {
            j.saved.pending = Some(Pending {
                position: position.clone(),
                batches: batches.iter().map(SavedBatch::of).collect(),
            });
            j.saved.next_sequence = batches.last().map_or(next, |b| b.sequence + 1);
            j.write();
        }
    }

    /// A `SEQUENCE_GAP` re-based the batch in flight to `expected`: renumber
    /// it and the rest of its segment, and save that before resending.
    pub(super) fn rebased(&mut self, expected: u64) {
        if let Some(j) = &mut self.journal
            && let Some(p) = &mut j.saved.pending
        {
            for (i, b) in p.batches.iter_mut().enumerate() {
                b.sequence = expected + i as u64;
            }
            j.saved.next_sequence = expected + p.batches.len() as u64;
            j.write();
        }
    }
}

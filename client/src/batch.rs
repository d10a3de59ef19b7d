//! The bounded queue of closed intervals and the sequenced batches built
//! from it.

use std::collections::VecDeque;

/// A closed interval, already serialised (so the queue holds bytes, not
/// structures, and a batch is a concatenation).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReadyEvent {
    pub json: Vec<u8>,
    /// Observations it stands for (0 for a heartbeat).
    pub observations: u64,
    pub start_ms: i64,
}

/// A fixed-capacity FIFO that drops its oldest entry when full: when the API
/// is unreachable for long, the freshest data is the most useful, and memory
/// must not grow with the outage.
#[derive(Debug)]
pub(crate) struct RingBuffer {
    queue: VecDeque<ReadyEvent>,
    capacity: usize,
    peak: usize,
}

impl RingBuffer {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            queue: VecDeque::with_capacity(capacity),
            capacity,
            peak: 0,
        }
    }

    /// Appends `event`; returns the oldest entry when it had to make room.
    pub fn push(&mut self, event: ReadyEvent) -> Option<ReadyEvent> {
        let evicted = if self.queue.len() >= self.capacity {
            self.queue.pop_front()
        } else {
            None
        };
        self.queue.push_back(event);
        self.peak = self.peak.max(self.queue.len());
        evicted
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn peak(&self) -> usize {
        self.peak
    }

    pub fn pending_observations(&self) -> u64 {
        self.queue.iter().map(|e| e.observations).sum()
    }

    pub fn drain_all(&mut self) -> Vec<ReadyEvent> {
        self.queue.drain(..).collect()
    }

    /// Takes the next batch body from the front: at most `max_events` events
    /// and at most `max_bytes` of body. Events that started before
    /// `stale_before_ms` are dropped instead (the server would refuse the
    /// whole batch for one of them); they are returned for counting.
    pub fn take_batch(
        &mut self,
        max_events: usize,
        max_bytes: usize,
        stale_before_ms: i64,
    ) -> (Option<BatchBody>, Vec<ReadyEvent>) {
        const OPEN: &[u8] = b"{\"events\":[";
        const CLOSE: &[u8] = b"]}";
        let mut stale = Vec::new();
        let mut body = Vec::new();
        let mut events = 0;
        let mut observations = 0;
        while let Some(front) = self.queue.front() {
            if front.start_ms < stale_before_ms {
                stale.extend(self.queue.pop_front());
                continue;
            }
            if events >= max_events {
                break;
            }
            let needed = front.json.len()
                + if events == 0 {
                    OPEN.len() + CLOSE.len()
                } else {
                    1
                };
            // A single event always goes (one event is far below 1 MiB: at
            // most 10 000 samples and 1024 characters of message).
            if events > 0 && body.len() + needed > max_bytes {
                break;
            }
            let Some(event) = self.queue.pop_front() else {
                break;
            };
            if events == 0 {
                body.extend_from_slice(OPEN);
            } else {
                body.push(b',');
            }
            body.extend_from_slice(&event.json);
            events += 1;
            observations += event.observations;
        }
        if events == 0 {
            return (None, stale);
        }
        body.extend_from_slice(CLOSE);
        (
            Some(BatchBody {
                body,
                events,
                observations,
            }),
            stale,
        )
    }
}

/// A batch's body, before it has a sequence number.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BatchBody {
    pub body: Vec<u8>,
    pub events: usize,
    pub observations: u64,
}

/// A batch on the wire: the body never changes between attempts; the
/// sequence changes only when the server answers `SEQUENCE_GAP`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub producer_id: String,
    pub sequence: u64,
    pub body: Vec<u8>,
    pub events: usize,
    pub observations: u64,
}

/// Hands out `Producer-Sequence` numbers: 0, 1, 2, … per process, one per
/// batch; after a batch is settled the next one follows *its* (possibly
/// re-based) sequence.
#[derive(Debug)]
pub(crate) struct Sequencer {
    producer_id: String,
    next: u64,
}

impl Sequencer {
    pub fn starting_at(producer_id: String, next: u64) -> Self {
        Self { producer_id, next }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    pub fn assign(&self, body: BatchBody) -> Batch {
        Batch {
            producer_id: self.producer_id.clone(),
            sequence: self.next,
            body: body.body,
            events: body.events,
            observations: body.observations,
        }
    }

    /// The batch that carried `sequence` is settled (accepted, or dropped
    /// after a rejection): the next batch takes `sequence + 1`.
    pub fn settled(&mut self, sequence: u64) {
        self.next = sequence + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize, size: usize) -> ReadyEvent {
        let mut json = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
        while json.len() + 2 < size {
            json.push(b'x');
        }
        json.extend_from_slice(b"\"}");
        ReadyEvent {
            json,
            observations: 10,
            start_ms: i as i64 * 10_000,
        }
    }

    #[test]
    fn a_full_buffer_drops_its_oldest_and_never_grows() {
        let mut b = RingBuffer::new(3);
        for i in 0..3 {
            assert!(b.push(ev(i, 20)).is_none());
        }
        let evicted = b.push(ev(3, 20)).expect("oldest evicted");
        assert_eq!(evicted.start_ms, 0);
        assert_eq!(b.len(), 3);
        for i in 4..100 {
            assert!(b.push(ev(i, 20)).is_some());
            assert!(b.len() <= 3);
        }
        assert_eq!(b.peak(), 3);
        let left: Vec<i64> = b.drain_all().iter().map(|e| e.start_ms).collect();
        assert_eq!(left, [970_000, 980_000, 990_000]);
    }

    #[test]
    fn batches_hold_at_most_max_events_and_are_valid_json() {
        let mut b = RingBuffer::new(2000);
        for i in 0..1203 {
            b.push(ev(i, 30));
        }
        let mut sizes = Vec::new();
        while let (Some(batch), stale) = b.take_batch(500, 1_000_000, 0) {
            assert!(stale.is_empty());
            let v: serde_json::Value = serde_json::from_slice(&batch.body).unwrap();
            let events = v["events"].as_array().unwrap();
            assert_eq!(events.len(), batch.events);
            assert_eq!(batch.observations, 10 * batch.events as u64);
            sizes.push(batch.events);
        }
        assert_eq!(sizes, [500, 500, 203]);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn batches_stay_under_the_byte_limit() {
        let mut b = RingBuffer::new(100);
        for i in 0..50 {
            b.push(ev(i, 10_000));
        }
        let (batch, _) = b.take_batch(500, 95_000, 0);
        let batch = batch.unwrap();
        assert!(batch.body.len() <= 95_000, "{}", batch.body.len());
        assert_eq!(batch.events, 9);
        // even an event bigger than the limit goes alone rather than sticking
        let mut b = RingBuffer::new(10);
        b.push(ev(0, 5_000));
        let (batch, _) = b.take_batch(500, 1_000, 0);
        assert_eq!(batch.unwrap().events, 1);
    }

    #[test]
    fn stale_events_are_dropped_not_batched() {
        let mut b = RingBuffer::new(10);
        for i in 0..5 {
            b.push(ev(i, 20));
        }
        let (batch, stale) = b.take_batch(500, 1_000_000, 20_000);
        assert_eq!(stale.len(), 2);
        assert_eq!(batch.unwrap().events, 3);
        let (batch, stale) = b.take_batch(500, 1_000_000, 0);
        assert!(batch.is_none() && stale.is_empty());
    }

    #[test]
    fn sequences_count_up_per_batch_and_follow_a_rebase() {
        let mut s = Sequencer::starting_at("p".into(), 0);
        let body = || BatchBody {
            body: b"{}".to_vec(),
            events: 1,
            observations: 1,
        };
        let b0 = s.assign(body());
        assert_eq!(b0.sequence, 0);
        s.settled(b0.sequence);
        let b1 = s.assign(body());
        assert_eq!(b1.sequence, 1);
        // the server asked for 0 again (SEQUENCE_GAP): b1 went out as 0
        s.settled(0);
        assert_eq!(s.assign(body()).sequence, 1);
    }
}

//! Where the agent's reader puts its lines: parsed and recorded; every so
//! often a checkpoint (with a state file); and a pause while the reporter's
//! buffer is full — the file is the buffer, as in Fluent Bit and Vector.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::Reporter;
use crate::agent::parse::{self, Format};
use crate::agent::position::Position;
use crate::agent::tail::{Control, Line, Sink};

/// Malformed lines logged one by one before the agent only counts them.
const MALFORMED_LOGGED: u64 = 10;

/// Line counts, bumped by the reading thread.
#[derive(Debug, Default)]
pub struct Lines {
    pub read: AtomicU64,
    pub parsed: AtomicU64,
    pub malformed: AtomicU64,
}

impl Lines {
    /// Read, parsed, malformed.
    pub fn get(&self) -> (u64, u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.parsed.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
        )
    }
}

/// At most 200 characters of a line, for a log message.
fn excerpt(line: &str) -> String {
    let mut s: String = line.chars().take(200).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

pub fn handle_line(line: Line<'_>, format: &Format, reporter: &Reporter, lines: &Lines) {
    lines.read.fetch_add(1, Ordering::Relaxed);
    let problem = match line {
        Line::TooLong => Some(("line too long".to_owned(), String::new())),
        Line::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            match parse::parse_line(format, &text) {
                Ok(Some(record)) => {
                    lines.parsed.fetch_add(1, Ordering::Relaxed);
                    reporter.record(record.to_observation());
                    None
                }
                Ok(None) => None,
                Err(e) => Some((e.0.to_owned(), excerpt(&text))),
            }
        }
    };
    if let Some((reason, text)) = problem {
        let n = lines.malformed.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= MALFORMED_LOGGED {
            warn!(%reason, line = %text, "skipping a malformed log line");
        }
        if n == MALFORMED_LOGGED {
            warn!("further malformed lines are counted, not logged one by one");
        }
    }
}

/// Lines between two looks at the reporter's buffer, at most: a line adds at
/// most one event to the buffer, so between two looks it grows by at most
/// this many, plus the open intervals (which may all close at once).
fn look_every(capacity: usize) -> u32 {
    u32::try_from((capacity / 4).clamp(1, 64)).unwrap_or(64)
}

/// Where the reader's lines go: parsed and recorded; and, every so often, a
/// checkpoint (with a state file), or a pause while the reporter's buffer is
/// full — the file is the buffer, as in Fluent Bit and Vector.
pub struct Feed<'a> {
    pub format: &'a Format,
    pub reporter: &'a Reporter,
    pub lines: &'a Lines,
    pub control: &'a Control,
    /// Checkpoints are taken (a state file is kept).
    pub checkpoints: bool,
    pub every: Duration,
    pub last_cut: Instant,
    pub last_saved: Option<Position>,
    pub since_look: u32,
    pub once: bool,
}

impl Sink for Feed<'_> {
    fn line(&mut self, line: Line<'_>, after: Option<&Position>) {
        handle_line(line, self.format, self.reporter, self.lines);
        self.since_look += 1;
        if self.since_look >= look_every(self.reporter.backlog_capacity()) {
            self.look(after, false);
        }
    }

    fn idle(&mut self, at: Option<&Position>) {
        // The last end the reader will see (--once, or stopping): save it.
        if self.once || self.control.draining() {
            self.checkpoint(at, usize::MAX);
        }
        self.look(at, true);
    }
}

impl Feed<'_> {
    fn look(&mut self, at: Option<&Position>, idle: bool) {
        self.since_look = 0;
        let mut backlog = self.reporter.backlog();
        let cut_at = backlog.capacity.min(crate::MAX_BATCH_EVENTS) / 2;
        let due =
            self.last_cut.elapsed() >= self.every || backlog.since_checkpoint >= cut_at.max(1);
        // The first position is saved at once: should the log rotate before
        // the first checkpoint and the agent be restarted, the next run
        // must know which file it started in.
        let first = self.last_saved.is_none();
        if (due || first) && (idle || backlog.since_checkpoint > 0) {
            self.checkpoint(at, backlog.since_checkpoint);
        }
        // Room must stay for what may come before the next look: the open
        // intervals and one event a line. (An empty buffer is never waited
        // on: sending cannot make more room than that.)
        let full = |b: &crate::Backlog| {
            b.buffered > 0
                && b.buffered + b.open + 2 * look_every(b.capacity) as usize >= b.capacity
        };
        while full(&backlog) && !self.control.stopped() {
            // Full: what waits unsent must be cut to be sent at all.
            self.checkpoint(at, backlog.since_checkpoint);
            std::thread::sleep(Duration::from_millis(20));
            backlog = self.reporter.backlog();
        }
    }

    fn checkpoint(&mut self, at: Option<&Position>, events: usize) {
        let (true, Some(at)) = (self.checkpoints, at) else {
            return;
        };
        if events == 0 && self.last_saved.as_ref() == Some(at) {
            // Nothing new to deliver or to save.
            return;
        }
        match serde_json::to_value(at) {
            Ok(v) => self.reporter.checkpoint(v),
            Err(e) => warn!(error = %e, "could not encode the position"),
        }
        self.last_saved = Some(*at);
        self.last_cut = Instant::now();
    }
}

//! Where the agent's reader puts its lines: parsed and recorded; every so
//! often a checkpoint (with a state file); and a pause while the reporter's
//! buffer is full — the file is the buffer, as in Fluent Bit and Vector.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use crate::agent::parse::{self, Format};
use crate::agent::position::Position;
use crate::agent::route::RouteRules;
use crate::agent::tail::{Control, Line, Sink};
use crate::{Observation, Reporter};

/// Malformed lines logged one by one before the agent only counts them.
const MALFORMED_LOGGED: u64 = 10;

/// Line counts, bumped by the reading thread.
#[derive(Debug, Default)]
pub struct Lines {
    pub read: AtomicU64,
    pub parsed: AtomicU64,
    pub malformed: AtomicU64,
    /// Lines written to a rotated log after its grace period and last read
    /// ([`Sink::lost`]): never read as `read`, dropped with cause
    /// `rotated_away`.
    pub rotated_away: AtomicU64,
    /// Those of them that parse into an observation: the observations
    /// dropped with cause `rotated_away` (beside the reporter's causes).
    pub observations_rotated_away: AtomicU64,
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

    /// Lines, and observations, dropped because their file had rotated away.
    pub fn rotated_away(&self) -> (u64, u64) {
        (
            self.rotated_away.load(Ordering::Relaxed),
            self.observations_rotated_away.load(Ordering::Relaxed),
        )
    }
}

/// Counts a line lost with its rotated file: the line, and the observation
/// it would have been (parsed like any line, but not counted as read).
pub fn count_lost(line: Line<'_>, format: &Format, lines: &Lines) {
    lines.rotated_away.fetch_add(1, Ordering::Relaxed);
    if let Line::Text(bytes) = line
        && let Ok(Some(_)) = parse::parse_line(format, &String::from_utf8_lossy(bytes))
    {
        lines
            .observations_rotated_away
            .fetch_add(1, Ordering::Relaxed);
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

/// Counts and parses one line: the observation it holds, if any, with its
/// route and upstream unless `routes` is `None` (no dimensions).
pub fn parse_one(
    line: Line<'_>,
    format: &Format,
    routes: Option<&RouteRules>,
    lines: &Lines,
) -> Option<Observation> {
    lines.read.fetch_add(1, Ordering::Relaxed);
    let (reason, text) = match line {
        Line::TooLong => ("line too long".to_owned(), String::new()),
        Line::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            match parse::parse_line(format, &text) {
                Ok(Some(record)) => {
                    lines.parsed.fetch_add(1, Ordering::Relaxed);
                    return Some(match routes {
                        Some(routes) => record.to_observation_with(routes),
                        None => record.to_observation(),
                    });
                }
                Ok(None) => return None,
                Err(e) => (e.0.to_owned(), excerpt(&text)),
            }
        }
    };
    let n = lines.malformed.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= MALFORMED_LOGGED {
        warn!(%reason, line = %text, "skipping a malformed log line");
    }
    if n == MALFORMED_LOGGED {
        warn!("further malformed lines are counted, not logged one by one");
    }
    None
}

/// What every tailer shares: the format, the reporter, the counters, and
/// where each log stands. One reporter (one producer id and sequence) for
/// all the logs: the server's duplicate rule works per producer, and a
/// checkpoint cuts every log at once — its position is the map of every
/// log's position, taken under the same lock as the lines are recorded, so
/// that a segment holds exactly the lines before those positions.
pub struct Hub {
    pub format: Format,
    /// How routes are named; `None`: no dimensions are sent.
    pub routes: Option<RouteRules>,
    pub reporter: Reporter,
    pub lines: Arc<Lines>,
    pub control: Arc<Control>,
    /// Checkpoints are taken (a state file is kept).
    pub checkpoints: bool,
    pub every: Duration,
    pub once: bool,
    /// One plain log: its position is saved bare, as before several logs.
    pub single: Option<PathBuf>,
    cut: Mutex<Cut>,
}

struct Cut {
    /// Where each log stands now (after the lines recorded so far).
    now: BTreeMap<PathBuf, Position>,
    /// What the last checkpoint saved.
    saved: Option<BTreeMap<PathBuf, Position>>,
    last_cut: Instant,
}

/// Several logs' positions, as saved in the state file.
#[derive(Serialize, Deserialize)]
struct Files {
    files: BTreeMap<PathBuf, Position>,
}

/// The saved positions, by log path: a map, or (one plain log, or a state
/// file of an earlier version) a bare position.
pub fn decode_positions(saved: &Value, single: Option<&Path>) -> BTreeMap<PathBuf, Position> {
    if let Ok(f) = serde_json::from_value::<Files>(saved.clone()) {
        return f.files;
    }
    match (serde_json::from_value::<Position>(saved.clone()), single) {
        (Ok(at), Some(path)) => BTreeMap::from([(path.to_owned(), at)]),
        _ => BTreeMap::new(),
    }
}

fn encode_positions(
    now: &BTreeMap<PathBuf, Position>,
    single: Option<&Path>,
) -> serde_json::Result<Value> {
    match (single, now.len()) {
        (Some(_), 1) => serde_json::to_value(now.values().next()),
        _ => serde_json::to_value(Files { files: now.clone() }),
    }
}

impl Hub {
    /// `resumed`: the positions saved by an earlier run, kept for the logs
    /// not read yet (a checkpoint before their tailer starts must not
    /// forget them).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        format: Format,
        reporter: Reporter,
        lines: Arc<Lines>,
        control: Arc<Control>,
        checkpoints: bool,
        every: Duration,
        once: bool,
        single: Option<PathBuf>,
        resumed: BTreeMap<PathBuf, Position>,
    ) -> Self {
        Self {
            format,
            routes: None,
            reporter,
            lines,
            control,
            checkpoints,
            every,
            once,
            single,
            cut: Mutex::new(Cut {
                now: resumed,
                saved: None,
                last_cut: Instant::now(),
            }),
        }
    }

    /// Sends each request's route and upstream, named by `routes`.
    pub fn with_routes(mut self, routes: Option<RouteRules>) -> Self {
        self.routes = routes;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Cut> {
        self.cut.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps only the logs `keep` says are still read.
    pub fn retain(&self, keep: impl Fn(&Path) -> bool) {
        self.lock().now.retain(|p, _| keep(p));
    }

    /// A log is done (gone, finished): the next checkpoint forgets it.
    pub fn forget(&self, path: &Path) {
        self.lock().now.remove(path);
    }

    /// Whether some log is being read in this file (device, inode).
    pub fn holds(&self, id: (u64, u64)) -> bool {
        self.lock().now.values().any(|p| (p.dev, p.ino) == id)
    }

    /// Cuts a segment at every log's current position (with a state file),
    /// unless nothing was recorded and no position moved since the last.
    fn checkpoint(&self) {
        if !self.checkpoints {
            return;
        }
        let mut cut = self.lock();
        if cut.now.is_empty() {
            return;
        }
        let events = self.reporter.backlog().since_checkpoint;
        if events == 0 && cut.saved.as_ref() == Some(&cut.now) {
            return;
        }
        match encode_positions(&cut.now, self.single.as_deref()) {
            Ok(v) => self.reporter.checkpoint(v),
            Err(e) => {
                warn!(error = %e, "could not encode the positions");
                return;
            }
        }
        cut.saved = Some(cut.now.clone());
        cut.last_cut = Instant::now();
    }
}

/// Lines between two looks at the reporter's buffer, at most: a line adds at
/// most one event to the buffer, so between two looks it grows by at most
/// this many, plus the open intervals (which may all close at once).
fn look_every(capacity: usize) -> u32 {
    u32::try_from((capacity / 4).clamp(1, 64)).unwrap_or(64)
}

/// Where one tailer's lines go: parsed and recorded with the position after
/// them; and, every so often, a checkpoint (with a state file), or a pause
/// while the reporter's buffer is full — the file is the buffer, as in
/// Fluent Bit and Vector.
pub struct Feed<'a> {
    pub hub: &'a Hub,
    /// The log's path (`None` on stdin).
    pub path: Option<PathBuf>,
    pub since_look: u32,
}

impl<'a> Feed<'a> {
    pub fn new(hub: &'a Hub, path: Option<PathBuf>) -> Self {
        Self {
            hub,
            path,
            since_look: 0,
        }
    }

    fn moved(&self, cut: &mut Cut, at: Option<&Position>) {
        if let (Some(path), Some(at)) = (&self.path, at) {
            match cut.now.get_mut(path) {
                Some(slot) => *slot = *at,
                None => {
                    cut.now.insert(path.clone(), *at);
                }
            }
        }
    }
}

impl Sink for Feed<'_> {
    fn line(&mut self, line: Line<'_>, after: Option<&Position>) {
        let hub = self.hub;
        let observation = parse_one(line, &hub.format, hub.routes.as_ref(), &hub.lines);
        {
            // Recorded and moved on together: a checkpoint sees both or
            // neither.
            let mut cut = hub.lock();
            if let Some(o) = observation {
                hub.reporter.record(o);
            }
            self.moved(&mut cut, after);
        }
        self.since_look += 1;
        if self.since_look >= look_every(hub.reporter.backlog_capacity()) {
            self.look(false);
        }
    }

    fn idle(&mut self, at: Option<&Position>) {
        self.moved(&mut self.hub.lock(), at);
        // The last end the reader will see (--once, or stopping): save it.
        if self.hub.once || self.hub.control.draining() {
            self.hub.checkpoint();
        }
        self.look(true);
    }

    fn lost(&mut self, line: Line<'_>) {
        count_lost(line, &self.hub.format, &self.hub.lines);
    }
}

impl Feed<'_> {
    fn look(&mut self, idle: bool) {
        self.since_look = 0;
        let hub = self.hub;
        let mut backlog = hub.reporter.backlog();
        let cut_at = backlog.capacity.min(crate::MAX_BATCH_EVENTS) / 2;
        let (due, first) = {
            let cut = hub.lock();
            let due =
                cut.last_cut.elapsed() >= hub.every || backlog.since_checkpoint >= cut_at.max(1);
            // A log's first position is saved at once: should it rotate
            // before the first checkpoint and the agent be restarted, the
            // next run must know which file it started in.
            let first = match (&self.path, &cut.saved) {
                (Some(p), Some(saved)) => !saved.contains_key(p) && cut.now.contains_key(p),
                (_, None) => true,
                (None, Some(_)) => false,
            };
            (due, first)
        };
        if (due || first) && (idle || backlog.since_checkpoint > 0) {
            hub.checkpoint();
        }
        // Room must stay for what may come before the next look: the open
        // intervals and one event a line. (An empty buffer is never waited
        // on: sending cannot make more room than that.)
        let full = |b: &crate::Backlog| {
            b.buffered > 0
                && b.buffered + b.open + 2 * look_every(b.capacity) as usize >= b.capacity
        };
        while full(&backlog) && !hub.control.stopped() {
            // Full: what waits unsent must be cut to be sent at all.
            hub.checkpoint();
            std::thread::sleep(Duration::from_millis(20));
            backlog = hub.reporter.backlog();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::position::Fingerprint;

    fn at(offset: u64) -> Position {
        Position {
            dev: 1,
            ino: 2,
            fingerprint: Fingerprint { len: 3, hash: 4 },
            offset,
        }
    }

    /// Lines lost with a rotated file are counted as such, with the
    /// observations they would have been, and not as lines read.
    #[test]
    fn a_line_lost_with_its_rotated_file_is_counted_as_a_drop_not_as_read() {
        let lines = Lines::default();
        let good = br#"10.0.0.1 - - [15/Jan/2024:10:04:05 +0000] "GET / HTTP/1.1" 502 552 "-" "curl/8" 0.1"#;
        count_lost(Line::Text(good), &Format::Nginx, &lines);
        count_lost(
            Line::Text(b"10.0.0.1 - - [15/Jan/2"),
            &Format::Nginx,
            &lines,
        );
        count_lost(Line::TooLong, &Format::Nginx, &lines);
        count_lost(Line::Text(b""), &Format::Nginx, &lines);
        assert_eq!(lines.rotated_away(), (4, 1), "4 lines, 1 of them a request");
        assert_eq!(lines.get(), (0, 0, 0), "none of them was read");
    }

    #[test]
    fn one_plain_log_saves_a_bare_position_and_several_a_map_by_path() {
        let a = PathBuf::from("/var/log/a.log");
        let one = BTreeMap::from([(a.clone(), at(10))]);
        let bare = encode_positions(&one, Some(&a)).unwrap();
        assert_eq!(bare["offset"], 10, "as before several logs: {bare}");
        assert_eq!(decode_positions(&bare, Some(&a)), one);
        // a bare position without one plain log to give it to: none
        assert!(decode_positions(&bare, None).is_empty());
        let two = BTreeMap::from([(a.clone(), at(10)), ("/var/log/b.log".into(), at(20))]);
        let map = encode_positions(&two, None).unwrap();
        assert_eq!(map["files"]["/var/log/b.log"]["offset"], 20);
        assert_eq!(decode_positions(&map, None), two);
        // a map read back by a single plain log (the arguments changed)
        assert_eq!(decode_positions(&map, Some(&a)), two);
    }
}

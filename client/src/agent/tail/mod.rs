//! Reading an access log line by line: stdin, a file once, or a file
//! followed like `tail -F` across rotation.
//!
//! Plain polling (every `poll`, 250 ms by default) rather than inotify: it
//! works on every filesystem (NFS, overlay, bind mounts in containers), costs
//! one `stat` per poll, and needs no dependency. Rotation:
//!
//! - **rename + create** (logrotate's default, `mv` + nginx's reopen): the
//!   path now names another file (device/inode differ). The old file is
//!   still read for `rotate_wait` (10 s, like Fluent Bit's `Rotate_Wait`):
//!   nginx writes to it until its workers have reopened their logs. Then
//!   it is read one last time to its end (what was written since the last
//!   poll is delivered), its last partial line (if any) is taken as a line
//!   and the new file is read from its start. The old file stays open,
//!   unread, until the next rotation or the reader's end: whatever is still
//!   written to it after that last read is read only to be counted as lost
//!   ([`Sink::lost`]), never silently gone.
//! - **copytruncate**: the file shrank below what was read, or its first
//!   bytes changed (it was truncated and written past our offset between
//!   two polls); read it again from its start. Lines written between
//!   logrotate's copy and its truncate are lost (that is copytruncate's own
//!   race, not something a reader can recover).
//!
//! Every line comes with the [`Position`] after it, and the sink hears when
//! the reader is at the end of what is written ([`Sink::idle`]): that is
//! where the agent checkpoints. A partial last line waits for its newline
//! (reading resumes at its start), except on stdin's end or a rotated-away
//! file's.
//!
//! Memory is bounded: one read buffer and one partial line of at most
//! `max_line_bytes`; a longer line is reported as [`Line::TooLong`] and
//! skipped up to its newline.

mod follow;
#[cfg(test)]
mod model_tests;
mod split;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tracing::info;

use crate::agent::position::Position;
use split::Splitter;

pub(super) const READ_BUFFER: usize = 64 * 1024;

/// Where the lines come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Stdin,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct TailOptions {
    /// Read a file from its beginning instead of its current end.
    pub from_start: bool,
    /// Keep following a file at its end (false: stop at the first end).
    pub follow: bool,
    pub poll: Duration,
    pub max_line_bytes: usize,
    /// Where an earlier run stopped (from the state file): wins over
    /// `from_start` when its file is still there.
    pub resume: Option<Position>,
    /// How long a renamed log is still read after the path names a new file.
    pub rotate_wait: Duration,
    /// End once the path has named no file for `rotate_wait` (a file a
    /// glob matched, deleted or renamed out of the pattern): the file held
    /// is read until then, and its partial last line taken. Otherwise the
    /// path is waited for, like `tail -F`.
    pub finish_when_gone: bool,
    /// The file the path named when the agent started, opened before
    /// anything slow (the start-up check of the API): read instead of what
    /// the path names once reading starts, so that a rotation in between is
    /// followed (the old file finished, then the new one read) rather than
    /// the old file skipped unread.
    pub opened: Option<std::sync::Arc<File>>,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            from_start: false,
            follow: true,
            poll: Duration::from_millis(250),
            max_line_bytes: 64 * 1024,
            resume: None,
            rotate_wait: Duration::from_secs(10),
            finish_when_gone: false,
            opened: None,
        }
    }
}

/// Lets another thread end the reading.
#[derive(Debug, Default)]
pub struct Control(AtomicU8);

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const STOP: u8 = 2;

impl Control {
    /// Read what is already written, up to the current end, then return.
    pub fn drain(&self) {
        let _ = self
            .0
            .compare_exchange(RUN, DRAIN, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Return as soon as possible.
    pub fn stop(&self) {
        self.0.store(STOP, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.0.load(Ordering::SeqCst) != RUN
    }

    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst) == STOP
    }
}

/// What the reader hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line without its `\n` (and `\r`).
    Text(&'a [u8]),
    /// A line longer than `max_line_bytes`, skipped.
    TooLong,
}

/// Where the lines go.
pub trait Sink {
    /// One line, and the position after it (`None` on stdin). May block:
    /// reading then waits, and the file holds what is not read yet.
    fn line(&mut self, line: Line<'_>, after: Option<&Position>);
    /// The reader is at the end of what is written, at `at` (a line's
    /// start). Called before each poll's wait.
    fn idle(&mut self, _at: Option<&Position>) {}
    /// A line written to a rotated file after its grace period ended and
    /// its last read (a proxy that never reopened its log): it cannot be
    /// delivered any more — the position has moved to the new file — only
    /// counted as lost.
    fn lost(&mut self, _line: Line<'_>) {}
}

impl<F: FnMut(Line<'_>)> Sink for F {
    fn line(&mut self, line: Line<'_>, _: Option<&Position>) {
        self(line)
    }
}

/// Reads `source` and hands every line to `sink` until the input ends
/// (stdin, or a file without `follow`), `control` says so, or an I/O error.
pub fn run(
    source: &Source,
    options: &TailOptions,
    control: &Control,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    match source {
        Source::Stdin => read_to_end(&mut io::stdin().lock(), options, control, sink),
        Source::File(path) => follow::follow_file(path, options, control, sink),
    }
}

pub(super) fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn read_to_end(
    reader: &mut dyn Read,
    options: &TailOptions,
    control: &Control,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    let mut splitter = Splitter::new(options.max_line_bytes);
    let mut buf = vec![0; READ_BUFFER];
    let mut out = |line: Line<'_>, _: u64| sink.line(line, None);
    while !control.stopped() {
        let n = read_some(reader, &mut buf)?;
        if n == 0 {
            break;
        }
        splitter.feed(&buf[..n], &mut out);
    }
    splitter.finish(&mut out);
    Ok(())
}

/// Opens `path`. When following, a file that does not exist yet (the proxy
/// has not written its first line, a sidecar started first) is waited for,
/// like `tail -F`; `true` says it had to be waited for. `None` when asked
/// to stop meanwhile.
pub(super) fn open_when_there(
    path: &std::path::Path,
    options: &TailOptions,
    control: &Control,
) -> io::Result<Option<(File, bool)>> {
    let mut waited = false;
    loop {
        match File::open(path) {
            Ok(file) => return Ok(Some((file, waited))),
            Err(e) if e.kind() == io::ErrorKind::NotFound && options.finish_when_gone => {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && options.follow => {
                if control.draining() {
                    return Ok(None);
                }
                if !waited {
                    info!(path = %path.display(), "log file does not exist yet; waiting for it");
                    waited = true;
                }
                std::thread::sleep(options.poll);
            }
            Err(e) => return Err(e),
        }
    }
}

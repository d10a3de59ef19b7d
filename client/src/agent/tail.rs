//! Reading an access log line by line: stdin, a file once, or a file
//! followed like `tail -F` across rotation.
//!
//! Plain polling (every `poll`, 250 ms by default) rather than inotify: it
//! works on every filesystem (NFS, overlay, bind mounts in containers), costs
//! one `stat` per poll, and needs no dependency. Rotation:
//!
//! - **rename + create** (logrotate's default, nginx's `USR1` reopen): the path
//!   now names another file (device/inode differ). The old file is read to
//!   its end first — the proxy may have written to it after our last read —
//!   then the new one from its start.
//! - **copytruncate**: the file shrank below our position; read it again
//!   from its start. Lines written between logrotate's copy and its truncate
//!   are lost (that is copytruncate's own race, not something a reader can
//!   recover).
//!
//! Memory is bounded: one read buffer and one partial line of at most
//! `max_line_bytes`; a longer line is reported as [`Line::TooLong`] and
//! skipped up to its newline.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tracing::info;

const READ_BUFFER: usize = 64 * 1024;

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
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            from_start: false,
            follow: true,
            poll: Duration::from_millis(250),
            max_line_bytes: 64 * 1024,
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

    fn draining(&self) -> bool {
        self.0.load(Ordering::SeqCst) != RUN
    }

    fn stopped(&self) -> bool {
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

/// Cuts a byte stream into lines, keeping at most one partial line.
struct Splitter {
    pending: Vec<u8>,
    overlong: bool,
    max: usize,
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Splitter {
    fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            overlong: false,
            max,
        }
    }

    fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(Line<'_>)) {
        for piece in data.split_inclusive(|b| *b == b'\n') {
            let complete = piece.last() == Some(&b'\n');
            let body = if complete {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if !self.overlong {
                if self.pending.len() + body.len() > self.max {
                    self.overlong = true;
                    self.pending = Vec::new();
                    out(Line::TooLong);
                } else if complete && self.pending.is_empty() {
                    out(Line::Text(strip_cr(body)));
                } else {
                    self.pending.extend_from_slice(body);
                    if complete {
                        out(Line::Text(strip_cr(&self.pending)));
                        self.pending.clear();
                    }
                }
            }
            if complete {
                self.overlong = false;
            }
        }
    }

    /// The input ended: a last line without a newline is still a line.
    fn finish(&mut self, out: &mut dyn FnMut(Line<'_>)) {
        if !self.pending.is_empty() && !self.overlong {
            out(Line::Text(strip_cr(&self.pending)));
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.pending.clear();
        self.overlong = false;
    }
}

/// Reads `source` and hands every line to `out` until the input ends
/// (stdin, or a file without `follow`), `control` says so, or an I/O error.
pub fn run(
    source: &Source,
    options: &TailOptions,
    control: &Control,
    out: &mut dyn FnMut(Line<'_>),
) -> io::Result<()> {
    match source {
        Source::Stdin => read_to_end(&mut io::stdin().lock(), options, control, out),
        Source::File(path) => follow_file(path, options, control, out),
    }
}

fn read_some(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
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
    out: &mut dyn FnMut(Line<'_>),
) -> io::Result<()> {
    let mut splitter = Splitter::new(options.max_line_bytes);
    let mut buf = vec![0; READ_BUFFER];
    while !control.stopped() {
        let n = read_some(reader, &mut buf)?;
        if n == 0 {
            break;
        }
        splitter.feed(&buf[..n], out);
    }
    splitter.finish(out);
    Ok(())
}

/// What tells two files apart: device and inode.
#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Opens `path`. When following, a file that does not exist yet (the proxy
/// has not written its first line, a sidecar started first) is waited for,
/// like `tail -F`; `true` says it had to be waited for. `None` when asked
/// to stop meanwhile.
fn open_when_there(
    path: &std::path::Path,
    options: &TailOptions,
    control: &Control,
) -> io::Result<Option<(File, bool)>> {
    let mut waited = false;
    loop {
        match File::open(path) {
            Ok(file) => return Ok(Some((file, waited))),
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

fn follow_file(
    path: &std::path::Path,
    options: &TailOptions,
    control: &Control,
    out: &mut dyn FnMut(Line<'_>),
) -> io::Result<()> {
    let Some((mut file, created)) = open_when_there(path, options, control)? else {
        return Ok(());
    };
    let mut id = identity(&file.metadata()?);
    // A file that appeared while we waited is new: all of it is unread.
    let mut pos = if options.from_start || created {
        0
    } else {
        file.seek(SeekFrom::End(0))?
    };
    let mut splitter = Splitter::new(options.max_line_bytes);
    let mut buf = vec![0; READ_BUFFER];
    loop {
        if control.stopped() {
            return Ok(());
        }
        let n = read_some(&mut file, &mut buf)?;
        if n > 0 {
            pos += n as u64;
            splitter.feed(&buf[..n], out);
            continue;
        }
        if !options.follow || control.draining() {
            splitter.finish(out);
            return Ok(());
        }
        std::thread::sleep(options.poll);
        match std::fs::metadata(path) {
            Ok(m) if identity(&m) != id => {
                // Rotated by rename: finish the old file, then switch.
                loop {
                    let n = read_some(&mut file, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    splitter.feed(&buf[..n], out);
                }
                splitter.finish(out);
                match File::open(path) {
                    Ok(new) => {
                        id = identity(&new.metadata()?);
                        file = new;
                        pos = 0;
                        info!(path = %path.display(), "log rotated; following the new file from its start");
                    }
                    // Renamed away again before we opened it: next poll.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(m) if m.len() < pos => {
                file.seek(SeekFrom::Start(0))?;
                pos = 0;
                splitter.reset();
                info!(path = %path.display(), "log truncated (copytruncate); reading it from its start");
            }
            // Unchanged, or renamed away and not re-created yet: keep
            // reading the file we hold.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::mpsc;

    fn lines_of(chunks: &[&[u8]], max: usize) -> Vec<Option<String>> {
        let mut s = Splitter::new(max);
        let mut got = Vec::new();
        let mut out = |l: Line<'_>| {
            got.push(match l {
                Line::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                Line::TooLong => None,
            })
        };
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        got
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        assert_eq!(
            lines_of(&[b"ab", b"c\r\nde\n", b"\nf"], 100),
            [
                Some("abc".into()),
                Some("de".into()),
                Some(String::new()),
                Some("f".into())
            ]
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_to_its_newline_with_bounded_memory() {
        let long = vec![b'x'; 50];
        assert_eq!(
            lines_of(&[b"ok\n", &long, &long, b"tail\nnext\n"], 64),
            [Some("ok".into()), None, Some("next".into())]
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pm-tail-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs a follower on `path` in a thread; returns its lines as they come.
    fn follow(
        path: PathBuf,
        from_start: bool,
    ) -> (
        Arc<Control>,
        mpsc::Receiver<String>,
        std::thread::JoinHandle<io::Result<()>>,
    ) {
        let control = Arc::new(Control::default());
        let (tx, rx) = mpsc::channel();
        let c = control.clone();
        let handle = std::thread::spawn(move || {
            let options = TailOptions {
                from_start,
                poll: Duration::from_millis(20),
                ..TailOptions::default()
            };
            run(&Source::File(path), &options, &c, &mut |l| {
                if let Line::Text(t) = l {
                    let _ = tx.send(String::from_utf8_lossy(t).into_owned());
                }
            })
        });
        (control, rx, handle)
    }

    fn next(rx: &mpsc::Receiver<String>) -> String {
        rx.recv_timeout(Duration::from_secs(10)).expect("a line")
    }

    fn append(path: &std::path::Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn follows_from_the_end_then_across_rename_and_copytruncate() {
        let dir = temp_dir("rotate");
        let log = dir.join("access.log");
        append(&log, "old line\n");
        let (control, rx, handle) = follow(log.clone(), false);
        // Probe until the follower has opened the file and sought to its
        // end (whenever a loaded machine gets round to it); "old line"
        // must never show up.
        for i in 0.. {
            append(&log, &format!("probe {i}\n"));
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                assert!(line.starts_with("probe"), "{line}");
                break;
            }
        }
        append(&log, "one\n");
        let line = std::iter::repeat_with(|| next(&rx))
            .find(|l| !l.starts_with("probe"))
            .unwrap();
        assert_eq!(line, "one");

        // rename + create, with a line written to the old file after the rename
        std::fs::rename(&log, dir.join("access.log.1")).unwrap();
        append(&dir.join("access.log.1"), "late in old\n");
        append(&log, "first in new\n");
        assert_eq!(next(&rx), "late in old");
        assert_eq!(next(&rx), "first in new");

        // copytruncate; the new content is shorter than what was read, so
        // the follower sees the file shrink whenever it looks
        std::fs::write(&log, "").unwrap();
        append(&log, "cut\n");
        assert_eq!(next(&rx), "cut");

        // drain: what is written is read, then the follower returns
        append(&log, "last\n");
        std::thread::sleep(Duration::from_millis(100));
        control.drain();
        handle.join().unwrap().unwrap();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), ["last"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn once_reads_a_file_from_its_start_and_stops_at_its_end() {
        let dir = temp_dir("once");
        let log = dir.join("access.log");
        append(&log, "a\nb\nno newline");
        let control = Control::default();
        let mut got = Vec::new();
        run(
            &Source::File(log),
            &TailOptions {
                from_start: true,
                follow: false,
                ..TailOptions::default()
            },
            &control,
            &mut |l| {
                if let Line::Text(t) = l {
                    got.push(String::from_utf8_lossy(t).into_owned());
                }
            },
        )
        .unwrap();
        assert_eq!(got, ["a", "b", "no newline"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_file_is_an_error_once_and_awaited_when_following() {
        let control = Control::default();
        let once = TailOptions {
            follow: false,
            ..TailOptions::default()
        };
        let missing = Source::File("/nonexistent/pm/access.log".into());
        assert!(run(&missing, &once, &control, &mut |_| {}).is_err());

        let dir = temp_dir("later");
        let log = dir.join("access.log");
        let (control, rx, handle) = follow(log.clone(), false);
        std::thread::sleep(Duration::from_millis(100));
        append(&log, "first\nsecond\n");
        // created after the follower started: read from its start
        assert_eq!(next(&rx), "first");
        assert_eq!(next(&rx), "second");
        control.drain();
        handle.join().unwrap().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}

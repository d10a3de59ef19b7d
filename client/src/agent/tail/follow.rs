//! Following one log file across rotation, with the position after every
//! line (see the module above for the rotation rules).

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

use tracing::{info, warn};

use super::split::Splitter;
use super::{Control, READ_BUFFER, Sink, TailOptions, open_when_there, read_some};
use crate::agent::position::{FINGERPRINT_BYTES, Fingerprint, Position, fingerprint, identity};

/// The file being read.
struct Reading {
    file: File,
    id: (u64, u64),
    fingerprint: Fingerprint,
    /// File offset where the splitter's count starts.
    base: u64,
}

impl Reading {
    fn at(file: File, offset: u64) -> io::Result<Self> {
        let mut file = file;
        let id = identity(&file.metadata()?);
        let fingerprint = fingerprint(&file, FINGERPRINT_BYTES)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file,
            id,
            fingerprint,
            base: offset,
        })
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            dev: self.id.0,
            ino: self.id.1,
            fingerprint: self.fingerprint,
            offset: self.base + offset,
        }
    }

    /// A file shorter than the fingerprint's bytes has grown: take more.
    fn grow_fingerprint(&mut self) -> io::Result<()> {
        if self.fingerprint.len < FINGERPRINT_BYTES {
            self.fingerprint = fingerprint(&self.file, FINGERPRINT_BYTES)?;
        }
        Ok(())
    }

    /// Copytruncate: the file is shorter than what was read, or does not
    /// start with the bytes it started with.
    fn truncated(&self, len: u64, read_to: u64) -> io::Result<bool> {
        Ok(len < read_to || fingerprint(&self.file, self.fingerprint.len)? != self.fingerprint)
    }
}

/// A rotated file after its grace period and its last read: no longer
/// delivered from (the position has moved to the new file), but held open
/// until the next rotation or the reader's end, so that what a proxy still
/// writes to it (workers that did not reopen in time) is counted as lost,
/// by line, instead of vanishing unseen. One such file at a time: an fd on
/// a rotated file, deleted or not, is held no longer than one rotation.
struct Retired {
    file: File,
    /// Offset up to which the file was read (delivered, or counted lost).
    read_to: u64,
    /// Cuts what is counted into lines, as the reader would have.
    splitter: Splitter,
    lost: u64,
}

impl Retired {
    /// Counts what was appended since the last look.
    fn look(&mut self, buf: &mut [u8], sink: &mut dyn Sink) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.read_to {
            // Truncated under us: only what is written from now on counts.
            self.read_to = self.file.seek(SeekFrom::End(0))?;
            self.splitter.reset();
        }
        if len == self.read_to {
            return Ok(());
        }
        let before = self.lost;
        loop {
            let n = read_some(&mut self.file, buf)?;
            if n == 0 {
                break;
            }
            self.read_to += n as u64;
            let lost = &mut self.lost;
            self.splitter.feed(&buf[..n], &mut |line, _| {
                *lost += 1;
                sink.lost(line);
            });
        }
        if before == 0 && self.lost > 0 {
            warn!(
                "lines were written to a rotated log after --rotate-wait ended; they are counted as dropped (cause rotated_away): raise --rotate-wait, or make the proxy reopen its log sooner"
            );
        }
        Ok(())
    }

    /// The last look: a partial last line counts as a lost line too.
    fn close(mut self, buf: &mut [u8], sink: &mut dyn Sink) -> io::Result<()> {
        self.look(buf, sink)?;
        self.splitter.finish(&mut |line, _| sink.lost(line));
        Ok(())
    }
}

/// The end of a rotated file's grace period: it is read one last time to
/// its end (the proxy may have written since the last poll), its partial
/// last line taken as a line — unless the file was truncated under it,
/// which took the piece away — and the file kept as [`Retired`], with the
/// position at its end.
fn retire(
    mut reading: Reading,
    splitter: &mut Splitter,
    buf: &mut [u8],
    sink: &mut dyn Sink,
) -> io::Result<(Retired, Position)> {
    loop {
        let n = read_some(&mut reading.file, buf)?;
        if n == 0 {
            break;
        }
        reading.grow_fingerprint()?;
        let r = &reading;
        splitter.feed(&buf[..n], &mut |line, after| {
            sink.line(line, Some(&r.position(after)))
        });
    }
    let len = reading.file.metadata()?.len();
    let mut read_to = reading.base + splitter.fed();
    if reading.truncated(len, read_to)? {
        splitter.reset();
        read_to = reading.file.seek(SeekFrom::End(0))?;
    }
    let r = &reading;
    splitter.finish(&mut |line, after| sink.line(line, Some(&r.position(after))));
    let end = Position {
        offset: read_to,
        ..reading.position(0)
    };
    let retired = Retired {
        file: reading.file,
        read_to,
        splitter: Splitter::new(splitter.max()),
        lost: 0,
    };
    Ok((retired, end))
}

/// Where to start: the saved position when its file is still there (under
/// the log's path, or renamed beside it: then that file is finished first,
/// as if it had just rotated), else the start or the end.
fn start(
    path: &Path,
    file: File,
    created: bool,
    options: &TailOptions,
) -> io::Result<(Reading, Option<Instant>)> {
    if let Some(at) = &options.resume {
        if at.is_in(&file)? {
            return Ok((Reading::at(file, at.offset)?, None));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some((old, old_file)) = at.find_in(dir) {
            info!(path = %old.display(), "the log rotated while the agent was stopped; finishing the old file first");
            return Ok((Reading::at(old_file, at.offset)?, Some(Instant::now())));
        }
        warn!(
            path = %path.display(),
            "the file of the saved position is gone (rotated away or truncated while the agent was stopped); reading the log from its start"
        );
        return Reading::at(file, 0).map(|r| (r, None));
    }
    let mut file = file;
    let offset = if options.from_start || created {
        0
    } else {
        file.seek(SeekFrom::End(0))?
    };
    Reading::at(file, offset).map(|r| (r, None))
}

pub(super) fn follow_file(
    path: &Path,
    options: &TailOptions,
    control: &Control,
    sink: &mut dyn Sink,
) -> io::Result<()> {
    let mut retired = None;
    let result = follow(path, options, control, sink, &mut retired);
    // Whatever reached the rotated file since the last poll is counted.
    if let Some(old) = retired
        && let Err(e) = old.close(&mut vec![0; READ_BUFFER], sink)
    {
        warn!(path = %path.display(), error = %e, "could not look at the rotated log a last time");
    }
    result
}

fn follow(
    path: &Path,
    options: &TailOptions,
    control: &Control,
    sink: &mut dyn Sink,
    retired: &mut Option<Retired>,
) -> io::Result<()> {
    let (file, created) = match &options.opened {
        // Held since the agent started: the path may name another file by
        // now, which the loop below sees as a rotation.
        Some(file) => (file.try_clone()?, false),
        None => match open_when_there(path, options, control)? {
            Some(opened) => opened,
            None => return Ok(()),
        },
    };
    let (mut reading, mut rotated_at) = start(path, file, created, options)?;
    let mut splitter = Splitter::new(options.max_line_bytes);
    let mut buf = vec![0; READ_BUFFER];
    // Where reading starts is a position too (nothing read yet).
    sink.idle(Some(&reading.position(0)));
    loop {
        if control.stopped() {
            return Ok(());
        }
        let n = read_some(&mut reading.file, &mut buf)?;
        if n > 0 {
            reading.grow_fingerprint()?;
            let r = &reading;
            splitter.feed(&buf[..n], &mut |line, after| {
                sink.line(line, Some(&r.position(after)))
            });
            continue;
        }
        sink.idle(Some(&reading.position(splitter.committed())));
        if !options.follow || control.draining() {
            // A partial last line waits: the next run starts at it.
            return Ok(());
        }
        std::thread::sleep(options.poll);
        if let Some(old) = retired
            && let Err(e) = old.look(&mut buf, sink)
        {
            warn!(path = %path.display(), error = %e, "could not look at the rotated log; letting it go");
            *retired = None;
        }
        if let Some(since) = rotated_at {
            if since.elapsed() < options.rotate_wait {
                continue;
            }
            match File::open(path) {
                // Renamed back meanwhile: not a rotation after all.
                Ok(new) if identity(&new.metadata()?) == reading.id => rotated_at = None,
                Ok(new) => {
                    let old = std::mem::replace(&mut reading, Reading::at(new, 0)?);
                    if let Some(older) = retired.take() {
                        older.close(&mut buf, sink)?;
                    }
                    *retired = Some(retire(old, &mut splitter, &mut buf, sink)?.0);
                    rotated_at = None;
                    info!(path = %path.display(), "log rotated; following the new file from its start");
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && options.finish_when_gone => {
                    if let Some(older) = retired.take() {
                        older.close(&mut buf, sink)?;
                    }
                    let (old, end) = retire(reading, &mut splitter, &mut buf, sink)?;
                    *retired = Some(old);
                    sink.idle(Some(&end));
                    info!(path = %path.display(), "log gone; finished its file");
                    return Ok(());
                }
                // Renamed away again before we opened it: next poll.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        let read_to = reading.base + splitter.fed();
        match std::fs::metadata(path) {
            Ok(m) if identity(&m) != reading.id => {
                info!(path = %path.display(), wait_s = options.rotate_wait.as_secs_f64(), "log rotated; still reading the old file for a while");
                rotated_at = Some(Instant::now());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && options.finish_when_gone => {
                info!(path = %path.display(), wait_s = options.rotate_wait.as_secs_f64(), "log gone; still reading its file for a while");
                rotated_at = Some(Instant::now());
            }
            Ok(m) if reading.truncated(m.len(), read_to)? => {
                let file = reading.file.try_clone()?;
                reading = Reading::at(file, 0)?;
                splitter.reset();
                info!(path = %path.display(), "log truncated (copytruncate); reading it from its start");
            }
            // Unchanged, or renamed away and not re-created yet: keep
            // reading the file we hold.
            _ => {}
        }
    }
}

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
        if let Some(since) = rotated_at {
            if since.elapsed() < options.rotate_wait {
                continue;
            }
            match File::open(path) {
                Ok(new) => {
                    // The old file is done: its partial last line is all
                    // it will ever hold — unless the file was truncated
                    // under it, which took the piece away.
                    let len = reading.file.metadata()?.len();
                    if reading.truncated(len, reading.base + splitter.fed())? {
                        splitter.reset();
                    }
                    let r = &reading;
                    splitter.finish(&mut |line, after| sink.line(line, Some(&r.position(after))));
                    reading = Reading::at(new, 0)?;
                    rotated_at = None;
                    info!(path = %path.display(), "log rotated; following the new file from its start");
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && options.finish_when_gone => {
                    let len = reading.file.metadata()?.len();
                    if reading.truncated(len, reading.base + splitter.fed())? {
                        splitter.reset();
                    }
                    let r = &reading;
                    splitter.finish(&mut |line, after| sink.line(line, Some(&r.position(after))));
                    sink.idle(Some(&reading.position(splitter.committed())));
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

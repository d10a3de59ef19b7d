//! The loop over all the logs (Vector's `file_server.rs`): one tailer (a
//! thread running [`tail::run`]) per file the `LOG` arguments name, all
//! feeding the one [`Hub`]; patterns looked at again every
//! [`DISCOVER_EVERY`] for new files; a tailer whose file is gone ends, and
//! its path may be found again later as a new file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use tracing::{error, info};

use crate::agent::feed::{Feed, Hub};
use crate::agent::paths::Discovery;
use crate::agent::position::Position;
use crate::agent::tail::{self, Source, TailOptions};

/// How often the patterns are expanded again (Vector's glob cooldown).
pub const DISCOVER_EVERY: Duration = Duration::from_secs(1);

/// Reads every log until the reading ends: with `follow`, when the hub's
/// control drains or stops it (or a tailer fails: then the others are
/// drained and the first error returned); without, once every file found
/// at the start has been read to its end. `opened`: the files the paths
/// named when the agent started ([`LogPaths::open_now`]), read by the
/// first tailers even if their paths have been rotated since.
///
/// [`LogPaths::open_now`]: crate::agent::paths::LogPaths::open_now
pub fn run_all(
    mut discovery: Discovery,
    options: &TailOptions,
    hub: Arc<Hub>,
    resumed: &BTreeMap<PathBuf, Position>,
    mut opened: BTreeMap<PathBuf, Arc<File>>,
) -> io::Result<()> {
    let (done_tx, done_rx) = mpsc::channel::<(PathBuf, io::Result<()>)>();
    let mut first_error = None;
    let mut initial = true;
    loop {
        let draining = hub.control.draining() || first_error.is_some();
        if !draining && (initial || options.follow) {
            // At the start the hub holds the saved positions, which are
            // the logs' own; later it holds what each tailer reads, and a
            // file read under another path is a rotated copy.
            let found = discovery.found(|id| !initial && hub.holds(id));
            if initial {
                // Positions of logs no longer named are not kept.
                hub.retain(|p| found.iter().any(|f| f == p));
                if found.is_empty() {
                    info!("no log file matches yet; looking again every second");
                }
            }
            for path in found {
                let mut opts = options.clone();
                opts.resume = resumed.get(&path).copied().filter(|_| initial);
                // A file that appears while running is new: all of it.
                opts.from_start = options.from_start || !initial;
                opts.finish_when_gone = discovery.paths().is_glob_match(&path);
                // The files opened when the agent started (`opened`), for
                // the first tailers only.
                opts.opened = opened.remove(&path);
                spawn(path, opts, hub.clone(), done_tx.clone());
            }
            initial = false;
            opened.clear();
        }
        if discovery.running() == 0 && (draining || !options.follow) {
            return first_error.map_or(Ok(()), Err);
        }
        match done_rx.recv_timeout(DISCOVER_EVERY.min(options.poll * 4)) {
            Ok((path, result)) => {
                discovery.ended(&path);
                hub.forget(&path);
                if let Err(e) = result {
                    error!(path = %path.display(), error = %e, "reading the log failed");
                    if first_error.is_none() {
                        hub.control.drain();
                        first_error = Some(e);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

fn spawn(
    path: PathBuf,
    options: TailOptions,
    hub: Arc<Hub>,
    done: mpsc::Sender<(PathBuf, io::Result<()>)>,
) {
    if let Some(at) = &options.resume {
        info!(path = %path.display(), offset = at.offset, "resuming at the saved position");
    } else {
        info!(path = %path.display(), "following the log");
    }
    let name = format!("tail {}", short(&path));
    let thread = std::thread::Builder::new().name(name).spawn({
        let (path, done) = (path.clone(), done.clone());
        move || {
            let mut feed = Feed::new(&hub, Some(path.clone()));
            let source = Source::File(path.clone());
            let result = tail::run(&source, &options, &hub.control, &mut feed);
            let _ = done.send((path, result));
        }
    });
    if let Err(e) = thread {
        let _ = done.send((path, Err(e)));
    }
}

fn short(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

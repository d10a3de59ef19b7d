//! Which files the agent reads (after Vector's `paths_provider/glob.rs`):
//! the `LOG` arguments, each a path or a glob pattern (`*`, `?`, `[…]`).
//!
//! - A plain path is always followed, like `tail -F`: waited for while it
//!   does not exist, followed across rotation, never given up.
//! - A pattern is expanded again every poll: a file that starts matching
//!   is read by a tailer of its own (from its start: it is new); a file
//!   that stops existing is finished by its tailer per the rotation rules
//!   (read for the grace period, then its partial last line) and, should
//!   the path match again later, it is a new file.
//!
//! A pattern should match the live logs, not their rotated copies
//! (`*.log`, not `*.log*`): a renamed file is still being finished by the
//! tailer of its old path, and is skipped here while that lasts (see
//! [`Discovery::found`]), but a rotated copy found at start-up is read as a
//! log of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

/// One `LOG` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Literal(PathBuf),
    Glob(glob::Pattern),
}

/// The `LOG` arguments, made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPaths {
    patterns: Vec<Pattern>,
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

impl LogPaths {
    /// Parses the arguments; an invalid pattern is an error.
    pub fn new(args: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for arg in args {
            let abs = std::path::absolute(arg).unwrap_or_else(|_| PathBuf::from(arg));
            if has_glob_chars(arg) {
                let text = abs.to_string_lossy();
                let p = glob::Pattern::new(&text).map_err(|e| format!("LOG {arg:?}: {e}"))?;
                patterns.push(Pattern::Glob(p));
            } else {
                patterns.push(Pattern::Literal(abs));
            }
        }
        Ok(Self { patterns })
    }

    /// The one plain path when that is all there is: its position is
    /// saved as before (a bare position, not a map), so a state file of
    /// an earlier version reads back.
    pub fn single_file(&self) -> Option<&Path> {
        match self.patterns.as_slice() {
            [Pattern::Literal(p)] => Some(p),
            _ => None,
        }
    }

    /// Whether `path` comes from a pattern (and is then given up once it is
    /// gone) rather than named as it is.
    pub fn is_glob_match(&self, path: &Path) -> bool {
        !self
            .patterns
            .iter()
            .any(|p| matches!(p, Pattern::Literal(l) if l == path))
    }

    /// Every path to read now: the plain ones (existing or not) and the
    /// regular files the patterns match, sorted, each once.
    pub fn expand(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        for pattern in &self.patterns {
            match pattern {
                Pattern::Literal(p) => {
                    out.insert(p.clone());
                }
                Pattern::Glob(p) => match glob::glob(p.as_str()) {
                    Ok(paths) => {
                        for entry in paths {
                            match entry {
                                Ok(path) if path.is_file() => {
                                    out.insert(path);
                                }
                                Ok(_) => {}
                                Err(e) => warn!(error = %e, "LOG pattern: cannot read a path"),
                            }
                        }
                    }
                    Err(e) => warn!(pattern = p.as_str(), error = %e, "LOG pattern"),
                },
            }
        }
        out
    }

    /// Every file [`expand`](Self::expand) names that exists, opened now:
    /// the agent holds its logs from its start, so that one rotated before
    /// its tailer starts reading is still read to its end.
    pub fn open_now(&self) -> BTreeMap<PathBuf, Arc<File>> {
        self.expand()
            .into_iter()
            .filter_map(|path| File::open(&path).ok().map(|f| (path, Arc::new(f))))
            .collect()
    }

    /// A key naming this set of arguments (for the state file's name): for
    /// one argument, its absolute path, as before.
    pub fn key(&self) -> String {
        let parts: Vec<String> = self
            .patterns
            .iter()
            .map(|p| match p {
                Pattern::Literal(l) => l.to_string_lossy().into_owned(),
                Pattern::Glob(g) => g.as_str().to_owned(),
            })
            .collect();
        parts.join("\n")
    }
}

/// Which paths need a tailer: those the arguments name now, less those
/// being read, less rotated copies still being finished elsewhere.
#[derive(Debug)]
pub struct Discovery {
    paths: LogPaths,
    running: BTreeSet<PathBuf>,
    /// Paths skipped because their file (device, inode) was being read
    /// under another path: skipped as long as they hold that file.
    skipped: BTreeMap<PathBuf, (u64, u64)>,
}

impl Discovery {
    pub fn new(paths: LogPaths) -> Self {
        Self {
            paths,
            running: BTreeSet::new(),
            skipped: BTreeMap::new(),
        }
    }

    pub fn paths(&self) -> &LogPaths {
        &self.paths
    }

    /// The paths that need a tailer now (and are from here on taken as
    /// running). `held(dev, ino)` says whether a running tailer reads that
    /// file (a rotated copy matching the pattern too).
    pub fn found(&mut self, held: impl Fn((u64, u64)) -> bool) -> Vec<PathBuf> {
        let now = self.paths.expand();
        self.skipped.retain(|p, id| {
            now.contains(p) && std::fs::metadata(p).is_ok_and(|m| identity(&m) == *id)
        });
        let mut new = Vec::new();
        for path in now {
            if self.running.contains(&path) || self.skipped.contains_key(&path) {
                continue;
            }
            if let Ok(m) = std::fs::metadata(&path)
                && held(identity(&m))
            {
                self.skipped.insert(path, identity(&m));
                continue;
            }
            self.running.insert(path.clone());
            new.push(path);
        }
        new
    }

    /// A tailer ended: its path may be found again (as a new file).
    pub fn ended(&mut self, path: &Path) {
        self.running.remove(path);
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    crate::agent::position::identity(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("pm-paths-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        d
    }

    fn args(dir: &Path, list: &[&str]) -> Vec<String> {
        list.iter()
            .map(|a| dir.join(a).to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_glob_expands_to_the_matching_files_and_plain_paths_stay_even_when_missing() {
        let d = dir();
        for f in ["a.log", "b.log", "c.txt", "a.log.1"] {
            std::fs::write(d.join(f), "x\n").unwrap();
        }
        std::fs::create_dir_all(d.join("dir.log")).unwrap();
        let paths = LogPaths::new(&args(&d, &["*.log", "later.log", "b.log"])).unwrap();
        let got: Vec<_> = paths.expand().into_iter().collect();
        // directories are not files; the plain path is kept though missing;
        // b.log (matched and named) once
        assert_eq!(
            got,
            vec![d.join("a.log"), d.join("b.log"), d.join("later.log")]
        );
        assert!(paths.single_file().is_none());
        assert!(paths.is_glob_match(&d.join("a.log")));
        assert!(!paths.is_glob_match(&d.join("b.log")));
        let one = LogPaths::new(&args(&d, &["a.log"])).unwrap();
        assert_eq!(one.single_file(), Some(d.join("a.log").as_path()));
        assert_eq!(one.key(), d.join("a.log").to_string_lossy());
        assert!(LogPaths::new(&["/var/log/[.log".to_owned()]).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn new_files_are_found_once_and_removed_ones_again_after_their_tailer_ended() {
        let d = dir();
        std::fs::write(d.join("a.log"), "x\n").unwrap();
        let mut disc = Discovery::new(LogPaths::new(&args(&d, &["*.log"])).unwrap());
        let none = |_| false;
        assert_eq!(disc.found(none), vec![d.join("a.log")]);
        assert_eq!(
            disc.found(none),
            Vec::<PathBuf>::new(),
            "running: not again"
        );
        std::fs::write(d.join("b.log"), "x\n").unwrap();
        std::fs::write(d.join("b.txt"), "x\n").unwrap();
        assert_eq!(disc.found(none), vec![d.join("b.log")], "a new file");
        assert_eq!(disc.running(), 2);
        // removed: not listed any more; its tailer finishes it and ends
        std::fs::remove_file(d.join("a.log")).unwrap();
        assert!(!disc.paths().expand().contains(&d.join("a.log")));
        disc.ended(&d.join("a.log"));
        assert_eq!(disc.found(none), Vec::<PathBuf>::new());
        assert_eq!(disc.running(), 1);
        // created again: a new file under the old name
        std::fs::write(d.join("a.log"), "y\n").unwrap();
        assert_eq!(disc.found(none), vec![d.join("a.log")]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_rotated_copy_matching_the_pattern_is_skipped_while_its_file_is_read_elsewhere() {
        let d = dir();
        std::fs::write(d.join("a.log"), "x\n").unwrap();
        let mut disc = Discovery::new(LogPaths::new(&args(&d, &["*.log*"])).unwrap());
        assert_eq!(disc.found(|_| false), vec![d.join("a.log")]);
        let held = identity(&std::fs::metadata(d.join("a.log")).unwrap());
        std::fs::rename(d.join("a.log"), d.join("a.log.1")).unwrap();
        std::fs::write(d.join("a.log"), "new\n").unwrap();
        // a.log's tailer still finishes the old file, now a.log.1
        assert_eq!(disc.found(|id| id == held), Vec::<PathBuf>::new());
        // ... and once it moved on, a.log.1 stays skipped (same file)
        assert_eq!(disc.found(|_| false), Vec::<PathBuf>::new());
        // another file under that name is new
        std::fs::remove_file(d.join("a.log.1")).unwrap();
        assert_eq!(disc.found(|_| false), Vec::<PathBuf>::new());
        std::fs::write(d.join("a.log.1"), "other\n").unwrap();
        assert_eq!(disc.found(|_| false), vec![d.join("a.log.1")]);
        std::fs::remove_dir_all(d).unwrap();
    }
}

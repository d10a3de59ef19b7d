//! A model test of the tailer, after Vector's
//! `lib/file-source/src/file_watcher/tests/experiment.rs`: random sequences
//! of writes (whole lines and pieces of lines), renames (`mv` + a new file),
//! copytruncates and restarts from the last position are applied to a real
//! directory followed by the real tailer, and to a model that says which
//! lines a reader must deliver: every complete line once, in order; a
//! partial line only once completed, or when its file is rotated away; a
//! restart resumes after the last line delivered. Lines written to a
//! rotated file after the reader has switched to the new one (a proxy
//! that has not reopened its log) must be counted as lost ([`Sink::lost`]),
//! each one, in order; lines written to it just after the rename, while the
//! reader may or may not have switched yet, must be either delivered or
//! counted as lost, exactly once — never silently gone.
//!
//! Rotation and truncation happen once the tailer has caught up and
//! follows the current file (two renames within the grace period, or a
//! copytruncate of unread lines, lose lines for every reader — they are
//! not what this model checks).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    /// Whole lines.
    Lines(u8),
    /// A piece of a line, no newline.
    Piece(u8),
    /// The rest of the pending piece and its newline.
    EndLine,
    /// `mv` + a new file; then (no piece pending) this many whole lines
    /// written to the renamed file at once, racing the reader's switch.
    Rename(u8),
    /// Whole lines written to the last rotated file, after the tailer has
    /// left it for the new one.
    LateLines(u8),
    Truncate,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Lines),
        2 => (1u8..20).prop_map(Op::Piece),
        2 => Just(Op::EndLine),
        1 => (0u8..3).prop_map(Op::Rename),
        1 => (1u8..4).prop_map(Op::LateLines),
        1 => Just(Op::Truncate),
        1 => Just(Op::Restart),
    ]
}

/// What the tailer delivered, and where it stood last.
#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    lost: Vec<String>,
    last: Option<Position>,
    idle_at: Option<Position>,
}

struct Collect(Arc<Mutex<Seen>>);

impl Sink for Collect {
    fn line(&mut self, line: Line<'_>, after: Option<&Position>) {
        let mut seen = self.0.lock().unwrap();
        if let Line::Text(t) = line {
            seen.lines.push(String::from_utf8_lossy(t).into_owned());
        }
        seen.last = after.copied();
    }

    fn lost(&mut self, line: Line<'_>) {
        let mut seen = self.0.lock().unwrap();
        if let Line::Text(t) = line {
            seen.lost.push(String::from_utf8_lossy(t).into_owned());
        }
    }

    fn idle(&mut self, at: Option<&Position>) {
        let mut seen = self.0.lock().unwrap();
        seen.idle_at = at.copied();
        seen.last = at.copied();
    }
}

struct Tailer {
    control: Arc<Control>,
    handle: std::thread::JoinHandle<io::Result<()>>,
}

fn start(log: &Path, seen: &Arc<Mutex<Seen>>, resume: Option<Position>) -> Tailer {
    let control = Arc::new(Control::default());
    let (c, s, path) = (control.clone(), seen.clone(), log.to_owned());
    let handle = std::thread::spawn(move || {
        let options = TailOptions {
            from_start: true,
            poll: Duration::from_millis(5),
            rotate_wait: Duration::from_millis(30),
            resume,
            ..TailOptions::default()
        };
        run(&Source::File(path), &options, &c, &mut Collect(s))
    });
    Tailer { control, handle }
}

fn ino(path: &Path) -> Option<u64> {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).ok()?).into()
}

fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn experiment(ops: &[Op]) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("pm-tail-model-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    append(&log, "");
    // The model: lines a reader must deliver, and the piece pending.
    let mut expected: Vec<String> = Vec::new();
    let mut piece = String::new();
    let mut next = 0u32;
    let mut rotations = 0;
    // Lines written to a rotated file after the switch: counted as lost.
    let mut lost: Vec<String> = Vec::new();
    // The file the running tailer left last (it holds it to count them).
    let mut left: Option<PathBuf> = None;
    // Lines written to a renamed file racing the switch: delivered or lost.
    let mut either: Vec<String> = Vec::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tailer = start(&log, &seen, None);
    // Caught up with every complete line, on the current file.
    let settled = |expected: &Vec<String>, seen: &Arc<Mutex<Seen>>| {
        until("the tailer catches up on the current file", || {
            let s = seen.lock().unwrap();
            let racing = s.lines.iter().filter(|l| l.starts_with("grace ")).count();
            s.lines.len() - racing == expected.len() && s.idle_at.map(|p| p.ino) == ino(&log)
        })
    };
    for op in ops {
        match op {
            Op::Lines(n) => {
                let mut text = String::new();
                for _ in 0..*n {
                    let line = format!("{piece}line {next} {}", "x".repeat(next as usize % 7));
                    next += 1;
                    text.push_str(&line[piece.len()..]);
                    text.push('\n');
                    expected.push(line);
                    piece.clear();
                }
                append(&log, &text);
            }
            Op::Piece(n) => {
                let add = format!("p{next}-{}", "y".repeat(*n as usize));
                next += 1;
                piece.push_str(&add);
                append(&log, &add);
            }
            Op::EndLine => {
                if !piece.is_empty() {
                    expected.push(std::mem::take(&mut piece));
                    append(&log, "\n");
                }
            }
            Op::Rename(n) => {
                settled(&expected, &seen);
                rotations += 1;
                let old = dir.join(format!("access.log.{rotations}"));
                std::fs::rename(&log, &old).unwrap();
                append(&log, "");
                for _ in 0..*n {
                    if piece.is_empty() {
                        let line = format!("grace {next}");
                        next += 1;
                        append(&old, &format!("{line}\n"));
                        either.push(line);
                    }
                }
                left = Some(old);
                // The rotated file's piece is all it will ever hold: a line.
                if !piece.is_empty() {
                    expected.push(std::mem::take(&mut piece));
                }
                settled(&expected, &seen);
            }
            Op::LateLines(n) => {
                // Known to the tailer that left it; a restarted one never
                // saw it (its position is in the new file): not modelled.
                if let Some(old) = &left {
                    for _ in 0..*n {
                        let line = format!("late {next}");
                        next += 1;
                        append(old, &format!("{line}\n"));
                        lost.push(line);
                    }
                }
            }
            Op::Truncate => {
                settled(&expected, &seen);
                OpenOptions::new()
                    .write(true)
                    .open(&log)
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                // A piece never completed is gone with the truncation.
                piece.clear();
                // Noticed: it reads the file again from its start, with
                // the (empty) file's fingerprint.
                until("the tailer notices the truncation", || {
                    seen.lock()
                        .unwrap()
                        .idle_at
                        .is_some_and(|p| p.offset == 0 && p.fingerprint.len == 0)
                });
            }
            Op::Restart => {
                tailer.control.stop();
                tailer.handle.join().unwrap().unwrap();
                let at = seen.lock().unwrap().last;
                seen.lock().unwrap().idle_at = None;
                left = None;
                tailer = start(&log, &seen, at);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    until("every complete line is delivered", || {
        let s = seen.lock().unwrap();
        s.lines.iter().filter(|l| !l.starts_with("grace ")).count() >= expected.len()
    });
    std::thread::sleep(Duration::from_millis(40));
    tailer.control.stop();
    tailer.handle.join().unwrap().unwrap();
    let got = std::mem::take(&mut seen.lock().unwrap().lines);
    let got_lost = std::mem::take(&mut seen.lock().unwrap().lost);
    for line in &either {
        let times = got.iter().chain(&got_lost).filter(|l| *l == line).count();
        assert_eq!(times, 1, "{line:?} delivered or lost once; ops: {ops:?}");
    }
    let not_racing = |l: &&String| !either.contains(l);
    let got: Vec<&String> = got.iter().filter(not_racing).collect();
    assert_eq!(got, expected.iter().collect::<Vec<_>>(), "ops: {ops:?}");
    let got_lost: Vec<&String> = got_lost.iter().filter(not_racing).collect();
    assert_eq!(
        got_lost,
        lost.iter().collect::<Vec<_>>(),
        "lost; ops: {ops:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_tailer_delivers_what_the_model_says(ops in prop::collection::vec(op(), 1..16)) {
        experiment(&ops);
    }
}

//! `proxy-metrics-agent`: follows a proxy's access log (nginx, Envoy or any
//! JSON log) and reports it to the proxy-metrics API through the
//! [`Reporter`]: one observation per log line, pre-aggregated per 10 s,
//! sent as sequenced batches.
//!
//! On SIGTERM or SIGINT it reads what the log already holds, flushes
//! everything (within `--shutdown-timeout`) and exits 0. Logs go to stderr
//! (`RUST_LOG` sets the level); stdout carries only `--dry-run` batches.

use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

mod args;
mod token_file;
use args::Args;
use proxy_metrics_client::agent::check::check_api;
use proxy_metrics_client::agent::feed::{Feed, Hub, Lines, decode_positions};
use proxy_metrics_client::agent::paths::{Discovery, LogPaths};
use proxy_metrics_client::agent::serve;
use proxy_metrics_client::agent::tail::{self, Control, Source, TailOptions};
use proxy_metrics_client::agent::tailers;
use proxy_metrics_client::{Reporter, Stats};
use token_file::{TokenCheck, TokenFile};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// How often the token file is looked at for a change.
const TOKEN_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The exit status when observations were lost (dropped, not merely left
/// for the next run): a supervisor or a batch job must hear about it.
const EXIT_DROPPED: u8 = 3;

/// Puts a token re-read from `--token-file` into the reporter; one it
/// refuses leaves the old token in use.
fn use_token(reporter: &Reporter, path: &Path, token: Result<String, String>, why: &str) {
    match token.and_then(|t| reporter.set_token(t).map_err(|e| e.to_string())) {
        Ok(()) => info!(why, path = %path.display(), "token re-read"),
        Err(e) => warn!(why, error = %e, "could not re-read the token; keeping the one in use"),
    }
}

/// What the progress line shows: line counts, lines and observations lost
/// with a rotated file, the reporter's counters.
type Progress = ((u64, u64, u64), (u64, u64), Stats);

/// One line of progress, when anything moved: every drop cause by name.
fn log_progress(lines: &Lines, reporter: &Reporter, last: &mut Option<Progress>) {
    let now = (lines.get(), lines.rotated_away(), reporter.stats());
    if last.as_ref() == Some(&now) {
        return;
    }
    let ((read, parsed, malformed), (lines_rotated_away, rotated_away), s) = now;
    *last = Some(now);
    info!(
        lines_read = read,
        lines_parsed = parsed,
        lines_malformed = malformed,
        sent = s.sent,
        pending = s.pending,
        buffered = s.buffered,
        dropped = s.dropped() + rotated_away,
        dropped_buffer_full = s.dropped_buffer_full,
        dropped_rejected = s.dropped_rejected,
        dropped_conflict = s.dropped_conflict,
        dropped_stale = s.dropped_stale,
        dropped_gave_up = s.dropped_gave_up,
        dropped_shutdown = s.dropped_shutdown,
        dropped_rotated_away = rotated_away,
        lines_rotated_away,
        unauthorized = s.unauthorized,
        retries = s.retries,
        duplicates = s.duplicates,
        "progress"
    );
}

enum Stop {
    Signal(&'static str),
    InputEnded(Result<io::Result<()>, tokio::sync::oneshot::error::RecvError>),
}

fn second_signal() -> ExitCode {
    warn!("second signal: exiting without waiting for the flush");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        // colour codes only for a person at a terminal, not in journald or a file
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let format = match args.format() {
        Ok(f) => f,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let routes = match args.routes() {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let stdin = args.stdin();
    if stdin && args.log.len() > 1 {
        error!("LOG: `-` (standard input) cannot be read beside files");
        return ExitCode::from(2);
    }
    let paths = match LogPaths::new(&args.log) {
        Ok(p) => p,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    // The logs held before anything slow (the state file, the start-up
    // check of the API): one rotated meanwhile is still read to its end.
    let opened = if stdin {
        Default::default()
    } else {
        paths.open_now()
    };
    let (reporter, token) = match args.reporter() {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    if let (false, Some(url)) = (args.dry_run, &args.url)
        && let Err(e) = check_api(url, &token, &args.proxy_id).await
    {
        error!("{e}");
        return ExitCode::from(2);
    }

    // Signal handlers before anything is read: from here on a SIGTERM
    // flushes instead of killing.
    // SIGHUP re-reads the token file and never kills (its default action
    // would, without a flush).
    let (mut sigterm, mut sigint, mut sighup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };

    let lines = Arc::new(Lines::default());
    let control = Arc::new(Control::default());
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let single = paths.single_file().map(Path::to_path_buf);
    let resumed = reporter
        .resume_position()
        .map(|v| decode_positions(v, single.as_deref()))
        .unwrap_or_default();
    let options = TailOptions {
        from_start: args.from_start,
        follow: !args.once,
        poll: Duration::from_millis(args.poll_ms.max(10)),
        rotate_wait: args.rotate_wait,
        ..TailOptions::default()
    };
    let hub = Arc::new(
        Hub::new(
            format,
            reporter.clone(),
            lines.clone(),
            control.clone(),
            args.state_file().is_some(),
            args.flush_interval,
            args.once,
            single,
            resumed.clone(),
        )
        .with_routes(routes),
    );
    // Plain threads, not the runtime's: file reads block, and a thread
    // stuck reading stdin must not hold up the exit after the flush.
    std::thread::spawn(move || {
        let result = if stdin {
            let mut feed = Feed::new(&hub, None);
            tail::run(&Source::Stdin, &options, &hub.control, &mut feed)
        } else {
            tailers::run_all(
                Discovery::new(paths),
                &options,
                hub.clone(),
                &resumed,
                opened,
            )
        };
        let _ = done_tx.send(result);
    });
    info!(
        log = %args.log.join(" "),
        format = ?args.format,
        proxy_id = %args.proxy_id,
        producer_id = %reporter.producer_id(),
        dry_run = args.dry_run,
        "proxy-metrics-agent started"
    );

    if let Some(addr) = args.listen {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                info!(%addr, "serving /metrics and /healthz");
                tokio::spawn(serve::serve(listener, reporter.clone(), lines.clone()));
            }
            Err(e) => {
                error!(%addr, error = %e, "--listen: cannot bind");
                return ExitCode::from(2);
            }
        }
    }
    let mut progress = tokio::time::interval(args.progress_interval);
    progress.tick().await;
    let mut last = None;
    let mut token_check = tokio::time::interval(TOKEN_CHECK_EVERY);
    let mut token_file = args
        .token_file
        .as_deref()
        .map(|path| TokenFile::new(path, token));
    let stop = loop {
        tokio::select! {
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sighup.recv() => if let Some(file) = &mut token_file {
                let token = file.reread();
                use_token(&reporter, file.path(), token, "SIGHUP");
            },
            _ = token_check.tick() => if let Some(file) = &mut token_file {
                let (token, why) = match file.check() {
                    TokenCheck::Unchanged => continue,
                    TokenCheck::Changed(t) => (Ok(t), "the token file changed"),
                    TokenCheck::Unreadable(e) => (Err(e), "the token file cannot be read"),
                };
                use_token(&reporter, file.path(), token, why);
            },
            result = &mut done_rx => break Stop::InputEnded(result),
            _ = progress.tick() => log_progress(&lines, &reporter, &mut last),
        }
    };

    let mut code = ExitCode::SUCCESS;
    match stop {
        Stop::Signal(name) => {
            info!("{name}: reading what the log already holds, then flushing");
            control.drain();
            // Bounded: stdin, or a log written faster than we read, may
            // never reach an end.
            let drain_for = (args.shutdown_timeout / 2).min(Duration::from_secs(5));
            match tokio::time::timeout(drain_for, &mut done_rx).await {
                Ok(Ok(Err(e))) => warn!(error = %e, "reading the log failed while draining"),
                Ok(_) => {}
                Err(_) => {
                    control.stop();
                    warn!("the log was not read to its end in time; flushing what was read");
                }
            }
        }
        Stop::InputEnded(Ok(Ok(()))) => info!("end of input; flushing"),
        Stop::InputEnded(Ok(Err(e))) => {
            error!(error = %e, "reading the logs failed; flushing and exiting");
            code = ExitCode::FAILURE;
        }
        Stop::InputEnded(Err(_)) => {
            error!("the log reader stopped unexpectedly; flushing and exiting");
            code = ExitCode::FAILURE;
        }
    }

    // A second signal during the flush means "now": exit without waiting.
    let stats = tokio::select! {
        stats = reporter.shutdown() => stats,
        _ = sigterm.recv() => return second_signal(),
        _ = sigint.recv() => return second_signal(),
    };
    let (read, parsed, malformed) = lines.get();
    let (lines_rotated_away, rotated_away) = lines.rotated_away();
    info!(
        lines_read = read,
        lines_parsed = parsed,
        lines_malformed = malformed,
        lines_rotated_away,
        dropped_rotated_away = rotated_away,
        stats = %serde_json::to_string(&stats).unwrap_or_default(),
        "proxy-metrics-agent stopped"
    );
    // A line lost with its rotated file is data dropped, even one that
    // would not have parsed.
    if stats.dropped() > 0 || lines_rotated_away > 0 {
        error!(
            dropped = stats.dropped() + rotated_away,
            lines_rotated_away,
            "observations were lost (see the drop causes above); exiting with status {EXIT_DROPPED}"
        );
        return ExitCode::from(EXIT_DROPPED);
    }
    code
}

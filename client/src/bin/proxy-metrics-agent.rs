//! `proxy-metrics-agent`: follows a proxy's access log (nginx, Envoy or any
//! JSON log) and reports it to the proxy-metrics API through the
//! [`Reporter`]: one observation per log line, pre-aggregated per 10 s,
//! sent as sequenced batches.
//!
//! On SIGTERM or SIGINT it reads what the log already holds, flushes
//! everything (within `--shutdown-timeout`) and exits 0. Logs go to stderr
//! (`RUST_LOG` sets the level); stdout carries only `--dry-run` batches.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use proxy_metrics_client::agent::feed::{Feed, Lines};
use proxy_metrics_client::agent::nginx_format::{LatencyFrom, NginxFormat};
use proxy_metrics_client::agent::parse::{DurationUnit, Format, JsonMapping};
use proxy_metrics_client::agent::position::{self, Position};
use proxy_metrics_client::agent::serve;
use proxy_metrics_client::agent::tail::{self, Control, Source, TailOptions};
use proxy_metrics_client::{Config, Reporter, Stats};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// How often the token file is looked at for a change.
const TOKEN_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The exit status when observations were lost (dropped, not merely left
/// for the next run): a supervisor or a batch job must hear about it.
const EXIT_DROPPED: u8 = 3;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(
    name = "proxy-metrics-agent",
    version,
    about = "Follows a proxy's access log and reports requests, errors, latency and bytes to the proxy-metrics API",
    after_help = "Examples:\n  proxy-metrics-agent --format nginx /var/log/nginx/access.log\n  envoy … | proxy-metrics-agent --format envoy -\n  proxy-metrics-agent --format json --json-time-field ts --json-duration-field duration \\\n      --json-duration-unit s --json-bytes-sent-field size --json-bytes-received-field bytes_read caddy.log"
)]
struct Args {
    /// Access log to follow, or `-` for standard input (required: a unit
    /// file without a path must fail, not read an empty stdin forever).
    #[arg(value_name = "LOG", env = "PROXY_METRICS_LOG")]
    log: String,

    /// Log format: nginx (combined or main, + $request_time; see also
    /// --nginx-log-format), envoy (default format as JSON or text, Istio's
    /// default text), caddy (its JSON access log), json (fields named by
    /// the --json-* options).
    #[arg(long, value_enum, env = "PROXY_METRICS_FORMAT", default_value_t = FormatArg::Nginx)]
    format: FormatArg,

    /// nginx's log_format, as written in nginx.conf (`'$remote_addr - …'`),
    /// or a preset: combined, main, ingress-nginx. Implies --format nginx.
    #[arg(
        long,
        value_name = "LOG_FORMAT",
        env = "PROXY_METRICS_NGINX_LOG_FORMAT"
    )]
    nginx_log_format: Option<String>,

    /// With --nginx-log-format: the latency is $request_time (request, what
    /// the client waited) or $upstream_response_time (upstream, summed over
    /// the upstreams tried).
    #[arg(long, value_enum, env = "PROXY_METRICS_LATENCY", default_value_t = LatencyArg::Request)]
    latency: LatencyArg,

    /// API base URL, e.g. `https://api.example.com`.
    #[arg(long, env = "PROXY_METRICS_URL")]
    url: Option<String>,

    /// Bearer token (a proxy token: scope metrics:write, proxy_id = this proxy).
    #[arg(long, env = "PROXY_METRICS_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// File holding the bearer token (instead of --token): re-read when it
    /// changes and on SIGHUP, so a renewed token is picked up without a
    /// restart (a Kubernetes Secret volume, a cron job renewing it).
    #[arg(
        long,
        value_name = "FILE",
        env = "PROXY_METRICS_TOKEN_FILE",
        conflicts_with = "token"
    )]
    token_file: Option<PathBuf>,

    /// The proxy's id, as registered with POST /proxies.
    #[arg(long, env = "PROXY_ID")]
    proxy_id: String,

    /// Read the file from its beginning (default: from its current end).
    /// A saved position (--state-dir) wins over this.
    #[arg(long, env = "PROXY_METRICS_FROM_START")]
    from_start: bool,

    /// Directory of the state file: the log's position, the producer id
    /// and sequence, and the batches on their way, so that a restart (or a
    /// crash) resumes exactly where delivery stopped. One file per proxy id
    /// and log path. Not used for stdin or --dry-run.
    #[arg(
        long,
        value_name = "DIR",
        env = "PROXY_METRICS_STATE_DIR",
        default_value = "/var/lib/proxy-metrics-agent"
    )]
    state_dir: PathBuf,

    /// Keep no state: a restart starts from the end of the log (or its
    /// start with --from-start) under a new producer id.
    #[arg(long, env = "PROXY_METRICS_NO_STATE")]
    no_state: bool,

    /// Stop at the end of the file (flush and exit) instead of following it.
    #[arg(long, visible_alias = "no-follow", env = "PROXY_METRICS_ONCE")]
    once: bool,

    /// Print each batch (its JSON body, one line) to stdout instead of sending it.
    #[arg(long, env = "PROXY_METRICS_DRY_RUN")]
    dry_run: bool,

    /// Seconds between batches (a full batch of 500 events goes at once).
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_FLUSH_INTERVAL", default_value = "60", value_parser = seconds)]
    flush_interval: Duration,

    /// Closed 10-second intervals kept while the API is unreachable; the
    /// oldest is dropped (and counted) when full.
    #[arg(
        long,
        value_name = "EVENTS",
        env = "PROXY_METRICS_BUFFER_CAPACITY",
        default_value_t = 1000
    )]
    buffer_capacity: usize,

    /// Seconds allowed for the final flush on SIGTERM/SIGINT or end of input.
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_SHUTDOWN_TIMEOUT", default_value = "10", value_parser = seconds)]
    shutdown_timeout: Duration,

    /// Send a healthy, empty event after this many idle seconds (off by
    /// default: an idle log does not prove the proxy is up).
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_HEARTBEAT", value_parser = seconds)]
    heartbeat: Option<Duration>,

    /// Seconds a renamed log is still read after its path names a new file
    /// (nginx writes to the old one until it has reopened its logs; like
    /// Fluent Bit's Rotate_Wait).
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_ROTATE_WAIT", default_value = "10", value_parser = seconds)]
    rotate_wait: Duration,

    /// Serve /metrics (Prometheus text) and /healthz on this address, e.g.
    /// 127.0.0.1:9464 (off by default).
    #[arg(long, value_name = "ADDR", env = "PROXY_METRICS_LISTEN")]
    listen: Option<std::net::SocketAddr>,

    /// Milliseconds between checks of the log for new lines and rotation.
    #[arg(
        long,
        value_name = "MS",
        env = "PROXY_METRICS_POLL_MS",
        default_value_t = 250
    )]
    poll_ms: u64,

    /// --format json: field holding the time (RFC 3339, nginx time, or epoch
    /// s/ms/µs/ns); '' for none (receipt time). A dotted name reaches into
    /// nested objects.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_TIME_FIELD",
        default_value = "time"
    )]
    json_time_field: String,

    /// --format json: field holding the HTTP status.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_STATUS_FIELD",
        default_value = "status"
    )]
    json_status_field: String,

    /// --format json: field holding the request's duration; '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_DURATION_FIELD",
        default_value = "request_time"
    )]
    json_duration_field: String,

    /// --format json: unit of the duration field.
    #[arg(long, value_enum, env = "PROXY_METRICS_JSON_DURATION_UNIT", default_value_t = UnitArg::S)]
    json_duration_unit: UnitArg,

    /// --format json: field holding the bytes sent to the client; '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_BYTES_SENT_FIELD",
        default_value = "body_bytes_sent"
    )]
    json_bytes_sent_field: String,

    /// --format json: field holding the bytes received from the client; '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_BYTES_RECEIVED_FIELD",
        default_value = "request_length"
    )]
    json_bytes_received_field: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Nginx,
    Envoy,
    Caddy,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LatencyArg {
    Request,
    Upstream,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum UnitArg {
    S,
    Ms,
    Us,
    Ns,
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("--token-file {}: empty", path.display()));
    }
    Ok(token.to_owned())
}

/// The token file's modification time and length, to notice a change.
fn token_stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads `--token-file` into the reporter; a bad read keeps the old token.
fn reload_token(args: &Args, reporter: &Reporter, why: &str) {
    let Some(path) = &args.token_file else {
        return;
    };
    match read_token(path).and_then(|t| reporter.set_token(t).map_err(|e| e.to_string())) {
        Ok(()) => info!(why, path = %path.display(), "token re-read"),
        Err(e) => warn!(why, error = %e, "could not re-read the token; keeping the one in use"),
    }
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

fn optional(field: &str) -> Option<String> {
    (!field.is_empty()).then(|| field.to_owned())
}

impl Args {
    fn format(&self) -> Result<Format, String> {
        if let Some(log_format) = &self.nginx_log_format {
            let latency = match self.latency {
                LatencyArg::Request => LatencyFrom::Request,
                LatencyArg::Upstream => LatencyFrom::Upstream,
            };
            return NginxFormat::compile(log_format, latency)
                .map(|f| Format::NginxLogFormat(Box::new(f)))
                .map_err(|e| format!("--nginx-log-format: {e}"));
        }
        Ok(match self.format {
            FormatArg::Nginx => Format::Nginx,
            FormatArg::Envoy => Format::Envoy,
            FormatArg::Caddy => Format::Json(JsonMapping::caddy()),
            FormatArg::Json => Format::Json(JsonMapping {
                time_field: optional(&self.json_time_field),
                status_field: self.json_status_field.clone(),
                duration_field: optional(&self.json_duration_field),
                duration_unit: match self.json_duration_unit {
                    UnitArg::S => DurationUnit::Seconds,
                    UnitArg::Ms => DurationUnit::Millis,
                    UnitArg::Us => DurationUnit::Micros,
                    UnitArg::Ns => DurationUnit::Nanos,
                },
                bytes_sent_field: optional(&self.json_bytes_sent_field),
                bytes_received_field: optional(&self.json_bytes_received_field),
            }),
        })
    }

    /// The state file of this proxy and log, when state is kept.
    fn state_file(&self) -> Option<PathBuf> {
        if self.no_state || self.dry_run || self.log == "-" {
            return None;
        }
        let log = std::path::absolute(&self.log).unwrap_or_else(|_| PathBuf::from(&self.log));
        let key = position::fnv1a(log.as_os_str().as_encoded_bytes());
        Some(
            self.state_dir
                .join(format!("{}-{key:016x}.json", self.proxy_id)),
        )
    }

    fn reporter(&self) -> Result<Reporter, String> {
        let token = match &self.token_file {
            Some(path) => Some(read_token(path)?),
            None => self.token.clone(),
        };
        let (url, token) = match (&self.url, &token, self.dry_run) {
            (Some(u), Some(t), _) => (u.clone(), t.clone()),
            (u, t, true) => (u.clone().unwrap_or_default(), t.clone().unwrap_or_default()),
            (None, _, false) => return Err("--url (or PROXY_METRICS_URL) is required".into()),
            (_, None, false) => {
                return Err(
                    "--token or --token-file (PROXY_METRICS_TOKEN, PROXY_METRICS_TOKEN_FILE) is required"
                        .into(),
                );
            }
        };
        let mut builder = Reporter::builder(url, token, self.proxy_id.clone());
        if let Some(file) = self.state_file() {
            std::fs::create_dir_all(&self.state_dir)
                .map_err(|e| format!("--state-dir {}: {e}", self.state_dir.display()))?;
            builder = builder.state_file(file);
        }
        builder
            .config(Config {
                flush_interval: self.flush_interval,
                buffer_capacity: self.buffer_capacity,
                shutdown_timeout: self.shutdown_timeout,
                heartbeat: self.heartbeat,
                ..Config::default()
            })
            .dry_run(self.dry_run)
            .build()
            .map_err(|e| e.to_string())
    }
}

/// One line of progress, when anything moved: every drop cause by name.
fn log_progress(lines: &Lines, reporter: &Reporter, last: &mut Option<((u64, u64, u64), Stats)>) {
    let now = (lines.get(), reporter.stats());
    if last.as_ref() == Some(&now) {
        return;
    }
    let ((read, parsed, malformed), s) = now;
    *last = Some(now);
    info!(
        lines_read = read,
        lines_parsed = parsed,
        lines_malformed = malformed,
        sent = s.sent,
        pending = s.pending,
        buffered = s.buffered,
        dropped = s.dropped(),
        dropped_buffer_full = s.dropped_buffer_full,
        dropped_rejected = s.dropped_rejected,
        dropped_conflict = s.dropped_conflict,
        dropped_stale = s.dropped_stale,
        dropped_gave_up = s.dropped_gave_up,
        dropped_shutdown = s.dropped_shutdown,
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
    let source = if args.log == "-" {
        Source::Stdin
    } else {
        Source::File(PathBuf::from(&args.log))
    };
    let reporter = match args.reporter() {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };

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
    let resume = reporter
        .resume_position()
        .and_then(|v| serde_json::from_value::<Position>(v.clone()).ok());
    if let Some(at) = &resume {
        info!(offset = at.offset, "resuming at the saved position");
    }
    let checkpoints = args.state_file().is_some();
    let options = TailOptions {
        from_start: args.from_start,
        follow: !args.once,
        poll: Duration::from_millis(args.poll_ms.max(10)),
        resume,
        rotate_wait: args.rotate_wait,
        ..TailOptions::default()
    };
    let every = args.flush_interval;
    // A plain thread, not the runtime's: file reads block, and a thread
    // stuck reading stdin must not hold up the exit after the flush.
    {
        let (reporter, lines, control, source) = (
            reporter.clone(),
            lines.clone(),
            control.clone(),
            source.clone(),
        );
        std::thread::spawn(move || {
            let mut feed = Feed {
                format: &format,
                reporter: &reporter,
                lines: &lines,
                control: &control,
                checkpoints,
                every,
                last_cut: std::time::Instant::now(),
                last_saved: None,
                since_look: 0,
                once: args.once,
            };
            let result = tail::run(&source, &options, &control, &mut feed);
            let _ = done_tx.send(result);
        });
    }
    info!(
        log = %args.log,
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
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let mut last = None;
    let mut token_check = tokio::time::interval(TOKEN_CHECK_EVERY);
    let mut stamp = args.token_file.as_deref().and_then(token_stamp);
    let stop = loop {
        tokio::select! {
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sighup.recv() => reload_token(&args, &reporter, "SIGHUP"),
            _ = token_check.tick() => {
                let now = args.token_file.as_deref().and_then(token_stamp);
                if now != stamp {
                    stamp = now;
                    reload_token(&args, &reporter, "the token file changed");
                }
            }
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
            error!(error = %e, log = %args.log, "reading the log failed; flushing and exiting");
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
    info!(
        lines_read = read,
        lines_parsed = parsed,
        lines_malformed = malformed,
        stats = %serde_json::to_string(&stats).unwrap_or_default(),
        "proxy-metrics-agent stopped"
    );
    if stats.dropped() > 0 {
        error!(
            dropped = stats.dropped(),
            "observations were lost (see the drop causes above); exiting with status {EXIT_DROPPED}"
        );
        return ExitCode::from(EXIT_DROPPED);
    }
    code
}

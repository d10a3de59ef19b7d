//! The agent's command line: every flag, its environment variable, and
//! what it turns into (a log format, a reporter).

use std::path::PathBuf;
use std::time::Duration;

use crate::token_file::read_token;
use clap::{Parser, ValueEnum};
use proxy_metrics_client::agent::nginx_format::{LatencyFrom, NginxFormat};
use proxy_metrics_client::agent::parse::{DurationUnit, Format, JsonMapping};
use proxy_metrics_client::agent::paths::LogPaths;
use proxy_metrics_client::agent::position;
use proxy_metrics_client::agent::route::RouteRules;
use proxy_metrics_client::{Config, Reporter};

#[derive(Parser, Debug)]
#[command(
    name = "proxy-metrics-agent",
    version,
    about = "Follows a proxy's access log and reports requests, errors, latency and bytes to the proxy-metrics API",
    after_help = "Examples:\n  proxy-metrics-agent --format nginx /var/log/nginx/access.log\n  proxy-metrics-agent --format nginx '/var/log/nginx/*.log' /srv/api/access.log\n  envoy … | proxy-metrics-agent --format envoy -\n  proxy-metrics-agent --format json --json-time-field ts --json-duration-field duration \\\n      --json-duration-unit s --json-bytes-sent-field size --json-bytes-received-field bytes_read caddy.log"
)]
pub struct Args {
    /// Access logs to follow: paths, or glob patterns such as
    /// '/var/log/nginx/*.log' (quoted: the agent expands them again every
    /// second and reads new files from their start), each with its own
    /// position in the state file; or `-` alone for standard input.
    /// Required: a unit file without a path must fail, not read an empty
    /// stdin forever. The environment variable holds one path or pattern.
    #[arg(value_name = "LOG", env = "PROXY_METRICS_LOG", required = true, num_args = 1..)]
    pub log: Vec<String>,

    /// Log format: nginx (combined or main, + $request_time; see also
    /// --nginx-log-format), envoy (default format as JSON or text, Istio's
    /// default text), caddy (its JSON access log), json (fields named by
    /// the --json-* options).
    #[arg(long, value_enum, env = "PROXY_METRICS_FORMAT", default_value_t = FormatArg::Nginx)]
    pub format: FormatArg,

    /// nginx's log_format, as written in nginx.conf (`'$remote_addr - …'`),
    /// or a preset: combined, main, ingress-nginx. Implies --format nginx.
    #[arg(
        long,
        value_name = "LOG_FORMAT",
        env = "PROXY_METRICS_NGINX_LOG_FORMAT"
    )]
    pub nginx_log_format: Option<String>,

    /// With --nginx-log-format: the latency is $request_time (request, what
    /// the client waited) or $upstream_response_time (upstream, summed over
    /// the upstreams tried).
    #[arg(long, value_enum, env = "PROXY_METRICS_LATENCY", default_value_t = LatencyArg::Request)]
    pub latency: LatencyArg,

    /// API base URL, e.g. `https://api.example.com`.
    #[arg(long, env = "PROXY_METRICS_URL")]
    pub url: Option<String>,

    /// Bearer token (a proxy token: scope metrics:write, proxy_id = this proxy).
    #[arg(long, env = "PROXY_METRICS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File holding the bearer token (instead of --token): re-read when it
    /// changes and on SIGHUP, so a renewed token is picked up without a
    /// restart (a Kubernetes Secret volume, a cron job renewing it).
    #[arg(
        long,
        value_name = "FILE",
        env = "PROXY_METRICS_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

    /// The proxy's id, as registered with POST /proxies.
    #[arg(long, env = "PROXY_ID")]
    pub proxy_id: String,

    /// Read the file from its beginning (default: from its current end).
    /// A saved position (--state-dir) wins over this.
    #[arg(long, env = "PROXY_METRICS_FROM_START")]
    pub from_start: bool,

    /// Directory of the state file: each log's position, the producer id
    /// and sequence, and the batches on their way, so that a restart (or a
    /// crash) resumes exactly where delivery stopped. One file per proxy id
    /// and set of LOG arguments. Not used for stdin or --dry-run.
    #[arg(
        long,
        value_name = "DIR",
        env = "PROXY_METRICS_STATE_DIR",
        default_value = "/var/lib/proxy-metrics-agent"
    )]
    pub state_dir: PathBuf,

    /// Keep no state: a restart starts from the end of the log (or its
    /// start with --from-start) under a new producer id.
    #[arg(long, env = "PROXY_METRICS_NO_STATE")]
    pub no_state: bool,

    /// Stop at the end of the file (flush and exit) instead of following it.
    #[arg(long, visible_alias = "no-follow", env = "PROXY_METRICS_ONCE")]
    pub once: bool,

    /// Print each batch (its JSON body, one line) to stdout instead of sending it.
    #[arg(long, env = "PROXY_METRICS_DRY_RUN")]
    pub dry_run: bool,

    /// Seconds between batches (a full batch of 500 events goes at once).
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_FLUSH_INTERVAL", default_value = "60", value_parser = seconds)]
    pub flush_interval: Duration,

    /// Closed 10-second intervals kept while the API is unreachable; the
    /// oldest is dropped (and counted) when full.
    #[arg(
        long,
        value_name = "EVENTS",
        env = "PROXY_METRICS_BUFFER_CAPACITY",
        default_value_t = 1000
    )]
    pub buffer_capacity: usize,

    /// Seconds allowed for the final flush on SIGTERM/SIGINT or end of input.
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_SHUTDOWN_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub shutdown_timeout: Duration,

    /// Send a healthy, empty event after this many idle seconds (off by
    /// default: an idle log does not prove the proxy is up).
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_HEARTBEAT", value_parser = seconds)]
    pub heartbeat: Option<Duration>,

    /// Seconds a renamed log is still read after its path names a new file
    /// (nginx writes to the old one until it has reopened its logs; like
    /// Fluent Bit's Rotate_Wait).
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_ROTATE_WAIT", default_value = "10", value_parser = seconds)]
    pub rotate_wait: Duration,

    /// Seconds between progress lines on stderr (lines, sends, every drop
    /// cause by name), each only if something moved since the last.
    #[arg(long, value_name = "SECONDS", env = "PROXY_METRICS_PROGRESS_INTERVAL", default_value = "60", value_parser = seconds)]
    pub progress_interval: Duration,

    /// Serve /metrics (Prometheus text) and /healthz on this address, e.g.
    /// 127.0.0.1:9464 (off by default).
    #[arg(long, value_name = "ADDR", env = "PROXY_METRICS_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,

    /// Milliseconds between checks of the log for new lines and rotation.
    #[arg(
        long,
        value_name = "MS",
        env = "PROXY_METRICS_POLL_MS",
        default_value_t = 250
    )]
    pub poll_ms: u64,

    /// --format json: field holding the time (RFC 3339, nginx time, or epoch
    /// s/ms/µs/ns); '' for none (receipt time). A dotted name reaches into
    /// nested objects.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_TIME_FIELD",
        default_value = "time"
    )]
    pub json_time_field: String,

    /// --format json: field holding the HTTP status.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_STATUS_FIELD",
        default_value = "status"
    )]
    pub json_status_field: String,

    /// --format json: field holding the request's duration; '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_DURATION_FIELD",
        default_value = "request_time"
    )]
    pub json_duration_field: String,

    /// --format json: unit of the duration field.
    #[arg(long, value_enum, env = "PROXY_METRICS_JSON_DURATION_UNIT", default_value_t = UnitArg::S)]
    pub json_duration_unit: UnitArg,

    /// --format json: field holding the bytes sent to the client; '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_BYTES_SENT_FIELD",
        default_value = "body_bytes_sent"
    )]
    pub json_bytes_sent_field: String,

    /// --format json: field holding the bytes received from the client; '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_BYTES_RECEIVED_FIELD",
        default_value = "request_length"
    )]
    pub json_bytes_received_field: String,

    /// --format json: field holding the request target ($request_uri) or
    /// the request line ($request), the route's source; '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_ROUTE_FIELD",
        default_value = "request_uri"
    )]
    pub json_route_field: String,

    /// --format json: field holding the upstream ($upstream_addr: the last
    /// one tried is taken); '' for none.
    #[arg(
        long,
        value_name = "FIELD",
        env = "PROXY_METRICS_JSON_UPSTREAM_FIELD",
        default_value = "upstream_addr"
    )]
    pub json_upstream_field: String,

    /// A route template, e.g. '/api/users/:id' (`:name` or `*` is one path
    /// segment, a final `**` the rest). Repeatable; the first that matches
    /// a request's path (query left out) is its route; a path none matches
    /// is normalised (identifiers → :id). The environment variable holds a
    /// comma-separated list.
    #[arg(
        long,
        value_name = "PATTERN",
        env = "PROXY_METRICS_ROUTE_PATTERN",
        value_delimiter = ','
    )]
    pub route_pattern: Vec<String>,

    /// A file of route templates, one a line (`#` comments), tried after
    /// the --route-pattern ones.
    #[arg(long, value_name = "FILE", env = "PROXY_METRICS_ROUTE_PATTERNS_FILE")]
    pub route_patterns_file: Option<PathBuf>,

    /// Send no route and upstream dimensions: one event per interval, as
    /// before contract v3 (status classes are still sent).
    #[arg(
        long,
        env = "PROXY_METRICS_NO_DIMENSIONS",
        conflicts_with_all = ["route_pattern", "route_patterns_file"]
    )]
    pub no_dimensions: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    Nginx,
    Envoy,
    Caddy,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LatencyArg {
    Request,
    Upstream,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UnitArg {
    S,
    Ms,
    Us,
    Ns,
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
    pub fn format(&self) -> Result<Format, String> {
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
                route_field: optional(&self.json_route_field),
                upstream_field: optional(&self.json_upstream_field),
            }),
        })
    }

    /// How routes are named (`None`: --no-dimensions).
    pub fn routes(&self) -> Result<Option<RouteRules>, String> {
        if self.no_dimensions {
            return Ok(None);
        }
        let mut patterns = self.route_pattern.clone();
        if let Some(path) = &self.route_patterns_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--route-patterns-file {}: {e}", path.display()))?;
            patterns.extend(RouteRules::parse_file(&text));
        }
        RouteRules::new(&patterns)
            .map(Some)
            .map_err(|e| format!("--route-pattern: {e}"))
    }

    /// Aggregates open at once: with dimensions an interval holds one per
    /// (route, upstream) pair, so more than the library's 64; an eighth of
    /// the buffer, so that closing them all at a checkpoint cannot overflow
    /// it (the reader pauses before that, see `agent::feed`).
    fn max_open_intervals(&self) -> usize {
        if self.no_dimensions {
            Config::default().max_open_intervals
        } else {
            (self.buffer_capacity / 8).clamp(64, 1024)
        }
    }

    /// The state file of this proxy and log, when state is kept.
    pub fn state_file(&self) -> Option<PathBuf> {
        if self.no_state || self.dry_run || self.stdin() {
            return None;
        }
        // One log: its absolute path, as before several logs were read.
        let key = LogPaths::new(&self.log).map_or_else(|_| self.log.join("\n"), |p| p.key());
        let key = position::fnv1a(key.as_bytes());
        Some(
            self.state_dir
                .join(format!("{}-{key:016x}.json", self.proxy_id)),
        )
    }

    /// Standard input (`-`) rather than files.
    pub fn stdin(&self) -> bool {
        self.log.iter().any(|l| l == "-")
    }

    /// The reporter, and the token it starts with (read once: the start-up
    /// check and the token file's watch use this same one).
    pub fn reporter(&self) -> Result<(Reporter, String), String> {
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
        let mut builder = Reporter::builder(url, token.clone(), self.proxy_id.clone());
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
                max_open_intervals: self.max_open_intervals(),
                ..Config::default()
            })
            .dry_run(self.dry_run)
            .build()
            .map(|reporter| (reporter, token))
            .map_err(|e| e.to_string())
    }
}

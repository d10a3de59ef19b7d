//! `GET /metrics`: the caller's proxies in the Prometheus text exposition
//! format (version 0.0.4), encoded by the Prometheus project's Rust client
//! (`prometheus-client`).
//!
//! Every series is labelled `proxy` (the proxy id). Names carry their unit
//! (`_bytes`, `_seconds`, `_ratio`). Counters count since registration and
//! never go down, so `rate()` and `increase()` work across midnight; the
//! `today_` gauges restart at 0 at midnight UTC:
//!
//! | metric | what |
//! |---|---|
//! | `proxy_metrics_requests_total{status_class}` | counter: requests by status class (`1xx` … `5xx`) |
//! | `proxy_metrics_errors_total` | counter: failed requests |
//! | `proxy_metrics_data_{transferred,received}_bytes_total` | counter: bytes |
//! | `proxy_metrics_today_{events,requests,successes,errors,connections}` | sums over today's events (the UTC day); they restart at 0 at midnight UTC |
//! | `proxy_metrics_today_data_{transferred,received}_bytes` | the same for bytes |
//! | `proxy_metrics_last_hour_latency_{p50,p95,p99}_seconds` | latency percentiles of the last hour (the summary's `lastHour` window), from the merged sketches |
//! | `proxy_metrics_last_24h_uptime_ratio` | 0–1: five-minute buckets holding a healthy event ÷ buckets observed over the last 24 hours |
//! | `proxy_metrics_last_event_timestamp_seconds` | the latest event's time (Unix seconds) |
//!
//! The percentiles are three gauges rather than one with a `quantile` label:
//! Prometheus reserves that label for the summary type (`promtool check
//! metrics` refuses it on a gauge), and a summary's `_sum`/`_count` must be
//! cumulative, which figures over a sliding hour are not.
//!
//! A value that does not exist is left out rather than invented: no
//! quantiles without latency in the last hour, no uptime before anything
//! could be observed, no last event when the last 7 days hold none.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::domain::dimensions::STATUS_CLASSES;
use crate::domain::rollup::{Bucket, Rollup, Stats, SummaryWindows};
use crate::storage::Totals;

/// The media type of the exposition (the Prometheus text format).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The latency percentiles exported: (quantile, name of its gauge).
pub const PERCENTILES: [(f64, &str); 3] = [
    (0.50, "proxy_metrics_last_hour_latency_p50_seconds"),
    (0.95, "proxy_metrics_last_hour_latency_p95_seconds"),
    (0.99, "proxy_metrics_last_hour_latency_p99_seconds"),
];

/// What one proxy exports, computed from what was read of it.
#[derive(Debug, Clone, Default)]
pub struct ProxyFigures {
    pub proxy_id: String,
    /// Today's (UTC) figures.
    pub today: Stats,
    /// The summary's last hour.
    pub last_hour: Stats,
    /// (healthy buckets, observed buckets) over the last 24 hours.
    pub uptime_24h: Option<(u64, u64)>,
    /// The latest event (ms), from today, the last 24 hours or the days read before.
    pub last_event_ms: Option<i64>,
    /// Counts since registration (the counters).
    pub totals: Totals,
}

impl ProxyFigures {
    /// `days` holds today (and possibly earlier days), `buckets` the
    /// summary's 24-hour window keyed by bucket start (ms).
    pub fn new(
        proxy_id: &str,
        registered_at: DateTime<Utc>,
        days: &BTreeMap<chrono::NaiveDate, Rollup>,
        buckets: &BTreeMap<i64, Bucket>,
        now: DateTime<Utc>,
    ) -> Self {
        let windows = SummaryWindows::at(now);
        let (last_hour, last_24_hours) = windows.fold(buckets);
        let today = days
            .get(&now.date_naive())
            .map(|d| d.stats.clone())
            .unwrap_or_default();
        let last_event_ms = days
            .values()
            .filter_map(|d| d.stats.last_event_ms)
            .chain(last_24_hours.last_event_ms)
            .max();
        Self {
            proxy_id: proxy_id.to_string(),
            today,
            last_hour,
            uptime_24h: windows.uptime_buckets(buckets, Some(registered_at), now),
            last_event_ms,
            totals: Totals::default(),
        }
    }
}

type Labels = Vec<(&'static str, String)>;
type IntGauges = Family<Labels, Gauge>;
type IntCounters = Family<Labels, Counter>;
type FloatGauges = Family<Labels, Gauge<f64, AtomicU64>>;

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn int_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    proxies: &[ProxyFigures],
    value: impl Fn(&ProxyFigures) -> u64,
) {
    let family = IntGauges::default();
    for p in proxies {
        family
            .get_or_create(&vec![("proxy", p.proxy_id.clone())])
            .set(int(value(p)));
    }
    registry.register(name, help, family);
}

/// A counter family (the encoder adds `_total` to `name`).
fn counter_family(
    registry: &mut Registry,
    name: &str,
    help: &str,
    proxies: &[ProxyFigures],
    value: impl Fn(&ProxyFigures) -> u64,
) {
    let family = IntCounters::default();
    for p in proxies {
        family
            .get_or_create(&vec![("proxy", p.proxy_id.clone())])
            .inc_by(value(p));
    }
    registry.register(name, help, family);
}

/// The counters since registration: what `rate()` and `increase()` read.
fn register_counters(registry: &mut Registry, proxies: &[ProxyFigures]) {
    let requests = IntCounters::default();
    for p in proxies {
        for (class, n) in STATUS_CLASSES.iter().zip(p.totals.status) {
            requests
                .get_or_create(&vec![
                    ("proxy", p.proxy_id.clone()),
                    ("status_class", class.to_string()),
                ])
                .inc_by(n);
        }
    }
    registry.register(
        "proxy_metrics_requests",
        "Requests reported since the proxy was registered, by status class (successes count as \
         2xx and errors as 5xx where the proxy sent no statusCounts)",
        requests,
    );
    counter_family(
        registry,
        "proxy_metrics_errors",
        "Failed requests reported since the proxy was registered",
        proxies,
        |p| p.totals.errors,
    );
    counter_family(
        registry,
        "proxy_metrics_data_transferred_bytes",
        "Bytes transferred (sent) since the proxy was registered",
        proxies,
        |p| p.totals.data_transferred_bytes,
    );
    counter_family(
        registry,
        "proxy_metrics_data_received_bytes",
        "Bytes received since the proxy was registered",
        proxies,
        |p| p.totals.data_received_bytes,
    );
}

/// The exposition of `proxies`: `# HELP` and `# TYPE` before every family
/// that has series (the encoder leaves out a family without any, so no
/// proxies is an empty exposition); no `# EOF`, which 0.0.4 does not have.
pub fn encode(proxies: &[ProxyFigures]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    register_counters(&mut registry, proxies);
    // (prometheus-client ends every help text with a period.)
    int_family(
        &mut registry,
        "proxy_metrics_today_events",
        "Events recorded for the proxy today (UTC day; restarts at 0 at midnight UTC)",
        proxies,
        |p| p.today.event_count,
    );
    int_family(
        &mut registry,
        "proxy_metrics_today_requests",
        "Requests reported today (UTC day; restarts at 0 at midnight UTC)",
        proxies,
        |p| p.today.request_count,
    );
    int_family(
        &mut registry,
        "proxy_metrics_today_successes",
        "Successful requests reported today (UTC day)",
        proxies,
        |p| p.today.success_count,
    );
    int_family(
        &mut registry,
        "proxy_metrics_today_errors",
        "Failed requests reported today (UTC day)",
        proxies,
        |p| p.today.error_count,
    );
    int_family(
        &mut registry,
        "proxy_metrics_today_data_transferred_bytes",
        "Bytes transferred (sent) today (UTC day)",
        proxies,
        |p| p.today.data_transferred_bytes,
    );
    int_family(
        &mut registry,
        "proxy_metrics_today_data_received_bytes",
        "Bytes received today (UTC day)",
        proxies,
        |p| p.today.data_received_bytes,
    );
    int_family(
        &mut registry,
        "proxy_metrics_today_connections",
        "Connections reported today (UTC day)",
        proxies,
        |p| p.today.connection_count,
    );

    for (q, name) in PERCENTILES {
        let latency = FloatGauges::default();
        for p in proxies {
            if let Some(ms) = p.last_hour.percentile(q) {
                latency
                    .get_or_create(&vec![("proxy", p.proxy_id.clone())])
                    .set(ms / 1000.0);
            }
        }
        let help = format!(
            "{}th percentile of request latency over the last hour, in seconds \
             (DDSketch, 1% relative error)",
            (q * 100.0).round()
        );
        registry.register(name, help, latency);
    }

    let uptime = FloatGauges::default();
    for p in proxies {
        if let Some((healthy, observed)) = p.uptime_24h.filter(|(_, o)| *o > 0) {
            uptime
                .get_or_create(&vec![("proxy", p.proxy_id.clone())])
                .set(healthy as f64 / observed as f64);
        }
    }
    registry.register(
        "proxy_metrics_last_24h_uptime_ratio",
        "Uptime over the last 24 hours as a ratio from 0 to 1: five-minute buckets holding \
         a healthy event divided by the buckets observed since registration or the first event",
        uptime,
    );

    let last_event = FloatGauges::default();
    for p in proxies {
        if let Some(ms) = p.last_event_ms {
            last_event
                .get_or_create(&vec![("proxy", p.proxy_id.clone())])
                .set(ms as f64 / 1000.0);
        }
    }
    registry.register(
        "proxy_metrics_last_event_timestamp_seconds",
        "Time of the latest event of the last 7 days, in seconds since the Unix epoch",
        last_event,
    );

    let mut text = String::new();
    encode_registry(&mut text, &registry)?;
    Ok(counters_named_as_their_samples(&text))
}

/// The encoder writes OpenMetrics' metadata for a counter (`# TYPE
/// proxy_metrics_errors counter`, samples `proxy_metrics_errors_total`);
/// in the text format 0.0.4 the metadata names the samples themselves, or
/// Prometheus and `promtool` take them as untyped.
fn counters_named_as_their_samples(text: &str) -> String {
    let counters: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len() + 16 * counters.len());
    for line in text.lines() {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

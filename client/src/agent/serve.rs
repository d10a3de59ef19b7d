//! The agent's own endpoints on `--listen`: `/metrics` (Prometheus text:
//! lines read, parsed, malformed; events and observations sent; duplicates;
//! drops by cause; buffer fill; last acknowledgement) and `/healthz`.
//!
//! A few lines of HTTP/1.1 over a tokio listener rather than a web
//! framework: two GET endpoints, one small answer each, connection closed
//! after it — not worth a dependency in a binary that sits beside every
//! proxy.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::debug;

use crate::agent::feed::Lines;
use crate::clock::{Clock, SystemClock};
use crate::{Reporter, Stats};

/// `/healthz` fails when observations wait and nothing was acknowledged
/// for this long (the API unreachable, or the token refused).
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(300);

/// The exposition of `/metrics`.
pub fn render_metrics(counts: &Lines, s: &Stats) -> String {
    let lines = counts.get();
    let (lines_rotated_away, observations_rotated_away) = counts.rotated_away();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP proxy_metrics_agent_{name} {help}");
        let _ = writeln!(out, "# TYPE proxy_metrics_agent_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "proxy_metrics_agent_{name}{labels} {v}");
        }
    };
    metric(
        "lines_read_total",
        "counter",
        "Log lines read.",
        &[("", lines.0)],
    );
    metric(
        "lines_parsed_total",
        "counter",
        "Log lines parsed into observations.",
        &[("", lines.1)],
    );
    metric(
        "lines_malformed_total",
        "counter",
        "Log lines skipped as malformed.",
        &[("", lines.2)],
    );
    metric(
        "lines_dropped_total",
        "counter",
        "Log lines lost, by cause (rotated_away: written to a rotated log after --rotate-wait).",
        &[("{cause=\"rotated_away\"}", lines_rotated_away)],
    );
    metric(
        "observations_sent_total",
        "counter",
        "Observations acknowledged by the API.",
        &[("", s.sent)],
    );
    metric(
        "events_sent_total",
        "counter",
        "Events acknowledged by the API.",
        &[("", s.events_sent)],
    );
    metric(
        "batches_sent_total",
        "counter",
        "Batches acknowledged by the API.",
        &[("", s.batches_sent)],
    );
    metric(
        "duplicate_batches_total",
        "counter",
        "Batches the API already held.",
        &[("", s.duplicates)],
    );
    metric(
        "retries_total",
        "counter",
        "Attempts after a batch's first.",
        &[("", s.retries)],
    );
    metric(
        "unauthorized_total",
        "counter",
        "401/403 answers (batch kept).",
        &[("", s.unauthorized)],
    );
    metric(
        "observations_dropped_total",
        "counter",
        "Observations lost, by cause.",
        &[
            ("{cause=\"buffer_full\"}", s.dropped_buffer_full),
            ("{cause=\"rejected\"}", s.dropped_rejected),
            ("{cause=\"conflict\"}", s.dropped_conflict),
            ("{cause=\"stale\"}", s.dropped_stale),
            ("{cause=\"gave_up\"}", s.dropped_gave_up),
            ("{cause=\"shutdown\"}", s.dropped_shutdown),
            ("{cause=\"rotated_away\"}", observations_rotated_away),
        ],
    );
    metric(
        "observations_pending",
        "gauge",
        "Observations not yet acknowledged.",
        &[("", s.pending)],
    );
    metric(
        "buffer_events",
        "gauge",
        "Closed intervals waiting to be sent.",
        &[("", s.buffered)],
    );
    metric(
        "last_acknowledged_seconds",
        "gauge",
        "Unix time of the last acknowledged batch (0: none yet).",
        &[(
            "",
            u64::try_from(s.last_acknowledged_ms / 1000).unwrap_or(0),
        )],
    );
    out
}

/// Healthy unless observations wait and the last acknowledgement (or the
/// start, `started_ms`) is older than [`UNHEALTHY_AFTER`].
pub fn healthy(s: &Stats, now_ms: i64, started_ms: i64) -> bool {
    let since = s.last_acknowledged_ms.max(started_ms);
    s.pending == 0 || now_ms - since < UNHEALTHY_AFTER.as_millis() as i64
}

/// Answers `/metrics` and `/healthz` until the process ends.
pub async fn serve(listener: TcpListener, reporter: Reporter, lines: Arc<Lines>) {
    let started_ms = SystemClock.now().timestamp_millis();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let (reporter, lines) = (reporter.clone(), lines.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let stats = reporter.stats();
            let (status, body) = match path {
                "/metrics" => ("200 OK", render_metrics(&lines, &stats)),
                "/healthz" if healthy(&stats, SystemClock.now().timestamp_millis(), started_ms) => {
                    ("200 OK", "ok\n".to_owned())
                }
                "/healthz" => (
                    "503 Service Unavailable",
                    "observations are waiting and nothing was acknowledged for 5 minutes\n"
                        .to_owned(),
                ),
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            if let Err(e) = stream.write_all(format!("{head}{body}").as_bytes()).await {
                debug!(error = %e, "could not answer on --listen");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_every_drop_cause_and_health_follows_acknowledgements() {
        let s = Stats {
            sent: 7,
            dropped_stale: 2,
            pending: 3,
            last_acknowledged_ms: 1_000_000,
            ..Stats::default()
        };
        let lines = Lines {
            read: 10.into(),
            parsed: 9.into(),
            malformed: 1.into(),
            rotated_away: 4.into(),
            observations_rotated_away: 3.into(),
        };
        let text = render_metrics(&lines, &s);
        assert!(
            text.contains("proxy_metrics_agent_lines_read_total 10\n"),
            "{text}"
        );
        assert!(
            text.contains("proxy_metrics_agent_lines_malformed_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("proxy_metrics_agent_observations_dropped_total{cause=\"stale\"} 2\n")
        );
        assert!(text.contains(
            "proxy_metrics_agent_observations_dropped_total{cause=\"rotated_away\"} 3\n"
        ));
        assert!(
            text.contains("proxy_metrics_agent_lines_dropped_total{cause=\"rotated_away\"} 4\n")
        );
        assert!(text.contains("proxy_metrics_agent_last_acknowledged_seconds 1000\n"));
        assert!(healthy(&s, 1_000_000 + 299_000, 0));
        assert!(!healthy(&s, 1_000_000 + 301_000, 0));
        assert!(healthy(&Stats::default(), i64::MAX, 0), "nothing waiting");
    }
}

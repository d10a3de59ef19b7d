//! The evaluation of a rule: closed windows, M of N, hysteresis, no data.
//!
//! Windows are `windowMinutes` long and aligned to multiples of their length
//! in the UTC day (5, 10, 15, 30 and 60 all divide a day, so every window is
//! also aligned to five minutes). A run at `now` looks at the last
//! `evaluations` windows that have closed by `now`; the newest of them ends
//! at [`latest_close`]. A rule is evaluated again only when a newer window
//! has closed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Comparison, Metric, NoData, RuleSpec};
use crate::domain::rollup::{BUCKET_MS, Bucket, Stats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Ok,
    Firing,
    NoData,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Firing => "FIRING",
            Self::NoData => "NO_DATA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OK" => Some(Self::Ok),
            "FIRING" => Some(Self::Firing),
            "NO_DATA" => Some(Self::NoData),
            _ => None,
        }
    }
}

/// The webhook `type` of a change from `previous` to `next`.
pub fn event_type(next: State) -> &'static str {
    match next {
        State::Firing => "alert.firing",
        State::Ok => "alert.resolved",
        State::NoData => "alert.no_data",
    }
}

/// The end (epoch ms) of the newest window of `window_minutes` closed at `now`.
pub fn latest_close(now: DateTime<Utc>, window_minutes: u32) -> i64 {
    let size = i64::from(window_minutes) * 60_000;
    now.timestamp_millis().div_euclid(size) * size
}

/// The `evaluations` windows ending at `close`, oldest first: `(start, end)` ms.
pub fn windows(close: i64, spec: &RuleSpec) -> Vec<(i64, i64)> {
    let size = i64::from(spec.window_minutes) * 60_000;
    (0..i64::from(spec.evaluations))
        .rev()
        .map(|k| (close - (k + 1) * size, close - k * size))
        .collect()
}

/// The metric over the buckets starting in `[start, end)`; `None` when the
/// window has no events (or none that define the metric).
pub fn window_value(
    metric: Metric,
    buckets: &BTreeMap<i64, Bucket>,
    start: i64,
    end: i64,
) -> Option<f64> {
    let mut stats = Stats::default();
    let mut healthy = 0u32;
    for bucket in buckets.range(start..end).map(|(_, b)| b) {
        stats.merge(&bucket.stats);
        healthy += u32::from(bucket.healthy);
    }
    if stats.event_count == 0 {
        return None;
    }
    match metric {
        Metric::ErrorRate => stats
            .success_rate()
            .map(|_| stats.error_count as f64 * 100.0 / stats.request_count as f64),
        Metric::P95LatencyMs => stats.percentile(0.95),
        Metric::P99LatencyMs => stats.percentile(0.99),
        Metric::AverageLatencyMs => stats.average_latency_ms(),
        Metric::RequestCount => Some(stats.request_count as f64),
        Metric::UptimePercentage => {
            let slots = ((end - start) / BUCKET_MS).max(1) as f64;
            Some(f64::from(healthy) * 100.0 / slots)
        }
    }
}

/// How one window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Past `threshold`.
    Breach,
    /// On the safe side of `recoveryThreshold`.
    Safe,
    /// Neither: between the two thresholds.
    Between,
    /// No data, and the rule counts that as no data.
    Missing,
}

pub fn classify(spec: &RuleSpec, value: Option<f64>) -> Verdict {
    let Some(v) = value else {
        return match spec.no_data {
            NoData::Ok => Verdict::Safe,
            NoData::Breaching => Verdict::Breach,
            NoData::NoData => Verdict::Missing,
        };
    };
    let (breach, safe) = match spec.comparison {
        Comparison::Above => (v > spec.threshold, v <= spec.recovery_threshold),
        Comparison::Below => (v < spec.threshold, v >= spec.recovery_threshold),
    };
    if breach {
        Verdict::Breach
    } else if safe {
        Verdict::Safe
    } else {
        Verdict::Between
    }
}

/// The state after the last `evaluations` windows' verdicts:
/// - `breaching` of them breach → `FIRING`;
/// - else all of them have no data → `NO_DATA`;
/// - else `FIRING` stays until every one of them is safe (hysteresis);
/// - else `OK`.
pub fn next_state(spec: &RuleSpec, current: State, verdicts: &[Verdict]) -> State {
    let breaches = verdicts.iter().filter(|v| **v == Verdict::Breach).count();
    if breaches >= spec.breaching as usize {
        State::Firing
    } else if !verdicts.is_empty() && verdicts.iter().all(|v| *v == Verdict::Missing) {
        State::NoData
    } else if current == State::Firing && !verdicts.iter().all(|v| *v == Verdict::Safe) {
        State::Firing
    } else {
        State::Ok
    }
}

/// One evaluation's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub state: State,
    /// The newest window's value.
    pub value: Option<f64>,
    /// The newest window.
    pub window: (i64, i64),
}

/// Evaluates `spec` in `current` state over the windows ending at `close`,
/// from the proxy's five-minute buckets (keyed by start, ms).
pub fn evaluate(
    spec: &RuleSpec,
    current: State,
    close: i64,
    buckets: &BTreeMap<i64, Bucket>,
) -> Evaluation {
    let spans = windows(close, spec);
    let values: Vec<Option<f64>> = spans
        .iter()
        .map(|(s, e)| window_value(spec.metric, buckets, *s, *e))
        .collect();
    let verdicts: Vec<Verdict> = values.iter().map(|v| classify(spec, *v)).collect();
    Evaluation {
        state: next_state(spec, current, &verdicts),
        value: values.last().copied().flatten(),
        window: spans.last().copied().unwrap_or((close, close)),
    }
}

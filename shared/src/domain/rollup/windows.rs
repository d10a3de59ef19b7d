//! The summary's last-hour and last-24-hours windows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{BUCKET_MS, BUCKETS_PER_DAY, Bucket, Stats};

/// The summary's windows, in whole five-minute buckets: the last hour is
/// the 12 buckets up to and including the current one, the last 24 hours
/// the 288 such buckets, and both also take the next bucket, where events
/// dated up to 5 minutes ahead (a proxy's clock running fast) fall. So the
/// last hour reaches back between 55 and 60 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryWindows {
    /// Start of the oldest bucket of the last hour (ms).
    pub last_hour_from_ms: i64,
    /// Start of the oldest bucket of the last 24 hours (ms).
    pub last_day_from_ms: i64,
    /// Start of the newest bucket of both (ms).
    pub to_ms: i64,
}

impl SummaryWindows {
    pub fn at(now: DateTime<Utc>) -> Self {
        let current = now.timestamp_millis().div_euclid(BUCKET_MS) * BUCKET_MS;
        Self {
            last_hour_from_ms: current - 11 * BUCKET_MS,
            last_day_from_ms: current - (BUCKETS_PER_DAY as i64 - 1) * BUCKET_MS,
            to_ms: current + BUCKET_MS,
        }
    }

    /// (last hour, last 24 hours) from buckets keyed by their start (ms).
    pub fn fold(&self, buckets: &BTreeMap<i64, Bucket>) -> (Stats, Stats) {
        let mut hour = Stats::default();
        let mut day = Stats::default();
        for (start, bucket) in buckets.range(self.last_day_from_ms..=self.to_ms) {
            day.merge(&bucket.stats);
            if *start >= self.last_hour_from_ms {
                hour.merge(&bucket.stats);
            }
        }
        (hour, day)
    }

    /// Uptime over the last 24 hours as (buckets holding a healthy event,
    /// buckets observed): the contract's uptime rule applied to this
    /// window instead of a day. The observed window starts at the later of
    /// the window's start and the earlier of (the proxy's registration, the
    /// window's first event), and ends at `now`; the bucket in progress
    /// counts. `None` when the observed window is empty. `buckets` are keyed
    /// by their start (ms).
    pub fn uptime_buckets(
        &self,
        buckets: &BTreeMap<i64, Bucket>,
        registered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<(u64, u64)> {
        let now_ms = now.timestamp_millis();
        let first_event = buckets
            .range(self.last_day_from_ms..now_ms)
            .find_map(|(_, b)| b.stats.first_event_ms);
        let observed_from = match (registered_at.map(|r| r.timestamp_millis()), first_event) {
            (Some(r), Some(f)) => r.min(f),
            (r, f) => r.or(f)?,
        };
        let start = observed_from.max(self.last_day_from_ms);
        if now_ms <= start {
            return None;
        }
        let first = start.div_euclid(BUCKET_MS) * BUCKET_MS;
        let last = (now_ms - 1).div_euclid(BUCKET_MS) * BUCKET_MS;
        let observed = ((last - first) / BUCKET_MS + 1) as u64;
        let healthy = buckets
            .range(first..=last)
            .filter(|(_, b)| b.healthy)
            .count() as u64;
        Some((healthy, observed))
    }
}

//! Per-series state: duplicates, cumulative points turned into deltas,
//! resets (see `map`'s module docs). Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::events::event_of;
use super::map::{Data, Group, Kind, Point, REASON_STATE_FULL, REASON_WINDOW, Report};
use crate::domain::event::{Event, FUTURE_TOLERANCE, LATE_WINDOW};

/// What a series remembers to turn its next point into a delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Last {
    /// A delta series: its time is all it needs.
    Nothing,
    /// A cumulative histogram's counts (no buckets for byte sizes: only
    /// their sums are used).
    Counts {
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
    /// A cumulative exponential histogram's counts.
    Exponential {
        count: u64,
        sum: f64,
        scale: i32,
        zero: u64,
        offset: i32,
        buckets: Vec<u64>,
    },
    /// A level (concurrent requests).
    Level(f64),
}

/// One series' state: its start and the last point accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    pub start_ns: u64,
    pub last_ns: u64,
    pub last: Last,
}

/// Every series of one resource + scope (one item, postcard-encoded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub series: BTreeMap<u64, SeriesState>,
}

impl GroupState {
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// Bounds of [`apply`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The encoded state may not grow past this by new series.
    pub max_state_bytes: usize,
    /// Series not updated for this long are forgotten.
    pub retention: Duration,
}

/// What a group's points became.
#[derive(Debug, Default)]
pub struct Applied {
    pub events: Vec<Event>,
    pub accepted: u64,
    pub duplicates: u64,
    pub report: Report,
    /// The state differs from the one read (it must be written).
    pub changed: bool,
}

/// Runs `group`'s points against `state` (updated in place).
pub fn apply(state: &mut GroupState, group: &Group, now: DateTime<Utc>, limits: Limits) -> Applied {
    let mut out = Applied::default();
    let forget_before = (now - limits.retention)
        .timestamp_nanos_opt()
        .unwrap_or(0)
        .max(0) as u64;
    let before = state.series.len();
    state.series.retain(|_, s| s.last_ns >= forget_before);
    out.changed = state.series.len() != before;
    let earliest = (now - LATE_WINDOW).timestamp_millis();
    let latest = (now + FUTURE_TOLERANCE).timestamp_millis();
    let mut size = state.encoded_len();
    // A series' points in time order: an earlier one must not be taken for
    // a duplicate of a later one of the same export.
    let mut order: Vec<&Point> = group.points.iter().collect();
    order.sort_by_key(|p| (p.series, p.time_ns));
    for point in order {
        let previous = state.series.get(&point.series);
        if previous.is_some_and(|s| point.time_ns <= s.last_ns) {
            out.duplicates += 1;
            continue;
        }
        let time_ms = (point.time_ns / 1_000_000) as i64;
        if time_ms < earliest || time_ms > latest {
            out.report.reject(1, REASON_WINDOW);
            continue;
        }
        let (delta, last) = delta_of(point, previous);
        let next = SeriesState {
            start_ns: point.start_ns,
            last_ns: point.time_ns,
            last,
        };
        // The state may not outgrow its bound: not by a new series, nor by
        // a known one whose buckets multiplied (that point is refused, the
        // series keeps its last state).
        let entry = |s: &SeriesState| {
            postcard::experimental::serialized_size(&(point.series, s)).unwrap_or(usize::MAX)
        };
        let was = previous.map_or(0, entry);
        let will = size.saturating_sub(was).saturating_add(entry(&next));
        if will > limits.max_state_bytes {
            out.report.reject(1, REASON_STATE_FULL);
            continue;
        }
        size = will;
        state.series.insert(point.series, next);
        out.changed = true;
        out.accepted += 1;
        if let Some(event) = event_of(point, delta, time_ms) {
            out.events.push(event);
        }
    }
    out
}

/// The figures a point adds (its delta), and what its series keeps.
pub(super) fn delta_of(point: &Point, previous: Option<&SeriesState>) -> (Data, Last) {
    // The last point of the same run (same start), if any.
    let same_run = previous.filter(|s| point.cumulative && s.start_ns == point.start_ns);
    match &point.data {
        Data::Level(v) => {
            let level = if point.cumulative {
                *v
            } else {
                // A delta up-down counter: its level is the running sum.
                match previous.map(|s| &s.last) {
                    Some(Last::Level(l)) => l + v,
                    _ => *v,
                }
            };
            (Data::Level(level), Last::Level(level))
        }
        Data::Explicit {
            count,
            sum,
            bounds,
            counts,
            min,
            max,
        } => {
            if !point.cumulative {
                return (point.data.clone(), Last::Nothing);
            }
            let keep = if point.kind == Kind::Duration {
                counts.clone()
            } else {
                Vec::new()
            };
            let last = Last::Counts {
                count: *count,
                sum: sum.unwrap_or(0.0),
                buckets: keep,
            };
            let delta = match same_run.map(|s| &s.last) {
                Some(Last::Counts {
                    count: c0,
                    sum: s0,
                    buckets: b0,
                }) if count >= c0
                    && sum.unwrap_or(0.0) >= *s0
                    && (point.kind != Kind::Duration
                        || (b0.len() == counts.len()
                            && counts.iter().zip(b0).all(|(c, p)| c >= p))) =>
                {
                    let (bounds, counts) = if point.kind == Kind::Duration {
                        let diff = counts.iter().zip(b0).map(|(c, p)| c - p).collect();
                        (bounds.clone(), diff)
                    } else {
                        // Only the sum is used: one bucket of the delta count.
                        (Vec::new(), vec![count - c0])
                    };
                    Data::Explicit {
                        count: count - c0,
                        sum: sum.map(|s| s - s0),
                        bounds,
                        counts,
                        // A cumulative min/max is not the delta's.
                        min: None,
                        max: None,
                    }
                }
                // First point of the series or of a new run (a reset): in full.
                _ => Data::Explicit {
                    count: *count,
                    sum: *sum,
                    bounds: bounds.clone(),
                    counts: counts.clone(),
                    min: *min,
                    max: *max,
                },
            };
            (delta, last)
        }
        Data::Exponential {
            count,
            sum,
            scale,
            zero,
            offset,
            counts,
            min,
            max,
        } => {
            if !point.cumulative {
                return (point.data.clone(), Last::Nothing);
            }
            let last = Last::Exponential {
                count: *count,
                sum: sum.unwrap_or(0.0),
                scale: *scale,
                zero: *zero,
                offset: *offset,
                buckets: counts.clone(),
            };
            let delta = match same_run.map(|s| &s.last) {
                Some(Last::Exponential {
                    count: c0,
                    sum: s0,
                    scale: scale0,
                    zero: z0,
                    offset: o0,
                    buckets: b0,
                }) if count >= c0 && zero >= z0 => {
                    // Both at the coarser scale (an SDK only ever lowers it).
                    let common = (*scale).min(*scale0);
                    let now_b = downscale(*offset, counts, scale - common);
                    let then_b = downscale(*o0, b0, scale0 - common);
                    match subtract(&now_b, &then_b) {
                        Some((off, diff)) => Data::Exponential {
                            count: count - c0,
                            sum: sum.map(|s| (s - s0).max(0.0)),
                            scale: common,
                            zero: zero - z0,
                            offset: off,
                            counts: diff,
                            min: None,
                            max: None,
                        },
                        None => point.data.clone(),
                    }
                }
                _ => Data::Exponential {
                    count: *count,
                    sum: *sum,
                    scale: *scale,
                    zero: *zero,
                    offset: *offset,
                    counts: counts.clone(),
                    min: *min,
                    max: *max,
                },
            };
            (delta, last)
        }
    }
}

/// Buckets `(offset, counts)` lowered by `by` scales (each merges pairs).
pub(super) fn downscale(offset: i32, counts: &[u64], by: i32) -> (i32, Vec<u64>) {
    if by <= 0 || counts.is_empty() {
        return (offset, counts.to_vec());
    }
    let by = by.min(62);
    let new_offset = offset >> by;
    let mut out: Vec<u64> = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        let index = ((offset + i as i32) >> by) - new_offset;
        let index = index.max(0) as usize;
        if out.len() <= index {
            out.resize(index + 1, 0);
        }
        out[index] = out[index].saturating_add(*c);
    }
    (new_offset, out)
}

/// `now − then` bucket by bucket, `None` if any bucket went down (a reset).
pub(super) fn subtract(now: &(i32, Vec<u64>), then: &(i32, Vec<u64>)) -> Option<(i32, Vec<u64>)> {
    let (o1, c1) = now;
    let (o0, c0) = then;
    let at = |offset: i32, counts: &[u64], k: i32| -> u64 {
        let i = k - offset;
        if i < 0 {
            0
        } else {
            counts.get(i as usize).copied().unwrap_or(0)
        }
    };
    // Every index of `then` must still be there in `now`, at least as large.
    for (i, c) in c0.iter().enumerate() {
        if *c > at(*o1, c1, o0 + i as i32) {
            return None;
        }
    }
    let diff = c1
        .iter()
        .enumerate()
        .map(|(i, c)| c - at(*o0, c0, o1 + i as i32))
        .collect();
    Some((*o1, diff))
}

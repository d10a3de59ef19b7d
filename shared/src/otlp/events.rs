//! An accepted point's delta as an event, and histogram buckets as a
//! latency sketch (the bounds are in `map`'s module docs). Pure.

use super::map::{Data, Kind, Point};
use crate::domain::dimensions::Dimensions;
use crate::domain::event::{Event, EventType, MAX_COUNT};
use crate::domain::sketch::LatencySketch;

/// The event of an accepted point (`None`: it adds nothing).
pub(super) fn event_of(point: &Point, delta: Data, time_ms: i64) -> Option<Event> {
    let mut event = Event {
        event_id: format!("otlp:{:016x}:{}", point.series, point.time_ns),
        event_type: EventType::Request,
        timestamp_ms: time_ms,
        healthy: true,
        request_count: 0,
        success_count: 0,
        error_count: 0,
        total_latency_ms: None,
        min_latency_ms: None,
        max_latency_ms: None,
        latency_sketch: None,
        data_transferred_bytes: 0,
        data_received_bytes: 0,
        connection_count: 0,
        concurrent_connections: None,
        error_message: None,
        dimensions: Dimensions {
            route: point.route.clone(),
            upstream: None,
            overflow: [None; 2],
        },
        status_counts: None,
    };
    match (point.kind, delta) {
        (Kind::Active, Data::Level(level)) => {
            event.event_type = EventType::Connection;
            event.concurrent_connections = Some(level.max(0.0).round() as u64);
        }
        (Kind::Duration, data) => {
            let (count, sum, sketch, min, max) = match data {
                Data::Explicit {
                    count,
                    sum,
                    bounds,
                    counts,
                    min,
                    max,
                } => (
                    count,
                    sum,
                    match sum {
                        // No buckets at all: the mean stands for each request.
                        Some(sum) if bounds.is_empty() && count > 0 => {
                            let mut sketch = LatencySketch::new();
                            let mean = (sum / count as f64)
                                .max(min.unwrap_or(0.0))
                                .min(max.unwrap_or(f64::MAX));
                            sketch.add_many(mean.max(0.0) * point.to_ms, count);
                            sketch
                        }
                        _ => explicit_sketch(&bounds, &counts, min, max, point.to_ms),
                    },
                    min,
                    max,
                ),
                Data::Exponential {
                    count,
                    sum,
                    scale,
                    zero,
                    offset,
                    counts,
                    min,
                    max,
                } => (
                    count,
                    sum,
                    exponential_sketch(scale, zero, offset, &counts, min, max, point.to_ms),
                    min,
                    max,
                ),
                Data::Level(_) => return None,
            };
            if count == 0 {
                return None;
            }
            event.request_count = count;
            match point.status_class {
                Some(class) => {
                    let mut classes = [0; 5];
                    classes[class] = count;
                    event.status_counts = Some(classes);
                    if class == 4 {
                        event.error_count = count;
                    } else {
                        event.success_count = count;
                    }
                }
                None => event.success_count = count,
            }
            event.total_latency_ms = sum.map(|s| s.max(0.0) * point.to_ms);
            event.min_latency_ms = min.map(|m| m.max(0.0) * point.to_ms);
            event.max_latency_ms = max.map(|m| m.max(0.0) * point.to_ms);
            event.latency_sketch = Some(sketch);
        }
        (Kind::ResponseBytes | Kind::RequestBytes, data) => {
            let sum = match data {
                Data::Explicit { sum, .. } | Data::Exponential { sum, .. } => sum?,
                Data::Level(_) => return None,
            };
            let bytes = sum.max(0.0).round().min(MAX_COUNT as f64) as u64;
            if bytes == 0 {
                return None;
            }
            if point.kind == Kind::ResponseBytes {
                event.data_transferred_bytes = bytes;
            } else {
                event.data_received_bytes = bytes;
            }
        }
        (Kind::Active, _) => return None,
    }
    Some(event)
}

/// Each explicit bucket's count at one value inside it (module docs).
pub fn explicit_sketch(
    bounds: &[f64],
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
    to_ms: f64,
) -> LatencySketch {
    let mut sketch = LatencySketch::new();
    let n = bounds.len();
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let mut lower = if i == 0 { 0.0 } else { bounds[i - 1].max(0.0) };
        let mut upper = if i == n {
            max.filter(|m| *m > lower).unwrap_or(lower)
        } else {
            bounds[i].max(0.0)
        };
        if let Some(min) = min {
            lower = lower.max(min);
        }
        if let Some(max) = max {
            upper = upper.min(max);
        }
        if upper < lower {
            upper = lower;
        }
        let value = if lower > 0.0 {
            (lower * upper).sqrt()
        } else {
            (lower + upper) / 2.0
        };
        sketch.add_many(value.clamp(lower, upper) * to_ms, c);
    }
    sketch
}

/// Each exponential bucket's count at `2·b^(k+1)/(1 + b)` (module docs).
pub fn exponential_sketch(
    scale: i32,
    zero: u64,
    offset: i32,
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
    to_ms: f64,
) -> LatencySketch {
    let mut sketch = LatencySketch::new();
    sketch.add_many(0.0, zero);
    let step = (-f64::from(scale)).exp2() * std::f64::consts::LN_2; // ln b
    let base = step.exp();
    let factor = 2.0 * base / (1.0 + base);
    for (i, &c) in counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let k = f64::from(offset) + i as f64;
        let mut value = (k * step).exp() * factor;
        if let Some(min) = min.filter(|m| *m > 0.0) {
            value = value.max(min);
        }
        if let Some(max) = max.filter(|m| *m > 0.0) {
            value = value.min(max);
        }
        sketch.add_many(value * to_ms, c);
    }
    sketch
}

/// The contract's bound on an exponential bucket's representative value.
pub fn exponential_error(scale: i32) -> f64 {
    let base = (-f64::from(scale)).exp2().exp2();
    (base - 1.0) / (base + 1.0)
}

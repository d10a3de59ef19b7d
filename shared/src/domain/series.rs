//! Time series (contract v3, `GET …/series`): a span of UTC-aligned steps
//! (`5m`, `1h`, `1d`), each point the merge of the five-minute buckets or of
//! the days it covers, by the daily object's rules. Pure: the buckets and
//! days come in read, `now` is passed in.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use super::ValidationError;
use super::excerpt;
use super::rollup::{BUCKET_MS, Bucket, DAY_MS, Rollup, Stats, day_start_ms};

/// At most this many points in one series: 7 days of five-minute steps.
pub const MAX_POINTS: i64 = 2_016;

/// The earliest and latest instants a series may name (a day key beyond
/// these would not be a `YYYY-MM-DD` day).
const MIN_INSTANT_MS: i64 = 0; // 1970-01-01T00:00:00Z
const MAX_INSTANT_MS: i64 = 253_402_300_800_000; // 10000-01-01T00:00:00Z

/// A series' step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    FiveMinutes,
    Hour,
    Day,
}

impl Step {
    /// `5m`, `1h` or `1d`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "5m" => Ok(Self::FiveMinutes),
            "1h" => Ok(Self::Hour),
            "1d" => Ok(Self::Day),
            other => Err(ValidationError::invalid(format!(
                "The query parameter 'step' must be '5m', '1h' or '1d', not '{}'.",
                excerpt(other)
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FiveMinutes => "5m",
            Self::Hour => "1h",
            Self::Day => "1d",
        }
    }

    /// The step's length (UTC has no daylight saving: a day is always 24 h).
    pub fn ms(self) -> i64 {
        match self {
            Self::FiveMinutes => BUCKET_MS,
            Self::Hour => 12 * BUCKET_MS,
            Self::Day => DAY_MS,
        }
    }
}

/// An instant given as RFC 3339 (`2024-01-15T10:00:00Z`) or as epoch
/// milliseconds (digits only), between 1970 and the year 9999.
pub fn parse_series_instant(name: &str, value: &str) -> Result<DateTime<Utc>, ValidationError> {
    let bad = || {
        ValidationError::invalid(format!(
            "The query parameter '{name}' must be an RFC 3339 instant such as \
             2024-01-15T10:00:00Z (or epoch milliseconds), not '{}'.",
            excerpt(value)
        ))
    };
    let at = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .ok_or_else(bad)?
    } else {
        DateTime::parse_from_rfc3339(value)
            .map_err(|_| bad())?
            .with_timezone(&Utc)
    };
    let ms = at.timestamp_millis();
    if !(MIN_INSTANT_MS..MAX_INSTANT_MS).contains(&ms) {
        return Err(ValidationError::invalid(format!(
            "The query parameter '{name}' must lie between 1970-01-01T00:00:00Z and the year 9999."
        )));
    }
    Ok(at)
}

/// Why a span was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpanError {
    /// `from` is not before `to`.
    #[error("'from' must be before 'to'.")]
    Empty,
    /// More points than [`MAX_POINTS`].
    #[error(
        "The series would have {points} points of {step}; at most {MAX_POINTS} are answered: \
         ask for a shorter span or a longer step."
    )]
    TooManyPoints { points: i64, step: &'static str },
}

/// The steps of a series: `from` rounded down to its step (UTC), then every
/// step that starts before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub step: Step,
    /// Start of the first point (ms), aligned to the step.
    pub first_ms: i64,
    /// Number of points.
    pub points: i64,
}

impl Span {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>, step: Step) -> Result<Self, SpanError> {
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        if from >= to {
            return Err(SpanError::Empty);
        }
        let first_ms = from.div_euclid(step.ms()) * step.ms();
        let points = (to - first_ms + step.ms() - 1) / step.ms();
        if points > MAX_POINTS {
            return Err(SpanError::TooManyPoints {
                points,
                step: step.as_str(),
            });
        }
        Ok(Self {
            step,
            first_ms,
            points,
        })
    }

    pub fn start(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.first_ms).unwrap_or_default()
    }

    /// Start of the last point's last five-minute bucket (ms).
    pub fn last_bucket_ms(&self) -> i64 {
        self.end_ms() - BUCKET_MS
    }

    /// End of the last point (ms, exclusive).
    pub fn end_ms(&self) -> i64 {
        self.first_ms + self.points * self.step.ms()
    }

    /// The UTC days the span touches (first, last).
    pub fn days(&self) -> (NaiveDate, NaiveDate) {
        let day = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .date_naive()
        };
        (day(self.first_ms), day(self.end_ms() - 1))
    }

    fn starts(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.points).map(|i| self.first_ms + i * self.step.ms())
    }
}

/// One point: its start, its figures, and its uptime as (buckets holding a
/// healthy event, buckets observed) — `None` when it lies wholly outside the
/// observed window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub start_ms: i64,
    pub stats: Stats,
    pub uptime: Option<(u64, u64)>,
}

impl Point {
    pub fn uptime_percentage(&self) -> Option<f64> {
        self.uptime
            .filter(|(_, observed)| *observed > 0)
            .map(|(healthy, observed)| healthy as f64 / observed as f64 * 100.0)
    }
}

/// The points of a `5m` or `1h` span from its five-minute buckets (keyed by
/// their start, ms). Uptime follows the daily object's rule on the span:
/// the observed window starts at the earlier of the proxy's registration and
/// the span's first event, and ends at `now`; a point's observed buckets are
/// those overlapping it (the bucket in progress counts).
pub fn points_from_buckets(
    span: &Span,
    buckets: &BTreeMap<i64, Bucket>,
    registered_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Point> {
    let first_event = buckets
        .range(span.first_ms..span.end_ms())
        .filter_map(|(_, b)| b.stats.first_event_ms)
        .min();
    let observed_from = match (registered_at.map(|r| r.timestamp_millis()), first_event) {
        (Some(r), Some(f)) => Some(r.min(f)),
        (r, f) => r.or(f),
    };
    let now_ms = now.timestamp_millis();
    span.starts()
        .map(|start| {
            let end = start + span.step.ms();
            let mut point = Point {
                start_ms: start,
                ..Point::default()
            };
            for (_, bucket) in buckets.range(start..end) {
                point.stats.merge(&bucket.stats);
            }
            if let Some(from) = observed_from {
                // Buckets [b, b + 5 min) overlapping [from, now).
                let first = start.max(from.div_euclid(BUCKET_MS) * BUCKET_MS);
                let last = (end - BUCKET_MS).min((now_ms - 1).div_euclid(BUCKET_MS) * BUCKET_MS);
                if first <= last && now_ms > from {
                    let observed = ((last - first) / BUCKET_MS + 1) as u64;
                    let healthy = buckets
                        .range(first..=last)
                        .filter(|(_, b)| b.healthy)
                        .count() as u64;
                    point.uptime = Some((healthy, observed));
                }
            }
            point
        })
        .collect()
}

/// The points of a `1d` span from its days: each point is its day's
/// figures, uptime included, exactly as the daily object has them.
pub fn points_from_days(
    span: &Span,
    days: &BTreeMap<NaiveDate, Rollup>,
    registered_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Point> {
    let empty = Rollup::default();
    span.starts()
        .map(|start| {
            let day = DateTime::from_timestamp_millis(start)
                .unwrap_or_default()
                .date_naive();
            let rollup = days.get(&day).unwrap_or(&empty);
            debug_assert_eq!(day_start_ms(day), start);
            Point {
                start_ms: start,
                stats: rollup.stats.clone(),
                uptime: rollup.uptime_buckets(day, registered_at, now),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn from_is_rounded_down_to_its_step_and_every_step_before_to_counts() {
        let span = Span::new(
            at("2024-01-15T10:07:00Z"),
            at("2024-01-15T10:20:00Z"),
            Step::FiveMinutes,
        )
        .unwrap();
        assert_eq!(span.start(), at("2024-01-15T10:05:00Z"));
        assert_eq!(span.points, 3); // 10:05, 10:10, 10:15
        let span = Span::new(
            at("2024-01-15T10:07:00Z"),
            at("2024-01-15T10:20:01Z"),
            Step::FiveMinutes,
        )
        .unwrap();
        assert_eq!(span.points, 4); // and 10:20, which starts before `to`
        let span = Span::new(
            at("2024-01-15T10:59:59Z"),
            at("2024-01-17T00:00:00Z"),
            Step::Day,
        )
        .unwrap();
        assert_eq!(span.start(), at("2024-01-15T00:00:00Z"));
        assert_eq!(span.points, 2);
        assert_eq!(
            span.days(),
            (
                NaiveDate::from_ymd_opt(2024, 1, 15).unwrap(),
                NaiveDate::from_ymd_opt(2024, 1, 16).unwrap()
            )
        );
        let span = Span::new(
            at("2024-01-15T10:30:00Z"),
            at("2024-01-15T11:00:00.001Z"),
            Step::Hour,
        )
        .unwrap();
        assert_eq!((span.start(), span.points), (at("2024-01-15T10:00:00Z"), 2));
        assert_eq!(
            span.last_bucket_ms(),
            at("2024-01-15T11:55:00Z").timestamp_millis()
        );
    }

    #[test]
    fn at_most_2016_points_and_never_an_empty_span() {
        let from = at("2024-01-08T00:00:00Z");
        assert_eq!(
            Span::new(from, at("2024-01-15T00:00:00Z"), Step::FiveMinutes)
                .unwrap()
                .points,
            2016
        );
        assert_eq!(
            Span::new(from, at("2024-01-15T00:00:00.001Z"), Step::FiveMinutes),
            Err(SpanError::TooManyPoints {
                points: 2017,
                step: "5m"
            })
        );
        assert_eq!(Span::new(from, from, Step::Hour), Err(SpanError::Empty));
        assert_eq!(
            Span::new(at("2024-01-09T00:00:00Z"), from, Step::Day),
            Err(SpanError::Empty)
        );
    }

    #[test]
    fn instants_are_rfc_3339_or_epoch_milliseconds() {
        assert_eq!(
            parse_series_instant("from", "2024-01-15T10:00:00Z").unwrap(),
            at("2024-01-15T10:00:00Z")
        );
        assert_eq!(
            parse_series_instant("from", "2024-01-15T11:00:00+01:00").unwrap(),
            at("2024-01-15T10:00:00Z")
        );
        assert_eq!(
            parse_series_instant("from", "1705312800000").unwrap(),
            at("2024-01-15T10:00:00Z")
        );
        for bad in [
            "",
            "2024-01-15",
            "2024-01-15T10:00:00",
            "yesterday",
            "-5",
            "1.5",
            "99999999999999999999999",
            "1969-12-31T23:59:59Z",
        ] {
            let message = parse_series_instant("from", bad).unwrap_err().to_string();
            assert!(message.contains("'from'"), "{bad}: {message}");
        }
        assert!(Step::parse("5m").is_ok() && Step::parse("1h").is_ok());
        assert!(Step::parse("1m").is_err() && Step::parse("5M").is_err());
    }
}

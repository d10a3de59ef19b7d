//! Where the client reads wall-clock time.
//!
//! Interval boundaries, the server's accepted window (7 days back, 5 minutes
//! ahead) and receipt times all depend on "now"; reading it through one
//! injectable [`Clock`] lets tests pin it instead of depending on the hour
//! they run at. Waiting (flush timers, backoff) uses tokio's monotonic timers,
//! not this clock: a wall clock that jumps must not stretch or skip a wait.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

/// A source of the current UTC instant.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        #[allow(clippy::disallowed_methods)]
        // the one place in this crate that reads the wall clock
        Utc::now()
    }
}

/// A clock that reads what it was set to (millisecond precision), shared by
/// every clone so a test can move it for everyone at once.
#[derive(Clone, Debug)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(at.timestamp_millis())),
        }
    }

    pub fn set(&self, at: DateTime<Utc>) {
        self.millis.store(at.timestamp_millis(), Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.millis
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.millis.load(Ordering::SeqCst))
            .unwrap_or(DateTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_manual_clock_is_shared_by_its_clones() {
        let at = Utc.with_ymd_and_hms(2028, 2, 29, 23, 59, 55).unwrap();
        let clock = ManualClock::new(at);
        let clone = clock.clone();
        clock.advance(Duration::seconds(10));
        assert_eq!(clone.now(), at + Duration::seconds(10));
    }
}

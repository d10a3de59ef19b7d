//! The one source of "now" for the whole service.
//!
//! Every handler, the aggregation and the token checks read the time through
//! the [`Clock`] the [`App`](crate::App) holds: production uses the system
//! clock, tests pin it to the instant they are about (just after midnight, the
//! last day of a month, 29 February…) so that no test depends on the hour it
//! runs at. Reading the wall clock anywhere else in this crate is refused by
//! clippy (`disallowed-methods` in the workspace's `clippy.toml`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

/// Where "now" comes from: the system clock, or an instant a test pinned
/// (shared by every clone, so a test can move it for everyone at once).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Milliseconds since the epoch when pinned; `None` for the system clock.
    pinned: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The real time.
    pub fn system() -> Self {
        Self { pinned: None }
    }

    /// A clock that reads `at` until it is moved with [`Clock::set`] or
    /// [`Clock::advance`]. Millisecond precision, like every stored instant.
    pub fn pinned(at: DateTime<Utc>) -> Self {
        Self {
            pinned: Some(Arc::new(AtomicI64::new(at.timestamp_millis()))),
        }
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.pinned {
            Some(ms) => DateTime::from_timestamp_millis(ms.load(Ordering::SeqCst))
                .unwrap_or(DateTime::UNIX_EPOCH),
            #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
            None => Utc::now(),
        }
    }

    /// Moves a pinned clock to `at`; the system clock cannot be moved.
    pub fn set(&self, at: DateTime<Utc>) {
        match &self.pinned {
            Some(ms) => ms.store(at.timestamp_millis(), Ordering::SeqCst),
            None => tracing::warn!("the system clock cannot be set"),
        }
    }

    /// Moves a pinned clock forward (or back, for a negative `by`).
    pub fn advance(&self, by: Duration) {
        if let Some(ms) = &self.pinned {
            ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_pinned_clock_reads_what_it_was_set_to_in_every_clone() {
        let at = Utc.with_ymd_and_hms(2028, 2, 29, 23, 58, 0).unwrap();
        let clock = Clock::pinned(at);
        let clone = clock.clone();
        assert_eq!(clone.now(), at);
        clock.advance(Duration::minutes(3));
        assert_eq!(
            clone.now(),
            Utc.with_ymd_and_hms(2028, 3, 1, 0, 1, 0).unwrap()
        );
        clone.set(at);
        assert_eq!(clock.now(), at);
        assert!(clock.is_pinned());
    }

    #[test]
    fn the_system_clock_moves() {
        let clock = Clock::system();
        assert!(!clock.is_pinned());
        let a = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(clock.now() > a);
    }
}

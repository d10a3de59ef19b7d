//! Token buckets kept in the container's memory, on top of the stage-wide
//! limits of API Gateway, for two limits:
//!
//! - per caller (the token's `sub`), on every request that reads storage on
//!   the caller's behalf, taken *before* the ownership read: one caller can
//!   cause at most that many ownership reads, whoever's proxy id it names;
//! - per proxy, on recording, taken only *after* ownership is proven: only
//!   the proxy's owner spends it, so nobody else's requests can make a
//!   proxy's records 429 (they get 404, then their own 429).
//!
//! What each guarantees: within one warm container, a key gets at most
//! `burst` requests at once and `rate` a second sustained, and is answered
//! 429 with `Retry-After` beyond. What it does not: Lambda spreads a proxy's
//! requests over as many containers as run at once, each with its own
//! buckets, so the fleet-wide bound is `rate × containers`, and a cold
//! container starts with a full bucket. The stage throttle (template
//! parameters) caps everything; reserved concurrency on the function caps
//! the number of containers, and with it the per-key total.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Defaults of the per-proxy recording limit: a proxy batching every few
/// seconds is far below them; a runaway loop is not.
pub const DEFAULT_RECORD_RATE: f64 = 10.0;
pub const DEFAULT_RECORD_BURST: f64 = 50.0;

/// Defaults of the per-caller limit: room for an owner's proxies recording
/// and a dashboard reading at once (a fifth of the default stage throttle),
/// while a caller probing other tenants' ids is held to that many reads.
pub const DEFAULT_CALLER_RATE: f64 = 20.0;
pub const DEFAULT_CALLER_BURST: f64 = 100.0;

/// Buckets kept at most; the idlest are dropped beyond (a dropped bucket
/// was full again anyway once idle for `burst / rate` seconds).
const MAX_BUCKETS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests a second, sustained.
    pub rate: f64,
    /// Requests at once.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Token buckets by key (a proxy id, or a caller's `sub`).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token for `key` at `now`, or says in how many whole
    /// seconds one will be there.
    pub fn take(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let now_ms = now.timestamp_millis();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, b)| b.at_ms)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                buckets.remove(&oldest);
            }
        }
        let limit = self.limit;
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: limit.burst,
            at_ms: now_ms,
        });
        let elapsed = (now_ms - bucket.at_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * limit.rate).min(limit.burst);
        bucket.at_ms = now_ms.max(bucket.at_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / limit.rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(2_000_000_000, 0).unwrap()
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(RateLimit {
            rate: 2.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert_eq!(limiter.take("p", t0()), Ok(()));
        }
        assert_eq!(limiter.take("p", t0()), Err(1));
        // another proxy has its own bucket
        assert_eq!(limiter.take("q", t0()), Ok(()));
        // half a second later: one more token
        assert_eq!(
            limiter.take("p", t0() + Duration::milliseconds(500)),
            Ok(())
        );
        assert!(
            limiter
                .take("p", t0() + Duration::milliseconds(500))
                .is_err()
        );
        // idle long enough, the bucket is full again, never fuller
        let later = t0() + Duration::seconds(60);
        for _ in 0..3 {
            assert_eq!(limiter.take("p", later), Ok(()));
        }
        assert!(limiter.take("p", later).is_err());
    }

    #[test]
    fn the_number_of_buckets_is_bounded() {
        let limiter = RateLimiter::new(RateLimit {
            rate: 1.0,
            burst: 1.0,
        });
        for i in 0..(MAX_BUCKETS + 10) {
            let _ = limiter.take(&format!("p{i}"), t0() + Duration::milliseconds(i as i64));
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_BUCKETS);
    }
}

//! What an answer means for a batch, and how long to wait before the next
//! attempt.

use std::time::Duration;

use rand::Rng;

/// What came back from one attempt at sending a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// An HTTP answer.
    Http {
        status: u16,
        /// `Retry-After`, when it held a number of seconds.
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    /// No answer: connection refused or reset, timeout, DNS failure.
    Network(String),
}

/// What to do with the batch after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Recorded. `duplicate` when the server had it already (200: an earlier
    /// attempt landed but its answer was lost).
    Accepted { duplicate: bool },
    /// Send the same body with the same sequence again, after a wait of at
    /// least `retry_after` when the server gave one.
    Retry {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// 409 `SEQUENCE_GAP`: the server has recorded this producer's batches up
    /// to `expected - 1` only.
    SequenceGap { expected: u64 },
    /// 409 `SEQUENCE_CONFLICT`: the server accepted this sequence with
    /// another body. Our numbering disagrees with what the server holds (a
    /// state file copied between agents, or restored from an old backup):
    /// resending cannot help and guessing another number could count twice,
    /// so the batch is dropped and counted on its own.
    SequenceConflict { reason: String },
    /// 401 or 403: the token expired, was revoked, or is for another proxy.
    /// The batch is kept and retried (after a backoff, with whatever token
    /// is current then: the agent re-reads its token file), never dropped
    /// for it: a token is fixed far more often than a batch is wrong.
    Unauthorized { status: u16, reason: String },
    /// Refused for good (a 4xx other than 401/403/408/409-gap/429, or a redirect):
    /// dropping the batch is the only way forward.
    Rejected { status: u16, reason: String },
}

/// Classifies an attempt's result.
///
/// - 200 → accepted as a duplicate (the contract answers 200 only when every
///   event was a duplicate), 201 and any other 2xx → accepted.
/// - no answer, 5xx (503 included), 429 and 408 → retry. 408 is not in the
///   contract, but a gateway may send it and it says nothing about the
///   batch; the sequence makes the retry safe.
/// - 409 with `{"error": "SEQUENCE_GAP", "expectedSequence": N}` → gap;
///   409 `SEQUENCE_CONFLICT` → conflict; any other 409 → rejected.
/// - 401 and 403 → unauthorized: kept and retried (see [`Outcome`]).
/// - every other status (4xx, and 3xx: redirects are not followed, a POST
///   must not silently become a GET elsewhere) → rejected.
pub fn classify(reply: &Reply) -> Outcome {
    let (status, retry_after, body) = match reply {
        Reply::Network(e) => {
            return Outcome::Retry {
                retry_after: None,
                reason: format!("network error: {e}"),
            };
        }
        Reply::Http {
            status,
            retry_after,
            body,
        } => (*status, *retry_after, body),
    };
    match status {
        200 => Outcome::Accepted { duplicate: true },
        201..=299 => Outcome::Accepted { duplicate: false },
        408 | 429 | 500..=599 => Outcome::Retry {
            retry_after,
            reason: format!("HTTP {status}{}", describe(body)),
        },
        401 | 403 => Outcome::Unauthorized {
            status,
            reason: format!("HTTP {status}{}", describe(body)),
        },
        409 => match sequence_gap(body) {
            Some(expected) => Outcome::SequenceGap { expected },
            None if error_kind(body).as_deref() == Some("SEQUENCE_CONFLICT") => {
                Outcome::SequenceConflict {
                    reason: format!("HTTP 409{}", describe(body)),
                }
            }
            None => Outcome::Rejected {
                status,
                reason: format!("HTTP 409{}", describe(body)),
            },
        },
        _ => Outcome::Rejected {
            status,
            reason: format!("HTTP {status}{}", describe(body)),
        },
    }
}

fn error_kind(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("error")?.as_str()?.to_owned())
}

fn sequence_gap(body: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if v.get("error")?.as_str()? != "SEQUENCE_GAP" {
        return None;
    }
    v.get("expectedSequence")?.as_u64()
}

/// `": KIND: message"` from a contract error body, bounded for the logs.
fn describe(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let kind = v.get("error").and_then(|e| e.as_str()).unwrap_or("");
    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let mut s = format!(": {kind}: {message}");
    if let Some((cut, _)) = s.char_indices().nth(300) {
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// `Retry-After` as a number of seconds (what the contract sends). An
/// HTTP-date or garbage is ignored: the backoff then decides alone.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The longest `Retry-After` obeyed as given (10 minutes): a server asking
/// for more is waited on this long, then asked again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How long to wait before retry number `retry` (1 for the first retry).
///
/// Full jitter (a uniform draw in `[0, min(cap, base · 2^(retry-1))]`, as in
/// AWS's "Exponential Backoff And Jitter"), so that a fleet of proxies
/// coming back after an outage does not retry in lockstep.
///
/// A server's `Retry-After` is a floor, not capped by `cap` (the server
/// knows how long it needs) but by [`MAX_RETRY_AFTER`], and jittered
/// upwards too (by up to a quarter of it, at least half a second): a fleet
/// told "5" all at once must not come back in the same millisecond.
pub fn backoff(
    retry: u32,
    retry_after: Option<Duration>,
    base: Duration,
    cap: Duration,
    rng: &mut impl Rng,
) -> Duration {
    let exponent = retry.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exponent).min(cap);
    let jittered = ceiling.mul_f64(rng.random::<f64>());
    match retry_after {
        None => jittered,
        Some(asked) => {
            let asked = asked.min(MAX_RETRY_AFTER);
            let spread = (asked / 4).max(Duration::from_millis(500));
            (asked + spread.mul_f64(rng.random::<f64>())).max(jittered)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn http(status: u16, body: &str) -> Reply {
        Reply::Http {
            status,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn successes_and_duplicates() {
        assert_eq!(
            classify(&http(201, r#"{"recorded": 3}"#)),
            Outcome::Accepted { duplicate: false }
        );
        assert_eq!(
            classify(&http(200, r#"{"recorded": 0, "duplicates": 3}"#)),
            Outcome::Accepted { duplicate: true }
        );
        // the body does not matter once the status says recorded
        assert_eq!(
            classify(&http(201, "")),
            Outcome::Accepted { duplicate: false }
        );
    }

    #[test]
    fn transient_failures_are_retried_with_retry_after() {
        let r = Reply::Http {
            status: 503,
            retry_after: Some(Duration::from_secs(7)),
            body: br#"{"error":"SERVICE_UNAVAILABLE","message":"m","code":"X"}"#.to_vec(),
        };
        match classify(&r) {
            Outcome::Retry {
                retry_after,
                reason,
            } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert_eq!(reason, "HTTP 503: SERVICE_UNAVAILABLE: m");
            }
            other => panic!("{other:?}"),
        }
        for s in [408, 429, 500, 502, 504] {
            assert!(
                matches!(classify(&http(s, "")), Outcome::Retry { .. }),
                "{s}"
            );
        }
        assert!(matches!(
            classify(&Reply::Network("connection refused".into())),
            Outcome::Retry {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn sequence_gap_and_other_conflicts() {
        assert_eq!(
            classify(&http(
                409,
                r#"{"error":"SEQUENCE_GAP","message":"m","code":"X","expectedSequence":4}"#
            )),
            Outcome::SequenceGap { expected: 4 }
        );
        for body in [
            r#"{"error":"CONFLICT","message":"exists"}"#,
            r#"{"error":"SEQUENCE_GAP"}"#,
            r#"{"error":"SEQUENCE_GAP","expectedSequence":-1}"#,
            "not json",
        ] {
            assert!(
                matches!(
                    classify(&http(409, body)),
                    Outcome::Rejected { status: 409, .. }
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn a_sequence_conflict_is_its_own_outcome_not_a_rejection_or_a_retry() {
        let body = r#"{"error":"SEQUENCE_CONFLICT","message":"sequence 4 was accepted with another body","code":"PROXY_METRICS_4099"}"#;
        match classify(&http(409, body)) {
            Outcome::SequenceConflict { reason } => {
                assert!(reason.contains("SEQUENCE_CONFLICT"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_errors_and_redirects_are_rejected() {
        for s in [401, 403] {
            assert!(
                matches!(classify(&http(s, "{}")), Outcome::Unauthorized { status, .. } if status == s),
                "{s}: kept and retried, not dropped"
            );
        }
        for s in [301, 400, 404, 413, 422] {
            assert!(
                matches!(classify(&http(s, "{}")), Outcome::Rejected { status, .. } if status == s),
                "{s}"
            );
        }
        let long = format!(
            r#"{{"error":"INVALID_REQUEST","message":"{}"}}"#,
            "x".repeat(5000)
        );
        let Outcome::Rejected { reason, .. } = classify(&http(400, &long)) else {
            panic!()
        };
        assert!(reason.chars().count() < 320, "{}", reason.len());
    }

    #[test]
    fn retry_after_is_seconds_only() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }

    #[test]
    fn backoff_is_full_jitter_exponential_and_capped() {
        let mut rng = SmallRng::seed_from_u64(42);
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        for retry in 1..=40u32 {
            let ceiling = base.saturating_mul(1 << (retry - 1).min(30)).min(cap);
            let mut max_seen = Duration::ZERO;
            for _ in 0..200 {
                let d = backoff(retry, None, base, cap, &mut rng);
                assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
                max_seen = max_seen.max(d);
            }
            // jitter spreads over the whole range, not just its top
            assert!(max_seen > ceiling.mul_f64(0.8), "retry {retry}");
        }
        // the first retries stay short
        assert!(backoff(1, None, base, cap, &mut rng) <= base);
    }

    #[test]
    fn backoff_honours_retry_after_with_jitter_and_past_the_cap() {
        let mut rng = SmallRng::seed_from_u64(1);
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        let mut waits = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let d = backoff(1, Some(Duration::from_secs(5)), base, cap, &mut rng);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_millis(6250),
                "{d:?}"
            );
            waits.insert(d);
            // the server's 120 s is obeyed although the backoff cap is 30 s
            let d = backoff(10, Some(Duration::from_secs(120)), base, cap, &mut rng);
            assert!(
                d >= Duration::from_secs(120) && d <= Duration::from_secs(150),
                "{d:?}"
            );
            // … up to the documented maximum
            let d = backoff(1, Some(Duration::from_secs(36_000)), base, cap, &mut rng);
            assert!(
                d >= MAX_RETRY_AFTER && d <= MAX_RETRY_AFTER * 5 / 4,
                "{d:?}"
            );
        }
        assert!(
            waits.len() > 90,
            "a fleet told 5 s does not come back in lockstep"
        );
    }
}

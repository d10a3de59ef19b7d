//! With the API unreachable (a closed port on this machine), memory stays
//! bounded: the buffer never holds more than its capacity, the oldest
//! intervals are dropped and counted, and every observation is accounted for.

use std::sync::Arc;
use std::time::Duration;

use proxy_metrics_client::{Config, ManualClock, Observation, Reporter};

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_stays_bounded_and_drops_are_counted_when_the_api_is_down() {
    let capacity = 40;
    let now = chrono::DateTime::parse_from_rfc3339("2024-01-15T12:00:00Z")
        .unwrap()
        .to_utc();
    let clock = ManualClock::new(now);
    let reporter = Reporter::builder(
        format!("http://127.0.0.1:{}", closed_port()),
        "token",
        "edge-down-1",
    )
    .config(Config {
        buffer_capacity: capacity,
        max_batch_events: 10,
        flush_interval: Duration::from_millis(50),
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_millis(500),
        ..Config::default()
    })
    .clock(Arc::new(clock.clone()))
    .build()
    .unwrap();

    // 20 000 requests over 2 000 ten-second intervals of the last ~6 hours
    let start = now - chrono::Duration::hours(6);
    let total = 20_000u64;
    for i in 0..total {
        let at = start + chrono::Duration::seconds(i64::try_from(i).unwrap());
        reporter.record(
            Observation::success()
                .at(at)
                .latency_ms(1.0)
                .bytes_sent(100),
        );
        if i % 500 == 0 {
            let s = reporter.stats();
            assert!(
                s.buffered <= capacity as u64,
                "buffer at {} > {capacity}",
                s.buffered
            );
            // let the sender run and fail a few attempts meanwhile
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // the sender keeps failing against the closed port
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = reporter.stats();
    assert!(s.retries > 0, "{s:?}");
    assert_eq!(s.sent, 0);
    assert!(s.buffered <= capacity as u64);
    assert!(s.buffered_peak <= capacity as u64, "{s:?}");
    assert!(s.dropped_buffer_full > 0, "{s:?}");
    // nothing vanished: everything is dropped, counted, or still pending
    assert_eq!(s.recorded, total);
    assert_eq!(
        s.recorded,
        s.sent + s.dropped_buffer_full + s.dropped_rejected + s.dropped_stale + s.pending,
        "{s:?}"
    );
    // pending is bounded too: open intervals + buffer + one batch in flight
    assert!(s.pending <= (64 + capacity as u64 + 10) * 10, "{s:?}");

    let started = std::time::Instant::now();
    let s = reporter.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown honours its deadline"
    );
    assert_eq!(s.pending, 0);
    assert_eq!(
        s.recorded,
        s.sent + s.dropped_buffer_full + s.dropped_rejected + s.dropped_stale + s.dropped_shutdown,
        "{s:?}"
    );
    assert!(s.dropped_shutdown > 0);
}

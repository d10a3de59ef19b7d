//! The reporter's unit tests: a scripted transport and a manual clock.

use super::script::Script;
use super::*;
use crate::batch::Batch;
use crate::clock::ManualClock;
use crate::retry::Reply;
use chrono::{DateTime, TimeZone, Utc};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 15, 10, 4, 3).unwrap()
}

fn http(status: u16, body: &str) -> Reply {
    Reply::Http {
        status,
        retry_after: None,
        body: body.as_bytes().to_vec(),
    }
}

fn reporter(script: &Arc<Script>, clock: &ManualClock, config: Config) -> Reporter {
    Reporter::builder("http://unused.invalid", "t", "edge-1")
        .config(config)
        .clock(Arc::new(clock.clone()))
        .script(script.clone())
        .build()
        .unwrap()
}

fn events_of(b: &Batch) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
    v["events"].as_array().unwrap().clone()
}

/// Records one observation in each of `n` consecutive intervals.
fn record_intervals(r: &Reporter, n: i64) {
    for i in 0..n {
        r.record(
            Observation::success()
                .at(t0() + chrono::Duration::seconds(10 * i))
                .bytes_sent(1),
        );
    }
}

#[tokio::test(start_paused = true)]
async fn batches_are_numbered_from_zero_and_retries_resend_the_same_bytes() {
    let script = Script::new(vec![
        Reply::Network("connection refused".into()),
        http(503, r#"{"error":"SERVICE_UNAVAILABLE"}"#),
        http(201, "{}"),
        http(201, "{}"),
    ]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(
        &script,
        &clock,
        Config {
            max_batch_events: 2,
            ..Config::default()
        },
    );
    record_intervals(&r, 3);
    let stats = r.shutdown().await;
    let sent = script.sent();
    let seqs: Vec<u64> = sent.iter().map(|b| b.sequence).collect();
    assert_eq!(seqs, [0, 0, 0, 1]);
    assert_eq!(sent[0].body, sent[1].body);
    assert_eq!(sent[1].body, sent[2].body);
    assert!(sent.iter().all(|b| b.producer_id == r.producer_id()));
    assert_eq!(events_of(&sent[0]).len(), 2);
    assert_eq!(events_of(&sent[3]).len(), 1);
    assert_eq!(stats.recorded, 3);
    assert_eq!(stats.sent, 3);
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.batches_sent, 2);
    assert_eq!(stats.events_sent, 3);
    assert_eq!(stats.pending, 0);
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_answer_counts_as_sent_and_moves_on() {
    let script = Script::new(vec![
        http(504, ""),
        http(200, r#"{"recorded":0,"duplicates":1}"#),
    ]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(&script, &clock, Config::default());
    record_intervals(&r, 1);
    let stats = r.shutdown().await;
    assert_eq!(stats.sent, 1);
    assert_eq!(stats.duplicates, 1);
    assert_eq!(stats.batches_sent, 1);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_batch_is_dropped_and_the_sequence_moves_on() {
    let script = Script::new(vec![http(
        400,
        r#"{"error":"INVALID_REQUEST","message":"bad"}"#,
    )]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(
        &script,
        &clock,
        Config {
            max_batch_events: 1,
            ..Config::default()
        },
    );
    record_intervals(&r, 2);
    let stats = r.shutdown().await;
    let seqs: Vec<u64> = script.sent().iter().map(|b| b.sequence).collect();
    assert_eq!(seqs, [0, 1]);
    assert_eq!(stats.dropped_rejected, 1);
    assert_eq!(stats.sent, 1);
    assert_eq!(stats.recorded, stats.sent + stats.dropped_rejected);
}

#[tokio::test(start_paused = true)]
async fn a_sequence_gap_resends_the_same_body_at_the_expected_sequence() {
    // batch 0 rejected (never recorded), so batch 1 meets a gap at 0
    let script = Script::new(vec![
        http(422, "{}"),
        http(
            409,
            r#"{"error":"SEQUENCE_GAP","message":"m","code":"X","expectedSequence":0}"#,
        ),
        http(201, "{}"),
        http(201, "{}"),
    ]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(
        &script,
        &clock,
        Config {
            max_batch_events: 1,
            ..Config::default()
        },
    );
    record_intervals(&r, 3);
    let stats = r.shutdown().await;
    let sent = script.sent();
    let seqs: Vec<u64> = sent.iter().map(|b| b.sequence).collect();
    // 0 rejected; 1 → gap → resent as 0; the next batch continues at 1
    assert_eq!(seqs, [0, 1, 0, 1]);
    assert_eq!(sent[1].body, sent[2].body);
    assert_ne!(sent[2].body, sent[3].body);
    assert_eq!(stats.sequence_gaps, 1);
    assert_eq!(stats.sent, 2);
    assert_eq!(stats.dropped_rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn an_inconsistent_or_endless_gap_drops_the_batch() {
    let gap = |n: u64| {
        http(
            409,
            &format!(r#"{{"error":"SEQUENCE_GAP","expectedSequence":{n}}}"#),
        )
    };
    let script = Script::new(vec![gap(5)]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(&script, &clock, Config::default());
    record_intervals(&r, 1);
    let stats = r.shutdown().await;
    assert_eq!(stats.dropped_rejected, 1);
    assert_eq!(script.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_gives_up() {
    let script = Script::new(vec![http(500, ""), http(500, ""), http(500, "")]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(
        &script,
        &clock,
        Config {
            max_attempts: Some(2),
            ..Config::default()
        },
    );
    record_intervals(&r, 1);
    let stats = r.shutdown().await;
    assert_eq!(script.sent().len(), 2);
    assert_eq!(stats.dropped_gave_up, 1);
    assert_eq!(stats.retries, 1);
}

/// Polls `done` every 10 ms of (paused) tokio time, for at most an hour.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..360_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within an hour");
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_is_retried_as_soon_as_it_is_renewed() {
    let script = Script::new(vec![http(401, r#"{"error":"UNAUTHORIZED"}"#)]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    // a backoff drawn from [0, 1 h]: without the renewal cutting it short,
    // the retry would almost surely come later than a second
    let hour = Duration::from_secs(3600);
    let r = reporter(
        &script,
        &clock,
        Config {
            flush_interval: Duration::from_secs(1),
            base_backoff: hour,
            max_backoff: hour,
            ..Config::default()
        },
    );
    record_intervals(&r, 1);
    until(|| script.sent().len() == 1).await;
    let renewed = tokio::time::Instant::now();
    r.set_token("renewed").unwrap();
    until(|| script.sent().len() == 2).await;
    assert!(
        renewed.elapsed() < Duration::from_secs(1),
        "{:?}",
        renewed.elapsed()
    );
    let sent = script.sent();
    assert_eq!(
        (sent[0].sequence, &sent[0].body),
        (sent[1].sequence, &sent[1].body)
    );
    let stats = r.shutdown().await;
    assert_eq!(
        (stats.sent, stats.unauthorized, stats.retries, stats.pending),
        (1, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_at_its_deadline_and_counts_what_it_lost() {
    let script = Script::new((0..1000).map(|_| http(503, "")).collect());
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(
        &script,
        &clock,
        Config {
            shutdown_timeout: Duration::from_secs(5),
            ..Config::default()
        },
    );
    record_intervals(&r, 4);
    let started = Instant::now();
    let stats = r.shutdown().await;
    assert!(
        started.elapsed() <= Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats.dropped_shutdown, 4);
    assert_eq!(stats.pending, 0);
    // after shutdown, recording only counts
    r.record(Observation::success());
    let stats = r.stats();
    assert_eq!(stats.recorded, 5);
    assert_eq!(stats.dropped_shutdown, 5);
    // a second shutdown is harmless
    assert_eq!(r.shutdown().await.dropped_shutdown, 5);
}

#[tokio::test(start_paused = true)]
async fn intervals_are_sent_every_flush_interval_while_running() {
    let script = Script::new(vec![]);
    let clock = ManualClock::new(t0());
    let r = reporter(&script, &clock, Config::default());
    for s in 0..30 {
        r.record(Observation::success().latency_ms(f64::from(s)));
        clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(script.sent().is_empty(), "nothing before the first flush");
    clock.advance(chrono::Duration::seconds(31));
    tokio::time::sleep(Duration::from_secs(31)).await;
    let sent = script.sent();
    assert_eq!(sent.len(), 1, "one batch per flush interval");
    let events = events_of(&sent[0]);
    // requests at 10:04:03 … 10:04:32, one a second
    let counts: Vec<u64> = events
        .iter()
        .map(|e| e["metrics"]["requestCount"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [7, 10, 10, 3]);
    assert_eq!(events[0]["timestamp"], "2024-01-15T10:04:00Z");
    assert_eq!(events[3]["timestamp"], "2024-01-15T10:04:30Z");
    r.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_without_waiting_for_the_flush_interval() {
    let script = Script::new(vec![]);
    // the sixth interval (10:04:50) has not ended yet
    let clock = ManualClock::new(t0() + chrono::Duration::seconds(50));
    let r = reporter(
        &script,
        &clock,
        Config {
            max_batch_events: 5,
            max_open_intervals: 1,
            ..Config::default()
        },
    );
    // one open interval at a time: each new interval closes the previous
    record_intervals(&r, 6);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(script.sent().len(), 1);
    assert_eq!(events_of(&script.sent()[0]).len(), 5);
    r.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stale_and_future_observations_are_handled_before_the_server_sees_them() {
    let script = Script::new(vec![]);
    let now = t0();
    let clock = ManualClock::new(now);
    let r = reporter(&script, &clock, Config::default());
    r.record(Observation::success().at(now - chrono::Duration::days(8)));
    r.record(Observation::success().at(now + chrono::Duration::hours(2)));
    let stats = r.shutdown().await;
    assert_eq!(stats.dropped_stale, 1);
    assert_eq!(stats.restamped_future, 1);
    assert_eq!(stats.sent, 1);
    let events = events_of(&script.sent()[0]);
    assert_eq!(events[0]["timestamp"], "2024-01-15T10:04:00Z");
}

#[tokio::test(start_paused = true)]
async fn event_ids_are_unique_and_valid() {
    let script = Script::new(vec![]);
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    let r = reporter(&script, &clock, Config::default());
    record_intervals(&r, 50);
    r.shutdown().await;
    let events = events_of(&script.sent()[0]);
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|id| {
        id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b))
    }));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
}

#[tokio::test(start_paused = true)]
async fn an_idle_reporter_sends_heartbeats_when_asked() {
    let script = Script::new(vec![]);
    let clock = ManualClock::new(t0());
    let r = reporter(
        &script,
        &clock,
        Config {
            heartbeat: Some(Duration::from_secs(60)),
            flush_interval: Duration::from_secs(30),
            ..Config::default()
        },
    );
    for _ in 0..130 {
        clock.advance(chrono::Duration::seconds(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    r.shutdown().await;
    let events: Vec<serde_json::Value> = script.sent().iter().flat_map(events_of).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["healthy"] == true && e["metrics"]["requestCount"] == 0)
    );
}

#[test]
fn configuration_is_checked() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let bad = |c: Config| {
        Reporter::builder("http://x", "t", "p")
            .config(c)
            .build()
            .is_err()
    };
    assert!(bad(Config {
        max_batch_events: 501,
        ..Config::default()
    }));
    assert!(bad(Config {
        max_batch_bytes: 2 << 20,
        ..Config::default()
    }));
    assert!(bad(Config {
        max_samples_per_interval: 10_001,
        ..Config::default()
    }));
    assert!(bad(Config {
        buffer_capacity: 0,
        ..Config::default()
    }));
    assert!(bad(Config {
        max_attempts: Some(0),
        ..Config::default()
    }));
    assert!(Reporter::new("http://x", "t", "bad id").is_err());
    assert!(Reporter::new("ftp://x", "t", "p").is_err());
    assert!(Reporter::new("http://x", "", "p").is_err());
    assert!(Reporter::new("http://x", "a\nb", "p").is_err());
    assert!(Reporter::new("http://127.0.0.1:9000/", "t", "edge-eu-1").is_ok());
}

#[test]
fn without_a_runtime_building_fails_instead_of_panicking() {
    assert!(matches!(
        Reporter::new("http://x", "t", "p"),
        Err(Error::NoRuntime)
    ));
}

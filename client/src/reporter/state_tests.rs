//! The reporter with a state file: segments cut by checkpoints, saved before
//! they are sent, replayed verbatim after a crash, and the same producer and
//! sequence across restarts.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::script::Script;
use super::*;
use crate::clock::ManualClock;
use crate::journal;
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

fn state_path() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reporter-state-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.json")
}

fn reporter(script: &Arc<Script>, path: &Path, shutdown: Duration) -> Reporter {
    let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
    Reporter::builder("http://unused.invalid", "t", "edge-1")
        .config(Config {
            shutdown_timeout: shutdown,
            ..Config::default()
        })
        .clock(Arc::new(clock))
        .state_file(path)
        .script(script.clone())
        .build()
        .unwrap()
}

fn record(r: &Reporter, n: i64) {
    for i in 0..n {
        r.record(
            Observation::success()
                .at(t0() + chrono::Duration::seconds(10 * i))
                .bytes_sent(1),
        );
    }
}

async fn settle() {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn only_checkpoints_are_sent_and_a_restart_resumes_producer_sequence_and_position() {
    let path = state_path();
    let script = Script::new(vec![]);
    let r = reporter(&script, &path, Duration::from_secs(5));
    assert_eq!(r.resume_position(), None);
    let producer = r.producer_id().to_owned();
    record(&r, 3);
    settle().await;
    // past the flush interval, still nothing: no checkpoint yet
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(script.sent().is_empty());
    r.checkpoint(json!({"offset": 300}));
    settle().await;
    let sent = script.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].sequence, sent[0].events), (0, 3));
    // recorded after the checkpoint: not sent, left for the next run
    record(&r, 2);
    let stats = r.shutdown().await;
    assert_eq!((stats.sent, stats.left_for_next_run), (3, 2));
    assert_eq!(stats.dropped_shutdown, 0);
    let saved = journal::load(&path, "edge-1").unwrap().unwrap();
    assert_eq!(saved.position, Some(json!({"offset": 300})));
    assert_eq!((saved.next_sequence, saved.pending), (1, None));

    let script = Script::new(vec![]);
    let r = reporter(&script, &path, Duration::from_secs(5));
    assert_eq!(r.producer_id(), producer);
    assert_eq!(r.resume_position(), Some(&json!({"offset": 300})));
    record(&r, 1);
    r.checkpoint(json!({"offset": 400}));
    r.shutdown().await;
    let sent = script.sent();
    assert_eq!(
        (sent[0].producer_id.as_str(), sent[0].sequence),
        (producer.as_str(), 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_segment_is_saved_before_it_is_sent_and_replayed_byte_for_byte_after_a_crash() {
    let path = state_path();
    // the API is down: the segment stays in flight
    let script = Script::new((0..1000).map(|_| http(503, "")).collect());
    let r = reporter(&script, &path, Duration::from_secs(1));
    record(&r, 4);
    r.checkpoint(json!({"offset": 40}));
    settle().await;
    let first = script.sent()[0].clone();
    // what a crash now leaves on disk: the batch, its number, its position
    let saved = journal::load(&path, "edge-1").unwrap().unwrap();
    let pending = saved.pending.clone().unwrap();
    assert_eq!(saved.position, None);
    assert_eq!(pending.position, json!({"offset": 40}));
    assert_eq!(pending.batches.len(), 1);
    assert_eq!(pending.batches[0].sequence, first.sequence);
    assert_eq!(pending.batches[0].body.as_bytes(), &first.body[..]);
    let stats = r.shutdown().await;
    assert_eq!((stats.left_for_next_run, stats.dropped_shutdown), (4, 0));

    // the next run resumes after the saved lines and sends the same bytes
    // under the same number first (the server answers "duplicate" if an
    // attempt had landed), then the position moves on
    let script = Script::new(vec![http(200, "{}")]);
    let r = reporter(&script, &path, Duration::from_secs(5));
    assert_eq!(r.resume_position(), Some(&json!({"offset": 40})));
    settle().await;
    let sent = script.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].sequence, &sent[0].body),
        (first.sequence, &first.body)
    );
    assert_eq!(r.stats().duplicates, 1);
    r.shutdown().await;
    let saved = journal::load(&path, "edge-1").unwrap().unwrap();
    assert_eq!(
        (saved.position, saved.pending),
        (Some(json!({"offset": 40})), None)
    );
    assert_eq!(saved.next_sequence, 1);
}

#[tokio::test(start_paused = true)]
async fn a_gap_renumbers_the_saved_segment_and_a_conflict_is_dropped_on_its_own() {
    let path = state_path();
    let gap = r#"{"error":"SEQUENCE_GAP","expectedSequence":0}"#;
    let conflict = r#"{"error":"SEQUENCE_CONFLICT","message":"other body"}"#;
    let script = Script::new(vec![http(201, "{}"), http(409, conflict)]);
    let r = reporter(&script, &path, Duration::from_secs(5));
    record(&r, 1);
    r.checkpoint(json!({"offset": 1}));
    settle().await;
    record(&r, 2);
    r.checkpoint(json!({"offset": 2}));
    settle().await;
    let stats = r.stats();
    assert_eq!(
        (stats.sent, stats.dropped_conflict, stats.dropped_rejected),
        (1, 2, 0)
    );
    r.shutdown().await;
    let saved = journal::load(&path, "edge-1").unwrap().unwrap();
    assert_eq!(
        (saved.next_sequence, saved.position),
        (2, Some(json!({"offset": 2})))
    );

    // the server lost our history: the batch is re-based to 0, and the
    // state file says so before it is resent
    let mut replies = vec![http(409, gap)];
    replies.extend((0..1000).map(|_| http(503, "")));
    let script = Script::new(replies);
    let r = reporter(&script, &path, Duration::from_secs(5));
    record(&r, 1);
    r.checkpoint(json!({"offset": 3}));
    settle().await;
    let saved = journal::load(&path, "edge-1").unwrap().unwrap();
    let pending = saved.pending.unwrap();
    assert_eq!(pending.batches[0].sequence, 0);
    assert_eq!(saved.next_sequence, 1);
    assert_eq!(
        script.sent().iter().map(|b| b.sequence).collect::<Vec<_>>()[..3],
        [2, 0, 0]
    );
    r.shutdown().await;
}

//! Finding 6: a read's merge rule is exact whatever the timing. Random
//! interleavings of records, a reader's steps (E0, items and pending in
//! either order, as the read issues them together, E1) and
//! the aggregation's steps — whole runs, and runs that crash after writing
//! the items or after moving the epoch — against dynoxide: every read that
//! completes (its epoch did not move) counts each event recorded before it
//! began, and none twice.

use crate::common;

use common::fold::crashing_run;
use common::*;
use proptest::prelude::*;
use proxy_metrics::aggregate;
use proxy_metrics::storage::DaysRead;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
enum Step {
    Record(usize),
    ReaderBegins,
    ReaderItems,
    ReaderPending,
    ReaderFinishes,
    Run,
    RunCrashesAfterWrites,
    RunCrashesAfterEpoch,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1usize..4).prop_map(Step::Record),
        2 => Just(Step::ReaderBegins),
        2 => Just(Step::ReaderItems),
        2 => Just(Step::ReaderPending),
        2 => Just(Step::ReaderFinishes),
        2 => Just(Step::Run),
        1 => Just(Step::RunCrashesAfterWrites),
        1 => Just(Step::RunCrashesAfterEpoch),
    ]
}

fn batch(tag: usize, n: usize) -> Value {
    let day = now().date_naive();
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"eventType": "request", "eventId": format!("e{tag}-{i}"),
                   "timestamp": iso(instant_on(day, tag * 7 + i, 400, now())),
                   "metrics": {"requestCount": 1, "successCount": 1}})
        })
        .collect();
    json!({ "events": events })
}

struct Reader {
    read: DaysRead,
    /// Events acknowledged before the reader began.
    at_least: u64,
    items: bool,
    pending: bool,
}

async fn play(steps: Vec<Step>) -> Result<(u32, u32), TestCaseError> {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "p").await;
    let store = &h.app.store;
    let day = now().date_naive();
    let mut recorded = 0u64;
    let mut tag = 0;
    let mut reader: Option<Reader> = None;
    let (mut completed, mut retried) = (0u32, 0u32);
    for step in steps {
        match step {
            Step::Record(n) => {
                tag += 1;
                let (s, b) = h.record(&t, "p", batch(tag, n)).await;
                prop_assert_eq!(s, 201, "{}", b);
                recorded += n as u64;
            }
            Step::ReaderBegins => {
                let epoch = store.fold_epoch("p").await.unwrap();
                reader = Some(Reader {
                    read: DaysRead::new("p", day, day, epoch),
                    at_least: recorded,
                    items: false,
                    pending: false,
                });
            }
            Step::ReaderItems => {
                if let Some(r) = reader.as_mut().filter(|r| !r.items) {
                    r.read.items(store).await.unwrap();
                    r.items = true;
                }
            }
            Step::ReaderPending => {
                // Before or after the items: the read takes both at once.
                if let Some(r) = reader.as_mut().filter(|r| !r.pending) {
                    r.read.pending(store).await.unwrap();
                    r.pending = true;
                }
            }
            Step::ReaderFinishes => {
                if reader.as_ref().is_some_and(|r| r.items && r.pending)
                    && let Some(r) = reader.take()
                {
                    let at_least = r.at_least;
                    match r.read.finish(store).await.unwrap() {
                        Some(days) => {
                            let seen = days.get(&day).map_or(0, |d| d.event_count());
                            prop_assert!(
                                seen >= at_least && seen <= recorded,
                                "read {} events; {} were recorded before it began, {} by its end",
                                seen,
                                at_least,
                                recorded
                            );
                            completed += 1;
                        }
                        None => retried += 1,
                    }
                }
            }
            Step::Run => {
                let _ = aggregate::run_all(store).await;
            }
            Step::RunCrashesAfterWrites => crashing_run(store, "p", false).await,
            Step::RunCrashesAfterEpoch => crashing_run(store, "p", true).await,
        }
    }
    // In the end, after a clean run, the day holds every event exactly once.
    let _ = aggregate::run_all(store).await;
    let proxy = store.get_proxy("p").await.unwrap().unwrap();
    let days = store.read_days(&proxy, day, day).await.unwrap();
    prop_assert_eq!(days.get(&day).map_or(0, |d| d.event_count()), recorded);
    let stored = store.stored_day("p", day).await.unwrap();
    prop_assert_eq!(stored.value.rollup.event_count(), recorded);
    Ok((completed, retried))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_completed_read_is_exact(steps in prop::collection::vec(step(), 4..24)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(play(steps))?;
    }
}

/// The interleaving the epoch exists for, spelled out: the reader's items
/// predate a fold, its pending query postdates the chunks' deletion.
#[tokio::test]
async fn a_read_spanning_a_fold_and_its_deletion_is_taken_again() {
    let steps = vec![
        Step::Record(3),
        Step::ReaderBegins,
        Step::ReaderItems,
        Step::Run,
        Step::ReaderPending,
        Step::ReaderFinishes,
        Step::ReaderBegins,
        Step::ReaderItems,
        Step::ReaderPending,
        Step::ReaderFinishes,
    ];
    let (completed, retried) = play(steps).await.unwrap();
    assert_eq!((completed, retried), (1, 1));
}

/// The other order: the pending query sees the chunks, a run folds and
/// deletes them, then the items hold them (and name them) — taken again.
#[tokio::test]
async fn a_read_whose_pending_query_predates_a_fold_is_taken_again() {
    let steps = vec![
        Step::Record(3),
        Step::ReaderBegins,
        Step::ReaderPending,
        Step::Run,
        Step::Run,
        Step::ReaderItems,
        Step::ReaderFinishes,
        Step::ReaderBegins,
        Step::ReaderPending,
        Step::ReaderItems,
        Step::ReaderFinishes,
    ];
    let (completed, retried) = play(steps).await.unwrap();
    assert_eq!((completed, retried), (1, 1));
}

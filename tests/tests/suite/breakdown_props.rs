//! Issue 21, point 6: for any interleaving of batches (routes from a pool
//! larger than the cap, some events without a route, some batches without
//! any dimension, before and after the proxy's first) and aggregation runs
//! (whole, or crashing after their writes or their epoch move), the
//! breakdown's per-value counts — `(none)` and `__other__` included — sum
//! to the day's counts, by route, by upstream and by status class, `(none)`
//! holds exactly the events sent without a route; at most
//! the cap's values are kept; and the day holds what was recorded.

use crate::common;

use common::fold::crashing_run;
use common::*;
use proptest::prelude::*;
use proxy_metrics::aggregate;
use proxy_metrics::handlers;
use serde_json::{Value, json};

/// The free tier's cap.
const CAP: usize = 20;

#[derive(Debug, Clone)]
enum Step {
    /// Events: (route index or none, requests, errors).
    Record(Vec<(Option<u8>, u8, u8)>),
    /// A batch without any dimension: (requests, errors). Before the
    /// proxy's first dimension it writes no pages, after it it does.
    RecordPlain(Vec<(u8, u8)>),
    Run,
    RunCrashesAfterWrites,
    RunCrashesAfterEpoch,
}

fn step() -> impl Strategy<Value = Step> {
    let event = (prop::option::weighted(0.8, 0u8..30), 1u8..20, 0u8..5)
        .prop_map(|(route, requests, errors)| (route, requests, errors.min(requests)));
    prop_oneof![
        4 => prop::collection::vec(event, 1..12).prop_map(Step::Record),
        2 => prop::collection::vec((1u8..20, 0u8..5), 1..6).prop_map(|events| Step::RecordPlain(
            events.into_iter().map(|(r, e)| (r, e.min(r))).collect()
        )),
        2 => Just(Step::Run),
        1 => Just(Step::RunCrashesAfterWrites),
        1 => Just(Step::RunCrashesAfterEpoch),
    ]
}

fn batch(events: &[(Option<u8>, u8, u8)]) -> Value {
    let events: Vec<Value> = events
        .iter()
        .map(|(route, requests, errors)| {
            let mut e = json!({"eventType": "request", "timestamp": now_rfc3339(),
                "metrics": {"requestCount": requests, "successCount": requests - errors,
                            "errorCount": errors}});
            if let Some(r) = route {
                e["dimensions"] =
                    json!({"route": format!("/r/{r}"), "upstream": format!("u{}", r % 3)});
            }
            e
        })
        .collect();
    json!({ "events": events })
}

/// Σ requests, values kept, Σ errors, requests under `(none)`.
async fn sums(h: &Harness, t: &str, by: &str) -> (u64, usize, u64, u64) {
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/breakdown")
        .param("proxyId", "p")
        .query("by", by)
        .query("startDate", &today())
        .query("endDate", &today())
        .query("limit", "500")
        .bearer(t)
        .build();
    let (s, body, _) = parts(handlers::get_breakdown(&h.app, req).await);
    assert_eq!(s, 200, "{body}");
    let values = body["values"].as_array().unwrap();
    let requests = values
        .iter()
        .map(|v| v["requestCount"].as_u64().unwrap())
        .sum();
    let kept = values
        .iter()
        .filter(|v| v["value"] != "(none)" && v["value"] != "__other__")
        .count();
    let errors = values.iter().filter_map(|v| v["errorCount"].as_u64()).sum();
    let none = values
        .iter()
        .filter(|v| v["value"] == "(none)")
        .map(|v| v["requestCount"].as_u64().unwrap())
        .sum();
    (requests, kept, errors, none)
}

async fn play(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let h = Harness::start().await;
    let t = token("alice", json!({"tier": "free"}));
    h.register(&t, "p").await;
    let store = &h.app.store;
    let (mut requests, mut errors, mut none) = (0u64, 0u64, 0u64);
    for step in steps {
        match step {
            Step::Record(events) => {
                let (s, b) = h.record(&t, "p", batch(&events)).await;
                prop_assert_eq!(s, 201, "{}", b);
                requests += events.iter().map(|e| u64::from(e.1)).sum::<u64>();
                errors += events.iter().map(|e| u64::from(e.2)).sum::<u64>();
                none += events
                    .iter()
                    .filter(|e| e.0.is_none())
                    .map(|e| u64::from(e.1))
                    .sum::<u64>();
            }
            Step::RecordPlain(events) => {
                let events: Vec<(Option<u8>, u8, u8)> =
                    events.into_iter().map(|(r, e)| (None, r, e)).collect();
                let (s, b) = h.record(&t, "p", batch(&events)).await;
                prop_assert_eq!(s, 201, "{}", b);
                let sum = events.iter().map(|e| u64::from(e.1)).sum::<u64>();
                requests += sum;
                none += sum;
                errors += events.iter().map(|e| u64::from(e.2)).sum::<u64>();
            }
            Step::Run => {
                let _ = aggregate::run_all(store).await;
            }
            Step::RunCrashesAfterWrites => crashing_run(store, "p", false).await,
            Step::RunCrashesAfterEpoch => crashing_run(store, "p", true).await,
        }
        let (_, day) = h.daily(&t, "p", &today()).await;
        prop_assert_eq!(day["metrics"]["requestCount"].as_u64(), Some(requests));
        for by in ["route", "upstream"] {
            let (r, kept, e, n) = sums(&h, &t, by).await;
            prop_assert_eq!((r, e, n), (requests, errors, none), "by {}", by);
            prop_assert!(kept <= CAP, "{} values kept by {}", kept, by);
        }
        let (r, _, _, _) = sums(&h, &t, "status").await;
        prop_assert_eq!(r, requests);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn per_value_counts_sum_to_the_day_whatever_the_interleaving(
        steps in prop::collection::vec(step(), 2..10)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(play(steps))?;
    }
}

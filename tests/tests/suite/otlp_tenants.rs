//! One tenant's hostile OTLP exports leave another tenant's results and
//! costs unchanged. Two identical runs of one owner's exports and reads,
//! one of them with a second owner's hostile exports between every step: a
//! gzip bomb, a state-exhausting cumulative export of thousands of series
//! (gzip, under the 8 MiB bound), garbage protobuf, exports to the first
//! owner's proxy. The first owner's answers, its daily object, its
//! breakdown, the storage round trips and capacity units of each of its
//! requests (what its latency is made of against DynamoDB) and the items in
//! its partitions are the same in both runs.

use crate::common;

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use common::otlp::*;
use common::*;
use prost::Message;
use proxy_metrics::otlp::proto::*;
use proxy_metrics::storage::Usage;
use serde_json::Value;

const ALICE_PROXY: &str = "edge";
const MALLORY_PROXY: &str = "evil";

/// What the first owner saw of one run.
#[derive(Debug)]
struct Seen {
    /// Each export's status and partial success (rejected points).
    answers: Vec<(u16, i64)>,
    /// Storage work per request: (calls, queries, read units, write units).
    work: Vec<(u64, u64, f64, f64)>,
    daily: Value,
    breakdown: Value,
    /// Items whose partition or sort key names the first owner's proxy.
    items: usize,
}

fn work(u: Usage) -> (u64, u64, f64, f64) {
    (u.calls, u.queries, u.read_units, u.write_units)
}

/// A cumulative export of `series` distinct routes, gzip-compressed: each
/// series is state the service keeps per resource, so enough of them pass
/// the 350 KB state bound.
fn state_exhausting_export(series: usize) -> Vec<u8> {
    let points = (0..series)
        .map(|i| {
            explicit_point(
                &[0.01, 0.2],
                http_attrs(&format!("/attack/{i:06}/with/a/long/route/name"), 200),
                at(0),
                at(5),
            )
        })
        .collect();
    let request = export(
        "mallory-svc",
        vec![duration_histogram(TEMPORALITY_CUMULATIVE, points)],
    );
    let bytes = request.encode_to_vec();
    assert!(bytes.len() < 8 * 1024 * 1024, "{} bytes", bytes.len());
    gzip(&bytes)
}

/// The hostile owner's round of exports, each answered as the contract says.
async fn hostile_round(h: &Harness, mallory: &str, state_attack: &[u8]) {
    // a gzip bomb: 16 MiB of zeros
    let bomb = gzip(&vec![0u8; 16 * 1024 * 1024]);
    let req = path_req(mallory, MALLORY_PROXY)
        .binary(&bomb, "application/x-protobuf")
        .header("content-encoding", "gzip");
    assert_eq!(send(h, req, false).await.status, 413);

    // thousands of series: partial success past the state bound, never a 5xx
    let req = path_req(mallory, MALLORY_PROXY)
        .binary(state_attack, "application/x-protobuf")
        .header("content-encoding", "gzip");
    let answer = send(h, req, false).await;
    assert_eq!(answer.status, 200);
    let partial = answer.response().partial_success.expect("partial success");
    assert!(partial.rejected_data_points > 0, "{partial:?}");
    assert!(
        partial.error_message.contains("350 KB"),
        "{}",
        partial.error_message
    );

    // garbage where protobuf should be
    let req = path_req(mallory, MALLORY_PROXY).binary(&[0xff; 64], "application/x-protobuf");
    assert_eq!(send(h, req, false).await.status, 400);

    // the other owner's proxy: not found for this caller, nothing written
    let request = typical_export(TEMPORALITY_DELTA, at(0), at(5), 7);
    assert_eq!(
        export_proto(h, mallory, ALICE_PROXY, &request).await.status,
        404
    );
}

async fn items_naming(h: &Harness, proxy: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let page = h
            .app
            .store
            .client()
            .scan()
            .table_name(h.app.store.table())
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let names = |k: &str| match item.get(k) {
                Some(AttributeValue::S(s)) => s.split(['#', '$']).any(|part| part == proxy),
                _ => false,
            };
            if names("pk") || names("sk") {
                count += 1;
            }
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return count;
        }
    }
}

async fn run(with_hostile_neighbour: bool) -> Seen {
    let h = Harness::start().await;
    let alice = user_token("alice");
    let mallory = user_token("mallory");
    assert_eq!(h.register(&alice, ALICE_PROXY).await.0, 201);
    assert_eq!(h.register(&mallory, MALLORY_PROXY).await.0, 201);
    let state_attack = state_exhausting_export(20_000);

    let mut answers = Vec::new();
    let mut work_done = Vec::new();
    for round in 0..4u64 {
        if with_hostile_neighbour {
            hostile_round(&h, &mallory, &state_attack).await;
        }
        let request = typical_export(TEMPORALITY_CUMULATIVE, at(0), at(10 + round as i64), round);
        let before = h.app.store.usage();
        let answer = export_proto(&h, &alice, ALICE_PROXY, &request).await;
        work_done.push(work(h.app.store.usage() - before));
        let rejected = answer
            .response()
            .partial_success
            .map_or(0, |p| p.rejected_data_points);
        answers.push((answer.status, rejected));
    }
    if with_hostile_neighbour {
        hostile_round(&h, &mallory, &state_attack).await;
    }

    let day = day_str(at(0).date_naive());
    let before = h.app.store.usage();
    let (s, daily) = h.daily(&alice, ALICE_PROXY, &day).await;
    work_done.push(work(h.app.store.usage() - before));
    assert_eq!(s, 200, "{daily}");
    let req = Req::new("GET", "/proxy/metrics/{proxyId}/breakdown")
        .param("proxyId", ALICE_PROXY)
        .query("by", "route")
        .query("startDate", &day)
        .query("endDate", &day)
        .bearer(&alice);
    let before = h.app.store.usage();
    let (s, breakdown, _) =
        parts(proxy_metrics::handlers::get_breakdown(&h.app, req.build()).await);
    work_done.push(work(h.app.store.usage() - before));
    assert_eq!(s, 200, "{breakdown}");
    if with_hostile_neighbour {
        // the neighbour's own data: bounded, and only what it was allowed
        let (s, theirs) = h.daily(&mallory, MALLORY_PROXY, &day).await;
        assert_eq!(s, 200, "{theirs}");
        assert!(theirs["metrics"]["requestCount"].as_u64().unwrap() > 0);
        assert!(items_naming(&h, MALLORY_PROXY).await > 0);
    }
    Seen {
        answers,
        work: work_done,
        daily: daily["metrics"].clone(),
        breakdown: breakdown["values"].clone(),
        items: items_naming(&h, ALICE_PROXY).await,
    }
}

#[tokio::test]
async fn a_hostile_neighbours_exports_change_nothing_of_another_owners_results_or_costs() {
    let quiet = run(false).await;
    let noisy = run(true).await;
    assert_eq!(quiet.answers, vec![(200, 0); 4]);
    // the first owner's data arrived whole: 10 routes × 5 classes × 20 × 4 rounds
    assert_eq!(quiet.daily["requestCount"], 4 * 50 * 20, "{}", quiet.daily);
    let routes: BTreeMap<&str, u64> = quiet
        .breakdown
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap(),
                v["requestCount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(routes.len(), 10, "{routes:?}");
    assert!(quiet.items > 0);

    assert_eq!(noisy.answers, quiet.answers);
    assert_eq!(noisy.work, quiet.work, "storage work per request");
    assert_eq!(noisy.items, quiet.items, "items in the owner's partitions");
    same(&noisy.daily, &quiet.daily, "daily");
    same(&noisy.breakdown, &quiet.breakdown, "breakdown");
}

/// Equal JSON, counts exactly; averages to 1e-12 relative (a float sum's
/// last bit follows the order its parts were merged in, which a hash map's
/// per-run seed decides, neighbour or not).
fn same(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                same(v, &y[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                same(v, w, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{at}: {x} != {y}"
            );
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

//! What requests cost, as DynamoDB bills it (dynoxide reports consumed
//! capacity like DynamoDB: 2 WRU per started KB of each item in a
//! transaction, 1 outside one, GSI writes extra; strongly consistent reads
//! 1 RRU per started 4 KB). The figures of `BENCHMARKS.md` are these.

use crate::common;

use common::record::{full_events, metered_read, metered_record};
use common::*;
use proxy_metrics::aggregate;
use serde_json::json;

#[tokio::test]
async fn a_recorded_event_costs_at_most_one_write_unit_when_sequenced() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    warm_dirty_mark(&h, &t).await;
    let mut rows = Vec::new();
    for (sequence, n, limit) in [(0, 6, 1.0), (1, 60, 0.2), (2, 500, 0.2)] {
        let used = metered_record(
            &h,
            &t,
            "edge",
            Some(sequence),
            json!({"events": full_events(n, &format!("s{sequence}"), now())}),
        )
        .await;
        let per_event = used.write_units / n as f64;
        rows.push((n, used.write_units, per_event));
        assert!(
            per_event <= limit,
            "{n} sequenced events cost {} WRU ({per_event:.3}/event, limit {limit})",
            used.write_units
        );
    }
    for (n, wru, per) in rows {
        println!("sequenced | {n} | {wru} | {per:.3}");
    }
}

/// Events over 3 routes and 2 upstreams: the first batch of the day admits
/// the values (one conditional update per key), the proxy's first notes its
/// first dimension, later ones cost their chunk and producer only — at most
/// one write unit an event at six events.
#[tokio::test]
async fn a_dimensioned_batch_costs_at_most_one_write_unit_an_event() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    warm_dirty_mark(&h, &t).await;
    let dimensioned = |tag: &str| {
        let events: Vec<serde_json::Value> = full_events(6, tag, now())
            .into_iter()
            .enumerate()
            .map(|(i, mut e)| {
                e["dimensions"] = json!({
                    "route": format!("/api/v1/resource-{}/:id", i % 3),
                    "upstream": format!("10.0.3.{}:8080", i % 2),
                });
                e
            })
            .collect();
        json!({ "events": events })
    };
    let first = metered_record(&h, &t, "edge", Some(0), dimensioned("d0")).await;
    let steady = metered_record(&h, &t, "edge", Some(1), dimensioned("d1")).await;
    println!(
        "sequenced, 6 events, 3 routes x 2 upstreams | first of the day {} WRU | then {} WRU ({:.3}/event)",
        first.write_units,
        steady.write_units,
        steady.write_units / 6.0
    );
    assert!(steady.write_units <= 6.0, "{steady:?}");
    // The day's first batch admits the values (a conditional update per
    // key); the proxy's very first also notes `dimsSince` on the proxy
    // item, once in its life (+2: an item in a transaction).
    assert!(first.write_units <= steady.write_units + 4.0, "{first:?}");
    // another instance (a cold cache) reads the sets once, writes nothing more
    let other = Harness::start_with_endpoint(&h.endpoint).await;
    let before = other.app.store.usage();
    let req = record_req(&t, "edge")
        .json(dimensioned("d2"))
        .header("Producer-Id", "boot-1")
        .header("Producer-Sequence", "2");
    assert_eq!(send_record(&other.app, req).await.0, 201);
    let cold = other.app.store.usage() - before;
    assert!(cold.write_units <= steady.write_units, "{cold:?}");
}

/// The proxy's dirty mark (one small write per proxy and function instance
/// every few minutes, not per request: `tests/suite/pressure.rs` counts it) is
/// written before the requests measured here.
async fn warm_dirty_mark(h: &Harness, t: &str) {
    metered_record(
        h,
        t,
        "edge",
        None,
        json!({"events": full_events(1, "warm", now())}),
    )
    .await;
}

#[tokio::test]
async fn unsequenced_events_pay_for_their_id_markers_only() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    warm_dirty_mark(&h, &t).await;
    for (n, limit) in [(1, 4.0), (6, 2.5), (100, 2.2)] {
        let used = metered_record(
            &h,
            &t,
            "edge",
            None,
            json!({"events": full_events(n, &format!("u{n}"), now())}),
        )
        .await;
        let per_event = used.write_units / n as f64;
        println!("unsequenced | {n} | {} | {per_event:.3}", used.write_units);
        assert!(
            per_event <= limit,
            "{n} unsequenced events cost {} WRU ({per_event:.2}/event, limit {limit})",
            used.write_units
        );
    }
}

#[tokio::test]
async fn reads_take_two_queries_and_do_not_grow_with_a_days_events() {
    let h = Harness::start().await;
    let t = token("alice", json!({"tier": "enterprise"}));
    h.register(&t, "edge").await;
    let start = day_str(now().date_naive() - chrono::Duration::days(365));
    let mut summary_units = Vec::new();
    for round in 0..3u64 {
        // each round adds a day's worth of a busy proxy's batches, folded
        for b in 0..10 {
            metered_record(
                &h,
                &t,
                "edge",
                Some(round * 10 + b),
                json!({"events": full_events(60, &format!("r{round}-{b}"), now())}),
            )
            .await;
        }
        aggregate::run_all(&h.app.store).await.unwrap();
        h.app.clock.advance(chrono::Duration::minutes(3));
        let daily = metered_read(&h, &t, "/proxy/metrics/{proxyId}/daily/{date}", &[]).await;
        let range = metered_read(
            &h,
            &t,
            "/proxy/metrics/{proxyId}/daily",
            &[("startDate", &start), ("endDate", &today())],
        )
        .await;
        let summary = metered_read(&h, &t, "/proxy/metrics/{proxyId}/summary", &[]).await;
        println!("round {round}: daily {daily:?}, 366-day range {range:?}, summary {summary:?}");
        assert_eq!(
            daily.queries, 2,
            "a materialised day: pending chunks + days"
        );
        assert_eq!(range.queries, 2, "a 366-day range: pending chunks + days");
        assert!(summary.queries <= 2, "summary: pending chunks + buckets");
        summary_units.push(summary.read_units);
    }
    // three times the events, the same buckets: the summary costs the same
    assert_eq!(summary_units[0], summary_units[2], "{summary_units:?}");
}

#[tokio::test]
async fn an_idle_run_reads_nothing_and_a_run_reads_what_is_new() {
    let h = Harness::start().await;
    let t = user_token("alice");
    h.register(&t, "edge").await;
    let before = h.app.store.usage();
    let idle = aggregate::run_all(&h.app.store).await.unwrap();
    let used = h.app.store.usage() - before;
    assert_eq!((idle.events_read, idle.proxies_processed), (0, 0));
    // per shard, one empty query of its dirty marks and one of the v2
    // pending partition (chunks a v2 writer may have left); one of the
    // failure records
    assert_eq!(used.queries, 33);
    assert_eq!(used.write_units, 0.0);

    let mut per_run = Vec::new();
    let mut sequence = 0;
    for round in 0..3u64 {
        for b in 0..(round + 1) * 5 {
            metered_record(
                &h,
                &t,
                "edge",
                Some(sequence),
                json!({"events": full_events(6, &format!("{round}-{b}"), now())}),
            )
            .await;
            sequence += 1;
        }
        let before = h.app.store.usage();
        let report = aggregate::run_all(&h.app.store).await.unwrap();
        let used = h.app.store.usage() - before;
        assert_eq!(report.events_read, (round + 1) * 30);
        per_run.push((report.events_read, used.read_units, used.write_units));
    }
    println!("(events, RRU, WRU) per run: {per_run:?}");
    // read units follow the new events, not everything the day holds
    let (e0, r0, _) = per_run[0];
    let (e2, r2, _) = per_run[2];
    assert!(r2 / e2 as f64 <= 1.5 * r0 / e0 as f64, "{per_run:?}");
}

/// OTLP ingestion of a "typical proxy": one `http.server.request.duration`
/// histogram of 10 routes × 5 status classes (50 series, 15 buckets each),
/// exported every 10 s. Each export reads its resource's series state
/// (one item) and writes it in one transaction with the export's chunk.
#[tokio::test]
async fn an_otlp_export_of_a_typical_proxy_costs_its_state_and_its_chunk() {
    use common::otlp::{export_proto, typical_export};
    use proxy_metrics::otlp::proto::{TEMPORALITY_CUMULATIVE, TEMPORALITY_DELTA};
    for (name, temporality) in [
        ("cumulative", TEMPORALITY_CUMULATIVE),
        ("delta", TEMPORALITY_DELTA),
    ] {
        let h = Harness::start().await;
        let t = user_token("alice");
        h.register(&t, "edge").await;
        warm_dirty_mark(&h, &t).await;
        let start = common::otlp::at(0);
        let mut steady = Vec::new();
        let mut first = None;
        for round in 0..6u64 {
            let time = start + chrono::Duration::seconds(10 * (round as i64 + 1));
            let request = typical_export(temporality, start, time, round);
            let before = h.app.store.usage();
            let answer = export_proto(&h, &t, "edge", &request).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.response().partial_success, None);
            let used = h.app.store.usage() - before;
            if round == 0 {
                first = Some(used);
            } else {
                steady.push(used);
            }
        }
        let first = first.unwrap();
        let wru = steady.iter().map(|u| u.write_units).sum::<f64>() / steady.len() as f64;
        let rru = steady.iter().map(|u| u.read_units).sum::<f64>() / steady.len() as f64;
        let state = h
            .app
            .store
            .otlp_state("edge", {
                let extracted = proxy_metrics::otlp::map::extract(&typical_export(
                    temporality,
                    start,
                    start,
                    0,
                ));
                extracted.groups[0].key
            })
            .await
            .unwrap()
            .map_or(0, |s| s.len());
        println!(
            "otlp {name} | 50 points/export | first {} WRU {} RRU | then {wru:.1} WRU {rru:.1} RRU per export | state {state} B",
            first.write_units, first.read_units
        );
        // a day at one export every 10 s
        println!("otlp {name} | {:.0} WRU a day", wru * 8640.0);
        assert!(wru <= 30.0, "{name}: {wru} WRU per export");
    }
}

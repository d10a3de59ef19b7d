//! Latency arithmetic (issue 13, item 7), as properties: sums never overflow
//! into a `null` average; the average is the contract's Σ totalLatencyMs /
//! Σ requestCount (an event of 0 requests weighs nothing); percentiles stay
//! within 1 % for samples from 0.001 ms to 10^7 ms, through storage and
//! merges.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proxy_metrics::domain::event::{Event, parse_event};
use proxy_metrics::domain::rollup::{Rollup, fold_events};
use proxy_metrics::domain::sketch::LatencySketch;
use proxy_metrics::storage::{decode_body, encode_body};
use serde_json::json;

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2031-06-10T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn event(metrics: serde_json::Value) -> Event {
    parse_event(
        &json!({"eventType": "latency", "timestamp": "2031-06-10T11:00:00Z", "metrics": metrics}),
        None,
        at(),
    )
    .unwrap()
}

fn day() -> chrono::NaiveDate {
    at().date_naive()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn huge_latency_sums_stay_finite(totals in prop::collection::vec(1e300f64..1.7e308, 2..20)) {
        let events: Vec<Event> = totals.iter()
            .map(|t| event(json!({"requestCount": 1, "totalLatencyMs": t})))
            .collect();
        let day_rollup = Rollup::of_events(day(), &events);
        let average = day_rollup.stats.average_latency_ms();
        prop_assert!(average.is_some_and(f64::is_finite), "{average:?}");
        // merged across days too
        let mut period = Rollup::default();
        for _ in 0..4 { period.merge(&day_rollup); }
        prop_assert!(period.stats.average_latency_ms().is_some_and(f64::is_finite));
    }

    #[test]
    fn the_average_is_total_latency_over_requests(
        events in prop::collection::vec((0u64..1000, prop::option::of(0f64..1e6), prop::option::of(prop::collection::vec(0.01f64..1e4, 1..20))), 1..30)
    ) {
        let mut total = 0.0;
        let mut requests = 0u64;
        let parsed: Vec<Event> = events.iter().filter_map(|(rc, tl, samples)| {
            if tl.is_none() && samples.is_none() {
                return None;
            }
            let mut m = json!({"requestCount": rc});
            if let Some(t) = tl { m["totalLatencyMs"] = json!(t); }
            if let Some(s) = samples { m["latencySamplesMs"] = json!(s); }
            // the contract's formula, computed here
            total += match (tl, samples) {
                (Some(t), _) => *t,
                (None, Some(s)) => s.iter().sum::<f64>() / s.len() as f64 * *rc as f64,
                _ => 0.0,
            };
            requests += rc;
            Some(event(m))
        }).collect();
        let r = Rollup::of_events(day(), &parsed);
        match r.stats.average_latency_ms() {
            None => prop_assert_eq!(requests, 0),
            Some(avg) => {
                let want = total / requests as f64;
                prop_assert!((avg - want).abs() <= 1e-6 * want.abs().max(1.0), "{} vs {}", avg, want);
            }
        }
        // an event of 0 requests adds to no denominator
        let zero = event(json!({"requestCount": 0, "latencySamplesMs": [5000.0]}));
        let mut with_zero = parsed.clone();
        with_zero.push(zero);
        let z = Rollup::of_events(day(), &with_zero);
        prop_assert_eq!(z.stats.latency_weight, r.stats.latency_weight);
    }

    #[test]
    fn percentiles_are_within_one_percent_from_a_microsecond_to_three_hours(
        exponents in prop::collection::vec(-3.0f64..7.0, 200..2000),
        split in 1usize..8,
    ) {
        let samples: Vec<f64> = exponents.iter().map(|e| 10f64.powf(*e)).collect();
        // one event per `split` share, folded as requests are, stored and merged
        let events: Vec<Event> = samples
            .chunks(samples.len().div_ceil(split))
            .map(|c| event(json!({"latencySamplesMs": c})))
            .collect();
        let mut merged = Rollup::default();
        for (_, part) in fold_events(&events) {
            let stored: proxy_metrics::domain::rollup::DayPart = decode_body(&encode_body(&part).unwrap()).unwrap();
            merged.merge_part(&stored);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.01, 0.25, 0.5, 0.95, 0.99] {
            let exact = sorted[(q * (sorted.len() - 1) as f64) as usize];
            let got = merged.stats.percentile(q).unwrap();
            prop_assert!((got - exact).abs() / exact <= 0.01, "p{}: {} vs {}", q, got, exact);
        }
        let one = {
            let mut s = LatencySketch::new();
            samples.iter().for_each(|v| s.add(*v));
            s
        };
        prop_assert_eq!(one.count(), merged.stats.sketch.count());
    }
}

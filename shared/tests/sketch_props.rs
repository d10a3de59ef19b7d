//! The sparse latency sketch, as properties (issue 20, finding 2): every
//! quantile within 1 % of the exact order statistic for data spanning
//! 1e-8..1e9 ms; merging is the sketch of the union; it answers what the
//! old dense `sketches-ddsketch` sketch answered, bit for bit, writes the
//! same DataDog bytes and reads the old bytes; both encodings round-trip.

use proptest::prelude::*;
use proxy_metrics::domain::sketch::{LatencySketch, SketchEncoding};
use sketches_ddsketch::{Config, DDSketch};

const QUANTILES: [f64; 9] = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0];

/// Latencies log-uniform over 1e-8..1e9 ms, with some exact zeros and
/// repeated values (real data repeats).
fn latencies() -> impl Strategy<Value = Vec<f64>> {
    let one = prop_oneof![
        8 => (-8.0f64..9.0).prop_map(|e| 10f64.powf(e)),
        1 => Just(0.0),
        1 => (1u32..2000).prop_map(f64::from),
    ];
    prop::collection::vec(one, 1..400)
}

fn sketch_of(values: &[f64]) -> LatencySketch {
    let mut s = LatencySketch::new();
    values.iter().for_each(|v| s.add(*v));
    s
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64) as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn quantiles_are_within_one_percent_of_exact(values in latencies()) {
        let s = sketch_of(&values);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        prop_assert_eq!(s.count(), values.len() as u64);
        prop_assert_eq!(s.min(), sorted.first().copied());
        prop_assert_eq!(s.max(), sorted.last().copied());
        for q in QUANTILES {
            let (got, want) = (s.quantile(q).unwrap(), exact_quantile(&sorted, q));
            // 1 % relative error, up to float rounding of the bin's value
            // (a bin's representative sits exactly at the bound).
            prop_assert!((got - want).abs() <= 0.01 * want * (1.0 + 1e-9), "q={} got {} want {}", q, got, want);
        }
    }

    #[test]
    fn merging_is_the_sketch_of_the_union(values in latencies(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let whole = sketch_of(&values);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(values.len() + 1)).collect();
        cuts.extend([0, values.len()]);
        cuts.sort_unstable();
        // merged in reverse order, to make order matter if it could
        let mut merged = LatencySketch::new();
        for w in cuts.windows(2).rev() {
            merged.merge(&sketch_of(&values[w[0]..w[1]]));
        }
        prop_assert_eq!(merged.count(), whole.count());
        prop_assert_eq!(merged.min(), whole.min());
        prop_assert_eq!(merged.max(), whole.max());
        let (a, b) = (merged.sum().unwrap(), whole.sum().unwrap());
        prop_assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{} vs {}", a, b);
        for i in 0..=1000 {
            let q = f64::from(i) / 1000.0;
            prop_assert_eq!(merged.quantile(q), whole.quantile(q), "q={}", q);
        }
    }

    #[test]
    fn it_answers_and_writes_what_the_old_sketch_did(values in latencies()) {
        let mut old = DDSketch::new(Config::defaults());
        values.iter().for_each(|v| old.add(*v));
        let new = sketch_of(&values);
        let old_bytes = old.to_java_bytes();
        prop_assert_eq!(new.to_bytes_as(SketchEncoding::DataDog), old_bytes.clone());
        let decoded = LatencySketch::from_bytes(&old_bytes).unwrap();
        prop_assert_eq!(&decoded, &new);
        for q in QUANTILES {
            let want = old.quantile(q).unwrap();
            prop_assert_eq!(new.quantile(q), want, "q={}", q);
            prop_assert_eq!(decoded.quantile(q), want, "q={} decoded", q);
        }
        // And the old reader reads what this one writes in DataDog's encoding.
        let back = DDSketch::from_java_bytes(&new.to_bytes_as(SketchEncoding::DataDog)).unwrap();
        prop_assert_eq!(back.quantile(0.5).unwrap(), new.quantile(0.5));
    }

    #[test]
    fn old_merged_sketches_decode_to_their_answers(parts in prop::collection::vec(latencies(), 1..5)) {
        // What is stored is often a merge (a day of buckets): same answers.
        let mut old = DDSketch::new(Config::defaults());
        let mut new = LatencySketch::new();
        for values in &parts {
            let mut o = DDSketch::new(Config::defaults());
            values.iter().for_each(|v| o.add(*v));
            let o = DDSketch::from_java_bytes(&o.to_java_bytes()).unwrap();
            old.merge(&o).unwrap();
            new.merge(&LatencySketch::from_bytes(&o.to_java_bytes()).unwrap());
        }
        let decoded = LatencySketch::from_bytes(&old.to_java_bytes()).unwrap();
        for q in QUANTILES {
            let want = old.quantile(q).unwrap();
            prop_assert_eq!(decoded.quantile(q), want, "q={}", q);
            prop_assert_eq!(new.quantile(q), want, "q={} merged", q);
        }
    }

    #[test]
    fn both_encodings_round_trip_and_sparse_is_never_bigger(values in latencies()) {
        let s = sketch_of(&values);
        let datadog = s.to_bytes_as(SketchEncoding::DataDog);
        let sparse = s.to_bytes_as(SketchEncoding::Sparse);
        prop_assert_eq!(&LatencySketch::from_bytes(&datadog).unwrap(), &s);
        prop_assert_eq!(&LatencySketch::from_bytes(&sparse).unwrap(), &s);
        prop_assert!(sparse.len() <= datadog.len(), "{} > {}", sparse.len(), datadog.len());
    }
}

#[test]
fn the_rolled_out_encoding_is_read_by_the_previous_release_or_is_the_plan() {
    use proxy_metrics::domain::sketch::WRITTEN_ENCODING;
    let s = sketch_of(&[12.5, 48.0, 51.2]);
    let written = s.to_bytes();
    match WRITTEN_ENCODING {
        // Step 1 of the plan: the previous release (the old crate) reads it.
        SketchEncoding::DataDog => {
            let old = DDSketch::from_java_bytes(&written).unwrap();
            assert_eq!(old.quantile(0.5).unwrap(), s.quantile(0.5));
        }
        // Step 2: an old reader fails cleanly, it never misreads.
        SketchEncoding::Sparse => assert!(DDSketch::from_java_bytes(&written).is_err()),
    }
    let sparse = s.to_bytes_as(SketchEncoding::Sparse);
    assert!(DDSketch::from_java_bytes(&sparse).is_err());
}

use super::*;

fn sketch_of(values: &[f64]) -> LatencySketch {
    let mut s = LatencySketch::new();
    values.iter().for_each(|v| s.add(*v));
    s
}

#[test]
fn round_trips_through_bytes_and_stays_small() {
    let mut s = LatencySketch::new();
    for i in 0..10_000 {
        s.add(1.0 + (i % 997) as f64 * 0.731);
    }
    for encoding in [SketchEncoding::DataDog, SketchEncoding::Sparse] {
        let bytes = s.to_bytes_as(encoding);
        assert!(bytes.len() < 4_000, "{encoding:?}: {} bytes", bytes.len());
        let back = LatencySketch::from_bytes(&bytes).unwrap();
        assert_eq!(back, s, "{encoding:?}");
        assert_eq!(back.count(), 10_000);
        assert_eq!(back.quantile(0.95), s.quantile(0.95));
    }
}

#[test]
fn decoded_sketches_merge_with_new_ones() {
    let mut a = LatencySketch::new();
    a.add(10.0);
    let decoded = LatencySketch::from_bytes(&a.to_bytes()).unwrap();
    let mut total = LatencySketch::new();
    total.merge(&decoded);
    total.merge(&decoded);
    assert_eq!(total.count(), 2);
    let mut again = decoded.clone();
    again.merge(&total);
    assert_eq!(again.count(), 3);
    assert!((total.quantile(0.5).unwrap() - 10.0).abs() <= 0.1);
}

#[test]
fn empty_sketch_has_no_quantile() {
    let empty = LatencySketch::new();
    assert_eq!(empty.quantile(0.5), None);
    assert_eq!((empty.min(), empty.max(), empty.sum()), (None, None, None));
    for encoding in [SketchEncoding::DataDog, SketchEncoding::Sparse] {
        let bytes = empty.to_bytes_as(encoding);
        assert_eq!(LatencySketch::from_bytes(&bytes).unwrap(), empty);
    }
    assert_eq!(empty.to_bytes_as(SketchEncoding::Sparse).len(), 3);
    assert_eq!(empty.to_bytes_as(SketchEncoding::DataDog).len(), 17);
}

#[test]
fn the_widest_two_samples_take_under_200_bytes_in_memory_and_storage() {
    let s = sketch_of(&[1e-8, 1e9]);
    let in_memory = std::mem::size_of::<LatencySketch>() + s.heap_bytes();
    assert!(in_memory < 200, "{in_memory} bytes in memory");
    assert_eq!(s.bin_count(), 2);
    for encoding in [SketchEncoding::DataDog, SketchEncoding::Sparse] {
        let bytes = s.to_bytes_as(encoding);
        assert!(bytes.len() < 200, "{encoding:?}: {} bytes", bytes.len());
        let back = LatencySketch::from_bytes(&bytes).unwrap();
        let decoded = std::mem::size_of::<LatencySketch>() + back.heap_bytes();
        assert!(decoded < 200, "{encoding:?}: {decoded} bytes decoded");
        assert_eq!(back.quantile(0.0), Some(1e-8));
        assert_eq!(back.quantile(1.0), Some(1e9));
    }
}

#[test]
fn the_key_bounds_are_those_of_the_indexable_range() {
    assert_eq!(key_of(MIN_INDEXABLE_MS * (1.0 + 1e-15)), MIN_KEY);
    assert_eq!(key_of(f64::MAX), MAX_KEY);
    // The old crate's γ, to the bit.
    assert_eq!(GAMMA.to_le_bytes()[0], 0xFD);
}

#[test]
fn zero_and_tiny_values_count_in_the_zero_bucket() {
    let s = sketch_of(&[0.0, 1e-9, 5e-10, 10.0]);
    assert_eq!(s.count(), 4);
    assert_eq!(s.bin_count(), 1);
    assert_eq!(s.quantile(0.5), Some(0.0));
    assert_eq!(s.quantile(0.0), Some(0.0));
    assert_eq!(s.quantile(1.0), Some(10.0));
    let busy = sketch_of(&[0.0, 10.0, 10.0, 10.0]);
    let p50 = busy.quantile(0.5).unwrap();
    assert!((p50 - 10.0).abs() <= 0.1, "{p50}");
    // just above the minimum gets a bin, and is answered within 1 %
    let tiny = sketch_of(&[2e-9, 2e-9]);
    let p50 = tiny.quantile(0.5).unwrap();
    assert!((p50 - 2e-9).abs() <= 0.01 * 2e-9, "{p50}");
}

#[test]
fn non_finite_values_are_ignored_and_nothing_panics() {
    let mut s = sketch_of(&[5.0]);
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        s.add(v);
        s.add_many(v, u64::MAX);
    }
    s.add_many(7.0, 0);
    assert_eq!(s.count(), 1);
    assert_eq!(
        (s.min(), s.max(), s.sum()),
        (Some(5.0), Some(5.0), Some(5.0))
    );
    for q in [f64::NAN, -0.1, 1.1, f64::INFINITY] {
        assert_eq!(s.quantile(q), None, "{q}");
    }
    s.add(f64::MAX);
    s.add_many(f64::MIN_POSITIVE, u64::MAX);
    assert_eq!(s.count(), u64::MAX, "counts saturate");
    assert_eq!(s.max(), Some(f64::MAX));
    assert!(s.quantile(0.5).is_some());
}

#[test]
fn negative_values_count_as_zero_with_exact_figures() {
    let s = sketch_of(&[-3.0, 4.0]);
    assert_eq!(s.count(), 2);
    assert_eq!(
        (s.min(), s.max(), s.sum()),
        (Some(-3.0), Some(4.0), Some(1.0))
    );
    assert_eq!(s.quantile(0.25), Some(0.0));
}

#[test]
fn past_2048_bins_the_lowest_collapse_and_counts_stay_exact() {
    // 3,000 distinct bins: one sample at each of γ^k for k in 0..3000.
    let mut s = LatencySketch::new();
    for k in 0..3_000 {
        s.add(value_of(k - 900));
    }
    assert_eq!(s.bin_count(), MAX_BINS);
    assert_eq!(s.count(), 3_000);
    // The high quantiles are untouched, as with the old collapsing store.
    let p99 = s.quantile(0.99).unwrap();
    // rank ⌊0.99 · 2999⌋ = 2969
    let exact = value_of(2969 - 900);
    assert!((p99 - exact).abs() <= 0.01 * exact, "{p99} vs {exact}");
    // A merge of the two halves collapses to the same store.
    let (mut low, mut high) = (LatencySketch::new(), LatencySketch::new());
    for k in 0..3_000 {
        let target = if k % 2 == 0 { &mut low } else { &mut high };
        target.add(value_of(k - 900));
    }
    low.merge(&high);
    assert_eq!(low.bins, s.bins);
}

#[test]
fn lying_lengths_are_errors_not_allocations() {
    // DataDog: a positive store claiming 2^31 bins in a dozen bytes.
    let mut datadog = vec![0x05];
    encoding_varint(&mut datadog, 1 << 31);
    datadog.extend_from_slice(&[2, 2, 2]);
    assert_eq!(
        LatencySketch::from_bytes(&datadog),
        Err(SketchDecodeError::Truncated)
    );
    // Sparse: the same lie.
    let mut sparse = vec![SPARSE_TAG];
    encoding_varint(&mut sparse, 1 << 31);
    sparse.extend_from_slice(&[0, 0, 0, 0]);
    assert!(LatencySketch::from_bytes(&sparse).is_err());
    // A key outside the latency range.
    let mut far = vec![0x05, 1];
    encoding_varint(&mut far, 200_000); // zigzag of 100,000
    far.push(2);
    assert!(LatencySketch::from_bytes(&far).is_err());
    assert_eq!(
        LatencySketch::from_bytes(&[]),
        Err(SketchDecodeError::Truncated)
    );
}

#[test]
fn contiguous_datadog_stores_of_one_key_stay_one_bin() {
    // mode 3 (contiguous counts), 5,000 bins, key 10, step 0, each count 1.
    let mut bytes = vec![(3 << 2) | 1];
    encoding_varint(&mut bytes, 5_000);
    bytes.extend_from_slice(&[20, 0]);
    bytes.extend(std::iter::repeat_n(2u8, 5_000)); // var double 1.0
    let s = LatencySketch::from_bytes(&bytes).unwrap();
    assert_eq!((s.count(), s.bin_count()), (5_000, 1));
    assert!(s.heap_bytes() <= 64, "{}", s.heap_bytes());
}

fn encoding_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

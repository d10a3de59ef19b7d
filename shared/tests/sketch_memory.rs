//! Memory of decoded state (issue 20, finding 2), measured by a counting
//! allocator: corrupt or hostile sketch bytes never panic and never
//! allocate more than a bound proportional to their length, and the
//! `heap_bytes()` estimates the aggregation budgets with are within a
//! factor of two of what decoding really keeps.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proxy_metrics::domain::rollup::{Bucket, DayPart, Rollup, Stats};
use proxy_metrics::domain::sketch::{LatencySketch, MAX_BINS, SketchEncoding};
use proxy_metrics::storage::{decode_body, encode_body};

/// Counts this thread's live heap bytes and their peak (tests run on
/// several threads; each measures its own allocations only).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (value, peak bytes allocated while making it, bytes it keeps).
fn measured<T>(make: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let value = make();
    let peak = PEAK.with(Cell::get) - before;
    let kept = LIVE.with(Cell::get) - before;
    (value, peak.max(0) as usize, kept.max(0) as usize)
}

fn sketch_of_keys(bins: i32) -> LatencySketch {
    let mut s = LatencySketch::new();
    for k in 0..bins {
        s.add_many(1.0203f64.powi(k), u64::try_from(k).unwrap_or(0) % 7 + 1);
    }
    s
}

/// Bytes a decode may allocate at most: a few times its input, and a
/// small constant for the empty and tiny cases.
fn allowed(input_len: usize) -> usize {
    1024 + 96 * input_len
}

fn decode_within_bounds(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (decoded, peak, _) = measured(|| LatencySketch::from_bytes(bytes));
    prop_assert!(
        peak <= allowed(bytes.len()),
        "{} bytes allocated for {} bytes of input",
        peak,
        bytes.len()
    );
    if let Ok(s) = decoded {
        prop_assert!(s.bin_count() <= MAX_BINS);
        prop_assert!(s.heap_bytes() <= allowed(bytes.len()));
        let _ = (s.quantile(0.5), s.min(), s.max(), s.to_bytes());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_or_over_allocate(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        decode_within_bounds(&bytes)?;
        // and behind each tag
        for tag in [0xF0u8, 0x05, 0x07, 0x0D, 0x0F, 0xA0, 0x02] {
            let mut tagged = vec![tag];
            tagged.extend_from_slice(&bytes);
            decode_within_bounds(&tagged)?;
        }
    }

    #[test]
    fn corrupted_sketches_never_panic_or_over_allocate(
        bins in 0i32..3000,
        sparse in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let encoding = if sparse { SketchEncoding::Sparse } else { SketchEncoding::DataDog };
        let mut bytes = sketch_of_keys(bins).to_bytes_as(encoding);
        for (at, byte) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        decode_within_bounds(&bytes)?;
        let cut = cut.index(bytes.len() + 1);
        decode_within_bounds(&bytes[..cut])?;
    }
}

#[test]
fn a_claim_of_two_billion_bins_allocates_nothing_of_it() {
    // positive store, IndexDeltasAndCounts, 2^31 bins claimed, 3 bytes given
    let mut bytes = vec![0x05, 0x80, 0x80, 0x80, 0x80, 0x08];
    bytes.extend_from_slice(&[2, 2, 2]);
    let (decoded, peak, _) = measured(|| LatencySketch::from_bytes(&bytes));
    assert!(decoded.is_err());
    assert!(peak < 1024, "{peak}");
}

fn within_factor_two(what: &str, estimate: usize, real: usize) {
    assert!(
        estimate * 2 >= real && estimate <= real * 2,
        "{what}: estimated {estimate} bytes, decoding kept {real}"
    );
}

#[test]
fn sketch_heap_bytes_are_what_decoding_keeps() {
    for bins in [1, 2, 10, 100, 1000, 2048] {
        let sketch = sketch_of_keys(bins);
        for encoding in [SketchEncoding::DataDog, SketchEncoding::Sparse] {
            let bytes = sketch.to_bytes_as(encoding);
            let (decoded, _, kept) = measured(|| LatencySketch::from_bytes(&bytes).unwrap());
            assert_eq!(decoded.heap_bytes(), kept, "{bins} bins, {encoding:?}");
        }
    }
}

fn bucket(bins: i32) -> Bucket {
    let mut stats = Stats {
        event_count: 3,
        ..Stats::default()
    };
    stats.sketch = sketch_of_keys(bins);
    Bucket {
        stats,
        healthy: true,
    }
}

fn part(buckets: u16, bins: i32, messages: usize) -> DayPart {
    DayPart {
        buckets: (0..buckets).map(|i| (i, bucket(bins))).collect(),
        errors: (0..messages)
            .map(|i| (format!("upstream error number {i}"), i as u64))
            .collect::<BTreeMap<_, _>>(),
        ..DayPart::default()
    }
}

#[test]
fn rollup_heap_bytes_are_within_a_factor_two_of_what_decoding_keeps() {
    for (buckets, bins, messages) in [
        (1, 2, 0),
        (1, 100, 3),
        (12, 2, 0),
        (72, 2, 10),
        (100, 30, 0),
        (288, 2, 100),
        (288, 300, 0),
    ] {
        let what = format!("{buckets} buckets of {bins} bins, {messages} messages");
        let day = part(buckets, bins, messages);
        let bytes = encode_body(&day).unwrap();
        let (decoded, _, kept) = measured(|| decode_body::<DayPart>(&bytes).unwrap());
        within_factor_two(&format!("DayPart, {what}"), decoded.heap_bytes(), kept);

        let mut rollup = Rollup::default();
        rollup.merge_part(&day);
        let bytes = encode_body(&rollup).unwrap();
        let (decoded, _, kept) = measured(|| decode_body::<Rollup>(&bytes).unwrap());
        within_factor_two(&format!("Rollup, {what}"), decoded.heap_bytes(), kept);
    }
    let one = bucket(50);
    let bytes = encode_body(&one).unwrap();
    let (decoded, _, kept) = measured(|| decode_body::<Bucket>(&bytes).unwrap());
    within_factor_two("Bucket", decoded.heap_bytes(), kept);
}

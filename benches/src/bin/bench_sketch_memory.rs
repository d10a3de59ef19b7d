//! Memory of decoding one 1 MB page of stored chunks (issue 20, finding 2),
//! with the dense sketch of earlier releases (`sketches-ddsketch`) and the
//! sparse one. Prints markdown.
//!
//! ```sh
//! cargo run --release -p proxy-metrics-benches --bin bench_sketch_memory
//! ```
//!
//! A page holds chunk bodies: per day, a postcard-encoded `DayPart`. The
//! pages are built the way `record` builds chunks, from one request of 500
//! `latency` events replayed until the page is full. "Decoded" is what a
//! counting allocator sees kept after decoding every part of the page (the
//! aggregation decodes a page whole before folding it). The sparse figure
//! is measured; the dense one is the same page with each sketch's heap
//! replaced by what `sketches-ddsketch` keeps for the same sketch bytes
//! (also measured): both stores were behind the same `DayPart` layout.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use chrono::{NaiveDate, TimeZone, Utc};
use proxy_metrics::domain::event::{Event, EventType};
use proxy_metrics::domain::rollup::{DayPart, fold_events};
use proxy_metrics::domain::sketch::{LatencySketch, SketchEncoding};
use proxy_metrics::storage::{decode_body, encode_body};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn note(delta: isize) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
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

/// (value, peak bytes while making it, bytes it keeps).
fn measured<T>(make: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let value = make();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let kept = LIVE.load(Ordering::Relaxed) - before;
    (value, peak.max(0) as usize, kept.max(0) as usize)
}

const PAGE_BYTES: usize = 1024 * 1024;
const EVENTS_PER_REQUEST: i64 = 500;
const WEEK_BUCKETS: i64 = 7 * 288;

/// One request: 500 `latency` events, each in its own five-minute bucket
/// of the week before 2024-01-15, each with the samples `samples` makes.
fn request(samples: &mut dyn FnMut() -> Vec<f64>) -> BTreeMap<NaiveDate, DayPart> {
    let end = Utc.with_ymd_and_hms(2024, 1, 15, 0, 0, 0).unwrap();
    let events: Vec<Event> = (0..EVENTS_PER_REQUEST)
        .map(|i| {
            let mut sketch = LatencySketch::new();
            samples().into_iter().for_each(|v| sketch.add(v));
            let bucket = i * WEEK_BUCKETS / EVENTS_PER_REQUEST;
            Event {
                event_id: format!("e{i}"),
                event_type: EventType::Latency,
                timestamp_ms: end.timestamp_millis() - (bucket + 1) * 300_000,
                healthy: true,
                request_count: 1,
                success_count: 1,
                error_count: 0,
                total_latency_ms: None,
                min_latency_ms: None,
                max_latency_ms: None,
                latency_sketch: Some(sketch),
                data_transferred_bytes: 0,
                data_received_bytes: 0,
                connection_count: 0,
                concurrent_connections: None,
                dimensions: Default::default(),
                status_counts: None,
                error_message: None,
            }
        })
        .collect();
    fold_events(&events)
}

/// The parts of one page: a request's parts re-encoded in `encoding`,
/// repeated until the page holds 1 MB of part bytes.
fn page(parts: &BTreeMap<NaiveDate, DayPart>, encoding: SketchEncoding) -> Vec<Vec<u8>> {
    let encoded: Vec<Vec<u8>> = parts
        .values()
        .map(|p| reencode(p, encoding))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
    let mut page = Vec::new();
    let mut size = 0;
    for bytes in encoded.iter().cycle() {
        if size + bytes.len() > PAGE_BYTES || encoded.is_empty() {
            break;
        }
        size += bytes.len();
        page.push(bytes.clone());
    }
    page
}

/// A part's body with its sketches in `encoding` (postcard, format byte).
fn reencode(part: &DayPart, encoding: SketchEncoding) -> Result<Vec<u8>, String> {
    let bytes = encode_body(part).map_err(|e| e.to_string())?;
    if encoding == SketchEncoding::DataDog {
        return Ok(bytes);
    }
    // Swap each sketch's bytes for the sparse ones inside the body: the
    // body is postcard, so re-encode a copy whose sketches re-serialise.
    let mut sparse = bytes.clone();
    for bucket in part.buckets.values() {
        let old = bucket.stats.sketch.to_bytes();
        let new = bucket.stats.sketch.to_bytes_as(SketchEncoding::Sparse);
        if let Some(at) = find(&sparse, &old) {
            let mut with_len = postcard_len(new.len());
            with_len.extend_from_slice(&new);
            let old_len = postcard_len(old.len()).len();
            sparse.splice(at - old_len..at + old.len(), with_len);
        }
    }
    // The splice must give back the same part, or the figure is wrong.
    match decode_body::<DayPart>(&sparse) {
        Ok(back) if back == *part => Ok(sparse),
        _ => Err("re-encoding a part in the sparse encoding failed".into()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn postcard_len(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

struct Figures {
    parts: usize,
    sketches: usize,
    page_bytes: usize,
    sparse_kept: usize,
    sparse_peak: usize,
    dense_kept: usize,
}

fn measure(page: &[Vec<u8>]) -> Figures {
    let page_bytes = page.iter().map(Vec::len).sum();
    let (decoded, sparse_peak, sparse_kept) = measured(|| {
        page.iter()
            .filter_map(|b| decode_body::<DayPart>(b).ok())
            .collect::<Vec<_>>()
    });
    let sketch_bytes: Vec<Vec<u8>> = decoded
        .iter()
        .flat_map(|p| p.buckets.values())
        .map(|b| b.stats.sketch.to_bytes_as(SketchEncoding::DataDog))
        .collect();
    let (sparse_sketches, _, sparse_sketch_kept) = measured(|| {
        sketch_bytes
            .iter()
            .filter_map(|b| LatencySketch::from_bytes(b).ok())
            .collect::<Vec<_>>()
    });
    let (dense_sketches, _, dense_sketch_kept) = measured(|| {
        sketch_bytes
            .iter()
            .filter_map(|b| sketches_ddsketch::DDSketch::from_java_bytes(b).ok())
            .collect::<Vec<_>>()
    });
    // Both vectors hold the sketches inline: compare heaps only.
    let inline = |n: usize, size: usize| n * size;
    let sparse_heap = sparse_sketch_kept
        - inline(
            sparse_sketches.capacity(),
            std::mem::size_of::<LatencySketch>(),
        );
    let dense_heap = dense_sketch_kept
        - inline(
            dense_sketches.capacity(),
            std::mem::size_of::<sketches_ddsketch::DDSketch>(),
        );
    let dense_inline_extra = sketch_bytes.len()
        * std::mem::size_of::<sketches_ddsketch::DDSketch>()
            .saturating_sub(std::mem::size_of::<LatencySketch>());
    Figures {
        parts: decoded.len(),
        sketches: sketch_bytes.len(),
        page_bytes,
        sparse_kept,
        sparse_peak,
        dense_kept: sparse_kept - sparse_heap + dense_heap + dense_inline_extra,
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn main() {
    let mut rng = StdRng::seed_from_u64(20);
    let hostile = request(&mut || vec![1e-8, 1e9]);
    let wide = request(&mut || {
        (0..1000)
            .map(|_| 10f64.powf(rng.random_range(-8.0..9.0)))
            .collect()
    });
    let mut rng = StdRng::seed_from_u64(7);
    let ordinary = request(&mut || {
        (0..100)
            .map(|_| (3.0 + 0.8 * rng.random_range(-2.0f64..2.0)).exp())
            .collect()
    });
    println!(
        "| page (1 MB of chunk parts) | parts | sketches | dense (before) | sparse (after) | sparse peak |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, parts) in [
        ("hostile: [1e-8, 1e9] per event", &hostile),
        ("1,000 samples log-uniform 1e-8..1e9", &wide),
        ("ordinary: 100 log-normal samples", &ordinary),
    ] {
        for encoding in [SketchEncoding::DataDog, SketchEncoding::Sparse] {
            let f = measure(&page(parts, encoding));
            // An old release cannot read the sparse encoding at all.
            let dense = match encoding {
                SketchEncoding::DataDog => mb(f.dense_kept),
                SketchEncoding::Sparse => "—".into(),
            };
            println!(
                "| {name}, {encoding:?} encoding ({}) | {} | {} | {dense} | {} | {} |",
                mb(f.page_bytes),
                f.parts,
                f.sketches,
                mb(f.sparse_kept),
                mb(f.sparse_peak),
            );
        }
    }
}

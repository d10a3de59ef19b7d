//! Latency distributions as mergeable DDSketches (relative accuracy 1 %).
//!
//! Samples are folded into a sketch at ingestion and only the sketch is
//! stored, so 10 000 samples cost a few hundred bytes rather than 80 KB.
//!
//! # The sketch
//!
//! DataDog's DDSketch with the logarithmic mapping of γ = (1 + α)/(1 − α),
//! α = 1 %: a value `v > MIN_INDEXABLE_MS` counts in bin `⌊log_γ v⌋`, and
//! a quantile answers its bin's `2γ^(k+1)/(1 + γ)`, within 1 % of every value
//! of the bin. Values at or below [`MIN_INDEXABLE_MS`] (0 included) count in
//! a zero bucket and answer 0. Count, min, max and sum are exact. Every
//! sketch has the same mapping, so merging is exact: the merge of two
//! sketches is the sketch of the union of their values.
//!
//! The bins live in a sparse store ([`store`]): memory follows the number of
//! non-empty bins (16 B each), never the span between the smallest and the
//! largest value. The dense store of `sketches-ddsketch` used before spent
//! 16 KB on the two samples `1e-8` and `1e9` ms and let one hostile page of
//! stored chunks decode to ~150 MB (issue 20, finding 2). The mapping, the
//! rank rule and the 2048-bin limit (collapsing the lowest bins) are the
//! old ones, so a sketch answers the same quantiles as before for the same
//! data, bit for bit, and old stored sketches decode to the same answers.
//!
//! # Stored encodings and rolling deploys
//!
//! A sketch is stored, inside postcard bodies, in one of two encodings told
//! apart by their first byte:
//!
//! - DataDog's binary encoding ([`SketchEncoding::DataDog`]), which every
//!   sketch stored so far uses. It is read forever: stored data never
//!   becomes unreadable.
//! - The sparse encoding ([`SketchEncoding::Sparse`], first byte
//!   [`SPARSE_TAG`]): varint bin count and zero count, exact min/max/sum,
//!   then delta-encoded varint keys and varint counts. No mapping
//!   parameters (17 bytes saved per sketch); an empty sketch is 3 bytes
//!   instead of 17.
//!
//! Which one is written is [`WRITTEN_ENCODING`], one constant, so the reader
//! always learns an encoding one release before any writer emits it:
//!
//! 1. Release N (this one): reads both, writes DataDog. Old readers (N − 1)
//!    still running during the deploy only ever meet DataDog bytes.
//! 2. Release N + 1, once N is everywhere (no function of N − 1 left, and
//!    no rollback to N − 1 planned): `WRITTEN_ENCODING = Sparse`. A reader
//!    of N meets sparse bytes and reads them; rolling back to N is safe.
//!
//! A reader that meets an encoding it does not know (N − 1 reading sparse
//! bytes, were step 2 taken too early) gets an error, never a wrong sketch:
//! [`SPARSE_TAG`] is a flag DataDog's decoder refuses. A third encoding
//! takes another such tag and the same two steps.
//!
//! Decoding is bounded by the input: a hostile or corrupt encoding costs at
//! most a few times its own length in memory (and never more than
//! [`MAX_BINS`] bins), or is an error; it never panics.

use std::sync::LazyLock;

mod encoding;
mod store;
#[cfg(test)]
mod tests;

pub use encoding::{SPARSE_TAG, SketchDecodeError};
pub use store::MAX_BINS;
use store::SparseStore;

/// Relative accuracy promised by the contract for every reported percentile.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// γ = (1 + α) / (1 − α), computed as `sketches-ddsketch` computed it.
pub(crate) const GAMMA: f64 = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY);
static GAMMA_LN: LazyLock<f64> = LazyLock::new(|| GAMMA.ln());
/// Values at or below this (ms) count in the zero bucket and answer 0: the
/// old sketch's minimum (a nanosecond of a millisecond).
pub const MIN_INDEXABLE_MS: f64 = 1e-9;
/// The bins of `(MIN_INDEXABLE_MS, f64::MAX]`: no other key is ever stored.
pub(crate) const MIN_KEY: i32 = -1037;
pub(crate) const MAX_KEY: i32 = 35487;

/// How a sketch is stored (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SketchEncoding {
    /// DataDog's binary encoding (`sketches-ddsketch`'s Java-compatible bytes).
    DataDog,
    /// The sparse encoding, first byte [`SPARSE_TAG`].
    Sparse,
}

/// What this release writes: DataDog until every reader reads both (step 2
/// of the plan in the module documentation flips it).
pub const WRITTEN_ENCODING: SketchEncoding = SketchEncoding::DataDog;

#[derive(Clone)]
pub struct LatencySketch {
    bins: SparseStore,
    zero_count: u64,
    /// Σ bins + zero_count.
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
}

impl std::fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LatencySketch(count={})", self.count())
    }
}

/// Equal when they hold the same bins and figures (tests compare stored state).
impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        self.bins == other.bins
            && self.zero_count == other.zero_count
            && self.count == other.count
            && self.min.to_bits() == other.min.to_bits()
            && self.max.to_bits() == other.max.to_bits()
            && self.sum.to_bits() == other.sum.to_bits()
    }
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

fn key_of(value_ms: f64) -> i32 {
    // `as` saturates; the callers pass finite values above the minimum.
    (value_ms.ln() / *GAMMA_LN).floor() as i32
}

/// The value a bin answers: `sketches-ddsketch`'s expression, to the bit.
fn value_of(key: i32) -> f64 {
    (f64::from(key) * *GAMMA_LN).exp() * (2.0 * GAMMA / (1.0 + GAMMA))
}

impl LatencySketch {
    pub fn new() -> Self {
        Self::from_parts(
            SparseStore::default(),
            0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
        )
    }

    fn from_parts(bins: SparseStore, zero_count: u64, min: f64, max: f64, sum: f64) -> Self {
        let count = bins.total().saturating_add(zero_count);
        Self {
            bins,
            zero_count,
            count,
            min,
            max,
            sum,
        }
    }

    pub fn add(&mut self, value_ms: f64) {
        self.add_many(value_ms, 1);
    }

    /// Adds `count` observations of `value_ms`. Non-finite values are
    /// ignored (validation never lets one through, and counting one would
    /// make min, max or sum lie); negative ones count in the zero bucket.
    pub fn add_many(&mut self, value_ms: f64, count: u64) {
        if count == 0 || !value_ms.is_finite() {
            return;
        }
        if value_ms > MIN_INDEXABLE_MS {
            self.bins.add(key_of(value_ms), count);
        } else {
            self.zero_count = self.zero_count.saturating_add(count);
        }
        self.count = self.count.saturating_add(count);
        self.min = self.min.min(value_ms);
        self.max = self.max.max(value_ms);
        self.sum += value_ms * count as f64;
    }

    /// Adds everything `other` holds: exactly the sketch of the union.
    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        self.bins.merge(&other.bins);
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.count = self.count.saturating_add(other.count);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// What is left of this sketch once `part` (a sketch of some of the
    /// values added to it) is taken away: exact bins and counts (see
    /// [`SparseStore::subtract`]); min and max stay this sketch's bounds,
    /// and answer only the 0 and 1 quantiles.
    pub fn without(&self, part: &LatencySketch) -> LatencySketch {
        let mut bins = self.bins.clone();
        bins.subtract(&part.bins);
        let zero_count = self.zero_count.saturating_sub(part.zero_count);
        let left = Self::from_parts(
            bins,
            zero_count,
            self.min,
            self.max,
            (self.sum - part.sum).max(0.0),
        );
        if left.count == 0 { Self::new() } else { left }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `q` quantile (0..=1) of everything added, or `None` when empty
    /// or `q` is out of range: the value of rank `⌊q·(n − 1)⌋`, within 1 %
    /// (0 and 1 answer the exact min and max).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) || self.count == 0 {
            return None;
        }
        if q == 0.0 {
            return Some(self.min);
        }
        if q == 1.0 {
            return Some(self.max);
        }
        let rank = (q * (self.count as f64 - 1.0)) as u64;
        if rank < self.zero_count {
            return Some(0.0);
        }
        self.bins.key_at_rank(rank - self.zero_count).map(value_of)
    }

    pub fn min(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.max)
    }

    pub fn sum(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.sum)
    }

    /// Non-empty bins (at most [`MAX_BINS`]).
    pub fn bin_count(&self) -> usize {
        self.bins.len()
    }

    /// Bytes this sketch holds on the heap (its bins); its inline size is
    /// `size_of::<LatencySketch>()`.
    pub fn heap_bytes(&self) -> usize {
        self.bins.heap_bytes()
    }

    /// The stored form, in [`WRITTEN_ENCODING`].
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_as(WRITTEN_ENCODING)
    }

    pub fn to_bytes_as(&self, encoding: SketchEncoding) -> Vec<u8> {
        match encoding {
            SketchEncoding::DataDog => encoding::encode_datadog(self),
            SketchEncoding::Sparse => encoding::encode_sparse(self),
        }
    }

    /// Reads either encoding; bounded by `bytes` (see the module docs).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SketchDecodeError> {
        match bytes.first() {
            None => Err(SketchDecodeError::Truncated),
            Some(&SPARSE_TAG) => encoding::decode_sparse(bytes),
            Some(_) => encoding::decode_datadog(bytes),
        }
    }
}

impl serde::Serialize for LatencySketch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for LatencySketch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(SketchVisitor)
    }
}

/// Decodes straight from the body's bytes (postcard lends them): no copy.
struct SketchVisitor;

impl<'de> serde::de::Visitor<'de> for SketchVisitor {
    type Value = LatencySketch;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("latency sketch bytes")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<LatencySketch, E> {
        LatencySketch::from_bytes(v).map_err(E::custom)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Self-describing formats (JSON) give a list of numbers; each one
        // was read from the input, so the buffer is bounded by it.
        let mut bytes = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        LatencySketch::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

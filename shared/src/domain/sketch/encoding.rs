//! The two stored encodings of a [`LatencySketch`]: DataDog's binary format
//! (every sketch stored before the sparse store) and the sparse encoding.
//!
//! Both decoders are bounded by their input: nothing is allocated from a
//! length the input claims, only for entries actually read (each takes at
//! least one byte), and the bins are folded into a [`SparseStore`] of at
//! most [`MAX_BINS`] bins as they are read. A hostile or corrupt encoding
//! gets an error, never a panic or a large allocation.

use super::store::{Bin, MAX_BINS, SparseStore};
use super::{GAMMA, LatencySketch, MAX_KEY, MIN_KEY};

/// First byte of the sparse encoding. DataDog's decoder (old releases)
/// refuses it as an unknown sketch-feature flag (type bits `00`, subflag
/// `0x3C`), so an old reader meeting it fails cleanly, and no DataDog
/// encoding starts with it. Later encodings take other such bytes.
pub const SPARSE_TAG: u8 = 0xF0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchDecodeError {
    #[error("latency sketch ends early")]
    Truncated,
    #[error("latency sketch has an unknown flag 0x{0:02X}")]
    UnknownFlag(u8),
    #[error("latency sketch is malformed: {0}")]
    Malformed(&'static str),
}

type Decoded<T> = Result<T, SketchDecodeError>;

// DataDog's flag bytes: (subflag << 2) | type.
const FLAG_INDEX_MAPPING_LOG: u8 = 0x02;
const FLAG_ZERO_COUNT: u8 = 0x04;
const FLAG_COUNT: u8 = 0xA0;
const FLAG_SUM: u8 = 0x84;
const FLAG_MIN: u8 = 0x88;
const FLAG_MAX: u8 = 0x8C;
const TYPE_POSITIVE_STORE: u8 = 1;
const TYPE_NEGATIVE_STORE: u8 = 3;
const MODE_INDEX_DELTAS_AND_COUNTS: u8 = 1;
const MODE_INDEX_DELTAS: u8 = 2;
const MODE_CONTIGUOUS_COUNTS: u8 = 3;
const VAR_DOUBLE_ROTATE: u32 = 6;

// ---- DataDog encoding ------------------------------------------------------

/// Byte for byte what `sketches-ddsketch` 0.4 wrote for the same data.
pub fn encode_datadog(sketch: &LatencySketch) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + 3 * sketch.bins.len());
    if sketch.count != 0 {
        out.push(FLAG_COUNT);
        put_var_double(&mut out, sketch.count as f64);
        out.push(FLAG_MIN);
        out.extend_from_slice(&sketch.min.to_le_bytes());
        out.push(FLAG_MAX);
        out.extend_from_slice(&sketch.max.to_le_bytes());
    }
    if sketch.sum != 0.0 {
        out.push(FLAG_SUM);
        out.extend_from_slice(&sketch.sum.to_le_bytes());
    }
    out.push(FLAG_INDEX_MAPPING_LOG);
    out.extend_from_slice(&GAMMA.to_le_bytes());
    out.extend_from_slice(&0.0f64.to_le_bytes());
    if sketch.zero_count != 0 {
        out.push(FLAG_ZERO_COUNT);
        put_var_double(&mut out, sketch.zero_count as f64);
    }
    if !sketch.bins.is_empty() {
        out.push((MODE_INDEX_DELTAS_AND_COUNTS << 2) | TYPE_POSITIVE_STORE);
        put_varint(&mut out, sketch.bins.len() as u64);
        let mut previous = 0i64;
        for bin in sketch.bins.bins() {
            put_signed_varint(&mut out, i64::from(bin.key) - previous);
            put_var_double(&mut out, bin.count as f64);
            previous = i64::from(bin.key);
        }
    }
    out
}

/// Reads what `sketches-ddsketch` 0.4 read, with the same rules (a repeated
/// store replaces the earlier one, counts are whole), except that it only
/// accepts the logarithmic mapping of [`GAMMA`] (the only one ever written)
/// and keys of values in `(MIN_INDEXABLE_MS, f64::MAX]`, and it counts a
/// negative store's values in the zero bucket (latencies are never negative).
pub fn decode_datadog(bytes: &[u8]) -> Decoded<LatencySketch> {
    let mut input = bytes;
    // The old decoder skipped a version byte 0x02 followed by a flag.
    if input.len() >= 2 && input[0] == 0x02 && is_datadog_flag(input[1]) {
        input = &input[1..];
    }
    let mut zero_count = 0.0f64;
    let mut negative = 0u64;
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    let mut bins = SparseStore::default();
    while let Some(flag) = take_byte(&mut input) {
        match flag {
            FLAG_INDEX_MAPPING_LOG => {
                let gamma = take_f64(&mut input)?;
                let _offset = take_f64(&mut input)?;
                if (gamma - GAMMA).abs() > 1e-12 {
                    return Err(SketchDecodeError::Malformed("not the 1 % mapping"));
                }
            }
            FLAG_ZERO_COUNT => zero_count += take_var_double(&mut input)?,
            FLAG_COUNT => {
                take_var_double(&mut input)?;
            }
            FLAG_SUM => sum = take_f64(&mut input)?,
            FLAG_MIN => min = take_f64(&mut input)?,
            FLAG_MAX => max = take_f64(&mut input)?,
            _ if flag & 3 == TYPE_POSITIVE_STORE => bins = take_datadog_store(&mut input, flag)?,
            _ if flag & 3 == TYPE_NEGATIVE_STORE => {
                negative = take_datadog_store(&mut input, flag)?.total();
            }
            _ => return Err(SketchDecodeError::UnknownFlag(flag)),
        }
    }
    // `as` saturates and maps NaN to 0, as the old decoder did.
    let zero_count = (zero_count as u64).saturating_add(negative);
    Ok(LatencySketch::from_parts(bins, zero_count, min, max, sum))
}

fn is_datadog_flag(b: u8) -> bool {
    matches!(
        b,
        FLAG_ZERO_COUNT | FLAG_COUNT | FLAG_SUM | FLAG_MIN | FLAG_MAX | FLAG_INDEX_MAPPING_LOG
    ) || match b & 3 {
        TYPE_POSITIVE_STORE | TYPE_NEGATIVE_STORE => (1..=3).contains(&(b >> 2)),
        2 => b >> 2 <= 4,
        _ => false,
    }
}

fn take_datadog_store(input: &mut &[u8], flag: u8) -> Decoded<SparseStore> {
    let mode = flag >> 2;
    let claimed = take_varint(input)?;
    // Every bin takes at least one byte: a longer claim is a lie.
    if claimed > input.len() as u64 {
        return Err(SketchDecodeError::Truncated);
    }
    let mut read = Vec::new();
    let mut key = 0i64;
    let mut step = 0i64;
    if mode == MODE_CONTIGUOUS_COUNTS {
        key = take_signed_varint(input)?;
        step = take_signed_varint(input)?;
    }
    for _ in 0..claimed {
        let count = match mode {
            MODE_INDEX_DELTAS_AND_COUNTS => {
                key = key.saturating_add(take_signed_varint(input)?);
                take_var_double(input)? as u64
            }
            MODE_INDEX_DELTAS => {
                key = key.saturating_add(take_signed_varint(input)?);
                1
            }
            MODE_CONTIGUOUS_COUNTS => take_var_double(input)? as u64,
            _ => return Err(SketchDecodeError::UnknownFlag(flag)),
        };
        read.push(Bin {
            key: checked_key(key)?,
            count,
        });
        if mode == MODE_CONTIGUOUS_COUNTS {
            key = key.saturating_add(step);
        }
        // Bounded memory whatever the claimed length: fold as we go.
        if read.len() >= 2 * MAX_BINS {
            read = SparseStore::from_unsorted(read).into_bins();
        }
    }
    Ok(SparseStore::from_unsorted(read))
}

fn checked_key(key: i64) -> Decoded<i32> {
    i32::try_from(key)
        .ok()
        .filter(|k| (MIN_KEY..=MAX_KEY).contains(k))
        .ok_or(SketchDecodeError::Malformed(
            "a bin outside the latency range",
        ))
}

// ---- Sparse encoding ------------------------------------------------------
//
// SPARSE_TAG, varint bins, varint zero count, then when either is non-zero
// min, max, sum (exact doubles), then the bins: the first key zigzag, each next
// key as its distance to the previous minus one, and each count, as varints.

pub fn encode_sparse(sketch: &LatencySketch) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 3 * sketch.bins.len());
    out.push(SPARSE_TAG);
    put_varint(&mut out, sketch.bins.len() as u64);
    put_varint(&mut out, sketch.zero_count);
    if sketch.count == 0 {
        return out;
    }
    for value in [sketch.min, sketch.max, sketch.sum] {
        put_exact_double(&mut out, value);
    }
    let mut previous: Option<i32> = None;
    for bin in sketch.bins.bins() {
        match previous {
            None => put_signed_varint(&mut out, i64::from(bin.key)),
            Some(p) => put_varint(&mut out, (i64::from(bin.key) - i64::from(p) - 1) as u64),
        }
        put_varint(&mut out, bin.count);
        previous = Some(bin.key);
    }
    out
}

pub fn decode_sparse(bytes: &[u8]) -> Decoded<LatencySketch> {
    let mut input = match bytes.split_first() {
        Some((&SPARSE_TAG, rest)) => rest,
        _ => return Err(SketchDecodeError::Malformed("not a sparse sketch")),
    };
    let claimed = take_varint(&mut input)?;
    let zero_count = take_varint(&mut input)?;
    // Each bin takes two bytes at least; a writer never exceeds MAX_BINS.
    if claimed > (input.len() / 2) as u64 || claimed > MAX_BINS as u64 {
        return Err(SketchDecodeError::Malformed("more bins than bytes"));
    }
    if claimed == 0 && zero_count == 0 {
        return match input.is_empty() {
            true => Ok(LatencySketch::new()),
            false => Err(SketchDecodeError::Malformed("bytes after an empty sketch")),
        };
    }
    let min = take_exact_double(&mut input)?;
    let max = take_exact_double(&mut input)?;
    let sum = take_exact_double(&mut input)?;
    let mut bins = Vec::with_capacity(claimed as usize);
    let mut total = zero_count;
    let mut key = 0i64;
    for i in 0..claimed {
        key = if i == 0 {
            take_signed_varint(&mut input)?
        } else {
            let gap = i64::try_from(take_varint(&mut input)?)
                .map_err(|_| SketchDecodeError::Malformed("a bin outside the latency range"))?;
            key.saturating_add(gap).saturating_add(1)
        };
        let count = take_varint(&mut input)?;
        if count == 0 {
            return Err(SketchDecodeError::Malformed("an empty bin"));
        }
        total = total
            .checked_add(count)
            .ok_or(SketchDecodeError::Malformed("counts overflow"))?;
        bins.push(Bin {
            key: checked_key(key)?,
            count,
        });
    }
    if !input.is_empty() {
        return Err(SketchDecodeError::Malformed("bytes after the last bin"));
    }
    let bins = SparseStore::from_sorted(bins);
    Ok(LatencySketch::from_parts(bins, zero_count, min, max, sum))
}

// ---- Primitives, as DataDog's VarEncodingHelper writes them ---------------

fn take_byte(input: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = input.split_first()?;
    *input = rest;
    Some(b)
}

fn next_byte(input: &mut &[u8]) -> Decoded<u8> {
    take_byte(input).ok_or(SketchDecodeError::Truncated)
}

fn take_f64(input: &mut &[u8]) -> Decoded<f64> {
    let (head, rest) = input
        .split_first_chunk::<8>()
        .ok_or(SketchDecodeError::Truncated)?;
    *input = rest;
    Ok(f64::from_le_bytes(*head))
}

/// LEB128 for 8 bytes; a 9th byte holds 8 bits (at most 9 bytes).
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    let extra = ((63 - value.leading_zeros() as i32) / 7).clamp(0, 8);
    for _ in 0..extra {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Decoded<u64> {
    let (mut value, mut shift) = (0u64, 0u32);
    loop {
        let next = next_byte(input)?;
        if next < 0x80 || shift == 56 {
            return Ok(value | (u64::from(next) << shift));
        }
        value |= u64::from(next & 0x7F) << shift;
        shift += 7;
    }
}

fn put_signed_varint(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value >> 63) ^ (value << 1)) as u64);
}

fn take_signed_varint(input: &mut &[u8]) -> Decoded<i64> {
    let zigzag = take_varint(input)?;
    Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64))
}

/// Any double, exactly: its bits byte-swapped as a varint, so the zero
/// low bytes of round values (`48.0`, `12.5`, `0`) cost nothing.
fn put_exact_double(out: &mut Vec<u8>, value: f64) {
    put_varint(out, value.to_bits().swap_bytes());
}

fn take_exact_double(input: &mut &[u8]) -> Decoded<f64> {
    Ok(f64::from_bits(take_varint(input)?.swap_bytes()))
}

/// Whole numbers (counts) exactly, small ones in one or two bytes: DataDog's
/// var double, whose `v + 1` loses the low bits of fractions.
fn put_var_double(out: &mut Vec<u8>, value: f64) {
    let mut bits = (value + 1.0)
        .to_bits()
        .wrapping_sub(1.0f64.to_bits())
        .rotate_left(VAR_DOUBLE_ROTATE);
    for _ in 0..8 {
        let next = (bits >> 57) as u8;
        bits <<= 7;
        if bits == 0 {
            out.push(next);
            return;
        }
        out.push(next | 0x80);
    }
    out.push((bits >> 56) as u8);
}

fn take_var_double(input: &mut &[u8]) -> Decoded<f64> {
    let (mut bits, mut shift) = (0u64, 57i32);
    loop {
        let next = next_byte(input)?;
        if shift == 1 {
            bits |= u64::from(next);
            break;
        }
        if next < 0x80 {
            bits |= u64::from(next) << shift;
            break;
        }
        bits |= u64::from(next & 0x7F) << shift;
        shift -= 7;
    }
    let bits = bits
        .rotate_right(VAR_DOUBLE_ROTATE)
        .wrapping_add(1.0f64.to_bits());
    Ok(f64::from_bits(bits) - 1.0)
}

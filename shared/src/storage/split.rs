//! A day's part too large for one item, split into chunk bodies.

use std::collections::BTreeMap;

use super::codec::encode_trailed;
use super::error::StorageError;
use super::record::MAX_CHUNK_BODY_BYTES;
use crate::domain::dimensions::{DimensionKey, KeyValues};
use crate::domain::rollup::{DayPart, PartDims};

/// A day's part encoded as one chunk body, or as several when it is too
/// large for one item: each piece holds some of its five-minute buckets or
/// some of its dimension values (the error and status counts in the first),
/// and says its dimensions are explicit, so a piece without a key does not
/// count its events under `(none)`. Parts add up, so the pieces fold to the
/// same day.
pub(super) fn split_part(part: &DayPart) -> Result<Vec<Vec<u8>>, StorageError> {
    let whole = encode_trailed(part)?;
    if whole.len() <= MAX_CHUNK_BODY_BYTES {
        return Ok(vec![whole]);
    }
    let piece = |first: bool| DayPart {
        errors: if first {
            part.errors.clone()
        } else {
            BTreeMap::new()
        },
        dims: PartDims {
            status: if first {
                part.dims.status
            } else {
                Default::default()
            },
            pages: part.dims.pages,
            explicit: true,
            keys: BTreeMap::new(),
            paged: part.dims.paged,
        },
        ..DayPart::default()
    };
    let too_large = || {
        StorageError::TooLarge(
            "One five-minute bucket or dimension value of this batch holds more distinct \
             latency values than an item can store; send fewer latency samples per request."
                .into(),
        )
    };
    let mut bodies = Vec::new();
    let mut current = piece(true);
    let mut size = encode_trailed(&current)?.len();
    let push =
        |current: &mut DayPart, size: &mut usize, bodies: &mut Vec<Vec<u8>>, added: usize| {
            let full = *size + added > MAX_CHUNK_BODY_BYTES;
            let holds_any = !current.buckets.is_empty() || !current.dims.keys.is_empty();
            if full && holds_any {
                bodies.push(encode_trailed(&std::mem::replace(current, piece(false)))?);
                *size = 0;
            }
            *size += added;
            Ok::<(), StorageError>(())
        };
    for (index, bucket) in &part.buckets {
        let mut one = piece(false);
        one.buckets.insert(*index, bucket.clone());
        let added = encode_trailed(&one)?.len();
        if added > MAX_CHUNK_BODY_BYTES {
            return Err(too_large());
        }
        push(&mut current, &mut size, &mut bodies, added)?;
        current.buckets.insert(*index, bucket.clone());
    }
    for key in DimensionKey::ALL {
        let Some(values) = part.dimension(key) else {
            continue;
        };
        let mut hashes = Some(values.other_hashes.clone());
        for (value, stats) in &values.values {
            let mut one = KeyValues::default();
            one.values.insert(value.clone(), stats.clone());
            if let Some(h) = hashes.take() {
                one.other_hashes = h;
            }
            let mut holder = piece(false);
            holder.dims.keys.insert(key, one.clone());
            let added = encode_trailed(&holder)?.len();
            if added > MAX_CHUNK_BODY_BYTES {
                return Err(too_large());
            }
            push(&mut current, &mut size, &mut bodies, added)?;
            current.dims.keys.entry(key).or_default().merge(&one);
        }
    }
    if !current.buckets.is_empty() || !current.errors.is_empty() || !current.dims.keys.is_empty() {
        bodies.push(encode_trailed(&current)?);
    }
    Ok(bodies)
}

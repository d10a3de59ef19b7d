//! Estimates of the heap a rollup holds, so the aggregation can budget its
//! decoded state in bytes (issue 20, finding 2) rather than in chunks.

use std::collections::BTreeMap;
use std::mem::size_of;

/// Entries per node of the standard library's B-tree (`2·B − 1`, B = 6).
const BTREE_NODE_CAPACITY: usize = 11;
/// A node's own fields besides its entries: parent pointer, index, length.
const BTREE_NODE_HEADER: usize = 16;

/// Heap bytes of a `BTreeMap<K, V>` of `len` entries, its nodes only (not
/// what its keys and values hold on the heap). A node always reserves room
/// for 11 entries, so a map of one big value costs 11 of them; maps filled
/// in key order (as decoded) keep about 6 entries per node, and internal
/// nodes add 12 child pointers per ~6 children.
pub fn btree_heap_bytes<K, V>(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let leaf = BTREE_NODE_HEADER + BTREE_NODE_CAPACITY * (size_of::<K>() + size_of::<V>());
    if len <= BTREE_NODE_CAPACITY {
        return leaf;
    }
    let leaves = len.div_ceil(6);
    let internal = leaves.div_ceil(5);
    leaves * leaf + internal * (leaf + (BTREE_NODE_CAPACITY + 1) * size_of::<usize>())
}

/// Error counts: the map's nodes and each message's text.
pub(super) fn errors_heap_bytes(errors: &BTreeMap<String, u64>) -> usize {
    btree_heap_bytes::<String, u64>(errors.len())
        + errors.keys().map(String::capacity).sum::<usize>()
}

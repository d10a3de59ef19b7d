//! The sketch's bins: a sparse store, sorted by key, holding only the keys
//! that were hit, so memory follows the number of non-empty bins and never
//! the span between the smallest and largest key (the dense store it
//! replaces spent 16 KB on the two samples `1e-8` and `1e9` ms).

use std::cmp::Ordering;

/// Most bins a store keeps. Past it, the lowest bins are folded into the
/// lowest kept one (DataDog's "collapsing lowest" rule, as before): only
/// the lowest quantiles of a distribution spanning more than a factor of
/// γ^2048 ≈ 5·10^17 lose accuracy, and the worst case of one store stays
/// at 2048 × 16 B = 32 KB.
pub const MAX_BINS: usize = 2048;

/// One non-empty bin: `count` values `v` with `key = ⌊log_γ v⌋`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    pub key: i32,
    pub count: u64,
}

/// Sorted by key, keys unique, counts > 0, at most [`MAX_BINS`] bins.
///
/// Collapsing keeps merges exact and order-free: whatever the order of
/// adds and merges, every count whose key lies below the 2048-th highest
/// key seen is found at that key, and every other count at its own key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseStore {
    bins: Vec<Bin>,
}

impl SparseStore {
    pub fn bins(&self) -> &[Bin] {
        &self.bins
    }

    pub fn into_bins(self) -> Vec<Bin> {
        self.bins
    }

    pub fn len(&self) -> usize {
        self.bins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// Bytes this store holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<Bin>()
    }

    /// Σ counts (saturating: a count is at most 2^64 - 1 anyway).
    pub fn total(&self) -> u64 {
        self.bins
            .iter()
            .fold(0u64, |sum, bin| sum.saturating_add(bin.count))
    }

    pub fn add(&mut self, key: i32, count: u64) {
        if count == 0 {
            return;
        }
        match self.bins.binary_search_by_key(&key, |bin| bin.key) {
            Ok(i) => self.bins[i].count = self.bins[i].count.saturating_add(count),
            Err(i) => {
                self.bins.insert(i, Bin { key, count });
                self.collapse();
            }
        }
    }

    /// Adds every bin of `other` (exact union of the two stores).
    pub fn merge(&mut self, other: &SparseStore) {
        if other.bins.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.bins.clone_from(&other.bins);
            return;
        }
        let new_keys = other
            .bins
            .iter()
            .filter(|b| self.bins.binary_search_by_key(&b.key, |s| s.key).is_err())
            .count();
        if new_keys == 0 {
            // The common case when days of one proxy merge: no allocation.
            for bin in &other.bins {
                if let Ok(i) = self.bins.binary_search_by_key(&bin.key, |s| s.key) {
                    self.bins[i].count = self.bins[i].count.saturating_add(bin.count);
                }
            }
            return;
        }
        let mut merged = Vec::with_capacity(self.bins.len() + new_keys);
        let (mine, theirs) = (&self.bins, &other.bins);
        let (mut i, mut j) = (0, 0);
        while i < mine.len() && j < theirs.len() {
            match mine[i].key.cmp(&theirs[j].key) {
                Ordering::Less => {
                    merged.push(mine[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    merged.push(theirs[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    merged.push(Bin {
                        key: mine[i].key,
                        count: mine[i].count.saturating_add(theirs[j].count),
                    });
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&mine[i..]);
        merged.extend_from_slice(&theirs[j..]);
        self.bins = merged;
        self.collapse();
    }

    /// Takes away the counts of `part`, a store whose values all went into
    /// this one: bin by bin, exact unless collapsing folded some of `part`'s
    /// bins into a higher one here (then that bin keeps what it can).
    pub fn subtract(&mut self, part: &SparseStore) {
        let mut j = 0;
        for bin in &mut self.bins {
            while j < part.bins.len() && part.bins[j].key < bin.key {
                j += 1;
            }
            if j < part.bins.len() && part.bins[j].key == bin.key {
                bin.count = bin.count.saturating_sub(part.bins[j].count);
            }
        }
        self.bins.retain(|b| b.count > 0);
    }

    /// Builds a store from bins in any order, with repeated keys and zero
    /// counts (a decoded DataDog store). Memory stays bounded whatever the
    /// input length: bins are folded into the store every [`MAX_BINS`].
    pub fn from_unsorted(bins: impl IntoIterator<Item = Bin>) -> Self {
        let mut store = SparseStore::default();
        let mut pending: Vec<Bin> = Vec::new();
        for bin in bins {
            if bin.count == 0 {
                continue;
            }
            pending.push(bin);
            if pending.len() >= MAX_BINS {
                store.merge(&Self::normalised(std::mem::take(&mut pending)));
            }
        }
        store.merge(&Self::normalised(pending));
        store
    }

    /// Sorted, unique, collapsed.
    fn normalised(mut bins: Vec<Bin>) -> Self {
        bins.sort_unstable_by_key(|b| b.key);
        bins.dedup_by(|next, kept| {
            if next.key == kept.key {
                kept.count = kept.count.saturating_add(next.count);
                true
            } else {
                false
            }
        });
        let mut store = SparseStore { bins };
        store.collapse();
        store
    }

    /// Builds a store from bins already sorted by strictly increasing key
    /// with non-zero counts, at most [`MAX_BINS`] of them (a decoded sparse
    /// encoding, checked by the decoder).
    pub fn from_sorted(bins: Vec<Bin>) -> Self {
        debug_assert!(bins.windows(2).all(|w| w[0].key < w[1].key));
        let mut store = SparseStore { bins };
        store.collapse();
        store
    }

    /// The key of the value of rank `rank` (0-based), counting upward.
    pub fn key_at_rank(&self, rank: u64) -> Option<i32> {
        let mut seen = 0u64;
        for bin in &self.bins {
            seen = seen.saturating_add(bin.count);
            if seen > rank {
                return Some(bin.key);
            }
        }
        self.bins.last().map(|b| b.key)
    }

    fn collapse(&mut self) {
        if self.bins.len() <= MAX_BINS {
            return;
        }
        let excess = self.bins.len() - MAX_BINS;
        let folded = self.bins[..=excess]
            .iter()
            .fold(0u64, |sum, b| sum.saturating_add(b.count));
        self.bins[excess].count = folded;
        self.bins.drain(..excess);
    }
}

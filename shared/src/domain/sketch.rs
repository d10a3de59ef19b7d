//! Latency distributions as mergeable DDSketches (relative accuracy 1 %).
//!
//! Samples are folded into a sketch at ingestion and only the sketch is
//! stored, in DataDog's compact binary encoding, so 10 000 samples cost a few
//! hundred bytes rather than 80 KB.

use sketches_ddsketch::{Config, DDSketch};

/// Relative accuracy promised by the contract for every reported percentile:
/// the crate's default configuration (α = 1 %, 2048 bins, which span a ratio
/// of e^41 between the smallest and largest latency before any collapsing).
/// It must stay the default: decoded sketches carry the default configuration
/// and only sketches of equal configuration merge.
pub const RELATIVE_ACCURACY: f64 = 0.01;

#[derive(Clone)]
pub struct LatencySketch(DDSketch);

impl std::fmt::Debug for LatencySketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LatencySketch(count={})", self.count())
    }
}

/// Equal when they encode the same (tests compare stored state).
impl PartialEq for LatencySketch {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencySketch {
    pub fn new() -> Self {
        Self(DDSketch::new(Config::defaults()))
    }

    pub fn add(&mut self, value_ms: f64) {
        self.0.add(value_ms);
    }

    pub fn add_many(&mut self, value_ms: f64, count: u64) {
        if count > 0 {
            self.0.add_with_count(value_ms, count);
        }
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        // Both sides are built with the same configuration, so merge cannot fail.
        if self.0.merge(&other.0).is_err() {
            tracing::error!("latency sketches with different configurations were merged");
        }
    }

    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The `q` quantile (0..=1) of everything added, or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.0.quantile(q).ok().flatten()
    }

    pub fn min(&self) -> Option<f64> {
        self.0.min()
    }

    pub fn max(&self) -> Option<f64> {
        self.0.max()
    }

    pub fn sum(&self) -> Option<f64> {
        self.0.sum()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_java_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        DDSketch::from_java_bytes(bytes)
            .map(Self)
            .map_err(|e| format!("undecodable latency sketch: {e:?}"))
    }
}

impl serde::Serialize for LatencySketch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for LatencySketch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde_bytes_vec(deserializer)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

fn serde_bytes_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("sketch bytes")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bytes_and_stays_small() {
        let mut s = LatencySketch::new();
        for i in 0..10_000 {
            s.add(1.0 + (i % 997) as f64 * 0.731);
        }
        let bytes = s.to_bytes();
        assert!(bytes.len() < 4_000, "sketch took {} bytes", bytes.len());
        let back = LatencySketch::from_bytes(&bytes).unwrap();
        assert_eq!(back.count(), 10_000);
        assert_eq!(back.quantile(0.95), s.quantile(0.95));
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
        assert_eq!(LatencySketch::new().quantile(0.5), None);
    }
}

//! Fingerprints of the samples a run actually uses: a hash of a whole train/test pair (part of
//! every trial's identity) and per-sample hashes (to prove two data sets share no sample).

use std::collections::HashSet;

use super::{Dataset, TrainTest};

/// 64-bit FNV-1a state, fed incrementally.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Hash of one sample as loaded: its features (exact bit patterns) and its label. For a
/// normalised data set, the hash of the features before normalisation, so the same image is
/// recognised in two data sets standardised with different statistics.
pub fn sample_hash(ds: &Dataset, i: usize) -> u64 {
    match &ds.loaded_hashes {
        Some(h) => h[i],
        None => features_hash(ds, i),
    }
}

/// Hash of one sample's current features (after any normalisation) and its label.
fn features_hash(ds: &Dataset, i: usize) -> u64 {
    let mut h = Fnv::new();
    for v in ds.row(i) {
        h.bytes(&v.to_bits().to_le_bytes());
    }
    h.u64(ds.labels[i] as u64);
    h.0
}

/// Hash of a data set: shape, then every sample's hash (of its current features) in order.
fn dataset_hash(ds: &Dataset) -> u64 {
    let mut h = Fnv::new();
    h.u64(ds.len() as u64);
    h.u64(ds.dim as u64);
    h.u64(ds.num_classes as u64);
    for i in 0..ds.len() {
        h.u64(features_hash(ds, i));
    }
    h.0
}

/// Fingerprint (16 hex digits) of a train/test pair: changes when any sample, label, the split
/// or the order changes.
pub fn fingerprint(data: &TrainTest) -> String {
    let mut h = Fnv::new();
    h.u64(dataset_hash(&data.train));
    h.u64(dataset_hash(&data.test));
    format!("{:016x}", h.0)
}

/// Hashes of every sample (training and test) of a pair.
pub fn sample_hashes(data: &TrainTest) -> HashSet<u64> {
    let mut set = HashSet::with_capacity(data.train.len() + data.test.len());
    for ds in [&data.train, &data.test] {
        set.extend((0..ds.len()).map(|i| sample_hash(ds, i)));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::gaussian_blobs;

    #[test]
    fn fingerprint_changes_with_one_sample_and_not_otherwise() {
        let a = gaussian_blobs(3, 4, 5, 2, 1.0, 7);
        let b = gaussian_blobs(3, 4, 5, 2, 1.0, 7);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let mut c = b.clone();
        c.test.features[3] += 1e-6;
        assert_ne!(fingerprint(&a), fingerprint(&c));
        let mut d = b.clone();
        d.train.labels[0] = (d.train.labels[0] + 1) % 3;
        assert_ne!(fingerprint(&a), fingerprint(&d));
    }

    #[test]
    fn sample_hashes_find_shared_samples() {
        let a = gaussian_blobs(3, 4, 5, 2, 1.0, 7);
        let other = gaussian_blobs(3, 4, 5, 2, 1.0, 8);
        let set = sample_hashes(&a);
        assert_eq!(set.len(), a.train.len() + a.test.len());
        assert!((0..other.train.len()).all(|i| !set.contains(&sample_hash(&other.train, i))));
        assert!(set.contains(&sample_hash(&a.test, 1)));
    }
}

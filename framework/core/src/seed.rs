//! Deriving independent, reproducible seeds for each random stream of a trial.

/// A seed for the stream called `purpose`, derived from `seed` (FNV-1a of the name mixed into
/// SplitMix64). Stable across platforms and releases: changing it changes every result.
pub fn derive_seed(seed: u64, purpose: &str) -> u64 {
    splitmix64(seed ^ splitmix64(fnv1a(purpose.as_bytes())))
}

/// 64-bit FNV-1a hash of `bytes` (stable across platforms and releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_purpose_and_seed_and_are_stable() {
        assert_ne!(derive_seed(0, "a"), derive_seed(0, "b"));
        assert_ne!(derive_seed(0, "a"), derive_seed(1, "a"));
        assert_eq!(derive_seed(7, "init"), derive_seed(7, "init"));
        // Pinned value: a change here silently changes every published result.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }
}

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

/// A 64-bit hash of `bytes` built from SplitMix64 over little-endian 8-byte words (independent
/// of FNV-1a's byte-wise multiply-xor, so the pair makes a 128-bit trial id).
pub fn word_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x243f_6a88_85a3_08d3;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = splitmix64(h ^ u64::from_le_bytes(w)).rotate_left(23);
    }
    splitmix64(h ^ bytes.len() as u64)
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

    #[test]
    fn word_hash_sees_every_byte_and_the_length() {
        let base = word_hash(b"0123456789abcdef");
        assert_ne!(base, word_hash(b"0123456789abcdeg"));
        assert_ne!(base, word_hash(b"1123456789abcdef"));
        assert_ne!(word_hash(b"ab"), word_hash(b"ab\0"));
        assert_eq!(base, word_hash(b"0123456789abcdef"));
    }
}

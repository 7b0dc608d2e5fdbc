//! A plugin's private checkpoint state: the SDK's envelope ([`seal`] / [`open`]: plugin name,
//! state version, checksum), serde helpers for compact fields ([`bits`], [`tensor`],
//! [`tensors`]), and a hand-written little-endian encoding ([`Writer`] / [`Reader`]) for
//! strategies that choose `type State = Custom`.
//!
//! # Serde helpers
//!
//! With `type State = SerdeState` the whole strategy struct goes through serde ([`encode`] /
//! [`decode`]: MessagePack, structs as arrays). Plain
//! fields need nothing; large boolean masks and float tensors are smaller or faster with a
//! helper:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Masks {
//!     #[serde(with = "clef_sdk::state::bits")]
//!     keep: Vec<bool>,          // 8 flags per byte
//!     #[serde(with = "clef_sdk::state::tensors")]
//!     anchor: Vec<Vec<f32>>,    // raw little-endian bytes per tensor
//! }
//! let m = Masks { keep: vec![true, false, true], anchor: vec![vec![1.5, -2.0]] };
//! let blob = clef_sdk::state::seal("demo", 1, &clef_sdk::state::encode(&m).unwrap());
//! let payload = clef_sdk::state::open("demo", 1, &blob).unwrap();
//! let back: Masks = clef_sdk::state::decode(payload).unwrap();
//! assert_eq!(back, m);
//! ```
//!
//! # The hand-written encoding
//!
//! Layout: an 8-byte magic tag, a `u32` format version, then the fields in the order the
//! plugin writes them. Integers are `u64`, floats are IEEE-754 little-endian, a float vector
//! is its length (`u64`) followed by its values, a tensor list is its count (`u64`) followed
//! by that many float vectors, a boolean vector is its length (`u64`) followed by the bits
//! packed 8 per byte (least significant first). Every read checks the remaining length first, so truncated or
//! corrupted input becomes an error, never a panic or a huge allocation.
//!
//! Plugins use it in `save_state` / `load_state`:
//!
//! ```
//! use clef_sdk::state::{Reader, Writer};
//! let mut w = Writer::new(b"MYPLUGIN", 1);
//! w.u64(3);
//! w.f32s(&[1.0, 2.0]);
//! let blob = w.finish();
//! let mut r = Reader::new(&blob, b"MYPLUGIN", 1).unwrap();
//! assert_eq!(r.u64().unwrap(), 3);
//! assert_eq!(r.f32s().unwrap(), vec![1.0, 2.0]);
//! r.finish().unwrap();
//! ```

use crate::{ensure, Error, Result};

/// Builds a state blob.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Starts a blob with its magic tag and format version.
    pub fn new(magic: &[u8; 8], version: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(magic);
        buf.extend_from_slice(&version.to_le_bytes());
        Self { buf }
    }

    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `usize` as `u64`.
    pub fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }

    /// Appends a float vector (length, then values).
    pub fn f32s(&mut self, v: &[f32]) {
        self.usize(v.len());
        self.buf.reserve(4 * v.len());
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// Appends a list of float vectors (count, then each vector).
    pub fn tensors(&mut self, t: &[Vec<f32>]) {
        self.usize(t.len());
        for v in t {
            self.f32s(v);
        }
    }

    /// Appends a boolean vector (length, then the bits packed 8 per byte, LSB first).
    pub fn bools(&mut self, v: &[bool]) {
        self.usize(v.len());
        self.buf.extend(v.chunks(8).map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |byte, (i, &b)| byte | (u8::from(b) << i))
        }));
    }

    /// The finished blob.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads a state blob written by [`Writer`].
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the magic tag and the format version.
    pub fn new(bytes: &'a [u8], magic: &[u8; 8], version: u32) -> Result<Self> {
        let mut r = Self { rest: bytes };
        let tag = r.take(8)?;
        ensure!(
            tag == magic,
            "not a state blob of this plugin (magic {:?}, expected {:?})",
            String::from_utf8_lossy(tag),
            String::from_utf8_lossy(magic)
        );
        let found = u32::from_le_bytes(r.array::<4>()?);
        ensure!(
            found == version,
            "unsupported state format version {found} (this build reads version {version})"
        );
        Ok(r)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(
            self.rest.len() >= n,
            "truncated state: needed {n} more bytes, {} left",
            self.rest.len()
        );
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array::<8>()?))
    }

    /// Reads a `u64` that must fit a `usize`.
    pub fn usize(&mut self) -> Result<usize> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| Error::msg(format!("state value {v} overflows usize")))
    }

    /// Reads a length-prefixed float vector.
    pub fn f32s(&mut self) -> Result<Vec<f32>> {
        let n = self.usize()?;
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| Error::msg(format!("state vector length {n} overflows")))?;
        let raw = self.take(bytes)?;
        Ok(raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Reads a list of float vectors.
    pub fn tensors(&mut self) -> Result<Vec<Vec<f32>>> {
        let n = self.usize()?;
        // Each vector needs at least its 8-byte length: bound the count before allocating.
        ensure!(
            n <= self.rest.len() / 8,
            "truncated state: {n} tensors announced, {} bytes left",
            self.rest.len()
        );
        (0..n).map(|_| self.f32s()).collect()
    }

    /// Reads a boolean vector written by [`Writer::bools`].
    pub fn bools(&mut self) -> Result<Vec<bool>> {
        let n = self.usize()?;
        let raw = self.take(n.div_ceil(8))?;
        Ok((0..n).map(|i| raw[i / 8] >> (i % 8) & 1 == 1).collect())
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<()> {
        ensure!(
            self.rest.is_empty(),
            "{} unexpected trailing bytes in the state",
            self.rest.len()
        );
        Ok(())
    }
}

// ---- serde encoding -------------------------------------------------------------------------

/// Encodes a serde value as the SDK stores states (MessagePack, structs as arrays).
pub fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| Error::msg(format!("encoding the state: {e}")))
}

/// Decodes what [`encode`] wrote. A `Deserialize` impl's own error (e.g. a consistency check
/// with `#[serde(try_from = ...)]`) keeps its message.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::msg(format!("decoding the state: {e}")))
}

// ---- the envelope ---------------------------------------------------------------------------

/// First bytes of every state blob the SDK writes.
const ENVELOPE_MAGIC: &[u8; 8] = b"CLEFSTAT";

/// Wraps a strategy's state `payload` in the SDK's envelope: magic, the plugin's name, its
/// state version, the payload's length and CRC-32. [`open`] checks all of them, so a blob of
/// another plugin, of another state version, truncated or corrupted, is a clear error.
pub fn seal(plugin: &str, version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + plugin.len() + 32);
    out.extend_from_slice(ENVELOPE_MAGIC);
    out.extend_from_slice(&(plugin.len() as u32).to_le_bytes());
    out.extend_from_slice(plugin.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a blob [`seal`] wrote for `plugin` at state `version` and returns its payload.
pub fn open<'a>(plugin: &str, version: u32, blob: &'a [u8]) -> Result<&'a [u8]> {
    fn take<'b>(rest: &mut &'b [u8], n: usize, what: &str) -> Result<&'b [u8]> {
        ensure!(
            rest.len() >= n,
            "the state is truncated (missing its {what}): not a checkpoint this plugin wrote"
        );
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn u32_at(b: &[u8]) -> u32 {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    let mut rest = blob;
    let magic = take(&mut rest, 8, "header")?;
    ensure!(
        magic == ENVELOPE_MAGIC,
        "the state does not start with the SDK's header: written by another SDK version or \
         not a plugin state (checkpoints of older clef builds cannot be resumed)"
    );
    let name_len = u32_at(take(&mut rest, 4, "plugin name")?) as usize;
    let name = take(&mut rest, name_len, "plugin name")?;
    ensure!(
        name == plugin.as_bytes(),
        "the state belongs to plugin `{}`, not `{plugin}`",
        String::from_utf8_lossy(name)
    );
    let found = u32_at(take(&mut rest, 4, "state version")?);
    ensure!(
        found == version,
        "the state of `{plugin}` has state version {found}, but this build of the plugin reads \
         version {version}: the checkpoint was written by another version of the plugin"
    );
    let len_bytes = take(&mut rest, 8, "length")?;
    let len = u64::from_le_bytes(len_bytes.try_into().map_err(|_| Error::msg("length"))?);
    let crc = u32_at(take(&mut rest, 4, "checksum")?);
    ensure!(
        rest.len() as u64 == len,
        "the state of `{plugin}` is truncated or padded: {} payload bytes, expected {len}",
        rest.len()
    );
    ensure!(
        crc32fast::hash(rest) == crc,
        "the state of `{plugin}` is corrupt (checksum mismatch)"
    );
    Ok(rest)
}

// ---- serde helpers ----------------------------------------------------------------------------

/// `#[serde(with = "clef_sdk::state::bits")]` on a `Vec<bool>`: its length, then the flags
/// packed 8 per byte (least significant bit first).
pub mod bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serialises the flags bit-packed.
    pub fn serialize<S: Serializer>(v: &[bool], s: S) -> Result<S::Ok, S::Error> {
        let mut packed = vec![0u8; v.len().div_ceil(8)];
        for (i, _) in v.iter().enumerate().filter(|(_, &b)| b) {
            packed[i / 8] |= 1 << (i % 8);
        }
        (v.len() as u64, serde_bytes_ref(&packed)).serialize(s)
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<bool>, D::Error> {
        let (len, packed): (u64, ByteBuf) = Deserialize::deserialize(d)?;
        let len = usize::try_from(len).map_err(serde::de::Error::custom)?;
        if packed.0.len() != len.div_ceil(8) {
            return Err(serde::de::Error::custom(format!(
                "bit-packed flags: {} bytes for {len} flags",
                packed.0.len()
            )));
        }
        Ok((0..len)
            .map(|i| packed.0[i / 8] >> (i % 8) & 1 == 1)
            .collect())
    }

    pub(super) fn serde_bytes_ref(b: &[u8]) -> Bytes<'_> {
        Bytes(b)
    }

    /// Borrowed bytes serialised with `serialize_bytes`.
    pub(super) struct Bytes<'a>(pub(super) &'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    /// Owned bytes read with `deserialize_byte_buf`.
    pub(super) struct ByteBuf(pub(super) Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                    while let Some(b) = seq.next_element()? {
                        out.push(b);
                    }
                    Ok(ByteBuf(out))
                }
            }
            d.deserialize_byte_buf(Visitor)
        }
    }
}

/// `#[serde(with = "clef_sdk::state::tensor")]` on a `Vec<f32>`: the values as one byte
/// string of little-endian floats (bit-exact, NaN payloads included; much faster than one
/// serde call per float).
pub mod tensor {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::bits::{ByteBuf, Bytes};

    /// Serialises the floats as little-endian bytes.
    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Bytes(&bytes).serialize(s)
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let ByteBuf(bytes) = ByteBuf::deserialize(d)?;
        if bytes.len() % 4 != 0 {
            return Err(serde::de::Error::custom(format!(
                "float tensor: {} bytes is not a multiple of 4",
                bytes.len()
            )));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// `#[serde(with = "clef_sdk::state::tensors")]` on a `Vec<Vec<f32>>` (e.g. an
/// [`anchor::Tensors`](crate::anchor::Tensors)): each tensor as in [`tensor`].
pub mod tensors {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Wraps one tensor for [`super::tensor`].
    struct One<'a>(&'a [f32]);

    impl serde::Serialize for One<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            super::tensor::serialize(self.0, s)
        }
    }

    /// Owned tensor read by [`super::tensor`].
    struct Owned(Vec<f32>);

    impl<'de> Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::tensor::deserialize(d).map(Owned)
        }
    }

    /// Serialises the tensors.
    pub fn serialize<S: Serializer>(v: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for t in v {
            seq.serialize_element(&One(t))?;
        }
        seq.end()
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f32>>, D::Error> {
        let v: Vec<Owned> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(|o| o.0).collect())
    }
}

/// A boolean mask that serialises bit-packed (as [`bits`]), usable anywhere in a serde
/// state (`Vec<Bits>`, `Option<Bits>`, map values ...); derefs to `Vec<bool>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bits(#[serde(with = "bits")] pub Vec<bool>);

impl std::ops::Deref for Bits {
    type Target = Vec<bool>;
    fn deref(&self) -> &Vec<bool> {
        &self.0
    }
}

impl std::ops::DerefMut for Bits {
    fn deref_mut(&mut self) -> &mut Vec<bool> {
        &mut self.0
    }
}

/// A float tensor that serialises as raw little-endian bytes (as [`tensor`]), usable anywhere
/// in a serde state; derefs to `Vec<f32>`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Floats(#[serde(with = "tensor")] pub Vec<f32>);

impl std::ops::Deref for Floats {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl std::ops::DerefMut for Floats {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut w = Writer::new(b"testblob", 3);
        w.u8(7);
        w.u64(u64::MAX);
        w.usize(12);
        w.f32s(&[1.5, -0.0, f32::MIN_POSITIVE]);
        w.tensors(&[vec![1.0], vec![], vec![2.0, 3.0]]);
        let flags: Vec<bool> = (0..19).map(|i| i % 3 == 0 || i == 18).collect();
        w.bools(&flags);
        w.bools(&[]);
        let bytes = w.finish();

        let mut r = Reader::new(&bytes, b"testblob", 3).unwrap();
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.usize().unwrap(), 12);
        let v = r.f32s().unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(
            r.tensors().unwrap(),
            vec![vec![1.0], vec![], vec![2.0, 3.0]]
        );
        assert_eq!(r.bools().unwrap(), flags);
        assert_eq!(r.bools().unwrap(), Vec::<bool>::new());
        r.finish().unwrap();

        assert!(Reader::new(&bytes, b"otherblb", 3).is_err());
        assert!(Reader::new(&bytes, b"testblob", 4).is_err());
        // Every truncation fails cleanly.
        for cut in 0..bytes.len() {
            let res = Reader::new(&bytes[..cut], b"testblob", 3).and_then(|mut r| {
                r.u8()?;
                r.u64()?;
                r.usize()?;
                r.f32s()?;
                r.tensors()?;
                r.bools()?;
                r.bools()?;
                r.finish()
            });
            assert!(res.is_err(), "truncation at {cut} was accepted");
        }
        // Trailing bytes are rejected.
        let mut longer = bytes.clone();
        longer.push(0);
        let mut r = Reader::new(&longer, b"testblob", 3).unwrap();
        r.u8().unwrap();
        r.u64().unwrap();
        r.usize().unwrap();
        r.f32s().unwrap();
        r.tensors().unwrap();
        r.bools().unwrap();
        r.bools().unwrap();
        assert!(r.finish().is_err());
        // A huge announced length is an error, not an allocation.
        let mut w = Writer::new(b"testblob", 3);
        w.u64(u64::MAX / 2);
        let bytes = w.finish();
        assert!(Reader::new(&bytes, b"testblob", 3).unwrap().f32s().is_err());
        assert!(Reader::new(&bytes, b"testblob", 3)
            .unwrap()
            .tensors()
            .is_err());
        assert!(Reader::new(&bytes, b"testblob", 3)
            .unwrap()
            .bools()
            .is_err());
    }
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct S {
        masks: Vec<Bits>,
        w: Option<Floats>,
        #[serde(with = "tensors")]
        t: Vec<Vec<f32>>,
    }

    #[test]
    fn compact_helpers_round_trip_bit_exactly_and_stay_small() {
        let s = S {
            masks: vec![Bits(vec![true; 17]), Bits(vec![])],
            w: Some(Floats(vec![f32::NAN, -0.0, 1.5, f32::INFINITY])),
            t: vec![vec![1.0; 100], vec![]],
        };
        let blob = encode(&s).unwrap();
        let back: S = decode(&blob).unwrap();
        assert_eq!(back.masks, s.masks);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(back.w.as_ref().unwrap()), bits(s.w.as_ref().unwrap()));
        assert_eq!(back.t, s.t);
        // 17 flags in 3 bytes; 104 floats in 416 bytes; a little framing.
        assert!(blob.len() < 3 + 416 + 24, "{} bytes", blob.len());
        // Truncation is an error, not a panic.
        assert!(decode::<S>(&blob[..blob.len() - 3]).is_err());
    }

    /// A checked type: its own error message must reach the user.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    #[serde(try_from = "u32")]
    struct Even(u32);

    impl TryFrom<u32> for Even {
        type Error = String;
        fn try_from(v: u32) -> std::result::Result<Self, String> {
            if v.is_multiple_of(2) {
                Ok(Even(v))
            } else {
                Err(format!("{v} is odd"))
            }
        }
    }

    #[test]
    fn a_deserialize_impls_message_survives() {
        let err = decode::<Even>(&encode(&3u32).unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("3 is odd"), "{err:#}");
        assert_eq!(decode::<Even>(&encode(&4u32).unwrap()).unwrap().0, 4);
    }

    #[test]
    fn the_envelope_refuses_foreign_old_and_corrupt_states() {
        let blob = seal("ewc", 2, b"payload");
        assert_eq!(open("ewc", 2, &blob).unwrap(), b"payload");
        let msg = |r: Result<&[u8]>| format!("{:#}", r.unwrap_err());
        assert!(msg(open("l2", 2, &blob)).contains("belongs to plugin `ewc`, not `l2`"));
        assert!(msg(open("ewc", 3, &blob)).contains("has state version 2"));
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(msg(open("ewc", 2, &bad)).contains("checksum"));
        assert!(msg(open("ewc", 2, &blob[..blob.len() - 1])).contains("truncated"));
        assert!(msg(open("ewc", 2, b"clefl2\0\0\x01\0\0\0")).contains("header"));
        assert!(open("ewc", 2, &[]).is_err());
    }
}

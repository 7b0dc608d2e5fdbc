//! Little-endian binary encoding of a plugin's private checkpoint state.
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

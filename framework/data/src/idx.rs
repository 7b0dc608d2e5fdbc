//! Reader for the IDX format of MNIST and Fashion-MNIST.
//!
//! Image files start with the big-endian magic number `0x00000803` (unsigned bytes, three
//! dimensions) followed by the image count, rows and columns as big-endian `u32`, then the pixels
//! row-major; label files start with `0x00000801` (unsigned bytes, one dimension) and the label
//! count, then one byte per label. Files may be gzip-compressed; compression is detected from the
//! gzip magic bytes `1f 8b`, not from the file name. Pixels are scaled from `0..=255` to `[0, 1]`
//! while decoding, straight into the feature vector.
//!
//! The reader is strict: a wrong magic number, a truncated header or payload, trailing bytes after
//! the payload, an empty file, a count mismatch between the images and the labels, and labels
//! `>= num_classes` are all errors.

use std::io::{self, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::error::Location;
use super::{DataError, Dataset, ImageShape};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Cap on the up-front allocation, so that a corrupt header cannot request huge memory.
const MAX_PREALLOC: usize = 1 << 26;

/// Images decoded from an IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Pixel rows per image.
    pub rows: usize,
    /// Pixel columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixels in `[0, 1]`, image-major, each image row-major.
    pub pixels: Vec<f32>,
}

/// True if `bytes` start with the gzip magic number.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Reads a whole file, turning "not found" into [`DataError::MissingFile`].
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: path.display().to_string(),
                hint: "no such file; check the path".to_string(),
            }
        } else {
            DataError::Io {
                path: path.display().to_string(),
                source,
            }
        }
    })
}

/// Decompresses `bytes` if they are gzip data, else borrows them.
pub(crate) fn maybe_decompress<'a>(
    bytes: &'a [u8],
    source: &str,
) -> Result<std::borrow::Cow<'a, [u8]>, DataError> {
    if !is_gzip(bytes) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(gzip_size_hint(bytes));
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| gzip_error(source, out.len(), &e))?;
    Ok(std::borrow::Cow::Owned(out))
}

/// The uncompressed size recorded in a gzip trailer (modulo 2^32), capped, as a capacity hint.
fn gzip_size_hint(bytes: &[u8]) -> usize {
    match bytes.len().checked_sub(4).and_then(|i| bytes.get(i..)) {
        Some(t) => (u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize).min(MAX_PREALLOC),
        None => 0,
    }
}

fn gzip_error(source: &str, decoded: usize, e: &io::Error) -> DataError {
    DataError::format(
        source,
        format!("corrupt or truncated gzip data after {decoded} decompressed bytes ({e})"),
    )
}

/// A reader over plain or gzip-compressed bytes that remembers whether it decompresses.
struct Input<'a> {
    reader: Box<dyn Read + 'a>,
    gzip: bool,
    source: &'a str,
}

impl<'a> Input<'a> {
    fn new(bytes: &'a [u8], source: &'a str) -> Self {
        let gzip = is_gzip(bytes);
        let reader: Box<dyn Read + 'a> = if gzip {
            Box::new(MultiGzDecoder::new(bytes))
        } else {
            Box::new(bytes)
        };
        Input {
            reader,
            gzip,
            source,
        }
    }

    /// Fills as much of `buf` as the data allows; returns the number of bytes read.
    /// `done` is the number of bytes of this file read before, for error messages.
    fn fill(&mut self, buf: &mut [u8], done: usize) -> Result<usize, DataError> {
        let mut n = 0;
        while n < buf.len() {
            match self.reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(gzip_error(self.source, done + n, &e)),
            }
        }
        Ok(n)
    }

    /// Counts the bytes left.
    fn count_rest(&mut self, done: usize) -> Result<usize, DataError> {
        let mut buf = [0u8; 8192];
        let mut rest = 0;
        loop {
            let k = self.fill(&mut buf, done + rest)?;
            if k == 0 {
                return Ok(rest);
            }
            rest += k;
        }
    }

    fn bytes_word(&self) -> &'static str {
        if self.gzip {
            "bytes after decompression"
        } else {
            "bytes"
        }
    }

    /// Reads and checks a header of `len` bytes starting with `magic`.
    fn header(&mut self, len: usize, magic: u32, what: &str) -> Result<Vec<u32>, DataError> {
        let mut buf = vec![0u8; len];
        let n = self.fill(&mut buf, 0)?;
        if n >= 4 {
            let found = be_u32(&buf[0..4]);
            if found != magic {
                let guess = match found {
                    IMAGES_MAGIC => " (this is an IDX image file)",
                    LABELS_MAGIC => " (this is an IDX label file)",
                    _ if is_gzip(&buf) => " (gzip data inside gzip data?)",
                    _ => "",
                };
                return Err(DataError::format(
                    self.source,
                    format!(
                        "wrong magic number 0x{found:08x}, expected 0x{magic:08x} for IDX {what}{guess}"
                    ),
                ));
            }
        }
        if n < len {
            return Err(DataError::format(
                self.source,
                format!(
                    "truncated header: expected {len} {}, found {n}",
                    self.bytes_word()
                ),
            ));
        }
        Ok(buf.chunks_exact(4).skip(1).map(be_u32).collect())
    }

    /// Streams up to `expected` payload bytes (after a `header`-byte header) into `sink`; returns
    /// how many there were.
    fn payload(
        &mut self,
        header: usize,
        expected: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, DataError> {
        let mut buf = vec![0u8; expected.min(1 << 16)];
        let mut got = 0;
        while got < expected {
            let want = (expected - got).min(buf.len());
            let n = self.fill(&mut buf[..want], header + got)?;
            sink(&buf[..n]);
            got += n;
            if n < want {
                break;
            }
        }
        Ok(got)
    }

    /// Errors if any byte follows the `len`-byte file.
    fn expect_end(&mut self, len: usize) -> Result<(), DataError> {
        let rest = self.count_rest(len)?;
        if rest > 0 {
            return Err(DataError::format(
                self.source,
                format!(
                    "size mismatch: header implies {len} {}, found {} ({rest} trailing)",
                    self.bytes_word(),
                    len + rest
                ),
            ));
        }
        Ok(())
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes an IDX image file (raw or gzip-compressed) held in memory; `source` names it in errors.
pub fn parse_idx_images(bytes: &[u8], source: &str) -> Result<IdxImages, DataError> {
    const HEADER: usize = 16;
    let mut input = Input::new(bytes, source);
    let dims = input.header(HEADER, IMAGES_MAGIC, "images")?;
    let (count, rows, cols) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
    if count == 0 {
        return Err(DataError::Empty {
            path: source.to_string(),
        });
    }
    if rows == 0 || cols == 0 {
        return Err(DataError::format(
            source,
            format!("invalid image size {rows}x{cols} in header"),
        ));
    }
    let expected = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| {
            DataError::format(
                source,
                format!("header declares an impossible size: {count} images of {rows}x{cols}"),
            )
        })?;

    let mut pixels: Vec<f32> = Vec::with_capacity(expected.min(MAX_PREALLOC));
    let got = input.payload(HEADER, expected, |chunk| {
        pixels.extend(chunk.iter().map(|&b| f32::from(b) / 255.0));
    })?;
    if got < expected {
        return Err(DataError::format(
            source,
            format!(
                "truncated: header declares {count} images of {rows}x{cols}, \
                 which need {} {}, found {}",
                HEADER + expected,
                input.bytes_word(),
                HEADER + got
            ),
        ));
    }
    input.expect_end(HEADER + expected)?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Decodes an IDX label file (raw or gzip-compressed) held in memory; `source` names it in errors.
pub fn parse_idx_labels(bytes: &[u8], source: &str) -> Result<Vec<u8>, DataError> {
    const HEADER: usize = 8;
    let mut input = Input::new(bytes, source);
    let dims = input.header(HEADER, LABELS_MAGIC, "labels")?;
    let count = dims[0] as usize;
    if count == 0 {
        return Err(DataError::Empty {
            path: source.to_string(),
        });
    }
    let mut labels = Vec::with_capacity(count.min(MAX_PREALLOC));
    let n = input.payload(HEADER, count, |chunk| labels.extend_from_slice(chunk))?;
    if n < count {
        return Err(DataError::format(
            source,
            format!(
                "truncated: header declares {count} labels, which need {} {}, found {}",
                HEADER + count,
                input.bytes_word(),
                HEADER + n
            ),
        ));
    }
    input.expect_end(HEADER + count)?;
    Ok(labels)
}

/// Builds a [`Dataset`] named `name` from an IDX image file and an IDX label file held in memory.
///
/// `images_source` and `labels_source` name the files in errors. Fails if the counts differ or a
/// label is `>= num_classes`.
pub fn parse_idx_pair(
    images: &[u8],
    images_source: &str,
    labels: &[u8],
    labels_source: &str,
    name: &str,
    num_classes: usize,
) -> Result<Dataset, DataError> {
    let img = parse_idx_images(images, images_source)?;
    let lab = parse_idx_labels(labels, labels_source)?;
    if img.count != lab.len() {
        return Err(DataError::format(
            labels_source,
            format!(
                "size mismatch: {} labels, but {images_source} holds {} images",
                lab.len(),
                img.count
            ),
        ));
    }
    if let Some(i) = lab.iter().position(|&l| usize::from(l) >= num_classes) {
        return Err(DataError::LabelOutOfRange {
            path: labels_source.to_string(),
            location: Location::Sample(i),
            label: i64::from(lab[i]),
            num_classes,
        });
    }
    Ok(Dataset {
        name: name.to_string(),
        features: img.pixels,
        labels: lab.into_iter().map(u32::from).collect(),
        dim: img.rows * img.cols,
        num_classes,
        image_shape: Some(ImageShape::grey(img.rows, img.cols)),
        normalization: None,
        loaded_hashes: None,
    })
}

/// Loads a [`Dataset`] named `name` from an IDX image file and an IDX label file, each raw or
/// gzip-compressed.
///
/// Pixels are scaled to `[0, 1]` and `image_shape` is one channel of `rows x cols`.
pub fn load_idx_pair(
    images: &Path,
    labels: &Path,
    name: &str,
    num_classes: usize,
) -> Result<Dataset, DataError> {
    let image_bytes = read_file(images)?;
    let label_bytes = read_file(labels)?;
    parse_idx_pair(
        &image_bytes,
        &images.display().to_string(),
        &label_bytes,
        &labels.display().to_string(),
        name,
        num_classes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_size_hint_reads_trailer() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &[7u8; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gzip_size_hint(&gz), 1000);
        assert_eq!(gzip_size_hint(&[1, 2]), 0);
    }
}

//! Readers for the binary versions of CIFAR-10 and CIFAR-100 (Krizhevsky 2009), as distributed
//! in `cifar-10-binary.tar.gz` and `cifar-100-binary.tar.gz`, extracted into one directory.
//!
//! * CIFAR-10: `data_batch_1.bin` ... `data_batch_5.bin` (training, in that order) and
//!   `test_batch.bin`; each record is 1 label byte (`0..10`) then 3072 pixel bytes.
//! * CIFAR-100: `train.bin` and `test.bin`; each record is 1 coarse label byte (`0..20`), 1 fine
//!   label byte (`0..100`), then 3072 pixel bytes.
//!
//! The 3072 pixel bytes are the 1024 red, then 1024 green, then 1024 blue values of a 32x32
//! image, each plane row-major: already the channel-major `(c, h, w)` layout of PyTorch, so a
//! sample's features are its pixel bytes divided by 255, in file order. Samples keep the file
//! order (training batches 1 to 5 concatenated). The readers are strict: a file whose size is not
//! a whole number of records (a truncated last record), an empty file and a label out of range
//! are errors naming the file and the record.

use std::path::{Path, PathBuf};

use crate::idx::read_file;
use crate::spec::CifarLabel;
use crate::{DataError, Dataset, ImageShape, TrainTest};

/// Pixel bytes of one record (3 planes of 32x32).
pub const PIXELS: usize = 3 * 32 * 32;
/// The CIFAR-10 training files, in the order their samples are concatenated.
pub const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The CIFAR-10 test file.
pub const CIFAR10_TEST: &str = "test_batch.bin";
/// The CIFAR-100 training file.
pub const CIFAR100_TRAIN: &str = "train.bin";
/// The CIFAR-100 test file.
pub const CIFAR100_TEST: &str = "test.bin";

/// The image shape of every CIFAR sample.
pub fn shape() -> ImageShape {
    ImageShape::new(3, 32, 32)
}

/// CIFAR-10 (50000 training and 10000 test images of 3x32x32, 10 classes), named `cifar10`,
/// from the binary files in `dir`.
///
/// A missing file gives [`DataError::MissingFile`] naming every file the directory lacks.
pub fn cifar10(dir: &Path) -> Result<TrainTest, DataError> {
    let mut names: Vec<&str> = CIFAR10_TRAIN.to_vec();
    names.push(CIFAR10_TEST);
    let paths = find_all(dir, &names, "CIFAR-10", "cifar-10-binary.tar.gz")?;
    let checks = [(0, 10, "label")];
    // Decode the test file on a second thread while the training files are read.
    let (train, test) = std::thread::scope(|s| {
        let test = s.spawn(|| read_records(&paths[5..], 1, &checks));
        let train = read_records(&paths[..5], 1, &checks);
        let test = test
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (train, test)
    });
    Ok(TrainTest {
        train: train?.into_dataset("cifar10", 10, 0),
        test: test?.into_dataset("cifar10", 10, 0),
    })
}

/// CIFAR-100 (50000 training and 10000 test images of 3x32x32), named `cifar100` with the 100
/// fine classes or `cifar100-coarse` with the 20 coarse ones, from the binary files in `dir`.
///
/// Both labels of every record are checked, whichever is used.
pub fn cifar100(dir: &Path, label: CifarLabel) -> Result<TrainTest, DataError> {
    let paths = find_all(
        dir,
        &[CIFAR100_TRAIN, CIFAR100_TEST],
        "CIFAR-100",
        "cifar-100-binary.tar.gz",
    )?;
    let labels = [(0, 20, "coarse label"), (1, 100, "fine label")];
    let (train, test) = std::thread::scope(|s| {
        let test = s.spawn(|| read_records(&paths[1..], 2, &labels));
        let train = read_records(&paths[..1], 2, &labels);
        let test = test
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (train, test)
    });
    let (name, classes, which) = match label {
        CifarLabel::Fine => ("cifar100", 100, 1),
        CifarLabel::Coarse => ("cifar100-coarse", 20, 0),
    };
    Ok(TrainTest {
        train: train?.into_dataset(name, classes, which),
        test: test?.into_dataset(name, classes, which),
    })
}

/// The decoded records of one or more files: pixels in [0, 1] and each record's label bytes.
#[derive(Debug, Default)]
struct Records {
    pixels: Vec<f32>,
    /// `label_bytes` label bytes per record.
    labels: Vec<u8>,
    label_bytes: usize,
}

impl Records {
    /// The data set whose class is label byte `which` of each record.
    fn into_dataset(self, name: &str, num_classes: usize, which: usize) -> Dataset {
        let labels = self
            .labels
            .chunks_exact(self.label_bytes)
            .map(|l| u32::from(l[which]))
            .collect();
        Dataset {
            name: name.to_string(),
            features: self.pixels,
            labels,
            dim: PIXELS,
            num_classes,
            image_shape: Some(shape()),
            normalization: None,
            loaded_hashes: None,
        }
    }
}

/// Decodes files of records of `label_bytes` label bytes then [`PIXELS`] pixel bytes, in order,
/// into one [`Records`]; `checks` lists `(label byte, number of classes, what it is)` for the
/// range checks.
fn read_records(
    paths: &[PathBuf],
    label_bytes: usize,
    checks: &[(usize, usize, &str)],
) -> Result<Records, DataError> {
    let record = label_bytes + PIXELS;
    // Reserve once from the file sizes, so that five batches do not grow the buffer by doubling.
    let records: usize = paths
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len() as usize / record))
        .sum();
    let mut out = Records {
        pixels: Vec::with_capacity(records * PIXELS),
        labels: Vec::with_capacity(records * label_bytes),
        label_bytes,
    };
    for path in paths {
        let bytes = read_file(path)?;
        parse_records(&bytes, &path.display().to_string(), checks, &mut out)?;
    }
    Ok(out)
}

/// Appends the records held in `bytes` to `out`; `source` names them in errors.
fn parse_records(
    bytes: &[u8],
    source: &str,
    checks: &[(usize, usize, &str)],
    out: &mut Records,
) -> Result<(), DataError> {
    let label_bytes = out.label_bytes;
    let record = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: source.to_string(),
        });
    }
    let (whole, rest) = (bytes.len() / record, bytes.len() % record);
    if rest != 0 {
        return Err(DataError::format(
            source,
            format!(
                "truncated record: the file holds {} bytes, not a multiple of the {record}-byte \
                 record ({label_bytes} label byte{} + {PIXELS} pixel bytes): {whole} whole \
                 record{} then {rest} bytes of record {whole}",
                bytes.len(),
                if label_bytes == 1 { "" } else { "s" },
                if whole == 1 { "" } else { "s" },
            ),
        ));
    }
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let (labels, pixels) = rec.split_at(label_bytes);
        for &(k, classes, what) in checks {
            if usize::from(labels[k]) >= classes {
                return Err(DataError::format(
                    source,
                    format!(
                        "{what} {} at record {i} is out of range (expected 0..{classes})",
                        labels[k]
                    ),
                ));
            }
        }
        out.labels.extend_from_slice(labels);
        out.pixels
            .extend(pixels.iter().map(|&b| f32::from(b) / 255.0));
    }
    Ok(())
}

/// `dir/name` for every name, or one [`DataError::MissingFile`] naming every missing file, the
/// directory looked in, and what it must hold.
fn find_all(
    dir: &Path,
    names: &[&str],
    what: &str,
    archive: &str,
) -> Result<Vec<PathBuf>, DataError> {
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&paths)
        .filter(|(_, p)| !p.is_file())
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return Ok(paths);
    }
    let where_ = if dir.is_dir() {
        format!("not in {}", dir.display())
    } else {
        format!("directory {} does not exist", dir.display())
    };
    Err(DataError::MissingFile {
        path: missing
            .iter()
            .map(|n| dir.join(n).display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        hint: format!(
            "{where_}; {what} needs {} (the binary version, {archive}, extracted); set \
             `data.path` to the directory holding them",
            names.join(", ")
        ),
    })
}

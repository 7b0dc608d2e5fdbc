//! MNIST-style IDX data sets on disk, in particular Fashion-MNIST.
//!
//! A directory holds the four files of the original distributions of MNIST and Fashion-MNIST:
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
//! `t10k-labels-idx1-ubyte`, each with a `.gz` suffix (preferred when both exist) or without.
//! Debian's `dataset-fashion-mnist` package installs Fashion-MNIST in
//! [`DEBIAN_FASHION_MNIST_DIR`].

use std::path::{Path, PathBuf};

use super::idx::load_idx_pair;
use super::{DataError, TrainTest};

/// Where `apt-get install dataset-fashion-mnist` puts Fashion-MNIST.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The IDX file names, without `.gz`: train images, train labels, test images, test labels.
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Fashion-MNIST (60000 training and 10000 test images of 28x28, 10 classes), named
/// `fashion-mnist`, from `dir` or else [`DEBIAN_FASHION_MNIST_DIR`].
///
/// A missing file gives [`DataError::MissingFile`] suggesting `apt-get install
/// dataset-fashion-mnist` or setting `data.path`.
pub fn fashion_mnist(dir: Option<&Path>) -> Result<TrainTest, DataError> {
    let dir = dir.unwrap_or(Path::new(DEBIAN_FASHION_MNIST_DIR));
    load_dir(
        dir,
        "fashion-mnist",
        10,
        "install it with `apt-get install dataset-fashion-mnist` (into \
         /usr/share/datasets/fashion-mnist) or set `data.path` to a directory holding the IDX files",
    )
}

/// Loads a train/test pair, both named `name`, from the four IDX files of MNIST-style data sets
/// (MNIST, Fashion-MNIST, ...) in `dir`; see the [module docs](self) for the file names.
pub fn idx_dataset(dir: &Path, name: &str, num_classes: usize) -> Result<TrainTest, DataError> {
    load_dir(
        dir,
        name,
        num_classes,
        "set `data.path` to a directory holding train-images-idx3-ubyte, \
         train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (.gz or not)",
    )
}

fn load_dir(
    dir: &Path,
    name: &str,
    num_classes: usize,
    hint: &str,
) -> Result<TrainTest, DataError> {
    let mut paths: Vec<PathBuf> = Vec::with_capacity(4);
    for file in IDX_FILES {
        paths.push(find(dir, file, hint)?);
    }
    // The two halves are independent: decode them on two threads.
    let (train, test) = std::thread::scope(|s| {
        let test = s.spawn(|| load_idx_pair(&paths[2], &paths[3], name, num_classes));
        let train = load_idx_pair(&paths[0], &paths[1], name, num_classes);
        let test = test
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (train, test)
    });
    Ok(TrainTest {
        train: train?,
        test: test?,
    })
}

/// `dir/file.gz` if it exists, else `dir/file` if it exists, else a [`DataError::MissingFile`].
fn find(dir: &Path, file: &str, hint: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{file}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(file);
    if raw.is_file() {
        return Ok(raw);
    }
    let where_ = if dir.is_dir() {
        String::new()
    } else {
        format!("directory {} does not exist; ", dir.display())
    };
    Err(DataError::MissingFile {
        path: format!("{}[.gz]", raw.display()),
        hint: format!("{where_}{hint}"),
    })
}

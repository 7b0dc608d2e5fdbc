//! Seeded stratified train/test splits.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::error::Location;
use super::{DataError, Dataset, TrainTest};

/// Splits `ds` into train and test sets, class by class.
///
/// For each class `c` with `n` samples, the class's indices are shuffled with a [`ChaCha8Rng`]
/// seeded from `seed` on stream `c` (so one class's split does not depend on the others), and the
/// first `round(test_fraction * n)` go to the test set, clamped to `1..=n-1` when `n >= 2` (every
/// class with two or more samples appears in both sets); a class with a single sample stays in
/// the training set. Both sets keep the original sample order (indices sorted), so the result
/// depends only on `ds`, `test_fraction` and `seed`.
///
/// Errors if `test_fraction` is not strictly between 0 and 1, if `ds` is empty, if a label is
/// `>= ds.num_classes`, or if no class has two samples (the test set would be empty).
pub fn stratified_split(
    ds: &Dataset,
    test_fraction: f64,
    seed: u64,
) -> Result<TrainTest, DataError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::Split {
            name: ds.name.clone(),
            message: format!("test_fraction {test_fraction} must be strictly between 0 and 1"),
        });
    }
    if ds.is_empty() {
        return Err(DataError::Empty {
            path: ds.name.clone(),
        });
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); ds.num_classes];
    for (i, &l) in ds.labels.iter().enumerate() {
        match by_class.get_mut(l as usize) {
            Some(class) => class.push(i),
            None => {
                return Err(DataError::LabelOutOfRange {
                    path: ds.name.clone(),
                    location: Location::Sample(i),
                    label: i64::from(l),
                    num_classes: ds.num_classes,
                })
            }
        }
    }
    let mut train = Vec::with_capacity(ds.len());
    let mut test = Vec::new();
    for (class, mut idx) in by_class.into_iter().enumerate() {
        let n = idx.len();
        let n_test = if n >= 2 {
            ((test_fraction * n as f64).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(class as u64);
        idx.shuffle(&mut rng);
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    if test.is_empty() {
        return Err(DataError::Split {
            name: ds.name.clone(),
            message: "no class has two or more samples, so the test set would be empty".to_string(),
        });
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(TrainTest {
        train: ds.subset(&train),
        test: ds.subset(&test),
    })
}

//! Loading the data set a `[data]` table names.

use std::path::Path;

use crate::spec::{DataConfig, DatasetKind};
use crate::TrainTest;

/// Loads the data set named by the `[data]` table, then applies its `normalize` key (per-channel
/// standardisation of both splits, [`crate::normalize`]).
pub fn load(cfg: &DataConfig) -> Result<TrainTest, crate::DataError> {
    let mut data = load_raw(cfg)?;
    crate::normalize::normalize(&cfg.normalize, &mut data)?;
    Ok(data)
}

fn load_raw(cfg: &DataConfig) -> Result<TrainTest, crate::DataError> {
    let classes = cfg.num_classes.unwrap_or(10);
    let split = |ds| crate::split::stratified_split(&ds, cfg.test_fraction, cfg.split_seed);
    let dir = || cfg.path.as_deref().unwrap_or(Path::new("."));
    match cfg.dataset {
        DatasetKind::Digits => split(crate::embedded::digits()?),
        DatasetKind::Mnist5k => split(crate::embedded::mnist_5k()?),
        DatasetKind::FashionMnist => crate::fashion::fashion_mnist(cfg.path.as_deref()),
        DatasetKind::Idx => {
            let name = dir()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "idx".into());
            crate::fashion::idx_dataset(dir(), &name, classes)
        }
        DatasetKind::Csv => {
            let path = cfg.path.as_deref().unwrap_or(Path::new(""));
            let shape = cfg
                .csv_image_shape()
                .map_err(|e| crate::DataError::format(&path.display().to_string(), e.message))?;
            split(crate::csv::load_csv_gz(
                path,
                cfg.pixel_max.unwrap_or(255.0),
                classes,
                shape,
            )?)
        }
        DatasetKind::Synthetic => Ok(crate::synthetic::gaussian_blobs(
            classes,
            cfg.synthetic_dim.unwrap_or(16),
            cfg.synthetic_train_per_class.unwrap_or(100),
            cfg.synthetic_test_per_class.unwrap_or(30),
            1.0,
            cfg.split_seed,
        )),
        DatasetKind::Cifar10 => crate::cifar::cifar10(dir()),
        DatasetKind::Cifar100 => crate::cifar::cifar100(dir(), cfg.label.unwrap_or_default()),
    }
}

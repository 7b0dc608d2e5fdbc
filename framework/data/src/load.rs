//! Loading the data set a `[data]` table names.

use std::path::Path;

use crate::spec::{DataConfig, DatasetKind};
use crate::TrainTest;

/// Loads the data set named by the `[data]` table.
pub fn load(cfg: &DataConfig) -> Result<TrainTest, crate::DataError> {
    let classes = cfg.num_classes.unwrap_or(10);
    let split = |ds| crate::split::stratified_split(&ds, cfg.test_fraction, cfg.split_seed);
    match cfg.dataset {
        DatasetKind::Digits => split(crate::embedded::digits()?),
        DatasetKind::Mnist5k => split(crate::embedded::mnist_5k()?),
        DatasetKind::FashionMnist => crate::fashion::fashion_mnist(cfg.path.as_deref()),
        DatasetKind::Idx => {
            let dir = cfg.path.as_deref().unwrap_or(Path::new("."));
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "idx".into());
            crate::fashion::idx_dataset(dir, &name, classes)
        }
        DatasetKind::Csv => {
            let path = cfg.path.as_deref().unwrap_or(Path::new(""));
            split(crate::csv::load_csv_gz(
                path,
                cfg.pixel_max.unwrap_or(255.0),
                classes,
                cfg.image_shape,
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
    }
}

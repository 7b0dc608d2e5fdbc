//! The leakage guard of tune-then-evaluate: a tuning phase may not read any sample of D_eval.

use std::collections::HashSet;

use crate::config::Invalid;
use clef_data::fingerprint::{sample_hash, sample_hashes};
use clef_data::scenario::Scenario;
use clef_data::TrainTest;

/// Refuses tuning scenarios that would read a sample (same features and label, training or
/// test split) of `eval`. Compares per-sample hashes, so it catches D_eval samples reached
/// through any file or data set, not only the same configuration. The error names
/// `protocol.tune_data`.
pub fn check_disjoint(tune: &[Scenario], eval: &TrainTest, eval_name: &str) -> Result<(), Invalid> {
    let eval_set = sample_hashes(eval);
    let mut seen: HashSet<(bool, usize)> = HashSet::new();
    let mut shared = 0usize;
    let mut example: Option<String> = None;
    for sc in tune {
        for task in &sc.tasks {
            for (test, split) in [(false, &task.train), (true, &task.test)] {
                let src_is_test = test && !task.test_from_train;
                let src = sc.source(task, test);
                for &row in &split.indices {
                    if !seen.insert((src_is_test, row)) {
                        continue;
                    }
                    if eval_set.contains(&sample_hash(src, row)) {
                        shared += 1;
                        example.get_or_insert_with(|| {
                            format!(
                                "{} sample {row} of `{}` (task {}, {})",
                                if src_is_test { "test" } else { "training" },
                                src.name,
                                task.id,
                                task.name
                            )
                        });
                    }
                }
            }
        }
    }
    match example {
        None => Ok(()),
        Some(ex) => Err(Invalid::new(
            "protocol.tune_data",
            format!(
                "the tune phase would read {shared} sample(s) of D_eval ([data], `{eval_name}`), \
                 e.g. {ex}; tune-then-evaluate refuses any overlap: choose a D_tune that \
                 shares no sample with D_eval"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ScenarioConfig, Setting};
    use clef_data::synthetic::gaussian_blobs;
    use std::sync::Arc;

    fn scen(data: TrainTest) -> Scenario {
        let cfg = ScenarioConfig::class_split(2, 2);
        clef_data::scenario::build(&cfg, Arc::new(data), Setting::ClassIl, 0).unwrap()
    }

    #[test]
    fn disjoint_data_passes_and_one_shared_sample_is_refused() {
        let eval = gaussian_blobs(4, 5, 10, 3, 1.0, 1);
        let tune = gaussian_blobs(4, 5, 10, 3, 1.0, 2);
        check_disjoint(&[scen(tune.clone())], &eval, "e").unwrap();
        // copy one D_eval test sample into D_tune's training set
        let mut leaky = tune;
        let i = 2;
        let (d, row) = (leaky.train.dim, eval.test.row(i).to_vec());
        leaky.train.features[..d].copy_from_slice(&row);
        leaky.train.labels[0] = eval.test.labels[i];
        let e = check_disjoint(&[scen(leaky)], &eval, "e").unwrap_err();
        assert_eq!(e.key, "protocol.tune_data");
        assert!(e.message.contains("1 sample(s) of D_eval"), "{}", e.message);
        assert!(e.message.contains("training sample 0"), "{}", e.message);
    }
}

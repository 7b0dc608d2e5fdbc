//! Property-based tests (proptest) of the config loader: arbitrary text never panics, and
//! values are accepted exactly when they are in range, with errors naming the key and line.

use std::path::Path;

use clef_experiment::config::{parse, ConfigError};
use proptest::prelude::*;

/// `cases` cases, no regression files written next to the sources (CI runs from a clean
/// checkout; a failure prints its minimal input).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A small valid config; `{TASKS}`, `{BATCH}`, `{LR}` and `{SEEDS}` are substituted.
const TEMPLATE: &str = r#"
name = "prop"
seeds = {SEEDS}
settings = ["class-il"]

[data]
dataset = "digits"
test_fraction = 0.25

[scenario]
kind = "class-split"
tasks = {TASKS}
classes_per_task = 2
class_order = "shuffled"

[model]
hidden = [8]

[train]
optimizer = "sgd"
lr = {LR}
momentum = 0.9
epochs = 1
batch_size = {BATCH}

[[strategy]]
name = "finetune"
"#;

fn fill(tasks: i64, batch: i64, lr: f64, seeds: &str) -> String {
    TEMPLATE
        .replace("{TASKS}", &tasks.to_string())
        .replace("{BATCH}", &batch.to_string())
        .replace("{LR}", &format!("{lr:?}"))
        .replace("{SEEDS}", seeds)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn config_loader_never_panics(text in "[\\[\\]a-z_=\"0-9.\\n ,{}#-]{0,200}") {
        let _ = parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn config_values_are_accepted_exactly_when_in_range(
        tasks in -3i64..8, batch in -3i64..300, lr in -1.0f64..2.0
    ) {
        // The loader checks ranges; whether the data set has 2·tasks classes is checked when the
        // data is loaded (`clef validate` / `clef run`, see framework/cli/tests/cli.rs).
        let valid = tasks >= 1 && batch >= 1 && lr > 0.0 && lr.is_finite();
        let text = fill(tasks, batch, lr, "[0]");
        match parse(&text, Path::new("prop.toml")) {
            Ok(c) => {
                prop_assert!(valid, "accepted tasks={} batch={} lr={}", tasks, batch, lr);
                prop_assert_eq!(c.scenario.tasks as i64, tasks);
            }
            Err(e) => {
                prop_assert!(!valid, "refused a valid config: {}", e);
                // Every error names the file; validation errors name the key and its line.
                let msg = e.to_string();
                prop_assert!(msg.contains("prop.toml"), "{}", msg);
                if let ConfigError::Invalid { key, line, .. } = &e {
                    prop_assert!(line.is_some(), "{}", msg);
                    prop_assert!(
                        ["scenario", "train.batch_size", "train.lr", "data"].iter().any(|k| key.starts_with(k)),
                        "{}", msg
                    );
                }
            }
        }
    }
}

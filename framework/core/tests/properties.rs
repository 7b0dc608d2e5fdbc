//! Property-based tests (proptest) of the data parsers, the config loader and the metrics:
//! arbitrary input never panics, valid input round-trips, and the metrics keep their
//! mathematical relations on random accuracy matrices.

use std::path::Path;

use clef_core::config::{parse, ConfigError};
use clef_core::data::csv::parse_csv_gz;
use clef_core::data::idx::{parse_idx_images, parse_idx_labels};
use clef_core::metrics;
use proptest::prelude::*;

/// An IDX image file: magic 0x00000803, big-endian dims, one byte per pixel.
fn idx_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for d in [count, rows, cols] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    b.extend_from_slice(pixels);
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in-memory write");
    e.finish().expect("in-memory gzip")
}

/// `cases` cases, no regression files written next to the sources (CI runs from a clean
/// checkout; a failure prints its minimal input).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn idx_parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_idx_images(&bytes, "fuzz");
        let _ = parse_idx_labels(&bytes, "fuzz");
        // With a valid magic in front, the header and payload checks are exercised.
        let mut with_magic = vec![0, 0, 8, 3];
        with_magic.extend_from_slice(&bytes);
        let _ = parse_idx_images(&with_magic, "fuzz");
        let mut with_magic = vec![0, 0, 8, 1];
        with_magic.extend_from_slice(&bytes);
        let _ = parse_idx_labels(&with_magic, "fuzz");
    }

    #[test]
    fn idx_round_trips_and_every_truncation_is_an_error(
        count in 1usize..6, rows in 1usize..5, cols in 1usize..5, seed in any::<u64>(), gz in any::<bool>()
    ) {
        let n = count * rows * cols;
        let pixels: Vec<u8> = (0..n).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 7) as u8).collect();
        let raw = idx_images(count, rows, cols, &pixels);
        let bytes = if gz { gzip(&raw) } else { raw.clone() };
        let img = parse_idx_images(&bytes, "p").unwrap();
        prop_assert_eq!((img.count, img.rows, img.cols), (count, rows, cols));
        for (got, &p) in img.pixels.iter().zip(&pixels) {
            prop_assert_eq!(*got, f32::from(p) / 255.0);
        }
        for cut in 0..raw.len() {
            prop_assert!(parse_idx_images(&raw[..cut], "p").is_err(), "cut {}", cut);
        }
        let mut longer = raw.clone();
        longer.push(0);
        prop_assert!(parse_idx_images(&longer, "p").is_err());
        let labels: Vec<u8> = pixels.iter().take(count).map(|p| p % 10).collect();
        let raw = idx_labels(&labels);
        prop_assert_eq!(parse_idx_labels(&raw, "l").unwrap(), labels);
        for cut in 0..raw.len() {
            prop_assert!(parse_idx_labels(&raw[..cut], "l").is_err());
        }
    }

    #[test]
    fn csv_parser_never_panics_on_arbitrary_text(text in "[0-9,.\\-e\\n\\r a-z]{0,120}", classes in 0usize..12) {
        let _ = parse_csv_gz(text.as_bytes(), "fuzz", 255.0, classes, None);
        let _ = parse_csv_gz(text.as_bytes(), "fuzz", 255.0, classes, Some([2, 2]));
        let _ = parse_csv_gz(&gzip(text.as_bytes()), "fuzz", 1.0, classes, None);
    }

    #[test]
    fn csv_round_trips(rows in proptest::collection::vec((proptest::collection::vec(0u8..=255, 4), 0u32..10), 1..8)) {
        let text: String = rows
            .iter()
            .map(|(px, y)| {
                let mut fields: Vec<String> = px.iter().map(u8::to_string).collect();
                fields.push(y.to_string());
                fields.join(",") + "\n"
            })
            .collect();
        let d = parse_csv_gz(text.as_bytes(), "rt", 255.0, 10, Some([2, 2])).unwrap();
        prop_assert_eq!(d.len(), rows.len());
        prop_assert_eq!(d.dim, 4);
        for (i, (px, y)) in rows.iter().enumerate() {
            prop_assert_eq!(d.labels[i], *y);
            for (j, &p) in px.iter().enumerate() {
                prop_assert_eq!(d.row(i)[j], f32::from(p) / 255.0);
            }
        }
        // A label one past the classes is refused, naming the source.
        let bad = text.replacen(&format!(",{}\n", rows[0].1), ",10\n", 1);
        let err = parse_csv_gz(bad.as_bytes(), "rt", 255.0, 10, Some([2, 2])).unwrap_err();
        prop_assert!(err.to_string().contains("rt"), "{}", err);
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

/// A random `t × t` accuracy matrix in [0, 1] (lower triangle and diagonal meaningful; the
/// upper triangle holds the accuracies on tasks not trained yet).
fn matrix() -> impl Strategy<Value = Vec<Vec<f64>>> {
    (1usize..7)
        .prop_flat_map(|t| proptest::collection::vec(proptest::collection::vec(0.0f64..=1.0, t), t))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn metrics_keep_their_relations(r in matrix()) {
        let t = r.len();
        let acc = metrics::acc(&r);
        prop_assert!((0.0..=1.0).contains(&acc));
        prop_assert!((0.0..=1.0).contains(&metrics::learning_accuracy(&r)));
        prop_assert!((0.0..=1.0).contains(&metrics::avg_incremental_accuracy(&r)));
        // The last incremental accuracy is ACC.
        prop_assert!((metrics::average_accuracy_at(&r, t - 1) - acc).abs() < 1e-12);
        match (metrics::bwt(&r), metrics::forgetting(&r)) {
            (Some(b), Some(f)) => {
                prop_assert!((-1.0..=1.0).contains(&b));
                prop_assert!((-1.0..=1.0).contains(&f));
                // The best earlier accuracy is at least the one right after learning.
                prop_assert!(f >= -b - 1e-12, "forgetting {} < -BWT {}", f, -b);
                // ACC = mean over the earlier tasks of (R[j][j] + change) and the last task.
                let diag_old: f64 = (0..t - 1).map(|j| r[j][j]).sum();
                let recon = (diag_old + b * (t - 1) as f64 + r[t - 1][t - 1]) / t as f64;
                prop_assert!((recon - acc).abs() < 1e-9, "{} vs {}", recon, acc);
            }
            (None, None) => prop_assert_eq!(t, 1),
            other => prop_assert!(false, "bwt/forgetting disagree on availability: {:?}", other),
        }
    }

    #[test]
    fn a_matrix_without_change_has_zero_bwt_and_forgetting(diag in proptest::collection::vec(0.0f64..=1.0, 2..7)) {
        let t = diag.len();
        // Each column constant from its task on: nothing is forgotten.
        let r: Vec<Vec<f64>> = (0..t)
            .map(|k| (0..t).map(|j| if j <= k { diag[j] } else { 0.5 }).collect())
            .collect();
        prop_assert_eq!(metrics::bwt(&r), Some(0.0));
        prop_assert_eq!(metrics::forgetting(&r), Some(0.0));
        prop_assert!((metrics::acc(&r) - diag.iter().sum::<f64>() / t as f64).abs() < 1e-12);
    }
}

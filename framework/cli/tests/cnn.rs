//! The whole path of a convolutional backbone, CI-sized: CIFAR-10 binary files generated in the
//! published record layout, loaded and normalised, cut into a class-split stream, augmented,
//! trained on a small ConvNet (batch norm) and a small ResNet with the built-in strategies,
//! evaluated, stored and summarised by `clef run`; the same config and seed give the same
//! records, and a missing batch file is an error naming it.

mod common;

use std::path::Path;

use clef_testkit::Cfg;
use serde_json::Value;

use common::{clef, records, run_cfg, show, text, without_timings};

/// Records of the CIFAR-10 binary version: 1 label byte, then 1024 R, 1024 G, 1024 B bytes.
const RECORD: usize = 1 + 3 * 32 * 32;

/// One CIFAR-10 record of class `label`: the class is drawn as a bright 8x8 square at a
/// class-dependent position and colour over a seeded noise background, so a small network can
/// learn it (a generated file, not CIFAR's images).
fn record(label: u8, noise: &mut u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(RECORD);
    r.push(label);
    let (row, col) = (
        usize::from(label / 5) * 16 + 4,
        usize::from(label % 5) * 5 + 2,
    );
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                *noise = noise
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let background = (*noise >> 58) as u8; // 0..63
                let inside = (row..row + 8).contains(&y) && (col..col + 8).contains(&x);
                let lit = inside && (usize::from(label) + c) % 3 != 0;
                r.push(if lit { 220 } else { background });
            }
        }
    }
    r
}

/// Writes `data_batch_1..5.bin` (`per_file` records each) and `test_batch.bin` into `dir`.
fn write_cifar10(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut noise = 7u64;
    let mut file = |name: &str, n: usize| {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|i| record((i % 10) as u8, &mut noise))
            .collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for b in 1..=5 {
        file(&format!("data_batch_{b}.bin"), per_file);
    }
    file("test_batch.bin", 2 * per_file);
}

/// The CI-sized CIFAR-10 run: 5 tasks x 2 classes, both settings, finetune and joint.
fn cifar_cfg(data: &Path) -> Cfg {
    Cfg::digits()
        .name("cifar-smoke")
        .settings(&["task-il", "class-il"])
        .dataset("cifar10")
        .set("data", "path", &format!("{:?}", data.display().to_string()))
        .set("data", "normalize", "true")
        .unset("model", "hidden")
        .set("model", "backbone", "\"convnet\"")
        .set("model", "channels", "[4, 4, 8, 8]")
        .set("model", "norm", "\"batch\"")
        .set("model", "init", "\"torch-default\"")
        .sgd(0.05)
        .momentum(0.9)
        .epochs(2)
        .batch_size(16)
        .set("train", "augment", "[\"crop:4\", \"hflip\"]")
        .strategy("finetune")
        .strategy("joint")
}

fn matrix(r: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(r["accuracy_matrix"].clone()).expect("accuracy matrix")
}

#[test]
fn a_convnet_trains_on_generated_cifar10_files_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar-10-batches-bin");
    write_cifar10(&data, 40);
    let cfg = cifar_cfg(&data).write(tmp.path(), "cifar.toml");
    let out = tmp.path().join("out");
    let o = run_cfg(&cfg, &out, "warn", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let recs = records(&out);
    assert_eq!(recs.len(), 4, "finetune and joint in two settings");
    for r in &recs {
        assert_eq!(r["status"], "completed", "{r}");
        let m = matrix(r);
        assert_eq!(m.len(), 5);
        assert!(m.iter().flatten().all(|a| (0.0..=1.0).contains(a)), "{m:?}");
        // conv 3->4, 4->4, 4->8, 8->8 (no bias under batch norm) + 2x4 + 2x8 norm weights
        // and biases, then the head 8*8*8 -> 10 with bias.
        let convs = 4 * 3 * 9 + 4 * 4 * 9 + 8 * 4 * 9 + 8 * 8 * 9;
        let norms = 2 * (4 + 4 + 8 + 8);
        let head = 8 * 8 * 8 * 10 + 10;
        assert_eq!(r["num_params"], convs + norms + head, "{r}");
    }
    // The squares are easy: the jointly trained ConvNet tells the two classes of a task apart.
    let joint = recs
        .iter()
        .find(|r| r["strategy"] == "joint" && r["setting"] == "task-il")
        .expect("joint task-IL");
    let last = matrix(joint).pop().expect("a row");
    let mean = last.iter().sum::<f64>() / last.len() as f64;
    assert!(mean > 0.7, "joint task-IL accuracy {mean} on {last:?}");

    // Same config, same seed: the same records.
    let again = tmp.path().join("again");
    let o = run_cfg(&cfg, &again, "warn", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let strip = |v: Vec<Value>| v.into_iter().map(without_timings).collect::<Vec<_>>();
    assert_eq!(strip(records(&out)), strip(records(&again)));
}

#[test]
fn a_small_resnet_runs_the_same_path() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_cifar10(&data, 20);
    let cfg = cifar_cfg(&data)
        .settings(&["task-il"])
        .unset("model", "channels")
        .set("model", "backbone", "\"resnet18\"")
        .set("model", "width", "4")
        .set("model", "blocks", "[1, 1, 1, 1]")
        .epochs(1)
        .write(tmp.path(), "resnet.toml");
    let out = tmp.path().join("out");
    let o = run_cfg(&cfg, &out, "warn", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r["status"] == "completed"), "{recs:?}");
}

#[test]
fn a_missing_cifar_batch_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    write_cifar10(&data, 10);
    std::fs::remove_file(data.join("data_batch_3.bin")).unwrap();
    let cfg = cifar_cfg(&data).write(tmp.path(), "cifar.toml");
    let o = clef().arg("validate").arg(&cfg).output().expect("run clef");
    assert!(!o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.contains("data_batch_3.bin"), "{err}");
}

//! Image data: the CIFAR-10/100 binary loaders on files generated in the published record layout
//! (hostile cases included), per-channel normalisation, and the crop/flip augmentation.

use std::path::Path;
use std::sync::Arc;

use clef_data::augment::{crop, hflip, Augment, Augmenter};
use clef_data::cifar::{cifar10, cifar100, CIFAR10_TEST, CIFAR10_TRAIN, PIXELS};
use clef_data::normalize::normalize;
use clef_data::spec::{CifarLabel, DataConfig, NormalizeSpec, ScenarioConfig, ScenarioKind};
use clef_data::{DataError, Dataset, ImageShape, Normalization, Setting, TrainTest};

/// Pixel byte `k` (0..3072, channel-major) of record `r` of file `f`: distinct enough to catch a
/// swapped channel, row or record.
fn pixel(f: usize, r: usize, k: usize) -> u8 {
    ((f * 89 + r * 37 + k * 7 + k / 1024 * 101) % 256) as u8
}

/// A file of `labels.len()` records, each the label bytes then the 3072 pixels of [`pixel`].
fn records(f: usize, labels: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (r, l) in labels.iter().enumerate() {
        out.extend_from_slice(l);
        out.extend((0..PIXELS).map(|k| pixel(f, r, k)));
    }
    out
}

/// A CIFAR-10 directory: five training files of 2, 1, 3, 1, 2 records and a test file of 2.
fn cifar10_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [2, 1, 3, 1, 2];
    for (f, (name, n)) in CIFAR10_TRAIN.iter().zip(sizes).enumerate() {
        let labels: Vec<[u8; 1]> = (0..n).map(|r| [((f + r) % 10) as u8]).collect();
        let refs: Vec<&[u8]> = labels.iter().map(|l| &l[..]).collect();
        std::fs::write(dir.path().join(name), records(f, &refs)).unwrap();
    }
    std::fs::write(dir.path().join(CIFAR10_TEST), records(5, &[&[9], &[0]])).unwrap();
    dir
}

fn cifar100_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.bin"),
        records(0, &[&[19, 99], &[0, 3], &[7, 42]]),
    )
    .unwrap();
    std::fs::write(dir.path().join("test.bin"), records(1, &[&[4, 17]])).unwrap();
    dir
}

fn msg(e: DataError) -> String {
    e.to_string()
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{p}` not in: {msg}");
    }
}

#[test]
fn cifar10_reads_records_channel_major_in_file_order() {
    let dir = cifar10_dir();
    let tt = cifar10(dir.path()).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (9, 2));
    assert_eq!(tt.train.dim, 3072);
    assert_eq!(tt.train.num_classes, 10);
    assert_eq!(tt.train.name, "cifar10");
    assert_eq!(tt.train.image_shape, Some(ImageShape::new(3, 32, 32)));
    // Batches 1..5 in order, each record's label byte.
    assert_eq!(tt.train.labels, vec![0, 1, 1, 2, 3, 4, 3, 4, 5]);
    assert_eq!(tt.test.labels, vec![9, 0]);
    // Sample 3 is record 0 of data_batch_3.bin (file 2); channel c, row y, column x sits at
    // c * 1024 + y * 32 + x, and is that record's byte at the same offset divided by 255.
    for (c, y, x) in [(0, 0, 0), (1, 5, 31), (2, 31, 7), (2, 31, 31)] {
        let k = c * 1024 + y * 32 + x;
        assert_eq!(
            tt.train.row(3)[k],
            f32::from(pixel(2, 0, k)) / 255.0,
            "{c} {y} {x}"
        );
    }
    assert_eq!(tt.test.row(1)[2000], f32::from(pixel(5, 1, 2000)) / 255.0);
    assert!(tt.train.features.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let dir = cifar100_dir();
    let fine = cifar100(dir.path(), CifarLabel::Fine).unwrap();
    assert_eq!(fine.train.labels, vec![99, 3, 42]);
    assert_eq!(
        (fine.train.num_classes, fine.train.name.as_str()),
        (100, "cifar100")
    );
    assert_eq!(fine.test.labels, vec![17]);
    let coarse = cifar100(dir.path(), CifarLabel::Coarse).unwrap();
    assert_eq!(coarse.train.labels, vec![19, 0, 7]);
    assert_eq!(coarse.train.num_classes, 20);
    assert_eq!(coarse.train.name, "cifar100-coarse");
    assert_eq!(coarse.train.features, fine.train.features);
    // Two label bytes: pixel k of record 1 is byte 2 + k of the record.
    assert_eq!(
        fine.train.row(1)[1500],
        f32::from(pixel(0, 1, 1500)) / 255.0
    );
}

#[test]
fn missing_cifar_files_are_named_with_the_directory() {
    let dir = cifar10_dir();
    std::fs::remove_file(dir.path().join("data_batch_3.bin")).unwrap();
    std::fs::remove_file(dir.path().join(CIFAR10_TEST)).unwrap();
    let m = msg(cifar10(dir.path()).unwrap_err());
    let shown = dir.path().display().to_string();
    assert_contains(
        &m,
        &[
            "data_batch_3.bin",
            "test_batch.bin",
            &format!("not in {shown}"),
            "data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, \
             data_batch_5.bin, test_batch.bin",
            "data.path",
        ],
    );
    // Only the missing files are reported as missing.
    assert!(!m.contains(&format!("{shown}/data_batch_1.bin")), "{m}");
    let m = msg(cifar100(Path::new("/no/such/cifar"), CifarLabel::Fine).unwrap_err());
    assert_contains(
        &m,
        &[
            "/no/such/cifar/train.bin",
            "directory /no/such/cifar does not exist",
            "train.bin, test.bin",
        ],
    );
}

#[test]
fn truncated_and_empty_cifar_files_are_refused() {
    let dir = cifar10_dir();
    let path = dir.path().join("data_batch_2.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&records(1, &[&[3]])[..1000]);
    std::fs::write(&path, &bytes).unwrap();
    let m = msg(cifar10(dir.path()).unwrap_err());
    assert_contains(
        &m,
        &[
            "data_batch_2.bin",
            "truncated record",
            "4073 bytes",
            "3073-byte record",
            "1 whole record then 1000 bytes of record 1",
        ],
    );
    // Less than one record.
    std::fs::write(&path, &bytes[..500]).unwrap();
    let m = msg(cifar10(dir.path()).unwrap_err());
    assert_contains(&m, &["data_batch_2.bin", "500 bytes", "0 whole records"]);
    std::fs::write(&path, []).unwrap();
    let e = cifar10(dir.path()).unwrap_err();
    assert!(
        matches!(&e, DataError::Empty { path } if path.ends_with("data_batch_2.bin")),
        "{e}"
    );
    // CIFAR-100 records are 3074 bytes: a CIFAR-10 file is the wrong size for it.
    let dir100 = cifar100_dir();
    std::fs::write(dir100.path().join("test.bin"), records(0, &[&[1], &[1]])).unwrap();
    let m = msg(cifar100(dir100.path(), CifarLabel::Fine).unwrap_err());
    assert_contains(
        &m,
        &["test.bin", "6146 bytes", "3074-byte record (2 label bytes"],
    );
}

#[test]
fn cifar_labels_out_of_range_name_file_record_and_range() {
    let dir = cifar10_dir();
    std::fs::write(
        dir.path().join("data_batch_4.bin"),
        records(3, &[&[2], &[10]]),
    )
    .unwrap();
    let m = msg(cifar10(dir.path()).unwrap_err());
    assert_contains(
        &m,
        &["data_batch_4.bin", "label 10 at record 1", "expected 0..10"],
    );
    let dir = cifar100_dir();
    std::fs::write(dir.path().join("test.bin"), records(1, &[&[4, 100]])).unwrap();
    let m = msg(cifar100(dir.path(), CifarLabel::Coarse).unwrap_err());
    assert_contains(
        &m,
        &["test.bin", "fine label 100 at record 0", "expected 0..100"],
    );
    std::fs::write(
        dir.path().join("test.bin"),
        records(1, &[&[4, 1], &[20, 1]]),
    )
    .unwrap();
    let m = msg(cifar100(dir.path(), CifarLabel::Fine).unwrap_err());
    assert_contains(
        &m,
        &["test.bin", "coarse label 20 at record 1", "expected 0..20"],
    );
}

fn data_config(toml_text: &str) -> DataConfig {
    toml::from_str(toml_text).unwrap()
}

/// Mean and population standard deviation of channel `c` of every sample, in f64.
fn channel_stats(ds: &Dataset, c: usize) -> (f64, f64) {
    let plane = ds.dim / ds.image_shape.map_or(1, |s| s.channels);
    let vals: Vec<f64> = (0..ds.len())
        .flat_map(|i| ds.row(i)[c * plane..(c + 1) * plane].to_vec())
        .map(f64::from)
        .collect();
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn normalize_true_standardises_each_channel_with_training_statistics() {
    let dir = cifar10_dir();
    let cfg = data_config(&format!(
        "dataset = \"cifar10\"\npath = {:?}\nnormalize = true\n",
        dir.path()
    ));
    let raw = cifar10(dir.path()).unwrap();
    let tt = clef_data::load(&cfg).unwrap();
    let stats = tt.train.normalization.clone().unwrap();
    assert_eq!(tt.test.normalization.as_ref(), Some(&stats));
    for c in 0..3 {
        let (m, s) = channel_stats(&raw.train, c);
        assert!((f64::from(stats.mean[c]) - m).abs() < 1e-6, "mean {c}");
        assert!((f64::from(stats.std[c]) - s).abs() < 1e-6, "std {c}");
        let (m2, s2) = channel_stats(&tt.train, c);
        assert!(
            m2.abs() < 1e-5 && (s2 - 1.0).abs() < 1e-5,
            "channel {c}: {m2} {s2}"
        );
    }
    // The test split uses the training statistics, pixel by pixel.
    let k = 2 * 1024 + 77;
    let expect = (raw.test.row(0)[k] - stats.mean[2]) / stats.std[2];
    assert_eq!(tt.test.row(0)[k], expect);
    // Default off: the loaded data is the raw data.
    let off = data_config(&format!("dataset = \"cifar10\"\npath = {:?}\n", dir.path()));
    assert_eq!(off.normalize, NormalizeSpec::Off);
    assert_eq!(clef_data::load(&off).unwrap(), raw);
}

#[test]
fn given_statistics_are_applied_and_checked() {
    let cfg = data_config("dataset = \"digits\"\nnormalize = { mean = [0.25], std = [0.5] }\n");
    assert_eq!(
        cfg.normalize,
        NormalizeSpec::Given {
            mean: vec![0.25],
            std: vec![0.5]
        }
    );
    let raw = clef_data::load(&data_config("dataset = \"digits\"\n")).unwrap();
    let tt = clef_data::load(&cfg).unwrap();
    for (a, b) in raw.train.features.iter().zip(&tt.train.features) {
        assert_eq!(*b, (a - 0.25) / 0.5);
    }
    let mut data = raw.clone();
    let three = NormalizeSpec::Given {
        mean: vec![0.1; 3],
        std: vec![1.0; 3],
    };
    let m = msg(normalize(&three, &mut data).unwrap_err());
    assert_contains(
        &m,
        &[
            "digits",
            "data.normalize.mean has 3 values",
            "one per channel (1)",
        ],
    );
    let zero = NormalizeSpec::Given {
        mean: vec![0.1],
        std: vec![0.0],
    };
    let m = msg(normalize(&zero, &mut data).unwrap_err());
    assert_contains(&m, &["data.normalize.std holds 0", "> 0"]);
    assert_eq!(data, raw, "a refused normalisation leaves the data alone");
    let bad = toml::from_str::<DataConfig>("dataset = \"digits\"\nnormalize = { mean = [0.1] }\n")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("std"), "{bad}");
    let bad = toml::from_str::<DataConfig>("dataset = \"digits\"\nnormalize = \"yes\"\n")
        .unwrap_err()
        .to_string();
    assert!(bad.contains("true, false or a table"), "{bad}");
}

#[test]
fn constant_channel_cannot_be_computed() {
    let shape = ImageShape::new(2, 1, 2);
    let ds = Dataset {
        name: "flat".into(),
        // Channel 0 varies, channel 1 is always 0.5.
        features: vec![0.0, 1.0, 0.5, 0.5, 1.0, 1.0, 0.5, 0.5],
        labels: vec![0, 1],
        dim: 4,
        num_classes: 2,
        image_shape: Some(shape),
        normalization: None,
        loaded_hashes: None,
    };
    let m = msg(Normalization::compute(&ds).unwrap_err());
    assert_contains(&m, &["flat", "channel 1 is constant"]);
    let mut tt = TrainTest {
        train: ds.clone(),
        test: ds,
    };
    tt.train.features[6] = 0.0;
    normalize(&NormalizeSpec::Computed, &mut tt).unwrap();
    // Channel 0: values 0, 1, 1, 1 -> mean 0.75, std sqrt(0.1875).
    let s = tt.train.normalization.clone().unwrap();
    assert!((s.mean[0] - 0.75).abs() < 1e-7 && (s.std[0] - 0.1875f32.sqrt()).abs() < 1e-7);
    assert_eq!(s.zero_pixel()[0], -0.75 / s.std[0]);
}

// ---------------------------------------------------------------- augmentation

/// A 1x3x3 image 1..9, row-major.
fn img3() -> Vec<f32> {
    (1..=9).map(|v| v as f32).collect()
}

#[test]
fn crop_by_hand() {
    let s = ImageShape::grey(3, 3);
    let mut out = vec![f32::NAN; 9];
    // Corner (0, 0) of the image padded by 1: shifted down-right, zeros on top and left.
    crop(&img3(), s, 1, 0, 0, &[0.0], &mut out);
    assert_eq!(out, [0., 0., 0., 0., 1., 2., 0., 4., 5.]);
    // The centre (1, 1) is the image itself.
    crop(&img3(), s, 1, 1, 1, &[0.0], &mut out);
    assert_eq!(out, img3());
    // Corner (2, 1): shifted up, the bottom row padded with the fill.
    crop(&img3(), s, 1, 2, 1, &[-1.0], &mut out);
    assert_eq!(out, [4., 5., 6., 7., 8., 9., -1., -1., -1.]);
    // Padding larger than the image: only the fill or a single pixel.
    crop(&img3(), s, 4, 0, 8, &[0.0], &mut out);
    assert_eq!(out, [0.0; 9]);
    crop(&img3(), s, 4, 2, 6, &[0.0], &mut out);
    assert_eq!(out, [0., 0., 0., 0., 0., 0., 3., 0., 0.]);
}

#[test]
fn crop_and_flip_keep_channels_apart() {
    // Two 2x3 channels: 1..6 and 11..16, with their own fills.
    let s = ImageShape::new(2, 2, 3);
    let img: Vec<f32> = [1., 2., 3., 4., 5., 6., 11., 12., 13., 14., 15., 16.].to_vec();
    let mut out = vec![0.0; 12];
    crop(&img, s, 1, 1, 2, &[-1.0, -2.0], &mut out);
    assert_eq!(
        out,
        [2., 3., -1., 5., 6., -1., 12., 13., -2., 15., 16., -2.]
    );
    let mut f = img.clone();
    hflip(&mut f, s);
    assert_eq!(f, [3., 2., 1., 6., 5., 4., 13., 12., 11., 16., 15., 14.]);
}

/// Every candidate output of `ops` on `img`: the (2p+1)^2 crops, each flipped or not.
fn candidates(img: &[f32], s: ImageShape, padding: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for dy in 0..=2 * padding {
        for dx in 0..=2 * padding {
            let mut c = vec![0.0; img.len()];
            crop(img, s, padding, dy, dx, &vec![0.0; s.channels], &mut c);
            let mut f = c.clone();
            hflip(&mut f, s);
            out.push(c);
            out.push(f);
        }
    }
    out
}

#[test]
fn augmenter_is_seeded_and_draws_from_the_right_set() {
    let s = ImageShape::new(2, 4, 5);
    let rows = 40;
    let x: Vec<f32> = (0..rows * s.len()).map(|v| (v % 97) as f32 + 1.0).collect();
    let ops = [Augment::Crop { padding: 2 }, Augment::HFlip];
    let run = |seed| {
        let mut y = x.clone();
        Augmenter::new(&ops, s, None).apply(&mut y, rows - 1, seed);
        y
    };
    let a = run(7);
    assert_eq!(a, run(7), "same seed, same batch");
    assert_ne!(a, run(8), "another seed, another batch");
    let d = s.len();
    // Rows past `rows` are left alone.
    assert_eq!(a[(rows - 1) * d..], x[(rows - 1) * d..]);
    let mut changed = 0;
    for r in 0..rows - 1 {
        let (src, got) = (&x[r * d..(r + 1) * d], &a[r * d..(r + 1) * d]);
        assert!(
            candidates(src, s, 2).iter().any(|c| c == got),
            "row {r} is not a crop/flip of its input"
        );
        changed += usize::from(src != got);
    }
    assert!(changed > rows / 2, "only {changed} rows changed");
    // After normalisation the padding is the standardised black pixel of each channel.
    let n = Normalization {
        mean: vec![0.5, 0.25],
        std: vec![0.25, 0.5],
    };
    let mut y = vec![1.0; s.len()];
    let mut aug = Augmenter::new(&[Augment::Crop { padding: 4 }], s, Some(&n));
    let mut seen = [false; 2];
    for seed in 0..50 {
        y.fill(1.0);
        aug.apply(&mut y, 1, seed);
        for (c, plane) in y.chunks(s.plane()).enumerate() {
            for &v in plane {
                assert!(v == 1.0 || v == n.zero_pixel()[c], "{v}");
                seen[c] |= v != 1.0;
            }
        }
    }
    assert_eq!(seen, [true, true]);
    assert_eq!(n.zero_pixel(), vec![-2.0, -0.5]);
}

#[test]
fn augment_names_parse_in_configs() {
    #[derive(Debug, serde::Deserialize, serde::Serialize)]
    struct T {
        augment: Vec<Augment>,
    }
    let t: T = toml::from_str("augment = [\"crop:4\", \"hflip\"]").unwrap();
    assert_eq!(
        t.augment,
        vec![Augment::Crop { padding: 4 }, Augment::HFlip]
    );
    assert_eq!(
        serde_json::to_string(&t).unwrap(),
        r#"{"augment":["crop:4","hflip"]}"#
    );
    let e = toml::from_str::<T>("augment = [\"rotate\"]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown augmentation `rotate`"), "{e}");
}

// ---------------------------------------------------------------- shapes through scenarios

#[test]
fn scenarios_expose_the_image_shape_and_rotate_every_channel() {
    let dir = cifar10_dir();
    let data = Arc::new(cifar10(dir.path()).unwrap());
    let mut sc_cfg = ScenarioConfig::new(ScenarioKind::Rotated, 2);
    sc_cfg.max_degrees = Some(90.0);
    let sc = clef_data::scenario::build(&sc_cfg, data.clone(), Setting::DomainIl, 0).unwrap();
    assert_eq!(sc.image_shape(), Some(ImageShape::new(3, 32, 32)));
    let (mut x, mut y) = (Vec::new(), Vec::new());
    sc.gather(&sc.tasks[1], false, &[0], &mut x, &mut y);
    // 90 degrees counter-clockwise: output (r, c) comes from input (c, 31 - r), per channel.
    let src = data.train.row(0);
    for (ch, r, c) in [(0, 0, 0), (1, 3, 9), (2, 31, 30)] {
        let got = x[ch * 1024 + r * 32 + c];
        let want = src[ch * 1024 + c * 32 + (31 - r)];
        assert!(
            (got - want).abs() < 1e-5,
            "channel {ch} ({r}, {c}): {got} vs {want}"
        );
    }
    let perm = clef_data::scenario::build(
        &ScenarioConfig::new(ScenarioKind::Permuted, 2),
        data,
        Setting::DomainIl,
        0,
    )
    .unwrap();
    assert_eq!(perm.image_shape(), Some(ImageShape::new(3, 32, 32)));
}

#[test]
fn csv_image_shape_accepts_two_or_three_sizes() {
    let shape = |t: &str| data_config(&format!("dataset = \"csv\"\n{t}")).csv_image_shape();
    assert_eq!(
        shape("image_shape = [4, 5]").unwrap(),
        Some(ImageShape::grey(4, 5))
    );
    assert_eq!(
        shape("image_shape = [3, 4, 5]").unwrap(),
        Some(ImageShape::new(3, 4, 5))
    );
    assert_eq!(shape("").unwrap(), None);
    let e = shape("image_shape = [1, 2, 3, 4]").unwrap_err();
    assert_eq!(e.key, "data.image_shape");
    assert!(e.message.contains("got 4 sizes"), "{}", e.message);
    assert!(shape("image_shape = [3, 0, 5]")
        .unwrap_err()
        .message
        .contains("positive"));
}

#[test]
fn sample_hashes_see_through_normalisation_and_fingerprints_do_not() {
    use clef_data::fingerprint::{fingerprint, sample_hash, sample_hashes};
    let raw = clef_data::load(&data_config("dataset = \"digits\"\n")).unwrap();
    // Another data set holding one of digits' test images, standardised with other statistics.
    let mut other = clef_data::synthetic::gaussian_blobs(10, 64, 3, 2, 1.0, 5);
    let d = raw.test.dim;
    other.train.features[..d].copy_from_slice(raw.test.row(4));
    other.train.labels[0] = raw.test.labels[4];
    let mut norm = raw.clone();
    normalize(&NormalizeSpec::Computed, &mut norm).unwrap();
    normalize(&NormalizeSpec::Computed, &mut other).unwrap();
    assert_ne!(norm.test.row(4), other.train.row(0), "different statistics");
    assert_eq!(sample_hash(&norm.test, 4), sample_hash(&other.train, 0));
    assert_eq!(sample_hashes(&norm), sample_hashes(&raw));
    // Subsets keep each sample's hash.
    let sub = norm.test.subset(&[7, 4]);
    assert_eq!(sample_hash(&sub, 1), sample_hash(&raw.test, 4));
    // The fingerprint is of the features trained on: normalising changes it.
    assert_ne!(fingerprint(&norm), fingerprint(&raw));
    assert_eq!(fingerprint(&raw), fingerprint(&raw.clone()));
}

//! Tests of the data loaders, the stratified split and the synthetic generator.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use clef_data::csv::{load_csv_gz, parse_csv_gz};
use clef_data::embedded::{digits, mnist_5k};
use clef_data::fashion::{fashion_mnist, idx_dataset, DEBIAN_FASHION_MNIST_DIR};
use clef_data::idx::{load_idx_pair, parse_idx_images, parse_idx_labels, parse_idx_pair};
use clef_data::split::stratified_split;
use clef_data::synthetic::gaussian_blobs;
use clef_data::{DataError, Dataset, ImageShape};

// ---------------------------------------------------------------- helpers

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An IDX image file of `n` images of `rows x cols`, pixel `k` of the file being `k * 37 % 256`.
fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|k| (k * 37 % 256) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn err_msg<T: std::fmt::Debug>(r: Result<T, DataError>) -> String {
    r.unwrap_err().to_string()
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
    assert!(!msg.contains('\n'), "message {msg:?} spans several lines");
}

fn check_unit_range(ds: &Dataset) {
    assert_eq!(ds.features.len(), ds.len() * ds.dim);
    assert!(ds.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
    let max = ds.features.iter().cloned().fold(f32::MIN, f32::max);
    assert_eq!(max, 1.0);
    assert!(ds.labels.iter().all(|&l| (l as usize) < ds.num_classes));
}

// ---------------------------------------------------------------- embedded

#[test]
fn embedded_digits() {
    let ds = digits().unwrap();
    assert_eq!(ds.name, "digits");
    assert_eq!(ds.len(), 1797);
    assert_eq!(ds.dim, 64);
    assert_eq!(ds.num_classes, 10);
    assert_eq!(ds.image_shape, Some(ImageShape::grey(8, 8)));
    check_unit_range(&ds);
    let counts = ds.class_counts();
    assert_eq!(counts.iter().sum::<usize>(), 1797);
    assert!(
        counts.iter().all(|&c| (170..=190).contains(&c)),
        "{counts:?}"
    );
    // First sample of the UCI digits file: a zero, pixel 2 is 5/16.
    assert_eq!(ds.labels[0], 0);
    assert_eq!(ds.row(0)[2], 5.0 / 16.0);
}

#[test]
fn embedded_mnist_5k() {
    let ds = mnist_5k().unwrap();
    assert_eq!(ds.name, "mnist-5k");
    assert_eq!(ds.len(), 5000);
    assert_eq!(ds.dim, 784);
    assert_eq!(ds.image_shape, Some(ImageShape::grey(28, 28)));
    check_unit_range(&ds);
    assert_eq!(ds.class_counts(), vec![500; 10]);
}

// ---------------------------------------------------------------- IDX

#[test]
fn idx_round_trip_raw_and_gzip() {
    let images = idx_images(3, 2, 3);
    let labels = idx_labels(&[2, 0, 1]);
    let raw = parse_idx_pair(&images, "img", &labels, "lab", "toy", 3).unwrap();
    assert_eq!(raw.name, "toy");
    assert_eq!(raw.len(), 3);
    assert_eq!(raw.dim, 6);
    assert_eq!(raw.image_shape, Some(ImageShape::grey(2, 3)));
    assert_eq!(raw.labels, vec![2, 0, 1]);
    let expect: Vec<f32> = (0..18u32).map(|k| (k * 37 % 256) as f32 / 255.0).collect();
    assert_eq!(raw.features, expect);

    let gz = parse_idx_pair(&gzip(&images), "img", &gzip(&labels), "lab", "toy", 3).unwrap();
    assert_eq!(gz, raw);
    // Mixed: gzip images, raw labels.
    let mixed = parse_idx_pair(&gzip(&images), "img", &labels, "lab", "toy", 3).unwrap();
    assert_eq!(mixed, raw);
}

#[test]
fn idx_pixels_scale_exactly() {
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 3];
    images.extend_from_slice(&[0, 128, 255]);
    let img = parse_idx_images(&images, "x").unwrap();
    assert_eq!(img.pixels, vec![0.0, 128.0 / 255.0, 1.0]);
    assert_eq!((img.count, img.rows, img.cols), (1, 1, 3));
}

#[test]
fn idx_files_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("imgs.bin");
    let lab = dir.path().join("labs.gz"); // name says gzip, content is raw: magic decides
    std::fs::write(&img, gzip(&idx_images(4, 2, 2))).unwrap();
    std::fs::write(&lab, idx_labels(&[0, 1, 1, 0])).unwrap();
    let ds = load_idx_pair(&img, &lab, "disk", 2).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.labels, vec![0, 1, 1, 0]);
}

#[test]
fn idx_dataset_directory_gz_and_raw_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("train-images-idx3-ubyte.gz"),
        gzip(&idx_images(6, 3, 3)),
    )
    .unwrap();
    std::fs::write(
        p.join("train-labels-idx1-ubyte"),
        idx_labels(&[0, 1, 2, 0, 1, 2]),
    )
    .unwrap();
    std::fs::write(p.join("t10k-images-idx3-ubyte"), idx_images(2, 3, 3)).unwrap();
    std::fs::write(
        p.join("t10k-labels-idx1-ubyte.gz"),
        gzip(&idx_labels(&[2, 1])),
    )
    .unwrap();
    let tt = idx_dataset(p, "mnist", 3).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (6, 2));
    assert_eq!(tt.train.name, "mnist");
    assert_eq!(tt.test.labels, vec![2, 1]);
    assert_eq!(tt.train.image_shape, Some(ImageShape::grey(3, 3)));
    // The same directory through the Fashion-MNIST entry point.
    assert_eq!(fashion_mnist(Some(p)).unwrap().train.name, "fashion-mnist");
}

#[test]
fn idx_truncated_header() {
    let images = idx_images(2, 2, 2);
    let msg = err_msg(parse_idx_images(&images[..10], "train-images-idx3-ubyte"));
    assert_contains(
        &msg,
        &[
            "train-images-idx3-ubyte",
            "truncated header",
            "expected 16 bytes",
            "found 10",
        ],
    );
    let labels = idx_labels(&[1, 2]);
    let msg = err_msg(parse_idx_labels(&labels[..6], "lab.idx"));
    assert_contains(
        &msg,
        &["lab.idx", "truncated header", "expected 8 bytes", "found 6"],
    );
    // Fewer than 4 bytes: no magic to check, still a truncated header.
    let msg = err_msg(parse_idx_labels(&labels[..2], "lab.idx"));
    assert_contains(&msg, &["truncated header", "found 2"]);
}

#[test]
fn idx_truncated_payload() {
    let images = idx_images(3, 2, 2); // 16 + 12 bytes
    let msg = err_msg(parse_idx_images(&images[..25], "img.idx"));
    assert_contains(
        &msg,
        &[
            "img.idx",
            "truncated",
            "3 images of 2x2",
            "need 28 bytes",
            "found 25",
        ],
    );
    // Compressed: counts are after decompression.
    let msg = err_msg(parse_idx_images(&gzip(&images[..25]), "img.gz"));
    assert_contains(
        &msg,
        &["img.gz", "need 28 bytes after decompression, found 25"],
    );
    let labels = idx_labels(&[0, 1, 2]);
    let msg = err_msg(parse_idx_labels(&labels[..9], "lab.idx"));
    assert_contains(&msg, &["lab.idx", "3 labels", "need 11 bytes", "found 9"]);
}

#[test]
fn idx_truncated_gzip_stream() {
    let gz = gzip(&idx_images(50, 8, 8));
    let cut = &gz[..gz.len() / 2];
    let msg = err_msg(parse_idx_images(cut, "cut.gz"));
    assert_contains(&msg, &["cut.gz"]);
    assert!(
        msg.contains("gzip") || msg.contains("truncated"),
        "unexpected message {msg:?}"
    );
}

#[test]
fn idx_wrong_magic() {
    let labels = idx_labels(&[0, 1]);
    let msg = err_msg(parse_idx_images(&labels, "swapped.idx"));
    assert_contains(
        &msg,
        &[
            "swapped.idx",
            "wrong magic number 0x00000801",
            "expected 0x00000803",
        ],
    );
    let msg = err_msg(parse_idx_labels(b"hello world!", "text.idx"));
    assert_contains(
        &msg,
        &["text.idx", "wrong magic number 0x68656c6c", "0x00000801"],
    );
}

#[test]
fn idx_trailing_bytes() {
    let mut images = idx_images(1, 2, 2);
    images.extend_from_slice(&[1, 2, 3]);
    let msg = err_msg(parse_idx_images(&images, "long.idx"));
    assert_contains(&msg, &["long.idx", "size mismatch", "20 bytes", "found 23"]);
}

#[test]
fn idx_size_mismatch_images_labels() {
    let msg = err_msg(parse_idx_pair(
        &idx_images(3, 2, 2),
        "imgs.idx",
        &idx_labels(&[0, 1]),
        "labs.idx",
        "x",
        2,
    ));
    assert_contains(&msg, &["labs.idx", "2 labels", "imgs.idx", "3 images"]);
}

#[test]
fn idx_label_out_of_range() {
    let err = parse_idx_pair(
        &idx_images(3, 1, 1),
        "i",
        &idx_labels(&[9, 0, 10]),
        "labels.idx",
        "x",
        10,
    )
    .unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { label: 10, .. }));
    assert_contains(
        &err.to_string(),
        &["labels.idx", "label 10 at sample 2", "0..10"],
    );
}

#[test]
fn idx_empty_and_zero_size() {
    let err = parse_idx_images(&idx_images(0, 2, 2), "none.idx").unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }));
    assert_contains(&err.to_string(), &["none.idx", "no samples"]);
    let msg = err_msg(parse_idx_images(&idx_images(2, 0, 3), "flat.idx"));
    assert_contains(&msg, &["flat.idx", "0x3"]);
}

#[test]
fn idx_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("nope-images");
    let lab = dir.path().join("nope-labels");
    let err = load_idx_pair(&img, &lab, "x", 10).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }));
    assert_contains(&err.to_string(), &["nope-images", "not found"]);
}

#[test]
fn fashion_missing_directory_explains_how_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let err = fashion_mnist(Some(&missing)).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }));
    let msg = err.to_string();
    assert_contains(
        &msg,
        &[
            &missing.display().to_string(),
            "train-images-idx3-ubyte",
            "does not exist",
            "apt-get install dataset-fashion-mnist",
            "data.path",
        ],
    );
    // A directory holding only some files names the first missing one.
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), b"x").unwrap();
    let msg = err_msg(idx_dataset(dir.path(), "mnist", 10));
    assert_contains(&msg, &["train-labels-idx1-ubyte", "data.path"]);
}

#[test]
fn fashion_mnist_installed() {
    let why = "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
    if !clef_testkit::require_resource(Path::new(DEBIAN_FASHION_MNIST_DIR).is_dir(), why) {
        return;
    }
    let start = std::time::Instant::now();
    let tt = fashion_mnist(None).unwrap();
    eprintln!("Fashion-MNIST loaded in {:?}", start.elapsed());
    assert_eq!(tt.train.len(), 60_000);
    assert_eq!(tt.test.len(), 10_000);
    assert_eq!(tt.train.dim, 784);
    assert_eq!(tt.train.num_classes, 10);
    assert_eq!(tt.train.image_shape, Some(ImageShape::grey(28, 28)));
    assert_eq!(tt.train.class_counts(), vec![6000; 10]);
    assert_eq!(tt.test.class_counts(), vec![1000; 10]);
    check_unit_range(&tt.train);
    check_unit_range(&tt.test);
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_plain_and_gzip_agree() {
    let text = b"0,8,16,1\n16,0,4,0\n";
    let plain = parse_csv_gz(text, "toy.csv", 16.0, 2, None).unwrap();
    assert_eq!(plain.features, vec![0.0, 0.5, 1.0, 1.0, 0.0, 0.25]);
    assert_eq!(plain.labels, vec![1, 0]);
    assert_eq!(plain.dim, 3);
    assert_eq!(plain.image_shape, None);
    let gz = parse_csv_gz(&gzip(text), "toy.csv", 16.0, 2, None).unwrap();
    assert_eq!(gz, plain);
}

#[test]
fn csv_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny_set.csv.gz");
    std::fs::write(&path, gzip(b"1,2,3,4,0\n4,3,2,1,1\n")).unwrap();
    let ds = load_csv_gz(&path, 4.0, 2, Some(ImageShape::grey(2, 2))).unwrap();
    assert_eq!(ds.name, "tiny_set");
    assert_eq!(ds.image_shape, Some(ImageShape::grey(2, 2)));
    assert_eq!(ds.row(1), &[1.0, 0.75, 0.5, 0.25]);

    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, b"1,2,0\n1,x,0\n").unwrap();
    let msg = err_msg(load_csv_gz(&bad, 4.0, 2, None));
    assert_contains(&msg, &[&bad.display().to_string(), "line 2, column 2"]);

    let missing = dir.path().join("absent.csv.gz");
    let err = load_csv_gz(&missing, 4.0, 2, None).unwrap_err();
    assert!(matches!(err, DataError::MissingFile { .. }));
    assert_contains(&err.to_string(), &["absent.csv.gz", "not found"]);
}

#[test]
fn csv_ragged_row() {
    let msg = err_msg(parse_csv_gz(
        b"1,2,3,0\n1,2,3,1\n1,2,1\n",
        "rag.csv",
        4.0,
        2,
        None,
    ));
    assert_contains(
        &msg,
        &["rag.csv", "line 3 has 3 fields, expected 4 (as on line 1)"],
    );
    let msg = err_msg(parse_csv_gz(b"1,2,0\n\n1,2,3,1\n", "rag.csv", 4.0, 2, None));
    assert_contains(&msg, &["line 3 has 4 fields, expected 3"]);
}

#[test]
fn csv_non_numeric_field() {
    let msg = err_msg(parse_csv_gz(b"1,2,0\n1,abc,1\n", "nn.csv", 4.0, 2, None));
    assert_contains(
        &msg,
        &["nn.csv", "line 2, column 2", "\"abc\"", "not a number"],
    );
    let msg = err_msg(parse_csv_gz(b"1,2,0\n1,2,one\n", "nn.csv", 4.0, 2, None));
    assert_contains(&msg, &["line 2, column 3", "label \"one\" is not a number"]);
    let msg = err_msg(parse_csv_gz(b"1,2,0\n1,,1\n", "nn.csv", 4.0, 2, None));
    assert_contains(&msg, &["line 2, column 2", "\"\" is not a number"]);
}

#[test]
fn csv_pixel_above_max() {
    let err = parse_csv_gz(b"0,16,3\n17,0,1\n", "px.csv", 16.0, 10, None).unwrap_err();
    assert!(matches!(err, DataError::PixelOutOfRange { column: 1, .. }));
    assert_contains(
        &err.to_string(),
        &["px.csv", "pixel value 17 at line 2, column 1", "[0, 16]"],
    );
}

#[test]
fn csv_label_out_of_range() {
    let msg = err_msg(parse_csv_gz(b"0,1,2\n0,1,9\n", "lab.csv", 1.0, 3, None));
    assert_contains(&msg, &["lab.csv", "label 9 at line 2", "0..3"]);
}

#[test]
fn csv_truncated_gzip() {
    let text: String = (0..2000)
        .map(|i| format!("{},{},{}\n", i % 7, i % 5, i % 3))
        .collect();
    let gz = gzip(text.as_bytes());
    let msg = err_msg(parse_csv_gz(
        &gz[..gz.len() - 10],
        "cut.csv.gz",
        10.0,
        3,
        None,
    ));
    assert_contains(&msg, &["cut.csv.gz", "corrupt or truncated gzip"]);
    let msg = err_msg(parse_csv_gz(
        &gz[..gz.len() / 2],
        "cut.csv.gz",
        10.0,
        3,
        None,
    ));
    assert_contains(&msg, &["cut.csv.gz", "corrupt or truncated gzip"]);
}

#[test]
fn csv_empty() {
    let err = parse_csv_gz(b"\n \n", "blank.csv", 1.0, 2, None).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }));
    assert_contains(&err.to_string(), &["blank.csv", "no samples"]);
    assert!(matches!(
        parse_csv_gz(&gzip(b""), "blank.csv.gz", 1.0, 2, None),
        Err(DataError::Empty { .. })
    ));
}

// ---------------------------------------------------------------- split

/// `n` samples of dim 1 whose feature identifies the sample; class sizes from `sizes`.
fn indexed(sizes: &[usize]) -> Dataset {
    let labels: Vec<u32> = sizes
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
        .collect();
    // Interleave classes a little so that sample order and class order differ.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| (i * 7919) % labels.len());
    let labels: Vec<u32> = order.iter().map(|&i| labels[i]).collect();
    let n = labels.len();
    Dataset {
        name: "indexed".into(),
        features: (0..n).map(|i| i as f32 / n as f32).collect(),
        labels,
        dim: 1,
        num_classes: sizes.len(),
        image_shape: None,
        normalization: None,
        loaded_hashes: None,
    }
}

fn ids(ds: &Dataset, all: &Dataset) -> Vec<usize> {
    let pos: HashMap<u32, usize> = all
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.to_bits(), i))
        .collect();
    ds.features.iter().map(|f| pos[&f.to_bits()]).collect()
}

#[test]
fn split_sizes_per_class() {
    let ds = indexed(&[10, 7, 3, 2, 1, 100]);
    let tt = stratified_split(&ds, 0.25, 42).unwrap();
    // round(0.25 * n) clamped to 1..=n-1 for n >= 2; a single sample stays in train.
    assert_eq!(tt.test.class_counts(), vec![3, 2, 1, 1, 0, 25]);
    assert_eq!(tt.train.class_counts(), vec![7, 5, 2, 1, 1, 75]);
    let tt = stratified_split(&ds, 0.9, 42).unwrap();
    assert_eq!(tt.test.class_counts(), vec![9, 6, 2, 1, 0, 90]);
    assert_eq!(tt.train.num_classes, 6);
    assert_eq!(tt.test.dim, 1);
}

#[test]
fn split_disjoint_union_and_ordered() {
    let ds = indexed(&[40, 33, 27]);
    let tt = stratified_split(&ds, 0.3, 7).unwrap();
    let train = ids(&tt.train, &ds);
    let test = ids(&tt.test, &ds);
    assert!(
        train.windows(2).all(|w| w[0] < w[1]),
        "train not in original order"
    );
    assert!(
        test.windows(2).all(|w| w[0] < w[1]),
        "test not in original order"
    );
    let mut all: Vec<usize> = train.iter().chain(&test).cloned().collect();
    all.sort_unstable();
    assert_eq!(all, (0..ds.len()).collect::<Vec<_>>());
    for (i, &id) in train.iter().enumerate() {
        assert_eq!(tt.train.labels[i], ds.labels[id]);
    }
    for (i, &id) in test.iter().enumerate() {
        assert_eq!(tt.test.labels[i], ds.labels[id]);
    }
}

#[test]
fn split_deterministic_per_seed() {
    let ds = digits().unwrap();
    let a = stratified_split(&ds, 0.2, 3).unwrap();
    let b = stratified_split(&ds, 0.2, 3).unwrap();
    assert_eq!(a, b);
    let c = stratified_split(&ds, 0.2, 4).unwrap();
    assert_ne!(a.test.features, c.test.features);
    assert_eq!(a.test.class_counts(), c.test.class_counts());
    assert_eq!(a.test.len() + a.train.len(), 1797);
}

#[test]
fn split_rejects_bad_fractions() {
    let ds = indexed(&[5, 5]);
    for f in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
        let err = stratified_split(&ds, f, 1).unwrap_err();
        assert!(matches!(err, DataError::Split { .. }));
        assert_contains(
            &err.to_string(),
            &["cannot split indexed", "test_fraction", "between 0 and 1"],
        );
    }
    let msg = err_msg(stratified_split(&indexed(&[1, 1]), 0.5, 1));
    assert_contains(&msg, &["indexed", "test set would be empty"]);
    let mut bad = indexed(&[3, 3]);
    bad.labels[4] = 2;
    let msg = err_msg(stratified_split(&bad, 0.5, 1));
    assert_contains(&msg, &["indexed", "label 2 at sample 4"]);
}

// ---------------------------------------------------------------- synthetic

#[test]
fn synthetic_blobs_shape_range_and_determinism() {
    let a = gaussian_blobs(4, 16, 25, 5, 1.0, 9);
    assert_eq!((a.train.len(), a.test.len()), (100, 20));
    assert_eq!(a.train.dim, 16);
    // Blobs are not images, even when the dimension is a square.
    assert_eq!(a.train.image_shape, None);
    assert_eq!(a.train.class_counts(), vec![25; 4]);
    assert_eq!(a.test.class_counts(), vec![5; 4]);
    assert_eq!(&a.train.labels[..5], &[0, 1, 2, 3, 0]);
    assert!(a
        .train
        .features
        .iter()
        .chain(&a.test.features)
        .all(|x| (0.0..=1.0).contains(x)));
    assert_eq!(a, gaussian_blobs(4, 16, 25, 5, 1.0, 9));
    assert_ne!(
        a.train.features,
        gaussian_blobs(4, 16, 25, 5, 1.0, 10).train.features
    );
    assert_eq!(gaussian_blobs(3, 10, 2, 2, 1.0, 0).train.image_shape, None);
}

#[test]
fn synthetic_blobs_are_separable() {
    // Nearest class mean (estimated on train) should classify the test set well.
    let tt = gaussian_blobs(5, 20, 50, 40, 2.0, 1);
    let (k, d) = (5, 20);
    let mut means = vec![0.0f32; k * d];
    for i in 0..tt.train.len() {
        let c = tt.train.labels[i] as usize;
        for (m, x) in means[c * d..(c + 1) * d].iter_mut().zip(tt.train.row(i)) {
            *m += x / 50.0;
        }
    }
    let correct = (0..tt.test.len())
        .filter(|&i| {
            let row = tt.test.row(i);
            let best = (0..k)
                .min_by(|&a, &b| {
                    let da: f32 = row
                        .iter()
                        .zip(&means[a * d..])
                        .map(|(x, m)| (x - m).powi(2))
                        .sum();
                    let db: f32 = row
                        .iter()
                        .zip(&means[b * d..])
                        .map(|(x, m)| (x - m).powi(2))
                        .sum();
                    da.total_cmp(&db)
                })
                .unwrap();
            best == tt.test.labels[i] as usize
        })
        .count();
    assert!(
        correct as f32 / tt.test.len() as f32 > 0.95,
        "{correct}/200"
    );
}

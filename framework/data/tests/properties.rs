//! Property-based tests (proptest) of the data parsers: arbitrary input never panics, valid
//! input round-trips, and every truncation is an error.

use clef_data::csv::parse_csv_gz;
use clef_data::idx::{parse_idx_images, parse_idx_labels};
use clef_data::ImageShape;
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
        let _ = parse_csv_gz(text.as_bytes(), "fuzz", 255.0, classes, Some(ImageShape::grey(2, 2)));
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
        let d = parse_csv_gz(text.as_bytes(), "rt", 255.0, 10, Some(ImageShape::grey(2, 2))).unwrap();
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
        let err = parse_csv_gz(bad.as_bytes(), "rt", 255.0, 10, Some(ImageShape::grey(2, 2))).unwrap_err();
        prop_assert!(err.to_string().contains("rt"), "{}", err);
    }
}

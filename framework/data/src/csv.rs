//! Reader for numeric CSV files, gzip-compressed or plain.
//!
//! Format: one sample per line, the pixel values first and an integer label in the last column,
//! fields separated by commas. Compression is detected from the gzip magic bytes `1f 8b`, not from
//! the file name. Rules:
//!
//! * There is **no header line**: a non-numeric first line is an error (naming line 1), not
//!   silently skipped, so that a corrupt first sample cannot go unnoticed.
//! * Empty (or whitespace-only) lines are skipped; `\r\n` line ends are accepted; spaces around
//!   fields are ignored.
//! * Every line must have as many fields as the first one, and at least two.
//! * Pixels must be numbers in `[0, pixel_max]`; they are divided by `pixel_max`.
//! * Labels must be integers in `0..num_classes` (`3.0` is rejected as not an integer).
//!
//! Line and column numbers in errors are one-based and count skipped lines.

use std::path::Path;

use super::error::Location;
use super::idx::{maybe_decompress, read_file};
use super::{DataError, Dataset, ImageShape};

/// Parses CSV data (gzip-compressed or plain) held in memory into a [`Dataset`] named `source`.
///
/// Pixels are divided by `pixel_max`; labels must be below `num_classes`. If `image_shape` is
/// `Some(shape)`, every row must hold `shape.len()` pixels. `source` also names the data in errors.
pub fn parse_csv_gz(
    bytes: &[u8],
    source: &str,
    pixel_max: f32,
    num_classes: usize,
    image_shape: Option<ImageShape>,
) -> Result<Dataset, DataError> {
    if !(pixel_max.is_finite() && pixel_max > 0.0) {
        return Err(DataError::format(
            source,
            format!("pixel_max must be a positive number, got {pixel_max}"),
        ));
    }
    let text = maybe_decompress(bytes, source)?;
    let text: &[u8] = &text;

    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<u32> = Vec::new();
    // (number of fields, line number) of the first data line.
    let mut first: Option<(usize, usize)> = None;

    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let fields = line.iter().filter(|&&b| b == b',').count() + 1;
        let (ncols, first_line) = match first {
            Some(f) => f,
            None => {
                check_width(source, line_no, fields, image_shape)?;
                let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
                features.reserve(lines.saturating_sub(i) * (fields - 1));
                labels.reserve(lines.saturating_sub(i));
                first = Some((fields, line_no));
                (fields, line_no)
            }
        };
        if fields != ncols {
            return Err(DataError::format(
                source,
                format!(
                    "line {line_no} has {fields} fields, expected {ncols} (as on line {first_line})"
                ),
            ));
        }
        let mut parts = line.split(|&b| b == b',');
        for (c, field) in parts.by_ref().take(ncols - 1).enumerate() {
            let column = c + 1;
            let value = parse_number(field)
                .ok_or_else(|| not_a_number(source, line_no, column, field, "pixel value"))?;
            if !(value >= 0.0 && value <= pixel_max) {
                return Err(DataError::PixelOutOfRange {
                    path: source.to_string(),
                    location: Location::Line(line_no),
                    column,
                    value,
                    max: pixel_max,
                });
            }
            features.push(value / pixel_max);
        }
        let field = parts.next().unwrap_or_default();
        let label = parse_label(source, line_no, ncols, field)?;
        if label < 0 || label as u64 >= num_classes as u64 {
            return Err(DataError::LabelOutOfRange {
                path: source.to_string(),
                location: Location::Line(line_no),
                label,
                num_classes,
            });
        }
        labels.push(label as u32);
    }

    let Some((ncols, _)) = first else {
        return Err(DataError::Empty {
            path: source.to_string(),
        });
    };
    Ok(Dataset {
        name: source.to_string(),
        features,
        labels,
        dim: ncols - 1,
        num_classes,
        image_shape,
        normalization: None,
        loaded_hashes: None,
    })
}

/// Loads a CSV file (gzip-compressed or plain); see [`parse_csv_gz`].
///
/// Errors name the path; the data set is named after the file without `.gz` and `.csv`
/// (`dir/my_digits.csv.gz` → `my_digits`).
pub fn load_csv_gz(
    path: &Path,
    pixel_max: f32,
    num_classes: usize,
    image_shape: Option<ImageShape>,
) -> Result<Dataset, DataError> {
    let bytes = read_file(path)?;
    let mut ds = parse_csv_gz(
        &bytes,
        &path.display().to_string(),
        pixel_max,
        num_classes,
        image_shape,
    )?;
    if let Some(file) = path.file_name().and_then(|f| f.to_str()) {
        let stem = file.strip_suffix(".gz").unwrap_or(file);
        let stem = stem.strip_suffix(".csv").unwrap_or(stem);
        if !stem.is_empty() {
            ds.name = stem.to_string();
        }
    }
    Ok(ds)
}

fn check_width(
    source: &str,
    line_no: usize,
    fields: usize,
    image_shape: Option<ImageShape>,
) -> Result<(), DataError> {
    if fields < 2 {
        return Err(DataError::format(
            source,
            format!(
                "line {line_no} has {fields} field, expected at least 2 (pixels, then the label)"
            ),
        ));
    }
    if let Some(s) = image_shape {
        let need = s
            .channels
            .checked_mul(s.height)
            .and_then(|v| v.checked_mul(s.width));
        if need != Some(fields - 1) {
            let what = if s.channels == 1 {
                format!("{}x{}", s.height, s.width)
            } else {
                s.to_string()
            };
            return Err(DataError::format(
                source,
                format!(
                    "line {line_no} has {} pixel values, but images of {what} need {}",
                    fields - 1,
                    s.channels.saturating_mul(s.height).saturating_mul(s.width)
                ),
            ));
        }
    }
    Ok(())
}

/// Parses a number; plain non-negative integers (the usual case) take a fast path.
fn parse_number(field: &[u8]) -> Option<f32> {
    let f = field.trim_ascii();
    if !f.is_empty() && f.len() <= 7 && f.iter().all(u8::is_ascii_digit) {
        let v = f.iter().fold(0u32, |v, &b| v * 10 + u32::from(b - b'0'));
        return Some(v as f32);
    }
    std::str::from_utf8(f).ok()?.parse::<f32>().ok()
}

fn parse_label(
    source: &str,
    line_no: usize,
    column: usize,
    field: &[u8],
) -> Result<i64, DataError> {
    let f = field.trim_ascii();
    let text = std::str::from_utf8(f).ok();
    if let Some(v) = text.and_then(|t| t.parse::<i64>().ok()) {
        return Ok(v);
    }
    if text.and_then(|t| t.parse::<f64>().ok()).is_some() {
        return Err(DataError::format(
            source,
            format!(
                "line {line_no}, column {column}: label {} is not an integer",
                show(f)
            ),
        ));
    }
    Err(not_a_number(source, line_no, column, field, "label"))
}

fn not_a_number(
    source: &str,
    line_no: usize,
    column: usize,
    field: &[u8],
    what: &str,
) -> DataError {
    let hint = if line_no == 1 {
        " (CSV files must not have a header line)"
    } else {
        ""
    };
    DataError::format(
        source,
        format!(
            "line {line_no}, column {column}: {what} {} is not a number{hint}",
            show(field.trim_ascii())
        ),
    )
}

/// Quotes a field for an error message, shortened to 24 characters.
fn show(field: &[u8]) -> String {
    let s = String::from_utf8_lossy(field);
    if s.chars().count() > 24 {
        format!("{:?}...", s.chars().take(24).collect::<String>())
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_number_fast_and_slow_paths() {
        assert_eq!(parse_number(b"0"), Some(0.0));
        assert_eq!(parse_number(b" 255 "), Some(255.0));
        assert_eq!(parse_number(b"12.5"), Some(12.5));
        assert_eq!(parse_number(b"1e2"), Some(100.0));
        assert_eq!(parse_number(b"12345678"), Some(12_345_678.0));
        assert_eq!(parse_number(b""), None);
        assert_eq!(parse_number(b"x1"), None);
    }

    #[test]
    fn crlf_blank_lines_and_spaces() {
        let ds = parse_csv_gz(b"0, 2,1\r\n\r\n  \n4,0 , 0\n", "t", 4.0, 2, None).unwrap();
        assert_eq!(ds.features, vec![0.0, 0.5, 1.0, 0.0]);
        assert_eq!(ds.labels, vec![1, 0]);
        assert_eq!(ds.dim, 2);
        assert_eq!(ds.name, "t");
    }

    #[test]
    fn header_line_is_rejected_with_hint() {
        let err = parse_csv_gz(b"p0,p1,label\n1,2,0\n", "h.csv", 4.0, 2, None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("h.csv") && msg.contains("line 1, column 1"),
            "{msg}"
        );
        assert!(msg.contains("header"), "{msg}");
    }

    #[test]
    fn non_integer_and_negative_labels() {
        let msg = parse_csv_gz(b"1,2,1.5\n", "f", 4.0, 3, None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 1, column 3: label \"1.5\" is not an integer"),
            "{msg}"
        );
        let err = parse_csv_gz(b"1,2,0\n1,2,-1\n", "f", 4.0, 3, None).unwrap_err();
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                label: -1,
                location: Location::Line(2),
                ..
            }
        ));
    }

    #[test]
    fn nan_and_negative_pixels_are_out_of_range() {
        for bad in ["NaN", "-1", "inf"] {
            let text = format!("1,{bad},0\n");
            let err = parse_csv_gz(text.as_bytes(), "p", 4.0, 3, None).unwrap_err();
            assert!(
                matches!(err, DataError::PixelOutOfRange { column: 2, .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn image_shape_must_match_width() {
        let msg = parse_csv_gz(b"1,2,3,0\n", "s", 4.0, 3, Some(ImageShape::grey(2, 2)))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("3 pixel values, but images of 2x2 need 4"),
            "{msg}"
        );
        let ds = parse_csv_gz(b"1,2,3,4,0\n", "s", 4.0, 3, Some(ImageShape::grey(2, 2))).unwrap();
        assert_eq!(ds.image_shape, Some(ImageShape::grey(2, 2)));
        let rgb = Some(ImageShape::new(3, 1, 2));
        let msg = parse_csv_gz(b"1,2,3,4,0\n", "s", 4.0, 3, rgb)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("images of 3x1x2 need 6"), "{msg}");
        let ds = parse_csv_gz(b"1,2,3,4,0,1,2\n", "s", 4.0, 3, rgb).unwrap();
        assert_eq!((ds.dim, ds.image_shape), (6, rgb));
    }

    #[test]
    fn single_column_and_bad_pixel_max() {
        let msg = parse_csv_gz(b"3\n", "one", 4.0, 5, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("expected at least 2"), "{msg}");
        let msg = parse_csv_gz(b"1,0\n", "m", 0.0, 5, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pixel_max"), "{msg}");
    }
}

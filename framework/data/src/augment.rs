//! Training-time augmentation of image rows (`[train] augment`): a seeded random crop with
//! padding and a random horizontal flip, as torchvision's `RandomCrop(size, padding=p)` and
//! `RandomHorizontalFlip()`.
//!
//! The trainer applies them in place to the rows of a training batch right after gathering them
//! (never to evaluation rows, never to rows a strategy appends), with a seed derived from the
//! trial seed, the task and the step, so the same config and seed give the same batches. Each
//! row draws, in the order the operations are listed: for `crop:p` a top-left corner `(dy, dx)`
//! uniform in `0..=2p` of the image padded by `p` on every side (the crop keeps the image's
//! size); for `hflip` a fair coin. Padding is black: 0, or `-mean/std` per channel after
//! normalisation, so that it is the same pixel it would be had the image been padded first.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{ImageShape, Normalization};

/// One augmentation, written `"crop:P"` (random crop with `P` pixels of padding, P >= 1) or
/// `"hflip"` (horizontal flip with probability 1/2) in a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Augment {
    /// Pad by `padding` pixels on every side, then crop the original size at a random offset.
    Crop {
        /// Pixels of padding on each side.
        padding: usize,
    },
    /// Mirror left-right with probability 1/2.
    HFlip,
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Augment::Crop { padding } => write!(f, "crop:{padding}"),
            Augment::HFlip => f.write_str("hflip"),
        }
    }
}

impl std::str::FromStr for Augment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "hflip" {
            return Ok(Augment::HFlip);
        }
        if let Some(p) = s.strip_prefix("crop:") {
            return match p.parse::<usize>() {
                Ok(padding) if padding >= 1 => Ok(Augment::Crop { padding }),
                _ => Err(format!(
                    "augmentation `{s}`: the crop padding must be an integer >= 1, e.g. \"crop:4\""
                )),
            };
        }
        Err(format!(
            "unknown augmentation `{s}`, expected \"crop:P\" (random crop with P pixels of \
             padding) or \"hflip\""
        ))
    }
}

impl TryFrom<String> for Augment {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Augment> for String {
    fn from(a: Augment) -> String {
        a.to_string()
    }
}

/// Applies a list of augmentations to rows of images of one shape.
#[derive(Debug, Clone)]
pub struct Augmenter {
    ops: Vec<Augment>,
    shape: ImageShape,
    /// The value of a padded (black) pixel, per channel.
    fill: Vec<f32>,
    scratch: Vec<f32>,
}

impl Augmenter {
    /// An augmenter of `ops` for images of `shape`, whose features were standardised by
    /// `normalization` if given (padding is then `-mean/std`, else 0).
    pub fn new(ops: &[Augment], shape: ImageShape, normalization: Option<&Normalization>) -> Self {
        let fill = match normalization {
            Some(n) if n.mean.len() == shape.channels => n.zero_pixel(),
            _ => vec![0.0; shape.channels],
        };
        Augmenter {
            ops: ops.to_vec(),
            shape,
            fill,
            scratch: vec![0.0; shape.len()],
        }
    }

    /// Augments the first `rows` rows of `x` (each `shape.len()` features) in place, with the
    /// random draws of a [`ChaCha8Rng`] seeded by `seed`.
    pub fn apply(&mut self, x: &mut [f32], rows: usize, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dim = self.shape.len();
        for row in x.chunks_exact_mut(dim).take(rows) {
            for &op in &self.ops {
                match op {
                    Augment::Crop { padding } => {
                        let dy = rng.gen_range(0..=2 * padding);
                        let dx = rng.gen_range(0..=2 * padding);
                        crop(
                            row,
                            self.shape,
                            padding,
                            dy,
                            dx,
                            &self.fill,
                            &mut self.scratch,
                        );
                        row.copy_from_slice(&self.scratch);
                    }
                    Augment::HFlip => {
                        if rng.gen_bool(0.5) {
                            hflip(row, self.shape);
                        }
                    }
                }
            }
        }
    }
}

/// Writes into `out` the crop of `img` padded by `padding` on every side (with `fill[c]` in
/// channel `c`) whose top-left corner is `(dy, dx)` in the padded image: `out[c][y][x] =
/// img[c][y + dy - padding][x + dx - padding]`, or the fill outside the image.
pub fn crop(
    img: &[f32],
    shape: ImageShape,
    padding: usize,
    dy: usize,
    dx: usize,
    fill: &[f32],
    out: &mut [f32],
) {
    let (h, w) = (shape.height, shape.width);
    // Source column of output column x is x + dx - padding; the valid x form one run.
    let x_lo = padding.saturating_sub(dx).min(w);
    let x_hi = (w + padding).saturating_sub(dx).min(w).max(x_lo);
    for ((src, dst), &f) in img
        .chunks_exact(shape.plane())
        .zip(out.chunks_exact_mut(shape.plane()))
        .zip(fill)
    {
        for (y, orow) in dst.chunks_exact_mut(w).enumerate() {
            let sy = (y + dy).checked_sub(padding).filter(|&sy| sy < h);
            match sy {
                Some(sy) if x_lo < x_hi => {
                    orow[..x_lo].fill(f);
                    let s0 = x_lo + dx - padding;
                    orow[x_lo..x_hi]
                        .copy_from_slice(&src[sy * w + s0..sy * w + s0 + (x_hi - x_lo)]);
                    orow[x_hi..].fill(f);
                }
                _ => orow.fill(f),
            }
        }
    }
}

/// Mirrors every channel of `img` left-right in place.
pub fn hflip(img: &mut [f32], shape: ImageShape) {
    for row in img.chunks_exact_mut(shape.width) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        for s in ["crop:4", "crop:1", "hflip"] {
            let a: Augment = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert_eq!("crop:4".parse(), Ok(Augment::Crop { padding: 4 }));
        for bad in ["crop:0", "crop:-1", "crop:x", "crop", "flip", ""] {
            let e = bad.parse::<Augment>().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }
}

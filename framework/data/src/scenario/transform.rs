//! Per-task input transforms applied when a batch is gathered.

/// An input transform: identity, a pixel permutation, or an image rotation.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Inputs unchanged.
    Identity,
    /// `out[i] = in[perm[i]]`.
    Permute(Vec<u32>),
    /// Bilinear rotation about the image centre: each output pixel is a weighted sum of up to
    /// four input pixels (`taps[4 i .. 4 i + 4]`) of its own channel; pixels that fall outside
    /// are zero. The taps describe one `h x w` plane; an input of several channel-major planes
    /// is rotated plane by plane.
    Rotate {
        /// Rotation angle in degrees (counter-clockwise).
        degrees: f32,
        /// Source pixel of each tap.
        taps: Vec<u32>,
        /// Weight of each tap (0 for taps outside the image).
        weights: Vec<f32>,
    },
}

impl Transform {
    /// A rotation of an `h x w` row-major image by `degrees` counter-clockwise, with bilinear
    /// interpolation and zero fill.
    pub fn rotation(h: usize, w: usize, degrees: f32) -> Transform {
        let theta = (degrees as f64).to_radians();
        let (s, c) = theta.sin_cos();
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let mut taps = Vec::with_capacity(h * w * 4);
        let mut weights = Vec::with_capacity(h * w * 4);
        for y in 0..h {
            for x in 0..w {
                // Inverse map: where does output (y, x) come from in the input?
                let (dy, dx) = (y as f64 - cy, x as f64 - cx);
                let sx = c * dx - s * dy + cx;
                let sy = s * dx + c * dy + cy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                for (oy, ox, wgt) in [
                    (0.0, 0.0, (1.0 - fy) * (1.0 - fx)),
                    (0.0, 1.0, (1.0 - fy) * fx),
                    (1.0, 0.0, fy * (1.0 - fx)),
                    (1.0, 1.0, fy * fx),
                ] {
                    let (py, px) = (y0 + oy, x0 + ox);
                    if py >= 0.0 && px >= 0.0 && (py as usize) < h && (px as usize) < w {
                        taps.push((py as usize * w + px as usize) as u32);
                        weights.push(wgt as f32);
                    } else {
                        taps.push(0);
                        weights.push(0.0);
                    }
                }
            }
        }
        Transform::Rotate {
            degrees,
            taps,
            weights,
        }
    }

    /// Writes the transformed `input` into `out` (same length; for a rotation, a whole number
    /// of planes).
    pub fn apply(&self, input: &[f32], out: &mut [f32]) {
        match self {
            Transform::Identity => out.copy_from_slice(input),
            Transform::Permute(perm) => {
                for (o, &p) in out.iter_mut().zip(perm) {
                    *o = input[p as usize];
                }
            }
            Transform::Rotate { taps, weights, .. } => {
                let plane = taps.len() / 4;
                for (inp, out) in input.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
                    for (i, o) in out.iter_mut().enumerate() {
                        let k = 4 * i;
                        let mut v = 0.0;
                        for j in k..k + 4 {
                            v += weights[j] * inp[taps[j] as usize];
                        }
                        *o = v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_zero_is_identity_and_by_90_moves_corners() {
        let img: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut out = vec![0.0; 9];
        Transform::rotation(3, 3, 0.0).apply(&img, &mut out);
        for (a, b) in img.iter().zip(&out) {
            assert!((a - b).abs() < 1e-6);
        }
        // 90 degrees counter-clockwise: the top-right pixel (2) moves to the top-left.
        Transform::rotation(3, 3, 90.0).apply(&img, &mut out);
        let expected = [2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0];
        for (a, b) in expected.iter().zip(&out) {
            assert!((a - b).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn rotation_turns_every_channel_of_a_multi_channel_image() {
        // Two 3x3 planes: the second is the first plus 100.
        let img: Vec<f32> = (0..18).map(|v| (v % 9 + 100 * (v / 9)) as f32).collect();
        let mut out = vec![0.0; 18];
        Transform::rotation(3, 3, 90.0).apply(&img, &mut out);
        let expected = [2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0];
        for (c, plane) in out.chunks(9).enumerate() {
            for (a, b) in expected.iter().zip(plane) {
                assert!((a + 100.0 * c as f32 - b).abs() < 1e-4, "{out:?}");
            }
        }
    }

    #[test]
    fn permutation_reorders_pixels() {
        let t = Transform::Permute(vec![2, 0, 1]);
        let mut out = [0.0; 3];
        t.apply(&[10.0, 20.0, 30.0], &mut out);
        assert_eq!(out, [30.0, 10.0, 20.0]);
    }

    #[test]
    fn rotation_keeps_mass_of_a_centred_blob_roughly() {
        let (h, w) = (9, 9);
        let mut img = vec![0.0f32; h * w];
        img[4 * w + 4] = 1.0;
        let mut out = vec![0.0; h * w];
        Transform::rotation(h, w, 33.0).apply(&img, &mut out);
        assert!((out[4 * w + 4] - 1.0).abs() < 1e-6, "centre is fixed");
    }
}

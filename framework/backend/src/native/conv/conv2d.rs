//! 2-D convolution on channels-last activations: im2col into `[pixels, kh * kw * cin]` patches
//! of a sub-chunk of samples, one GEMM against the repacked weight, and for the backward pass
//! `dW += dYᵀ · cols` and `dcols = dY · W` scattered back by col2im.

use super::super::gemm::{grow, matmul, View};
use super::graph::ConvOp;
use super::lanes::{self, LaneScratch};

/// Target size (values) of one sub-chunk's patch matrix: big enough for efficient GEMMs, small
/// enough to stay near the cache. The sub-chunking depends only on the shapes.
const COLS_BUDGET: usize = 1 << 18;

impl ConvOp {
    /// Values of one patch row (`k * k * cin`).
    pub(super) fn kkc(&self) -> usize {
        self.k * self.k * self.cin
    }

    fn in_per(&self) -> usize {
        self.ih * self.iw * self.cin
    }

    fn out_pixels(&self) -> usize {
        self.oh * self.ow
    }

    /// True if the patch matrix is the input itself (1x1, stride 1, no padding).
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Samples per sub-chunk.
    fn chunk(&self) -> usize {
        (COLS_BUDGET / (self.out_pixels() * self.kkc()).max(1)).max(1)
    }

    /// `wr[o, (ky * k + kx) * cin + ci] = w[o, ci, ky, kx]` (PyTorch layout to patch order).
    pub(super) fn repack(&self, w: &[f32], wr: &mut Vec<f32>) {
        let (k, cin) = (self.k, self.cin);
        let kkc = self.kkc();
        let wr = grow(wr, self.cout * kkc);
        for o in 0..self.cout {
            for ci in 0..cin {
                for t in 0..k * k {
                    wr[o * kkc + t * cin + ci] = w[(o * cin + ci) * k * k + t];
                }
            }
        }
    }

    /// `g[o, ci, ky, kx] += dwr[o, (ky * k + kx) * cin + ci]`.
    fn unpack_add(&self, dwr: &[f32], g: &mut [f32]) {
        let (k, cin) = (self.k, self.cin);
        let kkc = self.kkc();
        for o in 0..self.cout {
            for ci in 0..cin {
                for t in 0..k * k {
                    g[(o * cin + ci) * k * k + t] += dwr[o * kkc + t * cin + ci];
                }
            }
        }
    }

    /// Patches of `n` samples of `x` (channels-last) into `cols` (`n * oh * ow` rows).
    fn im2col(&self, x: &[f32], n: usize, cols: &mut [f32]) {
        let (cin, k, kkc) = (self.cin, self.k, self.kkc());
        let in_per = self.in_per();
        let mut row = 0;
        for s in 0..n {
            let xs = &x[s * in_per..(s + 1) * in_per];
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let dst = &mut cols[row * kkc..(row + 1) * kkc];
                    row += 1;
                    for ky in 0..k {
                        let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                        let seg = &mut dst[ky * k * cin..(ky + 1) * k * cin];
                        if iy < 0 || iy >= self.ih as isize {
                            seg.fill(0.0);
                            continue;
                        }
                        let xrow =
                            &xs[iy as usize * self.iw * cin..(iy as usize + 1) * self.iw * cin];
                        let ix0 = (ox * self.stride) as isize - self.pad as isize;
                        if ix0 >= 0 && ix0 as usize + k <= self.iw {
                            // The whole kernel row is inside: one contiguous copy.
                            let start = ix0 as usize * cin;
                            copy(seg, &xrow[start..start + k * cin]);
                            continue;
                        }
                        for kx in 0..k {
                            let ix = ix0 + kx as isize;
                            let d = &mut seg[kx * cin..(kx + 1) * cin];
                            if ix < 0 || ix >= self.iw as isize {
                                d.fill(0.0);
                            } else {
                                let start = ix as usize * cin;
                                copy(d, &xrow[start..start + cin]);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `dx += col2im(dcols)` for `n` samples (`dx` channels-last).
    fn col2im(&self, dcols: &[f32], n: usize, dx: &mut [f32]) {
        let (cin, k, kkc) = (self.cin, self.k, self.kkc());
        let in_per = self.in_per();
        let mut row = 0;
        for s in 0..n {
            let dxs = &mut dx[s * in_per..(s + 1) * in_per];
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    let src = &dcols[row * kkc..(row + 1) * kkc];
                    row += 1;
                    for ky in 0..k {
                        let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                        if iy < 0 || iy >= self.ih as isize {
                            continue;
                        }
                        let base = iy as usize * self.iw * cin;
                        for kx in 0..k {
                            let ix = (ox * self.stride + kx) as isize - self.pad as isize;
                            if ix < 0 || ix >= self.iw as isize {
                                continue;
                            }
                            let d =
                                &mut dxs[base + ix as usize * cin..base + (ix as usize + 1) * cin];
                            let g = &src[(ky * k + kx) * cin..(ky * k + kx + 1) * cin];
                            for (a, &b) in d.iter_mut().zip(g) {
                                *a += b;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x) + b` for a batch of `rows` samples (`wr` repacked, `bias` optional).
    pub(super) fn forward(
        &self,
        x: &[f32],
        rows: usize,
        wr: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        scratch: &mut [LaneScratch; 2],
    ) {
        let (in_per, pix, kkc, cout) = (self.in_per(), self.out_pixels(), self.kkc(), self.cout);
        let w_t = View::row_major(wr, cout, kkc).t();
        let chunk = self.chunk();
        lanes::run(
            rows,
            rows * pix * kkc,
            y,
            pix * cout,
            scratch,
            |_, r0, n, y, sc| {
                for c0 in (0..n).step_by(chunk) {
                    let m = chunk.min(n - c0);
                    let xs = &x[(r0 + c0) * in_per..(r0 + c0 + m) * in_per];
                    let yc = &mut y[c0 * pix * cout..(c0 + m) * pix * cout];
                    let cols: &[f32] = if self.pointwise() {
                        xs
                    } else {
                        let cols = grow(&mut sc.cols, m * pix * kkc);
                        self.im2col(xs, m, cols);
                        cols
                    };
                    matmul(yc, View::row_major(cols, m * pix, kkc), w_t, false);
                    if let Some(b) = bias {
                        for row in yc.chunks_exact_mut(cout) {
                            for (v, &bb) in row.iter_mut().zip(b) {
                                *v += bb;
                            }
                        }
                    }
                }
            },
        );
    }

    /// Backward pass for a batch of `rows`: adds `dL/dW` (PyTorch layout) into `gw`, `dL/db`
    /// into `gb`, and writes (or adds, if `accumulate`) `dL/dx` into `dx` if given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        x: &[f32],
        rows: usize,
        wr: &[f32],
        dy: &[f32],
        dx: Option<(&mut [f32], bool)>,
        gw: &mut [f32],
        gb: Option<&mut [f32]>,
        scratch: &mut [LaneScratch; 2],
        dwr: &mut Vec<f32>,
    ) {
        let (in_per, pix, kkc, cout) = (self.in_per(), self.out_pixels(), self.kkc(), self.cout);
        let chunk = self.chunk();
        let want_dx = dx.is_some();
        let accumulate = dx.as_ref().is_some_and(|d| d.1);
        let mut empty: [f32; 0] = [];
        let (dx_buf, per) = match dx {
            Some((d, _)) => (d, in_per),
            None => (&mut empty[..], 0),
        };
        let w_view = View::row_major(wr, cout, kkc);
        lanes::run(
            rows,
            rows * pix * kkc,
            dx_buf,
            per,
            scratch,
            |_, r0, n, dxl, sc| {
                let dw = grow(&mut sc.dw, cout * kkc);
                if n == 0 {
                    return;
                }
                if want_dx && !accumulate {
                    dxl.fill(0.0);
                }
                let db = grow(&mut sc.db, cout);
                db.fill(0.0);
                for c0 in (0..n).step_by(chunk) {
                    let m = chunk.min(n - c0);
                    let xs = &x[(r0 + c0) * in_per..(r0 + c0 + m) * in_per];
                    let dys = &dy[(r0 + c0) * pix * cout..(r0 + c0 + m) * pix * cout];
                    for row in dys.chunks_exact(cout) {
                        for (s, &v) in db.iter_mut().zip(row) {
                            *s += v;
                        }
                    }
                    let dy_view = View::row_major(dys, m * pix, cout);
                    {
                        let cols: &[f32] = if self.pointwise() {
                            xs
                        } else {
                            let cols = grow(&mut sc.cols, m * pix * kkc);
                            self.im2col(xs, m, cols);
                            cols
                        };
                        matmul(dw, dy_view.t(), View::row_major(cols, m * pix, kkc), c0 > 0);
                    }
                    if want_dx {
                        let dxc = &mut dxl[c0 * in_per..(c0 + m) * in_per];
                        if self.pointwise() {
                            matmul(dxc, dy_view, w_view, true);
                        } else {
                            let dcols = grow(&mut sc.dcols, m * pix * kkc);
                            matmul(dcols, dy_view, w_view, false);
                            self.col2im(dcols, m, dxc);
                        }
                    }
                }
            },
        );
        let dwr = grow(dwr, cout * kkc);
        dwr.fill(0.0);
        lanes::add_partials(dwr, rows, scratch, |s| &s.dw);
        self.unpack_add(dwr, gw);
        if let Some(gb) = gb {
            lanes::add_partials(gb, rows, scratch, |s| &s.db);
        }
    }
}

/// `dst = src` (same length). The short copies of few-channel inputs (a 3x3 kernel row of a
/// grey or RGB image is 3 or 9 values) get constant-size moves instead of a `memcpy` call each.
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    #[inline(always)]
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
        if let (Ok(d), Ok(s)) = (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
            *d = *s;
        }
    }
    match dst.len() {
        1 => fixed::<1>(dst, src),
        2 => fixed::<2>(dst, src),
        3 => fixed::<3>(dst, src),
        4 => fixed::<4>(dst, src),
        6 => fixed::<6>(dst, src),
        9 => fixed::<9>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

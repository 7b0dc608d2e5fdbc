//! The cheap layers: activation, 2x2 max-pool, global average pool, flatten, dense layer and
//! residual sum, forward and backward, on channels-last activations.

use super::super::fused::activate;
use super::super::gemm::{grow, matmul, View};
use super::lanes::{self, LaneScratch};
use crate::Activation;

/// `dst = v` or `dst += v`.
#[inline]
fn put(dst: &mut f32, v: f32, accumulate: bool) {
    if accumulate {
        *dst += v;
    } else {
        *dst = v;
    }
}

/// `y = act(x)`, `per` values per sample.
pub(super) fn act_forward(
    x: &[f32],
    rows: usize,
    per: usize,
    act: Activation,
    y: &mut [f32],
    sc: &mut [LaneScratch; 2],
) {
    lanes::run(rows, rows * per, y, per, sc, |_, r0, n, y, _| {
        y.copy_from_slice(&x[r0 * per..(r0 + n) * per]);
        activate(y, act);
    });
}

/// `y = act(y)` in place, `per` values per sample.
pub(super) fn act_in_place(
    y: &mut [f32],
    rows: usize,
    per: usize,
    act: Activation,
    sc: &mut [LaneScratch; 2],
) {
    lanes::run(rows, rows * per, y, per, sc, |_, _, _, y, _| {
        activate(y, act)
    });
}

/// `dx (+)= dy · act'(x)`, from the stored output `y` (one branch-free pass).
#[allow(clippy::too_many_arguments)]
pub(super) fn act_backward(
    y: &[f32],
    dy: &[f32],
    rows: usize,
    per: usize,
    act: Activation,
    dx: &mut [f32],
    accumulate: bool,
    sc: &mut [LaneScratch; 2],
) {
    #[inline(always)]
    fn pass(dx: &mut [f32], y: &[f32], dy: &[f32], accumulate: bool, d: impl Fn(f32, f32) -> f32) {
        if accumulate {
            for ((o, &yv), &g) in dx.iter_mut().zip(y).zip(dy) {
                *o += d(yv, g);
            }
        } else {
            for ((o, &yv), &g) in dx.iter_mut().zip(y).zip(dy) {
                *o = d(yv, g);
            }
        }
    }
    lanes::run(rows, rows * per, dx, per, sc, |_, r0, n, dx, _| {
        let (ys, dys) = (&y[r0 * per..(r0 + n) * per], &dy[r0 * per..(r0 + n) * per]);
        match act {
            Activation::Relu => pass(
                dx,
                ys,
                dys,
                accumulate,
                |y, g| if y > 0.0 { g } else { 0.0 },
            ),
            Activation::Tanh => pass(dx, ys, dys, accumulate, |y, g| g * (1.0 - y * y)),
            Activation::Sigmoid => pass(dx, ys, dys, accumulate, |y, g| g * (y * (1.0 - y))),
        }
    });
}

/// Geometry of a 2x2, stride-2 max-pool (floor: an odd last row or column is dropped).
#[derive(Clone, Copy)]
pub(super) struct Pool {
    pub c: usize,
    pub ih: usize,
    pub iw: usize,
}

impl Pool {
    fn oh(&self) -> usize {
        self.ih / 2
    }
    fn ow(&self) -> usize {
        self.iw / 2
    }
    fn in_per(&self) -> usize {
        self.ih * self.iw * self.c
    }
    fn out_per(&self) -> usize {
        self.oh() * self.ow() * self.c
    }

    /// The four rows of `c` channels of window `(oy, ox)` (offsets within a sample), in the
    /// scan order (0,0), (0,1), (1,0), (1,1).
    #[inline]
    fn window(&self, oy: usize, ox: usize) -> [usize; 4] {
        let c = self.c;
        let top = ((2 * oy) * self.iw + 2 * ox) * c;
        let bottom = top + self.iw * c;
        [top, top + c, bottom, bottom + c]
    }

    /// `y` = the maximum of each window, per channel (the first maximum in scan order, NaN
    /// winning, as PyTorch's max-pool); branch-free over the channels.
    pub(super) fn forward(&self, x: &[f32], rows: usize, y: &mut [f32], sc: &mut [LaneScratch; 2]) {
        let (ip, op, c) = (self.in_per(), self.out_per(), self.c);
        lanes::run(rows, rows * ip, y, op, sc, |_, r0, n, y, _| {
            for s in 0..n {
                let xs = &x[(r0 + s) * ip..(r0 + s + 1) * ip];
                let ys = &mut y[s * op..(s + 1) * op];
                for oy in 0..self.oh() {
                    for ox in 0..self.ow() {
                        let [a, b, cc, d] = self.window(oy, ox).map(|o| &xs[o..o + c]);
                        let out = &mut ys[(oy * self.ow() + ox) * c..][..c];
                        for ch in 0..c {
                            let mut m = a[ch];
                            for v in [b[ch], cc[ch], d[ch]] {
                                m = if v > m || v.is_nan() { v } else { m };
                            }
                            out[ch] = m;
                        }
                    }
                }
            }
        });
    }

    /// `dx (+)= dy` routed to the first input of each window equal to its output `y`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        rows: usize,
        dx: &mut [f32],
        accumulate: bool,
        sc: &mut [LaneScratch; 2],
    ) {
        let (ip, op, c) = (self.in_per(), self.out_per(), self.c);
        lanes::run(rows, rows * ip, dx, ip, sc, |_, r0, n, dx, _| {
            if !accumulate {
                dx.fill(0.0);
            }
            for s in 0..n {
                let xs = &x[(r0 + s) * ip..(r0 + s + 1) * ip];
                let ys = &y[(r0 + s) * op..(r0 + s + 1) * op];
                let dys = &dy[(r0 + s) * op..(r0 + s + 1) * op];
                let dxs = &mut dx[s * ip..(s + 1) * ip];
                for oy in 0..self.oh() {
                    for ox in 0..self.ow() {
                        let o = (oy * self.ow() + ox) * c;
                        let (m, g) = (&ys[o..o + c], &dys[o..o + c]);
                        let [top, _, bottom, _] = self.window(oy, ox);
                        let (upper, lower) = dxs.split_at_mut(bottom);
                        let (da, rest) = upper[top..].split_at_mut(c);
                        let db = &mut rest[..c];
                        let (dc, rest) = lower.split_at_mut(c);
                        let dd = &mut rest[..c];
                        let xa = &xs[top..top + c];
                        let xb = &xs[top + c..top + 2 * c];
                        let xc = &xs[bottom..bottom + c];
                        for k in 0..c {
                            // The first input equal to the maximum takes the gradient (a NaN
                            // maximum matches nothing: the last input takes it).
                            let ta = xa[k] == m[k];
                            let tb = !ta && xb[k] == m[k];
                            let tc = !ta && !tb && xc[k] == m[k];
                            let td = !(ta || tb || tc);
                            let gk = g[k];
                            da[k] += if ta { gk } else { 0.0 };
                            db[k] += if tb { gk } else { 0.0 };
                            dc[k] += if tc { gk } else { 0.0 };
                            dd[k] += if td { gk } else { 0.0 };
                        }
                    }
                }
            }
        });
    }
}

/// `y[s, ch] = mean over pixels of x[s, :, ch]`.
pub(super) fn gap_forward(
    x: &[f32],
    rows: usize,
    c: usize,
    hw: usize,
    y: &mut [f32],
    sc: &mut [LaneScratch; 2],
) {
    lanes::run(rows, rows * hw * c, y, c, sc, |_, r0, n, y, _| {
        for s in 0..n {
            let ys = &mut y[s * c..(s + 1) * c];
            ys.fill(0.0);
            for px in x[(r0 + s) * hw * c..(r0 + s + 1) * hw * c].chunks_exact(c) {
                for (o, &v) in ys.iter_mut().zip(px) {
                    *o += v;
                }
            }
            let inv = 1.0 / hw as f32;
            ys.iter_mut().for_each(|v| *v *= inv);
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub(super) fn gap_backward(
    dy: &[f32],
    rows: usize,
    c: usize,
    hw: usize,
    dx: &mut [f32],
    accumulate: bool,
    sc: &mut [LaneScratch; 2],
) {
    let inv = 1.0 / hw as f32;
    lanes::run(rows, rows * hw * c, dx, hw * c, sc, |_, r0, n, dx, _| {
        for s in 0..n {
            let d = &dy[(r0 + s) * c..(r0 + s + 1) * c];
            for px in dx[s * hw * c..(s + 1) * hw * c].chunks_exact_mut(c) {
                for (o, &v) in px.iter_mut().zip(d) {
                    put(o, v * inv, accumulate);
                }
            }
        }
    });
}

/// Channels-last `[hw, c]` to `[c, hw]` per sample (`back`: the reverse), written or added.
#[allow(clippy::too_many_arguments)]
pub(super) fn flatten(
    x: &[f32],
    rows: usize,
    c: usize,
    hw: usize,
    back: bool,
    y: &mut [f32],
    accumulate: bool,
    sc: &mut [LaneScratch; 2],
) {
    let per = c * hw;
    lanes::run(rows, rows * per, y, per, sc, |_, r0, n, y, _| {
        for s in 0..n {
            let xs = &x[(r0 + s) * per..(r0 + s + 1) * per];
            let ys = &mut y[s * per..(s + 1) * per];
            for p in 0..hw {
                for ch in 0..c {
                    let (hwc, chw) = (p * c + ch, ch * hw + p);
                    if back {
                        put(&mut ys[hwc], xs[chw], accumulate);
                    } else {
                        put(&mut ys[chw], xs[hwc], accumulate);
                    }
                }
            }
        }
    });
}

/// Dense layer `y = x Wᵀ + b` (`W` is `[fout, fin]`).
#[allow(clippy::too_many_arguments)]
pub(super) fn linear_forward(
    x: &[f32],
    rows: usize,
    w: &[f32],
    b: &[f32],
    fin: usize,
    fout: usize,
    y: &mut [f32],
    sc: &mut [LaneScratch; 2],
) {
    let w_t = View::row_major(w, fout, fin).t();
    lanes::run(rows, rows * fin * fout, y, fout, sc, |_, r0, n, y, _| {
        matmul(
            y,
            View::row_major(&x[r0 * fin..(r0 + n) * fin], n, fin),
            w_t,
            false,
        );
        for row in y.chunks_exact_mut(fout) {
            for (v, &bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    });
}

/// Backward of [`linear_forward`]: `gw += dyᵀ x`, `gb += Σ dy`, `dx (+)= dy W` if given.
#[allow(clippy::too_many_arguments)]
pub(super) fn linear_backward(
    x: &[f32],
    dy: &[f32],
    rows: usize,
    w: &[f32],
    fin: usize,
    fout: usize,
    dx: Option<(&mut [f32], bool)>,
    gw: &mut [f32],
    gb: &mut [f32],
    sc: &mut [LaneScratch; 2],
) {
    let want_dx = dx.is_some();
    let accumulate = dx.as_ref().is_some_and(|d| d.1);
    let mut empty: [f32; 0] = [];
    let (dxb, per) = match dx {
        Some((d, _)) => (d, fin),
        None => (&mut empty[..], 0),
    };
    let wv = View::row_major(w, fout, fin);
    lanes::run(rows, rows * fin * fout, dxb, per, sc, |_, r0, n, dx, sc| {
        if n == 0 {
            return;
        }
        let xs = View::row_major(&x[r0 * fin..(r0 + n) * fin], n, fin);
        let dys = &dy[r0 * fout..(r0 + n) * fout];
        let dyv = View::row_major(dys, n, fout);
        matmul(grow(&mut sc.dw, fout * fin), dyv.t(), xs, false);
        let db = grow(&mut sc.db, fout);
        db.fill(0.0);
        for row in dys.chunks_exact(fout) {
            for (s, &v) in db.iter_mut().zip(row) {
                *s += v;
            }
        }
        if want_dx {
            matmul(dx, dyv, wv, accumulate);
        }
    });
    lanes::add_partials(gw, rows, sc, |s| &s.dw);
    lanes::add_partials(gb, rows, sc, |s| &s.db);
}

/// `y = a + b`.
pub(super) fn add_forward(
    a: &[f32],
    b: &[f32],
    rows: usize,
    per: usize,
    y: &mut [f32],
    sc: &mut [LaneScratch; 2],
) {
    lanes::run(rows, rows * per, y, per, sc, |_, r0, n, y, _| {
        let r = r0 * per..(r0 + n) * per;
        for ((o, &u), &v) in y.iter_mut().zip(&a[r.clone()]).zip(&b[r]) {
            *o = u + v;
        }
    });
}

/// `dx (+)= dy`.
pub(super) fn pass_grad(
    dy: &[f32],
    rows: usize,
    per: usize,
    dx: &mut [f32],
    accumulate: bool,
    sc: &mut [LaneScratch; 2],
) {
    lanes::run(rows, rows * per, dx, per, sc, |_, r0, n, dx, _| {
        let d = &dy[r0 * per..(r0 + n) * per];
        if accumulate {
            for (o, &v) in dx.iter_mut().zip(d) {
                *o += v;
            }
        } else {
            dx.copy_from_slice(d);
        }
    });
}

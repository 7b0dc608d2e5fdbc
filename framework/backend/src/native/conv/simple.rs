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

    /// Offset (within a sample) of the first maximum of window `(oy, ox)`, channel `ch`, in the
    /// scan order (0,0), (0,1), (1,0), (1,1) (PyTorch's choice among ties).
    #[inline]
    fn argmax(&self, xs: &[f32], oy: usize, ox: usize, ch: usize) -> usize {
        let c = self.c;
        let mut best = ((2 * oy) * self.iw + 2 * ox) * c + ch;
        for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
            let i = ((2 * oy + dy) * self.iw + 2 * ox + dx) * c + ch;
            if xs[i] > xs[best] || xs[i].is_nan() {
                best = i;
            }
        }
        best
    }

    pub(super) fn forward(&self, x: &[f32], rows: usize, y: &mut [f32], sc: &mut [LaneScratch; 2]) {
        let (ip, op, c) = (self.in_per(), self.out_per(), self.c);
        lanes::run(rows, rows * ip, y, op, sc, |_, r0, n, y, _| {
            for s in 0..n {
                let xs = &x[(r0 + s) * ip..(r0 + s + 1) * ip];
                let ys = &mut y[s * op..(s + 1) * op];
                for oy in 0..self.oh() {
                    for ox in 0..self.ow() {
                        for ch in 0..c {
                            ys[(oy * self.ow() + ox) * c + ch] = xs[self.argmax(xs, oy, ox, ch)];
                        }
                    }
                }
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        x: &[f32],
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
                let dys = &dy[(r0 + s) * op..(r0 + s + 1) * op];
                let dxs = &mut dx[s * ip..(s + 1) * ip];
                for oy in 0..self.oh() {
                    for ox in 0..self.ow() {
                        for ch in 0..c {
                            dxs[self.argmax(xs, oy, ox, ch)] += dys[(oy * self.ow() + ox) * c + ch];
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

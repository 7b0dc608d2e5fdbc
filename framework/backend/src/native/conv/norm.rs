//! Batch and group normalisation on channels-last activations (`[pixels, c]` rows).
//!
//! Batch norm follows `torch.nn.BatchNorm2d` (eps 1e-5, momentum 0.1): in training the batch's
//! mean and biased variance normalise, and the running mean and the *unbiased* variance are
//! blended into the buffers; in evaluation the running statistics normalise. Statistics are
//! summed in f64, per lane in sample order, lane 0 first. Group norm (`torch.nn.GroupNorm`,
//! eps 1e-5) normalises each sample's groups of `c / groups` channels over all pixels.

use super::graph::NormOp;
use super::lanes::{self, LaneScratch};
use crate::BackendError;

/// Added to the variance before the square root.
pub(super) const EPS: f64 = 1e-5;
/// Weight of the new batch statistic in the running statistics.
pub(super) const MOMENTUM: f64 = 0.1;

/// How a forward pass normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Running statistics (batch norm), as `model.eval()`.
    Eval,
    /// Batch statistics, as `model.train()`; `update` blends them into the running statistics.
    Train { update: bool },
}

/// The parameter slices a norm reads.
pub(super) struct NormParams<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    /// Running mean and variance (batch norm), updated in training with `update`.
    pub stats: Option<(&'a mut [f32], &'a mut [f32])>,
}

impl NormOp {
    fn per(&self) -> usize {
        self.hw * self.c
    }

    /// `y = norm(x)`; saves what the backward pass needs in `saved` (batch norm: mean and
    /// 1/std per channel; group norm: per sample and group).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        x: &[f32],
        rows: usize,
        p: NormParams<'_>,
        mode: Mode,
        y: &mut [f32],
        saved: &mut Vec<f32>,
        red: &mut Vec<f64>,
        scratch: &mut [LaneScratch; 2],
    ) -> Result<(), BackendError> {
        match self.groups {
            None => self.batch_forward(x, rows, p, mode, y, saved, red, scratch),
            Some(g) => {
                self.group_forward(x, rows, g, p, y, saved, scratch);
                Ok(())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn batch_forward(
        &self,
        x: &[f32],
        rows: usize,
        p: NormParams<'_>,
        mode: Mode,
        y: &mut [f32],
        saved: &mut Vec<f32>,
        red: &mut Vec<f64>,
        scratch: &mut [LaneScratch; 2],
    ) -> Result<(), BackendError> {
        let (c, per) = (self.c, self.per());
        let count = rows * self.hw;
        let (scale, shift): (Vec<f32>, Vec<f32>) = match mode {
            Mode::Eval => {
                let (rm, rv) = match &p.stats {
                    Some((m, v)) => (&m[..], &v[..]),
                    None => {
                        return Err(BackendError::Spec(
                            "batch norm without running statistics".into(),
                        ))
                    }
                };
                // Saved for an evaluation-mode backward pass (the NTK): mean and 1/std.
                saved.clear();
                saved.extend_from_slice(rm);
                saved.extend(
                    rv.iter()
                        .map(|&v| (1.0 / (f64::from(v) + EPS).sqrt()) as f32),
                );
                (0..c)
                    .map(|i| {
                        let a = f64::from(p.gamma[i]) / (f64::from(rv[i]) + EPS).sqrt();
                        (
                            a as f32,
                            (f64::from(p.beta[i]) - f64::from(rm[i]) * a) as f32,
                        )
                    })
                    .unzip()
            }
            Mode::Train { update } => {
                if count < 2 {
                    return Err(BackendError::shape(
                        "batch norm input (training needs more than one value per channel)",
                        "at least 2 samples x pixels",
                        count,
                    ));
                }
                // Pass 1: the mean.
                lanes::run_ro(rows, rows * per, scratch, |r0, n, sc| {
                    sc.red.clear();
                    sc.red.resize(c, 0.0);
                    for px in x[r0 * per..(r0 + n) * per].chunks_exact(c) {
                        for (s, &v) in sc.red.iter_mut().zip(px) {
                            *s += f64::from(v);
                        }
                    }
                });
                lanes::sum_red(red, c, rows, scratch);
                let mean: Vec<f64> = red.iter().map(|s| s / count as f64).collect();
                // Pass 2: the biased variance.
                lanes::run_ro(rows, rows * per, scratch, |r0, n, sc| {
                    sc.red.clear();
                    sc.red.resize(c, 0.0);
                    for px in x[r0 * per..(r0 + n) * per].chunks_exact(c) {
                        for ((s, &v), &m) in sc.red.iter_mut().zip(px).zip(&mean) {
                            let d = f64::from(v) - m;
                            *s += d * d;
                        }
                    }
                });
                lanes::sum_red(red, c, rows, scratch);
                let var: Vec<f64> = red.iter().map(|s| s / count as f64).collect();
                saved.clear();
                saved.extend(mean.iter().map(|&m| m as f32));
                saved.extend(var.iter().map(|&v| (1.0 / (v + EPS).sqrt()) as f32));
                if let (true, Some((rm, rv))) = (update, p.stats) {
                    let unbias = count as f64 / (count - 1) as f64;
                    for i in 0..c {
                        rm[i] = ((1.0 - MOMENTUM) * f64::from(rm[i]) + MOMENTUM * mean[i]) as f32;
                        rv[i] = ((1.0 - MOMENTUM) * f64::from(rv[i]) + MOMENTUM * var[i] * unbias)
                            as f32;
                    }
                }
                (0..c)
                    .map(|i| {
                        let a = f64::from(p.gamma[i]) / (var[i] + EPS).sqrt();
                        (a as f32, (f64::from(p.beta[i]) - mean[i] * a) as f32)
                    })
                    .unzip()
            }
        };
        lanes::run(rows, rows * per, y, per, scratch, |_, r0, n, y, _| {
            let xs = &x[r0 * per..(r0 + n) * per];
            for (yp, xp) in y.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
                for (((o, &v), &a), &b) in yp.iter_mut().zip(xp).zip(&scale).zip(&shift) {
                    *o = v * a + b;
                }
            }
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn group_forward(
        &self,
        x: &[f32],
        rows: usize,
        groups: usize,
        p: NormParams<'_>,
        y: &mut [f32],
        saved: &mut Vec<f32>,
        scratch: &mut [LaneScratch; 2],
    ) {
        let (c, per) = (self.c, self.per());
        let cpg = c / groups;
        let count = (self.hw * cpg) as f64;
        saved.clear();
        saved.resize(rows * groups * 2, 0.0);
        lanes::run(
            rows,
            rows * per,
            saved,
            groups * 2,
            scratch,
            |_, r0, n, st, sc| {
                for s in 0..n {
                    let xs = &x[(r0 + s) * per..(r0 + s + 1) * per];
                    sc.red.clear();
                    sc.red.resize(2 * groups, 0.0);
                    for px in xs.chunks_exact(c) {
                        for (ch, &v) in px.iter().enumerate() {
                            sc.red[ch / cpg] += f64::from(v);
                        }
                    }
                    for g in 0..groups {
                        sc.red[g] /= count;
                    }
                    for px in xs.chunks_exact(c) {
                        for (ch, &v) in px.iter().enumerate() {
                            let d = f64::from(v) - sc.red[ch / cpg];
                            sc.red[groups + ch / cpg] += d * d;
                        }
                    }
                    for g in 0..groups {
                        st[(s * groups + g) * 2] = sc.red[g] as f32;
                        st[(s * groups + g) * 2 + 1] =
                            (1.0 / (sc.red[groups + g] / count + EPS).sqrt()) as f32;
                    }
                }
            },
        );
        let saved: &[f32] = saved;
        lanes::run(rows, rows * per, y, per, scratch, |_, r0, n, y, _| {
            for s in 0..n {
                let xs = &x[(r0 + s) * per..(r0 + s + 1) * per];
                let st = &saved[(r0 + s) * groups * 2..(r0 + s + 1) * groups * 2];
                let ys = &mut y[s * per..(s + 1) * per];
                for (yp, xp) in ys.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
                    for (ch, (o, &v)) in yp.iter_mut().zip(xp).enumerate() {
                        let g = ch / cpg;
                        *o = (v - st[2 * g]) * st[2 * g + 1] * p.gamma[ch] + p.beta[ch];
                    }
                }
            }
        });
    }

    /// Backward pass in training mode (batch statistics, as saved by the forward pass): adds
    /// `dL/dgamma`, `dL/dbeta` into `ggamma`, `gbeta`, and writes (or adds, if `accumulate`)
    /// `dL/dx` into `dx`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        x: &[f32],
        rows: usize,
        gamma: &[f32],
        saved: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        accumulate: bool,
        ggamma: &mut [f32],
        gbeta: &mut [f32],
        red: &mut Vec<f64>,
        scratch: &mut [LaneScratch; 2],
        mode: Mode,
    ) {
        let (c, per) = (self.c, self.per());
        let groups = self.groups;
        // Per-channel Σ dy and Σ dy · x̂, lane by lane.
        lanes::run_ro(rows, rows * per, scratch, |r0, n, sc| {
            sc.red.clear();
            sc.red.resize(2 * c, 0.0);
            for s in r0..r0 + n {
                let xs = &x[s * per..(s + 1) * per];
                let dys = &dy[s * per..(s + 1) * per];
                for (xp, dp) in xs.chunks_exact(c).zip(dys.chunks_exact(c)) {
                    for ch in 0..c {
                        let (m, is) = stat(saved, groups, c, s, ch);
                        let xhat = f64::from((xp[ch] - m) * is);
                        let d = f64::from(dp[ch]);
                        sc.red[ch] += d;
                        sc.red[c + ch] += d * xhat;
                    }
                }
            }
        });
        lanes::sum_red(red, 2 * c, rows, scratch);
        for ch in 0..c {
            gbeta[ch] += red[ch] as f32;
            ggamma[ch] += red[c + ch] as f32;
        }
        let red: &[f64] = red;
        match groups {
            None => {
                // Training: the batch statistics depend on x, hence the two mean terms. In
                // evaluation the running statistics are constants: dx = gamma / std · dy.
                let count = (rows * self.hw) as f64;
                let (k1, k2): (Vec<f32>, Vec<f32>) = match mode {
                    Mode::Eval => (vec![0.0; c], vec![0.0; c]),
                    Mode::Train { .. } => (
                        (0..c).map(|ch| (red[ch] / count) as f32).collect(),
                        (0..c).map(|ch| (red[c + ch] / count) as f32).collect(),
                    ),
                };
                lanes::run(rows, rows * per, dx, per, scratch, |_, r0, n, dx, _| {
                    let xs = &x[r0 * per..(r0 + n) * per];
                    let dys = &dy[r0 * per..(r0 + n) * per];
                    for ((o, xp), dp) in dx
                        .chunks_exact_mut(c)
                        .zip(xs.chunks_exact(c))
                        .zip(dys.chunks_exact(c))
                    {
                        for ch in 0..c {
                            let (m, is) = (saved[ch], saved[c + ch]);
                            let xhat = (xp[ch] - m) * is;
                            let v = gamma[ch] * is * (dp[ch] - k1[ch] - xhat * k2[ch]);
                            if accumulate {
                                o[ch] += v;
                            } else {
                                o[ch] = v;
                            }
                        }
                    }
                });
            }
            Some(g) => {
                let cpg = c / g;
                let count = (self.hw * cpg) as f64;
                lanes::run(rows, rows * per, dx, per, scratch, |_, r0, n, dx, sc| {
                    for s in 0..n {
                        let xs = &x[(r0 + s) * per..(r0 + s + 1) * per];
                        let dys = &dy[(r0 + s) * per..(r0 + s + 1) * per];
                        let st = &saved[(r0 + s) * g * 2..(r0 + s + 1) * g * 2];
                        // Per group: mean of dx̂ and of dx̂ · x̂, dx̂ = dy · gamma.
                        sc.red.clear();
                        sc.red.resize(2 * g, 0.0);
                        for (xp, dp) in xs.chunks_exact(c).zip(dys.chunks_exact(c)) {
                            for ch in 0..c {
                                let gi = ch / cpg;
                                let xhat = f64::from((xp[ch] - st[2 * gi]) * st[2 * gi + 1]);
                                let dxh = f64::from(dp[ch]) * f64::from(gamma[ch]);
                                sc.red[gi] += dxh;
                                sc.red[g + gi] += dxh * xhat;
                            }
                        }
                        let o = &mut dx[s * per..(s + 1) * per];
                        for ((op, xp), dp) in o
                            .chunks_exact_mut(c)
                            .zip(xs.chunks_exact(c))
                            .zip(dys.chunks_exact(c))
                        {
                            for ch in 0..c {
                                let gi = ch / cpg;
                                let (m, is) = (st[2 * gi], st[2 * gi + 1]);
                                let xhat = (xp[ch] - m) * is;
                                let m1 = (sc.red[gi] / count) as f32;
                                let m2 = (sc.red[g + gi] / count) as f32;
                                let v = is * (dp[ch] * gamma[ch] - m1 - xhat * m2);
                                if accumulate {
                                    op[ch] += v;
                                } else {
                                    op[ch] = v;
                                }
                            }
                        }
                    }
                });
            }
        }
    }
}

/// Saved mean and 1/std of channel `ch` of sample `s`.
#[inline]
fn stat(saved: &[f32], groups: Option<usize>, c: usize, s: usize, ch: usize) -> (f32, f32) {
    match groups {
        None => (saved[ch], saved[c + ch]),
        Some(g) => {
            let gi = ch / (c / g);
            let base = (s * g + gi) * 2;
            (saved[base], saved[base + 1])
        }
    }
}

//! Fused elementwise passes after a GEMM: bias and activation (also transposing), the
//! activation derivative, the bias gradient; and a dense layer's forward product.

use crate::Activation;

use super::gemm::*;

/// One dense layer on `input` (`rows x fin`): `z = act(input · Wᵀ + b)`, `z` being
/// `rows x fout` with `fout = bias.len()`; split over batch rows if `par`.
///
/// The GEMM packs (copies into its panel layout) whichever operand sits on its "row" side.
/// With `z` row-major that is `W`, which is expensive when the batch is small (each of the two
/// halves packs all of `W`); so when there are fewer rows than output units the product is
/// computed transposed instead, `Zᵀ = W · inputᵀ` into `zt` (split over output units, `W` then
/// read in place), and the bias/activation pass transposes it into `z`.
#[allow(clippy::too_many_arguments)]
pub(super) fn dense_forward(
    z: &mut [f32],
    zt: &mut Vec<f32>,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    fin: usize,
    activation: Option<Activation>,
    par: bool,
) {
    let fout = bias.len();
    let rows = z.len() / fout;
    if rows < fout {
        let zt = grow(zt, fout * rows);
        let x_t = View::row_major(input, rows, fin).t();
        split_rows(par, zt, rows, fin * rows, |o0, ztc| {
            let units = ztc.len() / rows;
            let w_part = View::row_major(&w[o0 * fin..(o0 + units) * fin], units, fin);
            matmul(ztc, w_part, x_t, false);
        });
        transpose_bias_activation(z, zt, bias, activation);
        return;
    }
    let w_t = View::row_major(w, fout, fin).t();
    split_rows(par, z, fout, fin * fout, |r0, zc| {
        let r = zc.len() / fout;
        let x = View::row_major(&input[r0 * fin..(r0 + r) * fin], r, fin);
        matmul(zc, x, w_t, false);
        bias_activation(zc, bias, activation);
    });
}

/// `z = act(ztᵀ + bias)`: `zt` is `fout x rows`, `z` is `rows x fout` (`fout = bias.len()`).
/// Works on tiles of rows so that both sides stay in L1.
pub(super) fn transpose_bias_activation(
    z: &mut [f32],
    zt: &[f32],
    bias: &[f32],
    activation: Option<Activation>,
) {
    const TILE: usize = 16;
    let fout = bias.len();
    let rows = z.len() / fout;
    for (t, tile) in z.chunks_mut(TILE * fout).enumerate() {
        let r0 = t * TILE;
        let n = tile.len() / fout;
        for (o, &b) in bias.iter().enumerate() {
            let src = &zt[o * rows + r0..o * rows + r0 + n];
            for (i, &v) in src.iter().enumerate() {
                tile[i * fout + o] = v + b;
            }
        }
        if let Some(a) = activation {
            activate(tile, a);
        }
    }
}

/// `v = act(v)` elementwise.
pub(super) fn activate(v: &mut [f32], activation: Activation) {
    match activation {
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
    }
}

/// `z = act(z + bias)` row by row (the activation only on hidden layers).
pub(super) fn bias_activation(z: &mut [f32], bias: &[f32], activation: Option<Activation>) {
    let width = bias.len();
    for row in z.chunks_exact_mut(width) {
        match activation {
            None => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            Some(Activation::Relu) => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = (*v + b).max(0.0);
                }
            }
            Some(Activation::Tanh) => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = (*v + b).tanh();
                }
            }
            Some(Activation::Sigmoid) => {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = 1.0 / (1.0 + (-(*v + b)).exp());
                }
            }
        }
    }
}

/// `dz *= act'(a)` where `a = act(z)` is the stored post-activation value.
pub(super) fn activation_backward(dz: &mut [f32], a: &[f32], activation: Activation) {
    match activation {
        Activation::Relu => {
            for (d, &y) in dz.iter_mut().zip(a) {
                if y <= 0.0 {
                    *d = 0.0;
                }
            }
        }
        Activation::Tanh => {
            for (d, &y) in dz.iter_mut().zip(a) {
                *d *= 1.0 - y * y;
            }
        }
        Activation::Sigmoid => {
            for (d, &y) in dz.iter_mut().zip(a) {
                *d *= y * (1.0 - y);
            }
        }
    }
}

/// `grad += column sums of dz` (`rows x grad.len()`), or `grad = ...` if not `accumulate`,
/// summing each column in row order into `acc` first so that the result is "previous value +
/// this call's gradient".
pub(super) fn add_bias_grad(grad: &mut [f32], dz: &[f32], acc: &mut Vec<f32>, accumulate: bool) {
    let width = grad.len();
    let acc = grow(acc, width);
    acc.fill(0.0);
    for row in dz.chunks_exact(width) {
        for (s, v) in acc.iter_mut().zip(row) {
            *s += v;
        }
    }
    if accumulate {
        for (g, s) in grad.iter_mut().zip(acc.iter()) {
            *g += s;
        }
    } else {
        grad.copy_from_slice(acc);
    }
}

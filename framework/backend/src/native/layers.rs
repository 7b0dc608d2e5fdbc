//! The passes over one block of rows: forward through the hidden and output layers, backward
//! into the parameter gradients, the loss of a block, and the split of a batch into blocks.

use crate::network::LossMask;
use crate::Activation;

use super::fused::*;
use super::gemm::*;
use super::loss::*;

/// Reused activation-sized buffers. Each only ever grows.
#[derive(Default)]
pub(super) struct Scratch {
    /// Post-activation output of every hidden layer (`rows * widths[l + 1]` values in use).
    pub(super) hidden: Vec<Vec<f32>>,
    /// `dL/dlogits` of the last [`Network::loss_backward`] call.
    pub(super) dlogits: Vec<f32>,
    /// Ping-pong buffers for the gradient with respect to hidden pre-activations.
    pub(super) delta: [Vec<f32>; 2],
    /// Column sums for the bias gradient (`widths` max).
    pub(super) bias_acc: Vec<f32>,
    /// A layer's pre-activations, transposed (`units x rows`), for small batches.
    pub(super) zt: Vec<f32>,
}

/// Where the gradient flowing into the current layer's pre-activation lives.
#[derive(Clone, Copy)]
pub(super) enum Upstream {
    /// The top-level gradient (`dlogits` or the caller's cotangent).
    Top,
    /// `scratch.delta[i]`.
    Delta(usize),
}

/// Batches with at least this many rows are cut into two halves that go through the whole
/// network (forward, loss, backward) on the two threads side by side; smaller batches split
/// each large GEMM instead. See the module documentation.
pub(super) const DATA_PARALLEL_MIN_ROWS: usize = 64;

/// What one pass over a block of rows reads: the layer widths, the activation and the
/// parameter values.
#[derive(Clone, Copy)]
pub(super) struct Weights<'a> {
    /// `[input, hidden.., output]`.
    pub(super) widths: &'a [usize],
    pub(super) activation: Activation,
    pub(super) values: &'a [Vec<f32>],
}

impl Weights<'_> {
    pub(super) fn hidden_layers(&self) -> usize {
        self.widths.len() - 2
    }

    /// Runs the hidden layers on `x` (`rows > 0` rows), leaving their post-activation outputs
    /// in `s.hidden`.
    pub(super) fn forward_hidden(&self, s: &mut Scratch, x: &[f32], rows: usize, par: bool) {
        let Scratch { hidden, zt, .. } = s;
        for l in 0..self.hidden_layers() {
            let (fin, fout) = (self.widths[l], self.widths[l + 1]);
            let (done, rest) = hidden.split_at_mut(l);
            let input = if l == 0 {
                x
            } else {
                &done[l - 1][..rows * fin]
            };
            let z = grow(&mut rest[0], rows * fout);
            let (w, b) = (&self.values[2 * l], &self.values[2 * l + 1]);
            dense_forward(z, zt, input, w, b, fin, Some(self.activation), par);
        }
    }

    /// The input of the output layer: `x` itself or the last hidden activation.
    pub(super) fn penultimate<'a>(
        &self,
        hidden: &'a [Vec<f32>],
        x: &'a [f32],
        rows: usize,
    ) -> &'a [f32] {
        match hidden.last() {
            Some(h) => &h[..rows * self.widths[self.widths.len() - 2]],
            None => x,
        }
    }

    /// Runs the output layer after [`Self::forward_hidden`], writing the logits into `out`
    /// (`rows x output` values).
    pub(super) fn forward_output(
        &self,
        s: &mut Scratch,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        par: bool,
    ) {
        let l = self.widths.len() - 2;
        let fin = self.widths[l];
        let input = self.penultimate(&s.hidden, x, rows);
        let (w, b) = (&self.values[2 * l], &self.values[2 * l + 1]);
        dense_forward(out, &mut s.zt, input, w, b, fin, None, par);
    }

    /// Backpropagates `top` (`rows x output`, the gradient with respect to the logits; `None`
    /// for `s.dlogits`) through every layer after [`Self::forward_hidden`] on the same `x`,
    /// adding the parameter gradients into `grads` (or overwriting them if not `accumulate`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        s: &mut Scratch,
        x: &[f32],
        rows: usize,
        external: Option<&[f32]>,
        grads: &mut [Vec<f32>],
        accumulate: bool,
        par: bool,
    ) {
        let widths = self.widths;
        let Scratch {
            hidden,
            dlogits,
            delta,
            bias_acc,
            ..
        } = s;
        let top: &[f32] = match external {
            Some(cot) => cot,
            None => &dlogits[..rows * widths[widths.len() - 1]],
        };
        let mut upstream = Upstream::Top;
        for l in (0..widths.len() - 1).rev() {
            let (fin, fout) = (widths[l], widths[l + 1]);
            let input = if l == 0 {
                x
            } else {
                &hidden[l - 1][..rows * fin]
            };
            // Split the ping-pong buffers into (gradient flowing in, buffer for the next one).
            let (d0, d1) = delta.split_at_mut(1);
            let (dz, next): (&[f32], &mut Vec<f32>) = match upstream {
                Upstream::Top => (top, &mut d0[0]),
                Upstream::Delta(0) => (&d0[0][..rows * fout], &mut d1[0]),
                Upstream::Delta(_) => (&d1[0][..rows * fout], &mut d0[0]),
            };
            let dz_t = View::row_major(dz, rows, fout).t();
            let h = View::row_major(input, rows, fin);
            let (gw, gb) = grads[2 * l..2 * l + 2].split_at_mut(1);
            let (gw, gb) = (&mut gw[0][..], &mut gb[0][..]);
            if l == 0 {
                // dW += dZᵀ · H, split over the output units (rows of dW). The gradient with
                // respect to the network input is not needed.
                split_rows(par, gw, fin, rows * fin, |o0, gw| {
                    let part = View {
                        data: &dz[o0..],
                        rows: gw.len() / fin,
                        ..dz_t
                    };
                    matmul(gw, part, h, accumulate);
                });
                add_bias_grad(gb, dz, bias_acc, accumulate);
                break;
            }
            // Two independent products of equal size: dW += dZᵀ · H, and dH = dZ · W followed
            // by the activation derivative of layer l - 1.
            let dh = grow(next, rows * fin);
            let w = View::row_major(&self.values[2 * l], fout, fin);
            both(
                par,
                rows * fin * fout,
                || matmul(gw, dz_t, h, accumulate),
                || {
                    matmul(dh, View::row_major(dz, rows, fout), w, false);
                    activation_backward(dh, input, self.activation);
                },
            );
            add_bias_grad(gb, dz, bias_acc, accumulate);
            upstream = Upstream::Delta(match upstream {
                Upstream::Delta(0) => 1,
                _ => 0,
            });
        }
    }
}

/// The inputs, targets and logits of one block of rows of a [`Network::loss_backward`] call.
pub(super) struct LossRows<'a> {
    pub(super) x: &'a [f32],
    pub(super) targets: &'a [usize],
    pub(super) logits: &'a mut [f32],
}

/// Forward, loss and backward of one block of rows; returns the block's summed loss. The
/// gradient is scaled by `inv_total_rows`, so that the blocks' gradients add up to the
/// gradient of the whole batch's mean loss.
pub(super) fn loss_block(
    w: Weights<'_>,
    b: Block<'_>,
    r: LossRows<'_>,
    mask: &LossMask<'_>,
    inv_total_rows: f32,
) -> f64 {
    let classes = w.widths[w.widths.len() - 1];
    let s = b.scratch;
    w.forward_hidden(s, r.x, b.rows, b.par);
    w.forward_output(s, r.x, b.rows, r.logits, b.par);
    let dlogits = grow(&mut s.dlogits, b.rows * classes);
    let loss = softmax_cross_entropy(
        r.logits,
        classes,
        r.targets,
        |row, c| mask.allowed(b.row0 + row, c),
        inv_total_rows,
        dlogits,
    );
    w.backward(s, r.x, b.rows, None, b.grads, b.accumulate, b.par);
    loss
}

/// `dst[i] += src[i]` for every tensor, large tensors cut into two halves run side by side.
/// Elementwise, so the cut does not change any result.
pub(super) fn add_grads(dst: &mut [Vec<f32>], src: &[Vec<f32>]) {
    pub(super) fn add(d: &mut [f32], s: &[f32]) {
        for (a, b) in d.iter_mut().zip(s) {
            *a += b;
        }
    }
    for (d, s) in dst.iter_mut().zip(src) {
        if d.len() >= 1 << 15 && rayon::current_num_threads() >= 2 {
            let half = d.len() / 2;
            let (d0, d1) = d.split_at_mut(half);
            let (s0, s1) = s.split_at(half);
            rayon::join(|| add(d0, s0), || add(d1, s1));
        } else {
            add(d, s);
        }
    }
}

/// [`NativeMlp`] split into what a pass reads (the weights) and what it writes.
pub(super) struct Parts<'a> {
    pub(super) weights: Weights<'a>,
    pub(super) scratch: &'a mut [Scratch; 2],
    pub(super) grads: &'a mut [Vec<f32>],
    /// The second block's gradients in a data-parallel batch.
    pub(super) side_grads: &'a mut Vec<Vec<f32>>,
}

/// One block of rows of a batch, with where its pass writes.
pub(super) struct Block<'a> {
    pub(super) scratch: &'a mut Scratch,
    /// Index of the block's first row in the batch.
    pub(super) row0: usize,
    pub(super) rows: usize,
    /// Where the block's parameter gradients go: added if `accumulate`, else overwritten.
    pub(super) grads: &'a mut [Vec<f32>],
    pub(super) accumulate: bool,
    /// Whether the block may split its GEMMs in two (only when it is the whole batch).
    pub(super) par: bool,
}

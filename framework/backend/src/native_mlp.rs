//! A hand-fused dense-MLP implementation of [`Network`] on top of the `gemm` crate.
//!
//! [`NativeMlp`] computes exactly what [`crate::DfdxMlp`] computes (same parameter layout, same
//! loss, same masking rules, same errors) without a tape or device tensors:
//!
//! - **forward**: per layer one GEMM `Z = H · Wᵀ` reading the host weights in place (`W` is
//!   `[out, in]` row-major, so `Wᵀ` is just a strided view), followed by one fused pass that adds
//!   the bias and applies the activation (for batches smaller than the layer the GEMM computes
//!   `Zᵀ = W · Hᵀ` instead, which spares it a copy of `W`, and the fused pass transposes);
//! - **loss**: a numerically stable (max-shifted) masked log-softmax per row that writes
//!   `dL/dlogits = (softmax - onehot) / rows` directly;
//! - **backward**: per layer `dW += dZᵀ · H` accumulated by the GEMM straight into the host
//!   gradient buffer, the bias gradient as a column sum, and `dH = dZ · W` followed by one fused
//!   pass multiplying by the activation derivative (computed from the stored post-activation
//!   values). The gradient with respect to the network input is never computed.
//!
//! All activation-sized buffers live in the struct and are reused; they only grow when a larger
//! batch arrives. Parameter values and gradients are read and written in place in the
//! [`ParamStore`], so there is no copy of the parameters either.
//!
//! Parallelism and determinism: work is cut into two tasks run with `rayon::join` on the
//! current rayon pool, each task calling a single-threaded GEMM. A training batch of at least
//! `DATA_PARALLEL_MIN_ROWS` rows is cut into two halves that go through the whole network
//! (forward, loss, backward) side by side, each in its own scratch buffers and cache: the first
//! half adds its gradients into the store, the second writes them into side buffers that are then
//! added elementwise (one join for the passes, one for the sum, instead of one per layer).
//! Smaller batches, and forward-only calls, stay in one block and split each large GEMM instead:
//! the backward pass of a hidden layer runs its two independent, equally large products (`dW`
//! and `dH`) side by side, and every other large GEMM (with the fused pass that follows it) is
//! split into two halves along the rows of its *output* (batch rows or output units). How the
//! work is cut depends only on the shapes, never on the number of threads, so the results are
//! bit-identical across runs and across pool sizes (with a one-thread pool the two tasks simply
//! run in turn). Two tasks match the 2-core target machines; cutting the work ourselves beat the
//! GEMM crate's own threading at these sizes. Callers that take many steps should run on a pool
//! thread ([`crate::pool::install`]) so that each join is a cheap work-stealing push.

use std::fmt;

use crate::network::{check_loss_args, LossMask};
use crate::pool::install;
use crate::{Activation, BackendError, Inputs, MlpSpec, Network, ParamStore};

/// A dense MLP with a fused forward/backward pass on the `gemm` crate.
///
/// Parameters and gradients are the host buffers of [`Network::params`]; see the crate-level
/// [`Network`] contract. Built by [`NativeMlp::new`] or [`crate::build_network_with`].
pub struct NativeMlp {
    spec: MlpSpec,
    /// `[input, hidden.., output]`.
    widths: Vec<usize>,
    params: ParamStore,
    /// One set per block of rows (see [`DATA_PARALLEL_MIN_ROWS`]).
    scratch: [Scratch; 2],
    /// Gradients of the second half of a data-parallel batch, before they are added to the
    /// store.
    side_grads: Vec<Vec<f32>>,
}

/// Reused activation-sized buffers. Each only ever grows.
#[derive(Default)]
struct Scratch {
    /// Post-activation output of every hidden layer (`rows * widths[l + 1]` values in use).
    hidden: Vec<Vec<f32>>,
    /// `dL/dlogits` of the last [`Network::loss_backward`] call.
    dlogits: Vec<f32>,
    /// Ping-pong buffers for the gradient with respect to hidden pre-activations.
    delta: [Vec<f32>; 2],
    /// Column sums for the bias gradient (`widths` max).
    bias_acc: Vec<f32>,
    /// A layer's pre-activations, transposed (`units x rows`), for small batches.
    zt: Vec<f32>,
}

impl fmt::Debug for NativeMlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeMlp")
            .field("spec", &self.spec)
            .field("num_params", &self.params.numel())
            .finish_non_exhaustive()
    }
}

/// Makes `buf` at least `n` long (allocating only when it must grow) and returns its first `n`
/// values. Their content is unspecified; callers overwrite them.
fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// True if every element lies inside `data` (and the strides fit an `isize`).
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(r, c)| r.checked_add(c));
        let max = isize::MAX as usize;
        self.rs <= max && self.cs <= max && matches!(last, Some(i) if i < self.data.len())
    }
}

/// `dst = a · b` (or `dst += a · b` if `accumulate`), `dst` contiguous row-major
/// `a.rows x b.cols`, on the calling thread.
fn matmul(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // These are internal invariants (every caller passes validated shapes); checking them here
    // is what makes the unsafe call below sound.
    assert!(
        b.rows == k && dst.len() == m * n && a.in_bounds() && b.in_bounds(),
        "native_mlp: inconsistent GEMM operands"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every index the GEMM touches is `i * rs + j * cs` with `i < rows`, `j < cols`
    // of the corresponding operand, which `in_bounds` (and `dst.len() == m * n` for the
    // row-major destination) places inside the borrowed slices; `dst` is uniquely borrowed and
    // cannot alias `a` or `b`; `in_bounds` also checked that the strides fit an `isize`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Products with fewer multiply-adds than this run on one thread: below it, handing half of
/// the work to another thread costs about as much as it saves.
const SPLIT_MIN_MACS: usize = 1 << 20;

/// Runs `f(first_row, rows_chunk)` over `dst` (row-major, `width` values per row), either once
/// over all rows or, if `par` is set and the work (`macs_per_row` per row) is large enough, on
/// its two halves in parallel. The split depends only on the shape, so results do not depend on the thread count.
fn split_rows(
    par: bool,
    dst: &mut [f32],
    width: usize,
    macs_per_row: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let rows = dst.len() / width.max(1);
    if !par || rows < 2 || rows.saturating_mul(macs_per_row) < SPLIT_MIN_MACS {
        f(0, dst);
        return;
    }
    let half = rows / 2;
    let (lo, hi) = dst.split_at_mut(half * width);
    if rayon::current_num_threads() < 2 {
        // Same halves, same results, without the task overhead.
        f(0, lo);
        f(half, hi);
    } else {
        rayon::join(|| f(0, lo), || f(half, hi));
    }
}

/// Runs `a` and `b`, in parallel if `par` is set, there is enough work (`macs` each) and more
/// than one thread.
fn both(par: bool, macs: usize, a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    if !par || macs < SPLIT_MIN_MACS || rayon::current_num_threads() < 2 {
        a();
        b();
    } else {
        rayon::join(a, b);
    }
}

/// One dense layer on `input` (`rows x fin`): `z = act(input · Wᵀ + b)`, `z` being
/// `rows x fout` with `fout = bias.len()`; split over batch rows if `par`.
///
/// The GEMM packs (copies into its panel layout) whichever operand sits on its "row" side.
/// With `z` row-major that is `W`, which is expensive when the batch is small (each of the two
/// halves packs all of `W`); so when there are fewer rows than output units the product is
/// computed transposed instead, `Zᵀ = W · inputᵀ` into `zt` (split over output units, `W` then
/// read in place), and the bias/activation pass transposes it into `z`.
#[allow(clippy::too_many_arguments)]
fn dense_forward(
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
fn transpose_bias_activation(
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
fn activate(v: &mut [f32], activation: Activation) {
    match activation {
        Activation::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Activation::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
        Activation::Sigmoid => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
    }
}

/// `z = act(z + bias)` row by row (the activation only on hidden layers).
fn bias_activation(z: &mut [f32], bias: &[f32], activation: Option<Activation>) {
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
fn activation_backward(dz: &mut [f32], a: &[f32], activation: Activation) {
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
fn add_bias_grad(grad: &mut [f32], dz: &[f32], acc: &mut Vec<f32>, accumulate: bool) {
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

/// Where the gradient flowing into the current layer's pre-activation lives.
#[derive(Clone, Copy)]
enum Upstream {
    /// The top-level gradient (`dlogits` or the caller's cotangent).
    Top,
    /// `scratch.delta[i]`.
    Delta(usize),
}

/// Batches with at least this many rows are cut into two halves that go through the whole
/// network (forward, loss, backward) on the two threads side by side; smaller batches split
/// each large GEMM instead. See the module documentation.
const DATA_PARALLEL_MIN_ROWS: usize = 64;

/// What one pass over a block of rows reads: the layer widths, the activation and the
/// parameter values.
#[derive(Clone, Copy)]
struct Weights<'a> {
    /// `[input, hidden.., output]`.
    widths: &'a [usize],
    activation: Activation,
    values: &'a [Vec<f32>],
}

impl Weights<'_> {
    fn hidden_layers(&self) -> usize {
        self.widths.len() - 2
    }

    /// Runs the hidden layers on `x` (`rows > 0` rows), leaving their post-activation outputs
    /// in `s.hidden`.
    fn forward_hidden(&self, s: &mut Scratch, x: &[f32], rows: usize, par: bool) {
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
    fn penultimate<'a>(&self, hidden: &'a [Vec<f32>], x: &'a [f32], rows: usize) -> &'a [f32] {
        match hidden.last() {
            Some(h) => &h[..rows * self.widths[self.widths.len() - 2]],
            None => x,
        }
    }

    /// Runs the output layer after [`Self::forward_hidden`], writing the logits into `out`
    /// (`rows x output` values).
    fn forward_output(&self, s: &mut Scratch, x: &[f32], rows: usize, out: &mut [f32], par: bool) {
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
    fn backward(
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
struct LossRows<'a> {
    x: &'a [f32],
    targets: &'a [usize],
    logits: &'a mut [f32],
}

/// Forward, loss and backward of one block of rows; returns the block's summed loss. The
/// gradient is scaled by `inv_total_rows`, so that the blocks' gradients add up to the
/// gradient of the whole batch's mean loss.
fn loss_block(
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
fn add_grads(dst: &mut [Vec<f32>], src: &[Vec<f32>]) {
    fn add(d: &mut [f32], s: &[f32]) {
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

impl NativeMlp {
    /// Validates `spec` and initialises the parameters with [`ParamStore::init_mlp`] from
    /// `seed` (the same bits as every other backend for the same seed).
    pub fn new(spec: MlpSpec, seed: u64) -> Result<Self, BackendError> {
        spec.validate()?;
        let params = ParamStore::init_mlp(&spec, seed);
        let widths = spec.widths();
        let scratch = || Scratch {
            hidden: vec![Vec::new(); spec.hidden.len()],
            ..Scratch::default()
        };
        Ok(NativeMlp {
            widths,
            params,
            scratch: [scratch(), scratch()],
            side_grads: Vec::new(),
            spec,
        })
    }

    /// Checks that the parameter store still has this network's tensors (callers may replace
    /// it wholesale through [`Network::params_mut`]).
    fn check_params(&self) -> Result<(), BackendError> {
        let expected = 2 * self.spec.num_layers();
        if self.params.len() != expected {
            return Err(BackendError::Spec(format!(
                "parameter store has {} tensors, the network needs {expected}",
                self.params.len()
            )));
        }
        for (l, w) in self.widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let (wi, bi) = (2 * l, 2 * l + 1);
            if self.params.value(wi).len() != fan_out * fan_in
                || self.params.grad(wi).len() != fan_out * fan_in
                || self.params.value(bi).len() != fan_out
                || self.params.grad(bi).len() != fan_out
            {
                return Err(BackendError::Spec(format!(
                    "parameter tensors of layer {l} do not have shapes [{fan_out}, {fan_in}] \
                     and [{fan_out}]"
                )));
            }
        }
        Ok(())
    }

    /// Checks `x` against the spec (same errors as the dfdx backend).
    fn check_input(&self, x: &Inputs<'_>) -> Result<(), BackendError> {
        if x.cols != self.spec.input {
            return Err(BackendError::shape(
                "x (input columns)",
                self.spec.input,
                x.cols,
            ));
        }
        if x.rows.checked_mul(x.cols) != Some(x.data.len()) {
            return Err(BackendError::shape(
                "x (input data length)",
                format!("{} x {} values", x.rows, x.cols),
                x.data.len(),
            ));
        }
        Ok(())
    }

    /// Splits `self` into what a pass reads and what it writes.
    fn parts(&mut self) -> Parts<'_> {
        let (values, grads) = self.params.values_and_grads_mut();
        Parts {
            weights: Weights {
                widths: &self.widths,
                activation: self.spec.activation,
                values,
            },
            scratch: &mut self.scratch,
            grads,
            side_grads: &mut self.side_grads,
        }
    }

    /// Forward and backward of a batch of `rows` rows, adding its gradients into the store:
    /// `pass` does one [`Block`] of rows and returns its part of the result. Batches of at least
    /// [`DATA_PARALLEL_MIN_ROWS`] rows go as two halves side by side, the second half into
    /// `side_grads` (overwritten), which are then added to the store; smaller ones as one block
    /// with the large GEMMs split.
    fn data_parallel<R: Send>(
        &mut self,
        rows: usize,
        pass: impl Fn(Weights<'_>, Block<'_>) -> R + Sync,
    ) -> (R, Option<R>) {
        let Parts {
            weights: w,
            scratch,
            grads,
            side_grads: side,
        } = self.parts();
        if rows < DATA_PARALLEL_MIN_ROWS {
            let block = Block {
                scratch: &mut scratch[0],
                row0: 0,
                rows,
                grads,
                accumulate: true,
                par: true,
            };
            return (install(|| pass(w, block)), None);
        }
        let fits = side.len() == grads.len()
            && side
                .iter()
                .zip(grads.iter())
                .all(|(s, g)| s.len() == g.len());
        if !fits {
            *side = grads.iter().map(|g| vec![0.0; g.len()]).collect();
        }
        let half = rows / 2;
        let (s0, s1) = scratch.split_at_mut(1);
        let pass = &pass;
        install(|| {
            let first = Block {
                scratch: &mut s0[0],
                row0: 0,
                rows: half,
                grads: &mut *grads,
                accumulate: true,
                par: false,
            };
            let second = Block {
                scratch: &mut s1[0],
                row0: half,
                rows: rows - half,
                grads: &mut side[..],
                accumulate: false,
                par: false,
            };
            let results = if rayon::current_num_threads() < 2 {
                (pass(w, first), pass(w, second))
            } else {
                rayon::join(|| pass(w, first), || pass(w, second))
            };
            add_grads(grads, side);
            (results.0, Some(results.1))
        })
    }
}

/// [`NativeMlp`] split into what a pass reads (the weights) and what it writes.
struct Parts<'a> {
    weights: Weights<'a>,
    scratch: &'a mut [Scratch; 2],
    grads: &'a mut [Vec<f32>],
    /// The second block's gradients in a data-parallel batch.
    side_grads: &'a mut Vec<Vec<f32>>,
}

/// One block of rows of a batch, with where its pass writes.
struct Block<'a> {
    scratch: &'a mut Scratch,
    /// Index of the block's first row in the batch.
    row0: usize,
    rows: usize,
    /// Where the block's parameter gradients go: added if `accumulate`, else overwritten.
    grads: &'a mut [Vec<f32>],
    accumulate: bool,
    /// Whether the block may split its GEMMs in two (only when it is the whole batch).
    par: bool,
}

/// Masked softmax cross-entropy of `logits` (`rows x classes`): writes
/// `(softmax - onehot) * inv_rows` into `dlogits` and returns the summed loss. `allowed(r, c)`
/// tells whether class `c` takes part in row `r`'s softmax; targets were checked to be allowed.
fn softmax_cross_entropy(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
    allowed: impl Fn(usize, usize) -> bool,
    inv_rows: f32,
    dlogits: &mut [f32],
) -> f64 {
    let mut total = 0.0f64;
    for (r, (row, drow)) in logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes))
        .enumerate()
    {
        // Max-shifted log-sum-exp over the enabled classes (the target is one of them, so
        // there is at least one and `max` is finite unless a logit is infinite).
        let mut max = f32::NEG_INFINITY;
        for (c, &v) in row.iter().enumerate() {
            if allowed(r, c) && v > max {
                max = v;
            }
        }
        let mut sum = 0.0f32;
        for (c, (&v, d)) in row.iter().zip(drow.iter_mut()).enumerate() {
            *d = if allowed(r, c) {
                let e = (v - max).exp();
                sum += e;
                e
            } else {
                0.0
            };
        }
        let t = targets[r];
        total += f64::from(max) + f64::from(sum).ln() - f64::from(row[t]);
        let scale = inv_rows / sum;
        for d in drow.iter_mut() {
            *d *= scale;
        }
        drow[t] -= inv_rows;
    }
    total
}

impl Network for NativeMlp {
    fn backend_name(&self) -> &'static str {
        "native"
    }

    fn spec(&self) -> &MlpSpec {
        &self.spec
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn forward(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        self.check_input(&x)?;
        self.check_params()?;
        out.clear();
        if x.rows == 0 {
            return Ok(());
        }
        out.resize(x.rows * self.spec.output, 0.0);
        let Parts {
            weights: w,
            scratch,
            ..
        } = self.parts();
        install(|| {
            w.forward_hidden(&mut scratch[0], x.data, x.rows, true);
            w.forward_output(&mut scratch[0], x.data, x.rows, out, true);
        });
        Ok(())
    }

    fn features(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        self.check_input(&x)?;
        self.check_params()?;
        out.clear();
        if x.rows == 0 || self.spec.hidden.is_empty() {
            // No hidden layer: the penultimate representation is the input itself.
            out.extend_from_slice(x.data);
            return Ok(());
        }
        let Parts {
            weights: w,
            scratch,
            ..
        } = self.parts();
        install(|| w.forward_hidden(&mut scratch[0], x.data, x.rows, true));
        out.extend_from_slice(w.penultimate(&scratch[0].hidden, x.data, x.rows));
        Ok(())
    }

    /// See [`Network::loss_backward`]. With zero rows the loss is defined as 0 and no gradient
    /// is added.
    fn loss_backward(
        &mut self,
        x: Inputs<'_>,
        targets: &[usize],
        class_mask: Option<&[bool]>,
        logits_out: &mut Vec<f32>,
    ) -> Result<f32, BackendError> {
        let (rows, classes, cols) = (x.rows, self.spec.output, x.cols);
        let mask = check_loss_args(rows, classes, targets, class_mask)?;
        self.check_input(&x)?;
        self.check_params()?;
        logits_out.clear();
        if rows == 0 {
            return Ok(0.0);
        }
        logits_out.resize(rows * classes, 0.0);
        // Each block writes its own rows of the logits; the cells hand them out.
        let half = if rows < DATA_PARALLEL_MIN_ROWS {
            rows
        } else {
            rows / 2
        };
        let (lo, hi) = logits_out.split_at_mut(half * classes);
        let cells = [std::sync::Mutex::new(lo), std::sync::Mutex::new(hi)];
        let inv_rows = 1.0 / rows as f32;
        let (first, second) = self.data_parallel(rows, |w, b| {
            let mut logits = cells[usize::from(b.row0 > 0)]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (r0, n) = (b.row0, b.rows);
            let rows_of = LossRows {
                x: &x.data[r0 * cols..(r0 + n) * cols],
                targets: &targets[r0..r0 + n],
                logits: &mut logits[..],
            };
            loss_block(w, b, rows_of, &mask, inv_rows)
        });
        let total = first + second.unwrap_or(0.0);
        Ok((total / rows as f64) as f32)
    }

    fn vjp(&mut self, x: Inputs<'_>, cotangent: &[f32]) -> Result<(), BackendError> {
        let classes = self.spec.output;
        if x.rows.checked_mul(classes) != Some(cotangent.len()) {
            return Err(BackendError::shape(
                "cotangent (one per logit)",
                format!("{} x {classes} values", x.rows),
                cotangent.len(),
            ));
        }
        self.check_input(&x)?;
        self.check_params()?;
        if x.rows == 0 {
            return Ok(());
        }
        let cols = x.cols;
        // The logits themselves are not needed: only the hidden activations.
        self.data_parallel(x.rows, |w, b| {
            let (r0, n) = (b.row0, b.rows);
            let xb = &x.data[r0 * cols..(r0 + n) * cols];
            let cot = &cotangent[r0 * classes..(r0 + n) * classes];
            w.forward_hidden(b.scratch, xb, n, b.par);
            w.backward(b.scratch, xb, n, Some(cot), b.grads, b.accumulate, b.par);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View<'_>, b: View<'_>) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|k| {
                        a.data[i * a.rs + k * a.cs] as f64 * b.data[k * b.rs + j * b.cs] as f64
                    })
                    .sum();
            }
        }
        out
    }

    fn data(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 + salt * 11) % 23) as f32 / 7.0 - 1.5)
            .collect()
    }

    #[test]
    fn matmul_handles_every_stride_combination_overwrites_and_accumulates() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 2), (17, 33, 9), (64, 70, 40), (2, 300, 3)] {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            for a_t in [false, true] {
                for b_t in [false, true] {
                    let av = if a_t {
                        View::row_major(&a, k, m).t()
                    } else {
                        View::row_major(&a, m, k)
                    };
                    let bv = if b_t {
                        View::row_major(&b, n, k).t()
                    } else {
                        View::row_major(&b, k, n)
                    };
                    let want = naive(av, bv);
                    // Stale NaNs in the destination must not leak into an overwrite.
                    let mut dst = vec![f32::NAN; m * n];
                    matmul(&mut dst, av, bv, false);
                    for (g, w) in dst.iter().zip(&want) {
                        assert!(
                            (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{g} vs {w}"
                        );
                    }
                    let once = dst.clone();
                    matmul(&mut dst, av, bv, true);
                    for (g, o) in dst.iter().zip(&once) {
                        assert!((g - 2.0 * o).abs() <= 1e-5 * (1.0 + o.abs()));
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "inconsistent GEMM operands")]
    fn matmul_rejects_out_of_bounds_views() {
        let a = vec![0.0f32; 6];
        let mut dst = vec![0.0f32; 4];
        let short = View {
            data: &a,
            rows: 2,
            cols: 4,
            rs: 4,
            cs: 1,
        };
        matmul(&mut dst, View::row_major(&a, 2, 3), short, false);
    }

    #[test]
    fn transposed_and_direct_forward_paths_agree() {
        // Same layer computed through both paths of dense_forward: rows < fout takes the
        // transposed one, so compare it with the direct pass done by hand.
        for act in [None, Some(Activation::Relu), Some(Activation::Tanh)] {
            let (rows, fin, fout) = (5, 7, 12);
            let (x, w, b) = (data(rows * fin, 3), data(fout * fin, 4), data(fout, 5));
            let mut via_t = vec![0.0; rows * fout];
            dense_forward(&mut via_t, &mut Vec::new(), &x, &w, &b, fin, act, true);
            let mut direct = vec![0.0; rows * fout];
            let w_t = View::row_major(&w, fout, fin).t();
            matmul(&mut direct, View::row_major(&x, rows, fin), w_t, false);
            bias_activation(&mut direct, &b, act);
            let want = naive(View::row_major(&x, rows, fin), w_t);
            for (i, (p, q)) in via_t.iter().zip(&direct).enumerate() {
                assert!((p - q).abs() <= 1e-5, "{act:?} [{i}]: {p} vs {q}");
            }
            if act.is_none() {
                for (i, (p, w)) in via_t.iter().zip(&want).enumerate() {
                    let w = w + b[i % fout] as f64;
                    assert!((*p as f64 - w).abs() <= 1e-4, "[{i}]: {p} vs {w}");
                }
            }
        }
    }
}

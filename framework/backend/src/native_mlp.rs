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
//! current rayon pool, each task calling a single-threaded GEMM: the backward pass of a hidden
//! layer runs its two independent, equally large products (`dW` and `dH`) side by side, and every
//! other large GEMM (with the fused pass that follows it) is split into two halves along the rows
//! of its *output* (batch rows or output units). How the work is cut depends only on the shapes,
//! never on the number of threads, and no reduction is ever split, so the results are
//! bit-identical across runs and across pool sizes (with a one-thread pool the two tasks simply
//! run in turn). Two tasks match the 2-core target machines; cutting the work ourselves beat the
//! GEMM crate's own threading at these sizes.

use std::fmt;

use crate::network::check_loss_args;
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
    scratch: Scratch,
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
/// over all rows or, if the work (`macs_per_row` per row) is large enough, on its two halves in
/// parallel. The split depends only on the shape, so results do not depend on the thread count.
fn split_rows(
    dst: &mut [f32],
    width: usize,
    macs_per_row: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let rows = dst.len() / width.max(1);
    if rows < 2 || rows.saturating_mul(macs_per_row) < SPLIT_MIN_MACS {
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

/// Runs `a` and `b`, in parallel if there is enough work (`macs` each) and more than one
/// thread.
fn both(macs: usize, a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    if macs < SPLIT_MIN_MACS || rayon::current_num_threads() < 2 {
        a();
        b();
    } else {
        rayon::join(a, b);
    }
}

/// Runs `f` on a thread of the current rayon pool (the caller's thread if it already is one,
/// or if the pool has a single thread), so that the `rayon::join`s of [`split_rows`] inside it
/// are cheap work-stealing pushes rather than one cross-thread injection and wake-up each.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || rayon::current_num_threads() < 2 {
        f()
    } else {
        rayon::join(f, || ()).0
    }
}

/// One dense layer on `input` (`rows x fin`): `z = act(input · Wᵀ + b)`, `z` being
/// `rows x fout` with `fout = bias.len()`; split over batch rows.
///
/// The GEMM packs (copies into its panel layout) whichever operand sits on its "row" side.
/// With `z` row-major that is `W`, which is expensive when the batch is small (each of the two
/// halves packs all of `W`); so when there are fewer rows than output units the product is
/// computed transposed instead, `Zᵀ = W · inputᵀ` into `zt` (split over output units, `W` then
/// read in place), and the bias/activation pass transposes it into `z`.
fn dense_forward(
    z: &mut [f32],
    zt: &mut Vec<f32>,
    input: &[f32],
    w: &[f32],
    bias: &[f32],
    fin: usize,
    activation: Option<Activation>,
) {
    let fout = bias.len();
    let rows = z.len() / fout;
    if rows < fout {
        let zt = grow(zt, fout * rows);
        let x_t = View::row_major(input, rows, fin).t();
        split_rows(zt, rows, fin * rows, |o0, ztc| {
            let units = ztc.len() / rows;
            let w_part = View::row_major(&w[o0 * fin..(o0 + units) * fin], units, fin);
            matmul(ztc, w_part, x_t, false);
        });
        transpose_bias_activation(z, zt, bias, activation);
        return;
    }
    let w_t = View::row_major(w, fout, fin).t();
    split_rows(z, fout, fin * fout, |r0, zc| {
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

/// `grad += column sums of dz` (`rows x grad.len()`), summing each column in row order into
/// `acc` first so that the result is "previous value + this call's gradient".
fn add_bias_grad(grad: &mut [f32], dz: &[f32], acc: &mut Vec<f32>) {
    let width = grad.len();
    let acc = grow(acc, width);
    acc.fill(0.0);
    for row in dz.chunks_exact(width) {
        for (s, v) in acc.iter_mut().zip(row) {
            *s += v;
        }
    }
    for (g, s) in grad.iter_mut().zip(acc.iter()) {
        *g += s;
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

impl NativeMlp {
    /// Validates `spec` and initialises the parameters with [`ParamStore::init_mlp`] from
    /// `seed` (the same bits as every other backend for the same seed).
    pub fn new(spec: MlpSpec, seed: u64) -> Result<Self, BackendError> {
        spec.validate()?;
        let params = ParamStore::init_mlp(&spec, seed);
        let widths = spec.widths();
        let scratch = Scratch {
            hidden: vec![Vec::new(); spec.hidden.len()],
            ..Scratch::default()
        };
        Ok(NativeMlp {
            spec,
            widths,
            params,
            scratch,
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

    /// Runs the hidden layers on `x` (validated, `rows > 0`), leaving their post-activation
    /// outputs in `scratch.hidden`.
    fn forward_hidden(&mut self, x: &Inputs<'_>) {
        let rows = x.rows;
        let activation = self.spec.activation;
        let Scratch { hidden, zt, .. } = &mut self.scratch;
        for l in 0..self.spec.hidden.len() {
            let (fin, fout) = (self.widths[l], self.widths[l + 1]);
            let (done, rest) = hidden.split_at_mut(l);
            let input = if l == 0 {
                x.data
            } else {
                &done[l - 1][..rows * fin]
            };
            let z = grow(&mut rest[0], rows * fout);
            let (w, b) = (self.params.value(2 * l), self.params.value(2 * l + 1));
            dense_forward(z, zt, input, w, b, fin, Some(activation));
        }
    }

    /// The input of the output layer: `x` itself or the last hidden activation.
    fn penultimate<'a>(
        hidden: &'a [Vec<f32>],
        x: &'a [f32],
        rows: usize,
        width: usize,
    ) -> &'a [f32] {
        match hidden.last() {
            Some(h) => &h[..rows * width],
            None => x,
        }
    }

    /// Runs the output layer after [`Self::forward_hidden`], writing the logits into `out`.
    fn forward_output(&mut self, x: &Inputs<'_>, out: &mut Vec<f32>) {
        let rows = x.rows;
        let l = self.spec.num_layers() - 1;
        let (fin, fout) = (self.widths[l], self.widths[l + 1]);
        out.clear();
        out.resize(rows * fout, 0.0);
        let Scratch { hidden, zt, .. } = &mut self.scratch;
        let input = Self::penultimate(hidden, x.data, rows, fin);
        let (w, b) = (self.params.value(2 * l), self.params.value(2 * l + 1));
        dense_forward(out, zt, input, w, b, fin, None);
    }

    /// Backpropagates `top` (`rows x output`, the gradient with respect to the logits) through
    /// every layer after [`Self::forward_hidden`] on the same `x`, **adding** the parameter
    /// gradients into the store. `top` is `scratch.dlogits` if `external` is `None`.
    fn backward(&mut self, x: &Inputs<'_>, external: Option<&[f32]>) {
        let rows = x.rows;
        let activation = self.spec.activation;
        let Self {
            widths,
            params,
            scratch,
            ..
        } = self;
        let Scratch {
            hidden,
            dlogits,
            delta,
            bias_acc,
            ..
        } = scratch;
        let top: &[f32] = match external {
            Some(cot) => cot,
            None => &dlogits[..rows * widths[widths.len() - 1]],
        };
        let mut upstream = Upstream::Top;
        for l in (0..widths.len() - 1).rev() {
            let (fin, fout) = (widths[l], widths[l + 1]);
            let input = if l == 0 {
                x.data
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
            if l == 0 {
                // dW += dZᵀ · H, split over the output units (rows of dW). The gradient with
                // respect to the network input is not needed.
                split_rows(params.grad_mut(2 * l), fin, rows * fin, |o0, gw| {
                    let part = View {
                        data: &dz[o0..],
                        rows: gw.len() / fin,
                        ..dz_t
                    };
                    matmul(gw, part, h, true);
                });
                add_bias_grad(params.grad_mut(2 * l + 1), dz, bias_acc);
                break;
            }
            // Two independent products of equal size: dW += dZᵀ · H, and dH = dZ · W followed
            // by the activation derivative of layer l - 1.
            let dh = grow(next, rows * fin);
            let (w, gw) = params.value_and_grad_for_update(2 * l);
            let w = View::row_major(w, fout, fin);
            both(
                rows * fin * fout,
                || matmul(gw, dz_t, h, true),
                || {
                    matmul(dh, View::row_major(dz, rows, fout), w, false);
                    activation_backward(dh, input, activation);
                },
            );
            add_bias_grad(params.grad_mut(2 * l + 1), dz, bias_acc);
            upstream = Upstream::Delta(match upstream {
                Upstream::Delta(0) => 1,
                _ => 0,
            });
        }
    }
}

/// Masked softmax cross-entropy of `logits` (`rows x classes`): writes
/// `(softmax - onehot) / rows` into `dlogits` and returns the mean loss. `allowed(r, c)` tells
/// whether class `c` takes part in row `r`'s softmax; targets were checked to be allowed.
fn softmax_cross_entropy(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
    allowed: impl Fn(usize, usize) -> bool,
    dlogits: &mut [f32],
) -> f32 {
    let rows = targets.len();
    let inv_rows = 1.0 / rows as f32;
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
    (total / rows as f64) as f32
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
        if x.rows == 0 {
            out.clear();
            return Ok(());
        }
        on_pool(|| {
            self.forward_hidden(&x);
            self.forward_output(&x, out);
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
        on_pool(|| self.forward_hidden(&x));
        let width = self.spec.feature_dim();
        out.extend_from_slice(Self::penultimate(
            &self.scratch.hidden,
            x.data,
            x.rows,
            width,
        ));
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
        let (rows, classes) = (x.rows, self.spec.output);
        let mask = check_loss_args(rows, classes, targets, class_mask)?;
        self.check_input(&x)?;
        self.check_params()?;
        if rows == 0 {
            logits_out.clear();
            return Ok(0.0);
        }

        let loss = on_pool(|| {
            self.forward_hidden(&x);
            self.forward_output(&x, logits_out);
            let dlogits = grow(&mut self.scratch.dlogits, rows * classes);
            let loss = softmax_cross_entropy(
                logits_out,
                classes,
                targets,
                |r, c| mask.allowed(r, c),
                dlogits,
            );
            self.backward(&x, None);
            loss
        });
        Ok(loss)
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
        // The logits themselves are not needed: only the hidden activations.
        on_pool(|| {
            self.forward_hidden(&x);
            self.backward(&x, Some(cotangent));
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
            dense_forward(&mut via_t, &mut Vec::new(), &x, &w, &b, fin, act);
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

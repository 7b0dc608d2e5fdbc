//! The dfdx 0.13 implementation of [`Network`] for MLPs.
//!
//! dfdx's `nn` layers have compile-time sizes, so [`DfdxMlp`] builds the network from
//! runtime-shaped tensors (`Tensor<(usize, usize), f32, Cpu>`) on dfdx's tape: every dense layer
//! is `h = x · Wᵀ + b` with `W` stored `[out, in]` row-major (the [`ParamStore`] layout) and the
//! bias broadcast over rows; the activation follows every hidden layer, not the output layer.
//!
//! The parameters live in the host-owned [`ParamStore`]. Each call copies the current host
//! values into persistent dfdx tensors (`copy_from`, no reallocation), runs the graph, and after
//! a backward pass **adds** dfdx's parameter gradients into the store's gradient buffers.

use std::fmt;

use dfdx::shapes::{Axes2, Axis, HasShape, Rank0};
use dfdx::tensor::{
    AsArray, Cpu, CpuError, Gradients, NoneTape, OwnedTape, Tape, Tensor, TensorFromVec, Trace,
};
use dfdx::tensor_ops::{Backward, BroadcastTo, PermuteTo, SumTo, TryAdd, TryMatMul, TryMul};

use crate::network::check_loss_args;
use crate::{Activation, BackendError, Inputs, MlpSpec, ModelSpec, Network, ParamStore};

/// A runtime-shaped matrix on dfdx's CPU device.
type Matrix<T = NoneTape> = Tensor<(usize, usize), f32, Cpu, T>;
/// A runtime-shaped vector on dfdx's CPU device.
type Vector<T = NoneTape> = Tensor<(usize,), f32, Cpu, T>;
/// The tape used for backward passes.
type Taped = OwnedTape<f32, Cpu>;

/// Added to the logits of classes excluded by a class mask before the softmax.
///
/// Large enough that `exp` of it underflows to exactly zero (so excluded classes get no
/// probability mass and exactly zero gradient) but finite, so that multiplying the resulting
/// log-probability by a zero target weight gives 0, not NaN (`0 * -inf = NaN`).
const MASKED_LOGIT_OFFSET: f32 = -1.0e30;

/// An MLP whose forward and backward passes run on dfdx 0.13's CPU device.
///
/// Parameters and gradients are the host buffers of [`Network::params`]; see the crate-level
/// [`Network`] contract. Built by [`DfdxMlp::new`] or [`crate::build_network`].
pub struct DfdxMlp {
    spec: MlpSpec,
    /// `spec` as the [`ModelSpec`] that [`Network::spec`] returns.
    model: ModelSpec,
    params: ParamStore,
    dev: Cpu,
    /// Device copies of the weights, `[out, in]`, refreshed from `params` on every call.
    weights: Vec<Matrix>,
    /// Device copies of the biases, `[out]`, refreshed from `params` on every call.
    biases: Vec<Vector>,
    /// Reused input buffer (reallocated only when the batch shape changes).
    input: Option<Matrix>,
}

impl fmt::Debug for DfdxMlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DfdxMlp")
            .field("spec", &self.spec)
            .field("num_params", &self.params.numel())
            .finish_non_exhaustive()
    }
}

fn device_err(e: CpuError) -> BackendError {
    // BackendError has no device variant; dfdx's CPU device only fails on allocation.
    BackendError::Spec(format!("dfdx CPU device error: {e}"))
}

impl DfdxMlp {
    /// Validates `spec`, initialises the parameters with [`ParamStore::init_mlp`] from `seed`
    /// and allocates the dfdx tensors.
    pub fn new(spec: MlpSpec, seed: u64) -> Result<Self, BackendError> {
        spec.validate()?;
        let params = ParamStore::init_mlp(&spec, seed);
        let dev = Cpu::seed_from_u64(seed);
        let widths = spec.widths();
        let mut weights = Vec::with_capacity(spec.num_layers());
        let mut biases = Vec::with_capacity(spec.num_layers());
        for (l, w) in widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            weights.push(
                dev.try_tensor_from_vec(params.value(2 * l).to_vec(), (fan_out, fan_in))
                    .map_err(device_err)?,
            );
            biases.push(
                dev.try_tensor_from_vec(params.value(2 * l + 1).to_vec(), (fan_out,))
                    .map_err(device_err)?,
            );
        }
        Ok(DfdxMlp {
            model: ModelSpec::Mlp(spec.clone()),
            spec,
            params,
            dev,
            weights,
            biases,
            input: None,
        })
    }

    /// Checks that the parameter store still has this network's tensors (callers may replace
    /// it wholesale through [`Network::params_mut`]).
    fn check_params(&self) -> Result<(), BackendError> {
        let widths = self.spec.widths();
        let expected = 2 * self.spec.num_layers();
        if self.params.len() != expected {
            return Err(BackendError::Spec(format!(
                "parameter store has {} tensors, the network needs {expected}",
                self.params.len()
            )));
        }
        for (l, w) in widths.windows(2).enumerate() {
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

    /// Copies the current host parameter values into the device tensors.
    fn sync_params(&mut self) -> Result<(), BackendError> {
        self.check_params()?;
        for (l, (w, b)) in self.weights.iter_mut().zip(&mut self.biases).enumerate() {
            // Lengths were checked above, so `copy_from` cannot panic.
            w.copy_from(self.params.value(2 * l));
            b.copy_from(self.params.value(2 * l + 1));
        }
        Ok(())
    }

    /// Checks `x` against the spec and copies it into the reused device input tensor.
    fn load_input(&mut self, x: &Inputs<'_>) -> Result<Matrix, BackendError> {
        if x.cols != self.spec.input {
            return Err(BackendError::shape(
                "x (input columns)",
                self.spec.input,
                x.cols,
            ));
        }
        let numel = x.rows.checked_mul(x.cols);
        if numel != Some(x.data.len()) {
            return Err(BackendError::shape(
                "x (input data length)",
                format!("{} x {} values", x.rows, x.cols),
                x.data.len(),
            ));
        }
        let shape = (x.rows, x.cols);
        match &mut self.input {
            Some(t) if *t.shape() == shape => t.copy_from(x.data),
            slot => {
                let t = self
                    .dev
                    .try_tensor_from_vec(x.data.to_vec(), shape)
                    .map_err(device_err)?;
                *slot = Some(t);
            }
        }
        match &self.input {
            Some(t) => Ok(t.clone()),
            None => Err(BackendError::Spec("input buffer missing".into())),
        }
    }

    /// Runs the first `layers` dense layers on `x`, each followed by the activation unless it is
    /// the output layer.
    fn run_layers<T: Tape<f32, Cpu>>(
        &self,
        x: Matrix<T>,
        layers: usize,
    ) -> Result<Matrix<T>, CpuError> {
        let last = self.spec.num_layers() - 1;
        let mut h = x;
        for l in 0..layers {
            let (w, b) = (&self.weights[l], &self.biases[l]);
            let wt = w.retaped::<T>().try_permute::<_, Axes2<1, 0>>()?;
            let z = h.try_matmul(wt)?;
            let shape = *z.shape();
            let bias = b.retaped::<T>().try_broadcast_like::<_, Axis<0>>(&shape)?;
            h = z.try_add(bias)?;
            if l < last {
                h = match self.spec.activation {
                    Activation::Relu => h.try_relu()?,
                    Activation::Tanh => h.try_tanh()?,
                    Activation::Sigmoid => h.try_sigmoid()?,
                };
            }
        }
        Ok(h)
    }

    /// Adds dfdx's gradients of every parameter into the host gradient buffers.
    fn accumulate_grads(&mut self, grads: &mut Gradients<f32, Cpu>) -> Result<(), BackendError> {
        for l in 0..self.spec.num_layers() {
            let g = grads
                .get_or_alloc_mut(&self.weights[l])
                .map_err(device_err)?;
            add_into(self.params.grad_mut(2 * l), g, "weight gradient")?;
            let g = grads
                .get_or_alloc_mut(&self.biases[l])
                .map_err(device_err)?;
            add_into(self.params.grad_mut(2 * l + 1), g, "bias gradient")?;
        }
        Ok(())
    }

    /// Shared front half of `loss_backward` and `vjp`: validate/load, run the taped forward.
    fn taped_logits(&mut self, x: &Inputs<'_>) -> Result<Matrix<Taped>, BackendError> {
        let input = self.load_input(x)?;
        self.sync_params()?;
        self.run_layers(input.leaky_traced(), self.spec.num_layers())
            .map_err(device_err)
    }
}

/// `dst += src`, elementwise.
fn add_into(dst: &mut [f32], src: &[f32], what: &'static str) -> Result<(), BackendError> {
    if dst.len() != src.len() {
        return Err(BackendError::shape(what, dst.len(), src.len()));
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
    Ok(())
}

/// Copies a contiguous `rows x cols` tensor into `out` (resized).
fn read_matrix<T>(t: &Matrix<T>, out: &mut Vec<f32>) {
    let (rows, cols) = *t.shape();
    out.clear();
    out.resize(rows * cols, 0.0);
    // Every tensor read here is the output of a matmul + bias add or of an activation, which
    // dfdx allocates contiguously with exactly `rows * cols` elements, so `copy_into` (which
    // requires equal lengths) is safe.
    t.copy_into(out);
}

impl Network for DfdxMlp {
    fn backend_name(&self) -> &'static str {
        "dfdx"
    }

    fn spec(&self) -> &ModelSpec {
        &self.model
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn forward(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        let input = self.load_input(&x)?;
        self.sync_params()?;
        if x.rows == 0 {
            out.clear();
            return Ok(());
        }
        let logits = self
            .run_layers(input, self.spec.num_layers())
            .map_err(device_err)?;
        read_matrix(&logits, out);
        Ok(())
    }

    fn features(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        let input = self.load_input(&x)?;
        self.sync_params()?;
        let hidden = self.spec.num_layers() - 1;
        if x.rows == 0 || hidden == 0 {
            // No hidden layer: the penultimate representation is the input itself.
            out.clear();
            out.extend_from_slice(x.data);
            return Ok(());
        }
        let feats = self.run_layers(input, hidden).map_err(device_err)?;
        read_matrix(&feats, out);
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
        let checked = check_loss_args(rows, classes, targets, class_mask)?;
        if rows == 0 {
            self.load_input(&x)?;
            self.check_params()?;
            logits_out.clear();
            return Ok(0.0);
        }

        let logits = self.taped_logits(&x)?;
        read_matrix(&logits, logits_out);

        // loss = sum_r -(1/rows) * log_softmax(logits + mask_offset)[r, target_r]
        let shape = (rows, classes);
        let masked = match class_mask {
            None => logits,
            Some(mask) => {
                let offsets: Vec<f32> = mask
                    .iter()
                    .map(|&on| if on { 0.0 } else { MASKED_LOGIT_OFFSET })
                    .collect();
                let offsets: Matrix = if checked.per_row() {
                    self.dev
                        .try_tensor_from_vec(offsets, shape)
                        .map_err(device_err)?
                } else {
                    let v: Vector = self
                        .dev
                        .try_tensor_from_vec(offsets, (classes,))
                        .map_err(device_err)?;
                    v.try_broadcast_like::<_, Axis<0>>(&shape)
                        .map_err(device_err)?
                };
                logits.try_add(offsets).map_err(device_err)?
            }
        };
        let mut weights = vec![0.0f32; rows * classes];
        let w = -1.0 / rows as f32;
        for (r, &t) in targets.iter().enumerate() {
            weights[r * classes + t] = w;
        }
        let weights: Matrix = self
            .dev
            .try_tensor_from_vec(weights, shape)
            .map_err(device_err)?;
        let loss = masked
            .try_log_softmax::<Axis<1>>()
            .and_then(|lp| lp.try_mul(weights))
            .and_then(|t| t.try_sum::<Rank0, Axes2<0, 1>>())
            .map_err(device_err)?;
        let value = loss.array();
        let mut grads = loss.try_backward().map_err(device_err)?;
        self.accumulate_grads(&mut grads)?;
        Ok(value)
    }

    fn vjp(&mut self, x: Inputs<'_>, cotangent: &[f32]) -> Result<(), BackendError> {
        let classes = self.spec.output;
        let expected = x.rows.checked_mul(classes);
        if expected != Some(cotangent.len()) {
            return Err(BackendError::shape(
                "cotangent (one per logit)",
                format!("{} x {classes} values", x.rows),
                cotangent.len(),
            ));
        }
        if x.rows == 0 {
            self.load_input(&x)?;
            self.check_params()?;
            return Ok(());
        }
        let logits = self.taped_logits(&x)?;
        let cot: Matrix = self
            .dev
            .try_tensor_from_vec(cotangent.to_vec(), (x.rows, classes))
            .map_err(device_err)?;
        // d/dθ sum(logits ⊙ cotangent) = J(x)ᵀ · cotangent
        let total = logits
            .try_mul(cot)
            .and_then(|t| t.try_sum::<Rank0, Axes2<0, 1>>())
            .map_err(device_err)?;
        let mut grads = total.try_backward().map_err(device_err)?;
        self.accumulate_grads(&mut grads)
    }
}

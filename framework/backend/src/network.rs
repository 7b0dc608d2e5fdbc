//! The backend trait: what the trainer and strategies may ask of a network.

use crate::{BackendError, ModelSpec, ParamStore};

/// A borrowed row-major batch of inputs: `rows` samples of `cols` features.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `rows * cols` values, sample-major.
    pub data: &'a [f32],
    /// Number of samples.
    pub rows: usize,
    /// Features per sample.
    pub cols: usize,
}

impl<'a> Inputs<'a> {
    /// Wraps `data` as `rows` samples; fails if the length is not `rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, BackendError> {
        if data.len() != rows * cols {
            return Err(BackendError::shape(
                "inputs",
                format!("{rows} x {cols} = {} values", rows * cols),
                data.len(),
            ));
        }
        Ok(Inputs { data, rows, cols })
    }
}

/// A trainable network with host-owned parameters.
///
/// Contract:
/// - parameters and gradients are the buffers of [`Network::params`]; every call reads the
///   current values (callers may edit them between calls);
/// - [`Network::loss_backward`] and [`Network::vjp`] **add** into the gradient buffers; the
///   caller zeroes them ([`ParamStore::zero_grads`]) at the start of a step;
/// - outputs are written into caller-provided vectors (resized as needed) so the hot path can
///   reuse allocations;
/// - the same inputs and parameters give bit-identical outputs.
pub trait Network: Send {
    /// Short backend name for logs and results (e.g. `dfdx`).
    fn backend_name(&self) -> &'static str;

    /// The architecture.
    fn spec(&self) -> &ModelSpec;

    /// Parameter values and gradients.
    fn params(&self) -> &ParamStore;

    /// Mutable parameter values and gradients.
    fn params_mut(&mut self) -> &mut ParamStore;

    /// Logits, `x.rows * spec().output()` values, written into `out`. Batch norm uses its
    /// running statistics (evaluation mode).
    fn forward(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError>;

    /// Penultimate activations (the input of the last layer), `x.rows * spec().feature_dim()`;
    /// evaluation mode, like [`Network::forward`].
    fn features(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError>;

    /// Mean softmax cross-entropy over the rows, in training mode: batch norm normalises with
    /// the batch's statistics and updates its running statistics.
    ///
    /// If `class_mask` is given, the softmax of each row runs over the classes marked `true`
    /// only (the others get no probability mass and zero gradient); every target must be one of
    /// them. The mask is shared by all rows (length `spec().output`) or given per row (length
    /// `x.rows * spec().output`, row-major), e.g. when replayed rows of other tasks keep their
    /// own task-IL head. Adds d loss / d params into the gradients, writes the raw (unmasked)
    /// logits into `logits_out`, and returns the loss. Zero rows: loss 0, no gradient.
    fn loss_backward(
        &mut self,
        x: Inputs<'_>,
        targets: &[usize],
        class_mask: Option<&[bool]>,
        logits_out: &mut Vec<f32>,
    ) -> Result<f32, BackendError>;

    /// Logits in training mode (batch norm normalises with the batch's statistics) without
    /// touching the running statistics or the gradients: what [`Network::loss_backward`]'s
    /// forward pass computes. With [`Network::backward_logits`] it makes a training step with a
    /// caller-defined loss (the plugin `loss` hook). The default is [`Network::forward`], exact
    /// for networks without batch norm (the MLPs).
    fn train_logits(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        self.forward(x, out)
    }

    /// The backward pass of a training step with a caller-defined loss: adds `J(x)^T *
    /// cotangent` into the gradients like [`Network::vjp`], but as the training step does it:
    /// batch norm's running statistics are updated (as by [`Network::loss_backward`]). The
    /// default is [`Network::vjp`] (networks without running statistics).
    fn backward_logits(&mut self, x: Inputs<'_>, cotangent: &[f32]) -> Result<(), BackendError> {
        self.vjp(x, cotangent)
    }

    /// Vector-Jacobian product: adds `J(x)^T * cotangent` into the gradients, where `J` is the
    /// Jacobian of the logits (`x.rows * output` values) with respect to the parameters and
    /// `cotangent` has one value per logit. Used for output-space losses (distillation,
    /// function-space regularisers). Training mode (batch statistics) without updating batch
    /// norm's running statistics.
    fn vjp(&mut self, x: Inputs<'_>, cotangent: &[f32]) -> Result<(), BackendError>;

    /// The neural-tangent-kernel Gram of output unit `output` between `a` and `b`: `out[i *
    /// b.rows + j] = J(a_i) · J(b_j)ᵀ` over every trainable tensor (buffers excluded), in
    /// evaluation mode (batch norm's running statistics); `out.len() == a.rows * b.rows`.
    /// Leaves parameters and gradients as they were. The default is the MLP kernel of
    /// [`crate::ntk::ntk_gram`] (an error for other backbones); `NativeCnn` overrides it.
    fn ntk_gram(
        &mut self,
        a: Inputs<'_>,
        b: Inputs<'_>,
        output: usize,
        out: &mut [f64],
    ) -> Result<(), BackendError> {
        crate::ntk::ntk_gram(self.spec(), self.params(), a, b, output, out)
    }

    /// Per-sample gradient powers: adds Σ_i |J(x_i)ᵀ c_i|^power into the gradient buffers,
    /// element-wise over every trainable tensor, where c_i is row i of `cotangent`
    /// (`x.rows × output` values) and `power` is 1 or 2 (anything else: an error). Evaluation mode
    /// (batch norm uses, and leaves alone, its running statistics); buffers' gradients stay as
    /// they were. Like `vjp`, it adds: callers zero the gradients first to read it alone.
    ///
    /// The default is the MLP's factorised form of [`crate::sample_grads`] (one backward pass
    /// for the whole set; an error for other backbones); `NativeCnn` overrides it with one
    /// evaluation-mode backward pass per row.
    fn sample_grad_powers(
        &mut self,
        x: Inputs<'_>,
        cotangent: &[f32],
        power: u32,
    ) -> Result<(), BackendError> {
        let (spec, params) = (self.spec(), self.params());
        let sums = crate::pool::install(|| {
            crate::sample_grads::mlp_sample_grad_powers(spec, params, x, cotangent, power)
        })?;
        crate::sample_grads::add_sums(self.params_mut(), &sums);
        Ok(())
    }
}

/// A validated class mask of a loss call: shared by every row or given per row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LossMask<'a> {
    mask: Option<&'a [bool]>,
    classes: usize,
    per_row: bool,
}

impl LossMask<'_> {
    /// True if row `r` may put probability on class `c`.
    pub(crate) fn allowed(&self, r: usize, c: usize) -> bool {
        match self.mask {
            None => true,
            Some(m) if self.per_row => m[r * self.classes + c],
            Some(m) => m[c],
        }
    }

    /// True if the mask has one entry per row and class.
    pub(crate) fn per_row(&self) -> bool {
        self.per_row
    }
}

/// Checks the arguments of [`Network::loss_backward`] that every backend checks the same way:
/// one target per row, each a valid class inside its row's mask, and a mask of `classes` or
/// `rows * classes` entries. Errors name the argument.
pub(crate) fn check_loss_args<'a>(
    rows: usize,
    classes: usize,
    targets: &[usize],
    class_mask: Option<&'a [bool]>,
) -> Result<LossMask<'a>, BackendError> {
    if targets.len() != rows {
        return Err(BackendError::shape(
            "targets (one per input row)",
            rows,
            targets.len(),
        ));
    }
    let per_row = match class_mask {
        Some(mask) if mask.len() == classes => false,
        Some(mask) if rows > 0 && Some(mask.len()) == rows.checked_mul(classes) => true,
        Some(mask) => {
            return Err(BackendError::shape(
                "class_mask (one per output class, or one per row and class)",
                format!("{classes} or {rows} x {classes}"),
                mask.len(),
            ))
        }
        None => false,
    };
    let mask = LossMask {
        mask: class_mask,
        classes,
        per_row,
    };
    for (r, &t) in targets.iter().enumerate() {
        if t >= classes {
            return Err(BackendError::shape(
                "targets (class index)",
                format!("a class index < {classes}"),
                format!("{t} at row {r}"),
            ));
        }
        if !mask.allowed(r, t) {
            return Err(BackendError::shape(
                "targets (not in class_mask)",
                "a class enabled in class_mask",
                format!("class {t} at row {r}"),
            ));
        }
    }
    Ok(mask)
}

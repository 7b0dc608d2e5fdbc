//! `wasserstein`: Wasserstein regularisation towards the initial weight distribution
//! (Lewandowski et al. 2024, arXiv 2406.06811 v1; also the curvature paper, arXiv 2312.00246).
//!
//! Unlike L2 Init, which pulls every weight back to its own initial value, this penalty only
//! asks each layer's *distribution* of weights to stay close to the initial one: any
//! permutation of the initial weights costs nothing. For each regularised tensor `W_l` with
//! `n_l` entries, sorted in ascending order (`W_l(i)` is its i-th smallest entry) and its sorted
//! initial values `W0_l(i)` (cached once when the model is built):
//!
//! ```text
//! penalty(θ) = λ · Σ_l c_l · Σ_i (W_l(i) − W0_l(i))²
//! c_l = 1 ("sum", default: n_l · W₂²)  or  1/n_l ("mean": the squared 2-Wasserstein distance W₂²)
//! gradient:  ∂/∂W_l[argsort(W_l)[i]] = 2λ · c_l · (W_l(i) − W0_l(i))
//! ```
//!
//! In one dimension the optimal transport plan between two equal-size empirical distributions
//! matches them in sorted order, so the sum above is exactly `n_l · W₂²(W_l, W0_l)`. The penalty is
//! piecewise quadratic; its gradient (routed back through the sort) is exact wherever no two
//! weights of a layer are equal, and a valid subgradient at ties (broken by index). Since the
//! sorted matching is optimal, `Σ_i (W_l(i) − W0_l(i))² ≤ Σ_j (W_l[j] − W0_l[j])²`: with
//! `normalize = "sum"` the penalty never exceeds L2 Init's at the same λ.
//!
//! θ0 is the initialisation of the whole run (stored in `on_model_built`, never refreshed at task
//! boundaries), as in the paper, which regularises towards the initial weight distribution.
//! The penalty applies from the first task on.
//!
//! Hyperparameters (`lambda`, `normalize` for `c_l` above, `biases`), their defaults and where
//! they come from: `docs/strategies.md`.
//!
//! Choices where the sources are silent: the 1/n normalisation is unconfirmed, so `sum` (the
//! formula `R_W = Σ_l Σ_i (…)²`, with λ on the same scale as L2 Init's) is the default; only weight
//! matrices are regularised by default, because biases start at zero in clef (their initial
//! distribution is a point mass, so the penalty on them would be a plain `λ‖b‖²`).
//!
//! Convolutional backbones: a conv kernel `[out, in, kh, kw]` is one tensor of
//! `out·in·kh·kw` values, its distribution compared as a whole (the penalty ignores shapes, so
//! it is the same whether the kernel is read as a matrix or a 4-D tensor). A norm scale `γ`
//! (role weight, `[c]`) is regularised too: it starts at 1 everywhere, so its initial
//! distribution is a point mass and the penalty is `λ·Σ_i (γ_i − 1)²`, a pull of every scale
//! back to 1. Norm shifts are biases (off by default, like every bias); BN running statistics
//! (role buffer) are never regularised.
//!
//! Cost per step: one sort of each regularised tensor, done as a 3-pass LSD radix sort of
//! (order-preserving 32-bit key, index) pairs, O(n) per tensor.
//!
//! Checkpoint state (`SerdeState`): the configuration, the regularised tensor indices and their
//! sorted initial values.

use clef_sdk::prelude::*;
use clef_sdk::tracing::{info, warn};
use clef_sdk::Role;

/// How each layer's sum of squared sorted differences is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Normalize {
    /// `Σ_i (W(i) − W0(i))²` = n·W₂².
    Sum,
    /// `(1/n) Σ_i (W(i) − W0(i))²` = W₂².
    Mean,
}

/// The hyperparameters (`docs/strategies.md` has the table, with sources).
#[derive(Debug, Clone, HParams)]
pub struct Config {
    /// penalty strength λ in λ·Σ_l c_l·Σ_i (sort(W_l)_i − sort(W0_l)_i)²
    #[hparam(default = 0.01, range = 0.0..=1e12, log)]
    pub lambda: f64,
    /// per-layer scale c_l: sum = 1 (n·W₂²), mean = 1/n (W₂²)
    #[hparam(default = "sum")]
    pub normalize: Normalize,
    /// also regularise each bias vector's distribution (biases start at 0 in clef)
    #[hparam(default = false)]
    pub biases: bool,
}

/// One regularised tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Parameter index.
    pub index: usize,
    /// Its initial values, sorted ascending.
    #[serde(with = "clef_sdk::state::tensor")]
    pub sorted_init: Vec<f32>,
}

/// The Wasserstein-to-init strategy; its checkpoint state is the whole struct but the sort
/// buffers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Wasserstein {
    lambda: f32,
    normalize: Normalize,
    biases: bool,
    /// `None` until the model is built.
    layers: Option<Vec<Layer>>,
    /// The (key, index) pairs of the tensor being sorted (refilled at every sort).
    #[serde(skip)]
    keys: Vec<(u32, u32)>,
    /// The radix sort's second buffer (resized and overwritten at every sort).
    #[serde(skip)]
    scratch: Vec<(u32, u32)>,
}

/// Order-preserving map of a finite f32 to a u32 (`a < b` ⇔ `key(a) < key(b)`; −0 < +0).
#[inline]
pub fn sort_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Sorts `(key, index)` pairs by key with a stable 3-pass LSD radix sort (11-bit digits, all
/// three histograms counted in one pass), so equal keys keep their input order. `scratch` is
/// resized as needed.
pub fn radix_sort(pairs: &mut Vec<(u32, u32)>, scratch: &mut Vec<(u32, u32)>) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    const MASK: u32 = (1 << BITS) - 1;
    scratch.clear();
    scratch.resize(pairs.len(), (0, 0));
    let mut counts = vec![[0u32; BUCKETS]; 3];
    for &(k, _) in pairs.iter() {
        counts[0][(k & MASK) as usize] += 1;
        counts[1][((k >> BITS) & MASK) as usize] += 1;
        counts[2][(k >> (2 * BITS)) as usize] += 1;
    }
    for (pass, counts) in counts.iter_mut().enumerate() {
        // Skip a pass where every key has the same digit (common for the high bits).
        if counts.iter().any(|&c| c as usize == pairs.len()) {
            continue;
        }
        let mut offset = 0u32;
        for c in counts.iter_mut() {
            let n = *c;
            *c = offset;
            offset += n;
        }
        let shift = pass as u32 * BITS;
        for &p in pairs.iter() {
            let d = ((p.0 >> shift) & MASK) as usize;
            scratch[counts[d] as usize] = p;
            counts[d] += 1;
        }
        std::mem::swap(pairs, scratch);
    }
}

/// Fills `pairs` with `(sort_key(values[j]), j)` and sorts them; errors on a non-finite value.
pub fn argsort(
    values: &[f32],
    pairs: &mut Vec<(u32, u32)>,
    scratch: &mut Vec<(u32, u32)>,
) -> Result<()> {
    ensure!(
        values.len() < u32::MAX as usize,
        "wasserstein: tensor of {} values is too large",
        values.len()
    );
    pairs.clear();
    let mut finite = true;
    pairs.extend(values.iter().enumerate().map(|(j, &v)| {
        finite &= v.is_finite();
        (sort_key(v), j as u32)
    }));
    ensure!(finite, "wasserstein: non-finite parameter value");
    radix_sort(pairs, scratch);
    Ok(())
}

/// Per-layer scale `c_l`.
pub fn scale(normalize: Normalize, n: usize) -> f64 {
    match normalize {
        Normalize::Sum => 1.0,
        Normalize::Mean => 1.0 / n.max(1) as f64,
    }
}

/// The penalty of one tensor, `λ · c · Σ_i (sorted(values)_i − sorted_init_i)²`, in f64
/// (sorting with `f64::total_cmp`; for tests and diagnostics).
pub fn penalty(lambda: f64, normalize: Normalize, values: &[f64], sorted_init: &[f32]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let sum: f64 = sorted
        .iter()
        .zip(sorted_init)
        .map(|(&w, &w0)| (w - f64::from(w0)).powi(2))
        .sum();
    lambda * scale(normalize, values.len()) * sum
}

/// Adds the penalty's gradient for one tensor to `grad`; `pairs` must be `values` argsorted.
pub fn add_penalty_grad(
    lambda: f32,
    normalize: Normalize,
    values: &[f32],
    sorted_init: &[f32],
    pairs: &[(u32, u32)],
    grad: &mut [f32],
) {
    let c = (2.0 * f64::from(lambda) * scale(normalize, values.len())) as f32;
    for (&(_, j), &w0) in pairs.iter().zip(sorted_init) {
        let j = j as usize;
        grad[j] += c * (values[j] - w0);
    }
}

impl Wasserstein {
    /// Stores the sorted initial values of every regularised tensor.
    fn capture(&mut self, ctx: &Ctx<'_>) -> Result<()> {
        let mut layers = Vec::new();
        for (index, p) in ctx.params()?.into_iter().enumerate() {
            let wanted = match p.role {
                Role::Weight => true,
                Role::Bias => self.biases,
                Role::Buffer | Role::Other(_) => false,
            };
            if !wanted {
                continue;
            }
            let values = ctx.values_ref(index)?;
            argsort(values, &mut self.keys, &mut self.scratch)?;
            let sorted_init = self.keys.iter().map(|&(_, j)| values[j as usize]).collect();
            layers.push(Layer { index, sorted_init });
        }
        info!(
            tensors = layers.len(),
            "stored the sorted initial weight distributions"
        );
        self.layers = Some(layers);
        Ok(())
    }
}

impl Strategy for Wasserstein {
    const NAME: &'static str = "wasserstein";
    const DESCRIPTION: &'static str =
        "Wasserstein regularisation: lambda·Σ_l Σ_i (sort(W_l)_i − sort(W0_l)_i)² towards the initial weight distribution";
    // Any tensor shape: conv kernels and norm scales are sorted as flat tensors; buffers skipped.
    const CONV_BACKBONES: bool = true;
    type Config = Config;

    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            lambda: config.lambda as f32,
            normalize: config.normalize,
            biases: config.biases,
            layers: None,
            keys: Vec::new(),
            scratch: Vec::new(),
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.capture(ctx)
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if self.layers.is_none() {
            warn!(
                task = task.task,
                "no on_model_built before this task: using the current weights as θ0"
            );
            self.capture(ctx)?;
        }
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.lambda == 0.0 {
            return Ok(());
        }
        let Some(layers) = &self.layers else {
            bail!("wasserstein: θ0 is not stored (no on_model_built or on_task_start yet)");
        };
        let count = ctx.param_count()?;
        for layer in layers {
            ensure!(
                layer.index < count,
                "wasserstein: parameter {} is stored but the model has {count} tensors",
                layer.index
            );
            let (w, g) = ctx.values_and_grads(layer.index)?;
            ensure!(
                w.len() == layer.sorted_init.len() && g.len() == w.len(),
                "wasserstein: parameter {} has {} values, its stored initial distribution {}",
                layer.index,
                w.len(),
                layer.sorted_init.len()
            );
            argsort(w, &mut self.keys, &mut self.scratch)?;
            add_penalty_grad(
                self.lambda,
                self.normalize,
                w,
                &layer.sorted_init,
                &self.keys,
                g,
            );
        }
        Ok(())
    }
}

clef_sdk::export_plugin!(Wasserstein);

#[cfg(test)]
mod tests;

//! `spectral`: spectral regularisation (Lewandowski, Bortkiewicz, Kumar, György, Schuurmans,
//! Ostaszewski & Machado, "Learning Continually by Spectral Regularization", ICLR 2025): keep
//! every layer's largest singular value near 1, and its bias small.
//!
//! For every weight matrix `W_l` (`[out, in]`; a conv kernel `[out, in, kh, kw]` is read as the
//! `[out, in·kh·kw]` matrix, as `torch.nn.utils.spectral_norm` and Miyato et al. 2018 do) with
//! largest singular value `σ_l`, and every bias `b_l`:
//!
//! ```text
//! penalty(θ) = λ · Σ_l (σ_l^k − 1)²  +  λ · Σ_l (‖b_l‖^k)²              (bias = "norm", default)
//! ∂/∂W_l    = 2λ · (σ_l^k − 1) · k · σ_l^(k−1) · u_l v_lᵀ
//! ∂/∂b_l    = 2kλ · ‖b_l‖^(2k−2) · b_l
//! ```
//!
//! `σ_l`, `u_l` and `v_l` come from power iteration with **persistent** singular vectors (the
//! spectral-normalisation trick): `u_l` starts as a random unit vector from the plugin's seeded
//! RNG, and every optimizer step runs `power_iterations` steps of
//!
//! ```text
//! v ← Wᵀu / ‖Wᵀu‖ ;   u ← W v / ‖W v‖ ;   σ = ‖W v‖ = uᵀ W v
//! ```
//!
//! in `after_backward`, then adds the gradient of `λ((uᵀWv)^k − 1)²` with `u`, `v` held fixed.
//! That is the gradient of the penalty exactly when `u`, `v` are the top singular vectors, and
//! the estimate converges to them over a few steps because the weights move slowly.
//!
//! The bias term (`bias`): the paper's form is not confirmed in our sources (see
//! `docs/strategies.md`). `"norm"` (default) treats `b_l` as a one-column matrix, whose only
//! singular value is `‖b_l‖`, and pulls it to 0 with the same exponent: `λ (‖b_l‖^k)²`.
//! `"augmented"` replaces `W_l` by `[W_l | b_l]` (the bias as an extra input column fed by a
//! constant 1) and regularises its largest singular value to 1, with no separate bias term.
//! `"none"` leaves biases alone.
//!
//! Hyperparameters (`lambda`, `k`, `power_iterations`, `bias`), their defaults and where they
//! come from: `docs/strategies.md`.
//!
//! Convolutional backbones (`docs/strategies.md` has the reasons and sources): a conv kernel is
//! regularised through its reshaped matrix (an upper bound of the convolution's operator norm up
//! to `√(kh·kw)`, at the cost of two matrix-vector products, where the exact operator norm of
//! Sedghi et al. 2019 needs an FFT and an SVD per frequency). A norm scale `γ` (role weight,
//! shape `[c]`) multiplies each channel, i.e. it is the diagonal matrix `diag(γ)`, whose
//! largest singular value is `max_i |γ_i|`: with `norm_scales = "diagonal"` (default) it gets
//! `λ(max|γ|^k − 1)²` (0 at PyTorch's initialisation γ = 1; the gradient goes to the
//! largest `|γ_i|`, ties to the first); `"none"` leaves scales alone. Norm shifts are biases
//! (role bias) and get the bias term; BN running statistics (role buffer) are never touched.
//! `bias = "augmented"` appends to `X.weight` the bias named `X.bias` (the layer's own bias),
//! never a norm's shift.
//!
//! Edge cases: when `Wᵀu = 0` (e.g. `W = 0`) `u` is kept, `σ = 0` and no gradient is
//! added; likewise the bias gradient is 0 at `b = 0`. Non-finite weights are an error.
//!
//! Cost per step and layer: two matrix-vector products and one rank-1 update of the gradient,
//! `O(out·in)` each; no allocation.
//!
//! Checkpoint state (`SerdeState`): the configuration, the layer layout and each layer's `u`,
//! `v` and last `σ`, so a restored instance continues the power iteration where it stopped.

use clef_sdk::prelude::*;
use clef_sdk::tracing::{info, warn};
use clef_sdk::Role;

/// What the bias term is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum BiasMode {
    /// `λ (‖b‖^k)²`: the bias as a one-column matrix, pulled to 0.
    Norm,
    /// `σ_max([W | b])` replaces `σ_max(W)`.
    Augmented,
    /// Biases are not regularised.
    None,
}

/// The hyperparameters (`docs/strategies.md` has the table, with sources).
#[derive(Debug, Clone, HParams)]
pub struct Config {
    /// penalty strength λ in λ·Σ_l (σ_l^k − 1)² (+ bias term)
    #[hparam(default = 0.01, range = 0.0..=1e12, log)]
    pub lambda: f64,
    /// exponent k of σ^k (paper default: 2)
    #[hparam(default = 2.0, range = 0.05..=10.0)]
    pub k: f64,
    /// power-iteration steps per optimizer step (singular vectors persist between steps)
    #[hparam(default = 1, range = 1..=1000)]
    pub power_iterations: usize,
    /// bias term: norm = λ(‖b‖^k)², augmented = σ_max([W | b]), none
    #[hparam(default = "norm")]
    pub bias: BiasMode,
    /// norm scales γ ([c]): diagonal = λ(max|γ|^k − 1)² (σ_max of diag(γ)), none
    #[hparam(default = "diagonal")]
    pub norm_scales: ScaleMode,
}

/// What happens to 1-D weights (norm scales `γ`, shape `[c]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum ScaleMode {
    /// `λ(max_i |γ_i|^k − 1)²`: the largest singular value of `diag(γ)` kept near 1.
    Diagonal,
    /// Norm scales are not regularised.
    None,
}

/// `(max_i |γ_i|, argmax)` (the first index at ties; `(0, 0)` for an empty slice).
pub fn max_abs(g: &[f32]) -> (f32, usize) {
    let mut best = (0.0f32, 0usize);
    for (i, &x) in g.iter().enumerate() {
        if x.abs() > best.0 {
            best = (x.abs(), i);
        }
    }
    best
}

/// Power-iteration state of one weight matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Parameter index of the weight.
    pub weight: usize,
    /// Parameter index of the bias appended as a column (`bias = "augmented"` only).
    pub augment: Option<usize>,
    /// Rows (`out`).
    pub rows: usize,
    /// Columns of the weight (`in`), without the bias column.
    pub cols: usize,
    /// Left singular vector estimate, `rows` long, unit norm.
    #[serde(with = "clef_sdk::state::tensor")]
    pub u: Vec<f32>,
    /// Right singular vector estimate, `cols` (+ 1 when augmented) long.
    #[serde(with = "clef_sdk::state::tensor")]
    pub v: Vec<f32>,
    /// The last estimate of the largest singular value.
    pub sigma: f32,
}

/// A weight matrix, optionally with one extra column (the bias), as a linear operator.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    /// `rows × cols`, row-major.
    pub w: &'a [f32],
    /// An optional extra column of `rows` entries.
    pub extra: Option<&'a [f32]>,
    /// Rows.
    pub rows: usize,
    /// Columns of `w`.
    pub cols: usize,
}

/// Dot product with 8 independent accumulators (vectorises; accurate to f32 rounding).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Euclidean norm, accumulated in f64.
fn norm(x: &[f32]) -> f64 {
    x.iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

impl Matrix<'_> {
    /// Columns including the extra one.
    pub fn n(&self) -> usize {
        self.cols + usize::from(self.extra.is_some())
    }

    /// `out = Aᵀ u` (`out.len() == self.n()`).
    pub fn mul_t(&self, u: &[f32], out: &mut [f32]) {
        let (main, extra) = out.split_at_mut(self.cols);
        main.fill(0.0);
        for (row, &ui) in self.w.chunks_exact(self.cols).zip(u) {
            for (o, &a) in main.iter_mut().zip(row) {
                *o += ui * a;
            }
        }
        if let Some(b) = self.extra {
            extra[0] = dot(b, u);
        }
    }

    /// `out = A v` (`out.len() == self.rows`).
    pub fn mul(&self, v: &[f32], out: &mut [f32]) {
        let (vw, vb) = v.split_at(self.cols);
        for (o, row) in out.iter_mut().zip(self.w.chunks_exact(self.cols)) {
            *o = dot(row, vw);
        }
        if let Some(b) = self.extra {
            for (o, &bi) in out.iter_mut().zip(b) {
                *o += bi * vb[0];
            }
        }
    }
}

/// One power-iteration step on `a` with persistent vectors `u` (`rows`) and `v` (`a.n()`):
/// `v ← Aᵀu/‖Aᵀu‖`, `u ← Av/‖Av‖`; returns `σ = ‖Av‖`. `scratch` holds `rows` floats. When
/// `Aᵀu` or `Av` is zero the vectors are left as they are and `σ = 0`.
pub fn power_step(a: &Matrix<'_>, u: &mut [f32], v: &mut [f32], scratch: &mut [f32]) -> f32 {
    a.mul_t(u, v);
    let nv = norm(v);
    if nv == 0.0 || !nv.is_finite() {
        return if nv.is_finite() { 0.0 } else { f32::NAN };
    }
    let inv = (1.0 / nv) as f32;
    v.iter_mut().for_each(|x| *x *= inv);
    a.mul(v, scratch);
    let nu = norm(scratch);
    if nu == 0.0 || !nu.is_finite() {
        return if nu.is_finite() { 0.0 } else { f32::NAN };
    }
    let inv = (1.0 / nu) as f32;
    for (ui, &s) in u.iter_mut().zip(scratch.iter()) {
        *ui = s * inv;
    }
    nu as f32
}

/// `dP/dσ` of `λ(σ^k − 1)²`: `2λ(σ^k − 1)·k·σ^(k−1)`, and 0 at `σ = 0`.
pub fn sigma_coefficient(lambda: f64, k: f64, sigma: f64) -> f64 {
    if sigma <= 0.0 {
        return 0.0;
    }
    2.0 * lambda * (sigma.powf(k) - 1.0) * k * sigma.powf(k - 1.0)
}

/// `λ(σ^k − 1)²`.
pub fn sigma_penalty(lambda: f64, k: f64, sigma: f64) -> f64 {
    lambda * (sigma.powf(k) - 1.0).powi(2)
}

/// `λ(‖b‖^k)²` from `‖b‖²`.
pub fn bias_penalty(lambda: f64, k: f64, norm_sq: f64) -> f64 {
    lambda * norm_sq.powf(k)
}

/// Adds `2kλ‖b‖^(2k−2) · b` (the gradient of `λ‖b‖^(2k)`) to `grad`; nothing at `b = 0`.
pub fn add_bias_grad(lambda: f64, k: f64, b: &[f32], grad: &mut [f32]) {
    let s: f64 = b.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if s == 0.0 {
        return;
    }
    let c = (2.0 * k * lambda * s.powf(k - 1.0)) as f32;
    for (g, &x) in grad.iter_mut().zip(b) {
        *g += c * x;
    }
}

/// Adds `c · u vᵀ` to a `rows × cols` gradient (`v`'s first `cols` entries).
pub fn add_rank_one(c: f32, u: &[f32], v: &[f32], cols: usize, grad: &mut [f32]) {
    let v = &v[..cols];
    for (row, &ui) in grad.chunks_exact_mut(cols).zip(u) {
        let s = c * ui;
        for (g, &vj) in row.iter_mut().zip(v) {
            *g += s * vj;
        }
    }
}

/// The spectral regularisation strategy; its checkpoint state is the whole struct but the
/// scratch buffers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Spectral {
    lambda: f64,
    k: f64,
    power_iterations: usize,
    bias: BiasMode,
    /// `None` until the model is built.
    layers: Option<Vec<Layer>>,
    /// Biases with the `‖b‖^(2k)` term.
    norm_biases: Vec<usize>,
    /// How norm scales are treated.
    #[serde(default = "default_scale_mode")]
    norm_scales: ScaleMode,
    /// Norm scales (1-D weights) with the `(max|γ|^k − 1)²` term.
    #[serde(default)]
    scales: Vec<usize>,
    /// `rows` floats for `power_step` (overwritten before every read).
    #[serde(skip)]
    scratch: Vec<f32>,
    /// A copy of the bias of an augmented layer (refilled before every use).
    #[serde(skip)]
    extra: Vec<f32>,
}

fn default_scale_mode() -> ScaleMode {
    ScaleMode::Diagonal
}

impl Spectral {
    /// Finds the weight matrices and biases and draws the initial `u` of every layer.
    fn setup(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let params = ctx.params()?;
        let mut layers = Vec::new();
        let mut used = vec![false; params.len()];
        let mut scales = Vec::new();
        for (i, p) in params.iter().enumerate() {
            if p.role != Role::Weight || p.numel == 0 {
                continue;
            }
            if p.shape.len() == 1 {
                // A norm scale: diag(γ), not a one-column matrix.
                if self.norm_scales == ScaleMode::Diagonal {
                    scales.push(i);
                }
                continue;
            }
            let rows = p.shape.first().copied().unwrap_or(0);
            ensure!(
                rows > 0 && p.numel % rows == 0,
                "spectral: weight `{}` has shape {:?}",
                p.name,
                p.shape
            );
            let cols = p.numel / rows;
            let augment = if self.bias == BiasMode::Augmented {
                // The layer's own bias (`X.weight` with `X.bias`), never a norm's shift.
                let bias_name = p
                    .name
                    .strip_suffix("weight")
                    .map(|stem| format!("{stem}bias"));
                params.iter().position(|b| {
                    b.role == Role::Bias
                        && b.numel == rows
                        && bias_name.as_deref() == Some(b.name.as_str())
                })
            } else {
                None
            };
            if let Some(b) = augment {
                used[b] = true;
            }
            let mut u: Vec<f32> = (0..rows)
                .map(|_| (2.0 * ctx.rng_f64() - 1.0) as f32)
                .collect();
            let nu = norm(&u);
            ensure!(nu > 0.0, "spectral: degenerate random start vector");
            u.iter_mut().for_each(|x| *x /= nu as f32);
            layers.push(Layer {
                weight: i,
                augment,
                rows,
                cols,
                u,
                v: vec![0.0; cols + usize::from(augment.is_some())],
                sigma: 0.0,
            });
        }
        // Biases not appended to a weight get the norm term (unless bias = "none").
        self.norm_biases = if self.bias == BiasMode::None {
            Vec::new()
        } else {
            params
                .iter()
                .enumerate()
                .filter(|(i, p)| p.role == Role::Bias && !used[*i])
                .map(|(i, _)| i)
                .collect()
        };
        if self.bias == BiasMode::Augmented && !self.norm_biases.is_empty() {
            warn!(
                biases = self.norm_biases.len(),
                "biases without a matching weight get the norm term"
            );
        }
        info!(
            matrices = layers.len(),
            biases = self.norm_biases.len(),
            norm_scales = scales.len(),
            "spectral regularisation set up"
        );
        self.layers = Some(layers);
        self.scales = scales;
        Ok(())
    }
}

impl Strategy for Spectral {
    const NAME: &'static str = "spectral";
    const DESCRIPTION: &'static str =
        "Spectral regularisation (Lewandowski et al. 2025): lambda·Σ_l (σ_max(W_l)^k − 1)² + bias term, by power iteration";
    // Conv kernels as [out, in·kh·kw] matrices, norm scales as diag(γ), buffers skipped.
    const CONV_BACKBONES: bool = true;
    type Config = Config;

    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            lambda: config.lambda,
            k: config.k,
            power_iterations: config.power_iterations,
            bias: config.bias,
            layers: None,
            norm_biases: Vec::new(),
            norm_scales: config.norm_scales,
            scales: Vec::new(),
            scratch: Vec::new(),
            extra: Vec::new(),
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.setup(ctx)
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        if self.layers.is_none() {
            self.setup(ctx)?;
        }
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.lambda == 0.0 {
            return Ok(());
        }
        let Self {
            lambda,
            k,
            power_iterations,
            layers,
            norm_biases,
            scales,
            scratch,
            extra,
            ..
        } = self;
        let Some(layers) = layers else {
            bail!("spectral: not set up (no on_model_built or on_task_start yet)");
        };
        for layer in layers.iter_mut() {
            if let Some(b) = layer.augment {
                let bias = ctx.values_ref(b)?;
                ensure!(
                    bias.len() == layer.rows,
                    "spectral: bias {b} has {} values, expected {}",
                    bias.len(),
                    layer.rows
                );
                extra.clear();
                extra.extend_from_slice(bias);
            }
            ensure!(
                layer.u.len() == layer.rows
                    && layer.v.len() == layer.cols + usize::from(layer.augment.is_some()),
                "spectral: the singular vectors of parameter {} do not fit its {} x {} layout",
                layer.weight,
                layer.rows,
                layer.cols
            );
            scratch.resize(layer.rows, 0.0);
            let (w, g) = ctx.values_and_grads(layer.weight)?;
            ensure!(
                w.len() == layer.rows * layer.cols && g.len() == w.len(),
                "spectral: parameter {} has {} values, expected {} x {}",
                layer.weight,
                w.len(),
                layer.rows,
                layer.cols
            );
            let a = Matrix {
                w,
                extra: layer.augment.map(|_| extra.as_slice()),
                rows: layer.rows,
                cols: layer.cols,
            };
            let mut sigma = 0.0;
            for _ in 0..*power_iterations {
                sigma = power_step(&a, &mut layer.u, &mut layer.v, scratch);
            }
            ensure!(
                sigma.is_finite(),
                "spectral: non-finite weights in parameter {}",
                layer.weight
            );
            layer.sigma = sigma;
            let c = sigma_coefficient(*lambda, *k, f64::from(sigma)) as f32;
            if c == 0.0 {
                continue;
            }
            add_rank_one(c, &layer.u, &layer.v, layer.cols, g);
            if let Some(b) = layer.augment {
                let gb = ctx.grads(b)?;
                let vb = c * layer.v[layer.cols];
                for (g, &ui) in gb.iter_mut().zip(&layer.u) {
                    *g += vb * ui;
                }
            }
        }
        for &s in scales.iter() {
            let (v, g) = ctx.values_and_grads(s)?;
            ensure!(
                v.len() == g.len(),
                "spectral: norm scale {s} values and gradient differ in size"
            );
            ensure!(
                v.iter().all(|x| x.is_finite()),
                "spectral: non-finite values in norm scale {s}"
            );
            let (sigma, at) = max_abs(v);
            // d max|γ| / dγ_at = sign(γ_at).
            let c = sigma_coefficient(*lambda, *k, f64::from(sigma)) as f32;
            if c != 0.0 {
                g[at] += c * v[at].signum();
            }
        }
        for &b in norm_biases.iter() {
            let (v, g) = ctx.values_and_grads(b)?;
            ensure!(
                v.len() == g.len(),
                "spectral: bias {b} values and gradient differ in size"
            );
            add_bias_grad(*lambda, *k, v, g);
        }
        Ok(())
    }

    fn on_task_end(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if let Some(layers) = &self.layers {
            for l in layers {
                info!(
                    task = task.task,
                    param = l.weight,
                    sigma = l.sigma,
                    "largest singular value"
                );
            }
        }
        Ok(())
    }
}

clef_sdk::export_plugin!(Spectral);

#[cfg(test)]
mod tests;

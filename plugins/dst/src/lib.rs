//! `dst`: continual learning with dynamic sparse training (Yildirim et al., "Continual
//! Learning with Dynamic Sparse Training", CPAL 2024; code `muratonuryildirim/CL-with-DST`).
//!
//! Task-incremental parameter isolation. Every task gets a sparse binary mask over every
//! weight tensor of the network; while the task trains, its mask evolves by dynamic sparse
//! training (drop the smallest-magnitude weights, regrow as many); weights used by earlier
//! tasks are frozen (readable, never changed); the evaluation of task t runs the shared
//! weights under task t's mask with task t's biases (the host masks the logits to task t's
//! head). `docs/strategies.md` has the full description; this is the summary.
//!
//! # Per task t
//!
//! 1. **Mask.** Masked tensors: every weight of rank ≥ 2, dense `[out, in]` and conv
//!    `[out, in, kh, kw]` (element-wise: per output channel, input channel and kernel
//!    position), the first conv and the classifier included. Per-layer densities `d_l` for the
//!    global density `d = 1 − sparsity`: `uniform` (`d_l = d`) or `erk`
//!    (`d_l = ε·sum(shape)/prod(shape)`, e.g. `(n_out + n_in + k_h + k_w)/(n_out·n_in·k_h·k_w)`,
//!    layers that would exceed 1 made dense and ε re-solved, see [`sparsity::erk_densities`]);
//!    `dense_first` holds the first masked layer at 1 inside the same global budget. The mask
//!    samples `round(d_l·N_l)` positions uniformly (`sampling = "exact"`) or each position
//!    with probability `d_l` (`"bernoulli"`, the original code). It is drawn over the whole
//!    layer, so it overlaps the frozen weights of earlier tasks by about `d·|F|` positions:
//!    those are *reused* (their frozen value is used, never trained).
//! 2. **Values.** Positions outside the mask are 0. New (never used) positions start at their
//!    value at initialisation θ0 (`new_weights = "init"`) or at 0 for tasks ≥ 1
//!    (`"zero"`, the original code's quirk); frozen positions keep their value. Biases, norm
//!    shifts and norm scales (1-D weights) are never masked: per task (`bias = "per-task"`:
//!    every task trains its own copy, starting from θ0's values) or shared (`"shared"`: trained
//!    by every task, which breaks isolation). Batch norm running statistics (buffers) are
//!    always per task: reset to θ0's at a task's start, saved at its end, loaded for its
//!    evaluation.
//! 3. **Training.** After every optimizer step every position the task may not train
//!    (outside the mask, or frozen) is written back to its fixed value (bitwise). The
//!    optimizer state is masked with the weights: a position's state is zeroed whenever it
//!    becomes trainable (at task start, and when it is grown) and when it is dropped, so a
//!    trained position only ever carries state from the steps it was trained in. This equals
//!    zeroing the state of every untrained position after every step (the optimizer is
//!    elementwise), without a pass over the state per step. Gradients are left dense so the
//!    `gradient` criterion can read them; what the optimizer does to untrained positions is
//!    discarded. (With `growth = "momentum"` the Adam moments of untrained positions are the
//!    growth signal: they accumulate the dense gradients of the task since its start.)
//! 4. **Topology update** every `update_every` steps of the task: per layer drop
//!    `k = ceil(p·nnz_l)` active weights with the smallest magnitude and grow `k` inactive
//!    positions by `random`, `unfired` (never active in this task), `gradient` (largest
//!    `|∂L/∂w|` of the batch) or `momentum` (largest `|m/(√v + 1e-8)|` of Adam). The drop
//!    fraction `p` is cosine-annealed from `drop_start` (0.5) to `drop_end` (0.005) over the
//!    task's `task_steps` steps. Grown free weights start at 0 (`grow_init = "zero"`, RigL
//!    and the original code) or θ0 (`"init"`); growth into frozen positions is `reuse`
//!    (default: the frozen value is used in training and evaluation alike), `exclude`, or
//!    `original` (the original code: 0 in training, the frozen value at evaluation).
//! 5. **End.** The trained values are consolidated, the mask joins the frozen set, and the
//!    plugin reports per-layer and total density, reuse and free weights
//!    (`strategy_metrics` in `results.jsonl`).
//!
//! Hyperparameters, their defaults and sources: `docs/strategies.md`. Checkpoint state
//! (`SerdeState`): the whole strategy but the evaluation buffer; a task's working mask fields
//! are emptied at its end, so the checkpoints taken between tasks hold θ0, θ̄, the frozen set,
//! the finished tasks' masks and biases.

pub mod sparsity;
pub mod topology;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_conv;
#[cfg(test)]
mod tests_masks;

use clef_sdk::prelude::*;
use clef_sdk::rng::SplitMix64;
use clef_sdk::state::{Bits, Floats};
use clef_sdk::tracing::{info, warn};
use clef_sdk::Role;

use sparsity::{
    erk_densities, erk_densities_with_dense, sample_mask, uniform_densities,
    uniform_densities_dense_first, Sampling,
};
use topology::{drop_fraction, update_layer, FrozenGrowth, Growth, LayerView};

/// The hyperparameters (`docs/strategies.md` has the table, with sources).
#[derive(Debug, Clone, HParams, Serialize, Deserialize)]
pub struct Config {
    /// fraction of zero weights per task mask
    #[hparam(default = 0.9, range = 0.0..=0.999)]
    pub sparsity: f64,
    /// per-layer densities: uniform or Erdős–Rényi-Kernel
    #[hparam(default = "uniform")]
    pub init: MaskInit,
    /// regrowth criterion (momentum needs Adam)
    #[hparam(default = "random")]
    pub growth: Growth,
    /// steps between topology updates
    #[hparam(default = 100, range = 1..)]
    pub update_every: usize,
    /// optimizer steps per task, for the cosine drop schedule (required)
    #[hparam(default = 0, range = 0..)]
    pub task_steps: usize,
    /// drop fraction at the start of a task
    #[hparam(default = 0.5, range = 0.0..=1.0)]
    pub drop_start: f64,
    /// drop fraction at the end of a task
    #[hparam(default = 0.005, range = 0.0..=1.0)]
    pub drop_end: f64,
    /// mask sampling: exactly round(d*N) positions, or Bernoulli(d) each (original)
    #[hparam(default = "exact")]
    pub sampling: Sampling,
    /// free weights of a new task's mask start at their initial value or at 0 (original)
    #[hparam(default = "init")]
    pub new_weights: NewWeights,
    /// grown free weights start at 0 (original, RigL) or at their initial value
    #[hparam(default = "zero")]
    pub grow_init: GrowInit,
    /// growth into earlier tasks' frozen weights: reuse their value, never, or as the
    /// original code (0 in training, the frozen value at evaluation)
    #[hparam(default = "reuse")]
    pub frozen_growth: FrozenGrowth,
    /// biases and norm parameters: one trained copy per task (isolated) or shared by every task
    #[hparam(default = "per-task")]
    pub bias: Bias,
    /// keep the first masked layer dense (density 1) inside the global budget
    #[hparam(default = false)]
    #[serde(default)]
    pub dense_first: bool,
}

/// How a layer's per-task densities are set (`init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum MaskInit {
    /// Every layer at the global density.
    Uniform,
    /// Erdős–Rényi-Kernel.
    Erk,
}

/// Starting value of the free weights of a new task's mask (`new_weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum NewWeights {
    /// Their value at initialisation (θ0).
    Init,
    /// Zero for tasks ≥ 1 (the original code).
    Zero,
}

/// Starting value of a grown free weight (`grow_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum GrowInit {
    /// Zero (RigL, the original code).
    Zero,
    /// Its value at initialisation (θ0).
    Init,
}

/// Whether every task trains its own copy of the biases and norm parameters (`bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Bias {
    /// One trained copy per task, restored at its evaluation (isolated).
    PerTask,
    /// One copy trained by every task.
    Shared,
}

/// One masked weight tensor.
///
/// Between tasks only `param`, `name`, `shape`, `init`, `consolidated`, `frozen` and
/// `task_masks` hold data; the working fields (`mask`, `fired`, `trainable`, `fixed`) live from
/// `on_task_start` to `on_task_end`, so the checkpoints taken between tasks do not carry them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Layer {
    /// Parameter index.
    pub param: usize,
    /// Parameter name (`layers.{l}.weight`, `convs.{i}.weight`, `layer1.0.conv1.weight`, ...).
    pub name: String,
    /// Shape `[out, in]` or `[out, in, kh, kw]`.
    pub shape: Vec<usize>,
    /// Values at initialisation (θ0).
    #[serde(with = "clef_sdk::state::tensor")]
    pub init: Vec<f32>,
    /// Consolidated values θ̄: meaningful at frozen positions.
    #[serde(with = "clef_sdk::state::tensor")]
    pub consolidated: Vec<f32>,
    /// Positions used by an earlier task.
    #[serde(with = "clef_sdk::state::bits")]
    pub frozen: Vec<bool>,
    /// The current task's mask.
    #[serde(with = "clef_sdk::state::bits")]
    pub mask: Vec<bool>,
    /// Positions ever active in the current task.
    #[serde(with = "clef_sdk::state::bits")]
    pub fired: Vec<bool>,
    /// Positions the current task trains (`mask && !frozen`).
    #[serde(with = "clef_sdk::state::bits")]
    pub trainable: Vec<bool>,
    /// The value of every position the task does not train.
    #[serde(with = "clef_sdk::state::tensor")]
    pub fixed: Vec<f32>,
    /// Masks of the finished tasks.
    pub task_masks: Vec<Bits>,
}

impl Layer {
    fn numel(&self) -> usize {
        self.init.len()
    }

    /// Writes the fixed value into every position the task does not train.
    ///
    /// Branch-free on the bit patterns (`fixed` is 0 where the task trains), so the loop
    /// vectorises: it runs after every optimizer step over every weight.
    fn apply(&self, w: &mut [f32]) {
        for ((w, &t), &f) in w.iter_mut().zip(&self.trainable).zip(&self.fixed) {
            let keep = u32::from(t).wrapping_neg();
            *w = f32::from_bits((w.to_bits() & keep) | (f.to_bits() & !keep));
        }
    }
}

/// Optimizer state slot names the SDK knows.
const SLOTS: [&str; 3] = ["momentum", "exp_avg", "exp_avg_sq"];

/// The strategy. Its checkpoint state is the whole struct (`SerdeState`) but the buffer of
/// `before_eval`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Dst {
    cfg: Config,
    layers: Vec<Layer>,
    /// Target density per layer (same order as `layers`).
    densities: Vec<f64>,
    /// Parameter indices and values at initialisation of the unmasked trainable tensors:
    /// biases, norm shifts and norm scales (1-D weights). They follow `bias`.
    biases: Vec<(usize, Floats)>,
    /// Per finished task: its bias values (`bias = "per-task"`).
    task_biases: Vec<Vec<Floats>>,
    /// Buffers (batch norm running statistics) and their values at initialisation: always
    /// per task, whatever `bias` says (they are statistics of one task's data).
    #[serde(default)]
    buffers: Vec<(usize, Floats)>,
    /// Per finished task: its buffer values.
    #[serde(default)]
    task_buffers: Vec<Vec<Floats>>,
    /// Optimizer state slots present (`momentum` or `exp_avg` + `exp_avg_sq`).
    slots: Vec<String>,
    /// The task being trained (set by `on_task_start`, cleared by `on_task_end`).
    training: Option<usize>,
    steps_in_task: usize,
    updates_in_task: usize,
    /// Values swapped out by `before_eval`: `(param, values)`; empty outside an evaluation,
    /// so never part of a checkpoint.
    #[serde(skip)]
    saved: Vec<(usize, Vec<f32>)>,
}

impl Dst {
    /// The masked layers (for tests and inspection).
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Target densities per masked layer.
    pub fn densities(&self) -> &[f64] {
        &self.densities
    }

    /// Tasks consolidated so far.
    fn finished_tasks(&self) -> usize {
        self.layers.first().map_or(0, |l| l.task_masks.len())
    }

    /// Checks that the masked layers and biases (restored from a checkpoint, perhaps) have
    /// the sizes of the model's parameters.
    fn check_layout(&self, ctx: &Ctx<'_>) -> Result<()> {
        let params = self.layers.iter().map(|l| (l.param, l.numel())).chain(
            self.biases
                .iter()
                .chain(&self.buffers)
                .map(|(p, v)| (*p, v.len())),
        );
        for (param, n) in params {
            let found = ctx.values_ref(param).map(<[f32]>::len);
            ensure!(
                matches!(found, Ok(m) if m == n),
                "strategy `dst`: the state holds {n} values for parameter {param}, but the \
                 model {}: the state (a checkpoint?) belongs to another model",
                match found {
                    Ok(m) => format!("has {m}"),
                    Err(e) => format!("does not give them ({e})"),
                }
            );
        }
        Ok(())
    }

    fn zero_state(&self, ctx: &mut Ctx<'_>, param: usize, positions: &[usize]) -> Result<()> {
        for slot in &self.slots {
            if let Some(s) = ctx.optimizer_state(slot, param)? {
                for &i in positions {
                    s[i] = 0.0;
                }
            }
        }
        Ok(())
    }

    /// Zeroes the whole optimizer state of a parameter (a new task's start).
    fn clear_state(&self, ctx: &mut Ctx<'_>, param: usize) -> Result<()> {
        for slot in &self.slots {
            if let Some(s) = ctx.optimizer_state(slot, param)? {
                s.fill(0.0);
            }
        }
        Ok(())
    }

    /// Growth scores of a layer for `gradient` / `momentum`.
    fn scores(&self, ctx: &mut Ctx<'_>, param: usize) -> Result<Option<Vec<f32>>> {
        Ok(match self.cfg.growth {
            Growth::Gradient => Some(ctx.grads_ref(param)?.to_vec()),
            Growth::Momentum => {
                let Some(m) = ctx.optimizer_state("exp_avg", param)?.map(|m| m.to_vec()) else {
                    bail!(momentum_needs_adam());
                };
                let Some(v) = ctx.optimizer_state("exp_avg_sq", param)? else {
                    bail!(momentum_needs_adam());
                };
                Some(
                    m.iter()
                        .zip(v.iter())
                        .map(|(m, v)| m / (v.sqrt() + 1e-8))
                        .collect(),
                )
            }
            Growth::Random | Growth::Unfired => None,
        })
    }

    /// One topology update of every layer.
    fn update_topology(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let p = drop_fraction(
            self.steps_in_task,
            self.cfg.task_steps,
            self.cfg.drop_start,
            self.cfg.drop_end,
        );
        let mut rng = SplitMix64::from_ctx(ctx);
        let (mut dropped, mut grown) = (0usize, 0usize);
        for li in 0..self.layers.len() {
            let param = self.layers[li].param;
            let scores = self.scores(ctx, param)?;
            let values = ctx.values_ref(param)?.to_vec();
            let s = &self.cfg;
            let layer = &mut self.layers[li];
            let change = update_layer(
                LayerView {
                    mask: &mut layer.mask,
                    fired: &mut layer.fired,
                    frozen: &layer.frozen,
                    values: &values,
                    scores: scores.as_deref(),
                },
                p,
                s.growth,
                s.frozen_growth,
                &mut rng,
            );
            let w = ctx.values(param)?;
            for &i in &change.dropped {
                layer.trainable[i] = false;
                layer.fixed[i] = 0.0;
            }
            for &i in &change.grown {
                if layer.frozen[i] {
                    layer.trainable[i] = false;
                    layer.fixed[i] = match s.frozen_growth {
                        FrozenGrowth::Original => 0.0,
                        _ => layer.consolidated[i],
                    };
                } else {
                    layer.trainable[i] = true;
                    layer.fixed[i] = 0.0;
                    w[i] = match s.grow_init {
                        GrowInit::Zero => 0.0,
                        GrowInit::Init => layer.init[i],
                    };
                }
            }
            layer.apply(w);
            dropped += change.dropped.len();
            grown += change.grown.len();
            let mut touched = change.dropped;
            touched.extend(change.grown);
            self.zero_state(ctx, param, &touched)?;
        }
        self.updates_in_task += 1;
        clef_sdk::tracing::debug!(
            step = self.steps_in_task,
            drop_fraction = p,
            dropped,
            grown,
            "topology update"
        );
        Ok(())
    }
}

/// Per-layer target densities for `cfg` (`init`, `sparsity`, `dense_first`); `first` names
/// the first masked layer for the error when `dense_first` cannot fit in the budget.
fn target_densities(cfg: &Config, shapes: &[Vec<usize>], first: &str) -> Result<Vec<f64>> {
    let density = 1.0 - cfg.sparsity;
    if !cfg.dense_first {
        return Ok(match cfg.init {
            MaskInit::Uniform => uniform_densities(shapes, density),
            MaskInit::Erk => erk_densities(shapes, density),
        });
    }
    let solved = match cfg.init {
        MaskInit::Uniform => uniform_densities_dense_first(shapes, density),
        MaskInit::Erk => {
            let mut held = vec![false; shapes.len()];
            held[0] = true;
            erk_densities_with_dense(shapes, density, &held)
        }
    };
    let Some(d) = solved else {
        let n = |s: &Vec<usize>| s.iter().product::<usize>();
        let total: usize = shapes.iter().map(n).sum();
        bail!(
            "strategy `dst`: hparam `dense_first` = true keeps `{first}` dense ({} weights), but \
             the budget at sparsity {} is {:.0} of the {total} masked weights, leaving nothing \
             for the other layers: lower `sparsity` or set dense_first = false",
            n(&shapes[0]),
            cfg.sparsity,
            density * total as f64,
        );
    };
    Ok(d)
}

fn momentum_needs_adam() -> String {
    "strategy `dst`: hparam `growth` = \"momentum\" regrows by Adam's moment ratio \
     |exp_avg / (sqrt(exp_avg_sq) + 1e-8)|, but the optimizer has no `exp_avg`/`exp_avg_sq` \
     state (SGD?): set `optimizer = \"adam\"` in [train] or choose growth = \"random\", \
     \"unfired\" or \"gradient\""
        .to_string()
}

impl Strategy for Dst {
    const NAME: &'static str = "dst";
    const DESCRIPTION: &'static str =
        "dynamic sparse training with per-task masks and frozen weights (Yildirim et al. 2024)";
    /// Conv kernels are masked element-wise like dense weights; norm scales and shifts follow
    /// `bias`; batch norm running statistics are kept per task (never trained, never masked).
    const CONV_BACKBONES: bool = true;
    type Config = Config;

    type State = SerdeState;

    fn new(cfg: Config) -> Result<Self> {
        // The schema's default 0 stands for "not set": the schedule needs the real length.
        ensure!(
            cfg.task_steps >= 1,
            "strategy `dst`: hparam `task_steps` must be set to the number of optimizer steps \
             per task (epochs × ceil(train samples / batch_size), e.g. 5 × ceil(12000 / 128) = \
             470 for split Fashion-MNIST with 5 epochs of batch 128): the drop fraction is \
             cosine-annealed over it (got {})",
            cfg.task_steps
        );
        Ok(Self {
            cfg,
            layers: Vec::new(),
            densities: Vec::new(),
            biases: Vec::new(),
            task_biases: Vec::new(),
            buffers: Vec::new(),
            task_buffers: Vec::new(),
            slots: Vec::new(),
            training: None,
            steps_in_task: 0,
            updates_in_task: 0,
            saved: Vec::new(),
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.layers.clear();
        self.biases.clear();
        self.task_biases.clear();
        self.buffers.clear();
        self.task_buffers.clear();
        for (i, p) in ctx.params()?.into_iter().enumerate() {
            let values = ctx.values_ref(i)?.to_vec();
            match p.role {
                // Dense `[out, in]` and conv `[out, in, kh, kw]` weights are masked; a norm
                // scale `[c]` (also role Weight) is not: it goes with the biases.
                Role::Weight if p.shape.len() >= 2 => self.layers.push(Layer {
                    param: i,
                    name: p.name,
                    shape: p.shape,
                    frozen: vec![false; values.len()],
                    consolidated: values.clone(),
                    init: values,
                    // The working fields are set by on_task_start.
                    mask: Vec::new(),
                    fired: Vec::new(),
                    trainable: Vec::new(),
                    fixed: Vec::new(),
                    task_masks: Vec::new(),
                }),
                Role::Buffer => self.buffers.push((i, Floats(values))),
                _ => self.biases.push((i, Floats(values))),
            }
        }
        ensure!(
            !self.layers.is_empty(),
            "strategy `dst`: the network has no weight tensors to mask"
        );
        let shapes: Vec<Vec<usize>> = self.layers.iter().map(|l| l.shape.clone()).collect();
        self.densities = target_densities(&self.cfg, &shapes, &self.layers[0].name)?;
        let param = self.layers[0].param;
        self.slots.clear();
        for slot in SLOTS {
            if ctx.optimizer_state(slot, param)?.is_some() {
                self.slots.push(slot.to_owned());
            }
        }
        if self.cfg.growth == Growth::Momentum && !self.slots.iter().any(|s| s == "exp_avg") {
            bail!(momentum_needs_adam());
        }
        for (l, d) in self.layers.iter().zip(&self.densities) {
            info!(layer = %l.name, density = d, "target density");
        }
        Ok(())
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        ensure!(
            task.setting == Setting::TaskIl,
            "strategy `dst` isolates tasks by mask and needs the task id at evaluation: use \
             settings = [\"task-il\"] (got {:?})",
            task.setting
        );
        ensure!(
            !self.layers.is_empty(),
            "strategy `dst`: on_task_start before on_model_built"
        );
        let t = task.task;
        let done = self.finished_tasks();
        ensure!(
            t == done,
            "strategy `dst`: task {t} starts but {done} tasks were consolidated (tasks must \
             run in order, each ending with on_task_end)"
        );
        self.check_layout(ctx)?;
        let mut rng = SplitMix64::from_ctx(ctx);
        for li in 0..self.layers.len() {
            let d = self.densities[li];
            let layer = &mut self.layers[li];
            layer.mask = sample_mask(layer.numel(), d, self.cfg.sampling, &mut rng);
            layer.fired.clone_from(&layer.mask);
            layer.trainable = vec![false; layer.numel()];
            layer.fixed = vec![0.0; layer.numel()];
            let w = ctx.values(layer.param)?;
            for (i, w) in w.iter_mut().enumerate() {
                let (trainable, value) = if !layer.mask[i] {
                    (false, 0.0)
                } else if layer.frozen[i] {
                    (false, layer.consolidated[i])
                } else if t == 0 || self.cfg.new_weights == NewWeights::Init {
                    (true, layer.init[i])
                } else {
                    (true, 0.0)
                };
                layer.trainable[i] = trainable;
                layer.fixed[i] = if trainable { 0.0 } else { value };
                *w = value;
            }
            let param = self.layers[li].param;
            self.clear_state(ctx, param)?;
        }
        if self.cfg.bias == Bias::PerTask {
            for (param, init) in &self.biases {
                ctx.values(*param)?.copy_from_slice(init);
            }
        }
        // Every task collects its own running statistics, from their initial values.
        for (param, init) in &self.buffers {
            ctx.values(*param)?.copy_from_slice(init);
        }
        self.training = Some(t);
        self.steps_in_task = 0;
        self.updates_in_task = 0;
        Ok(())
    }

    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.training.is_none() {
            return Ok(());
        }
        for layer in &self.layers {
            layer.apply(ctx.values(layer.param)?);
        }
        self.steps_in_task += 1;
        if self.steps_in_task.is_multiple_of(self.cfg.update_every) {
            self.update_topology(ctx)?;
        }
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        ensure!(
            self.training == Some(task.task),
            "strategy `dst`: on_task_end for task {} without its on_task_start",
            task.task
        );
        if self.steps_in_task != self.cfg.task_steps {
            warn!(
                task = task.task,
                steps = self.steps_in_task,
                task_steps = self.cfg.task_steps,
                "the task took a different number of steps than `task_steps`: the drop schedule \
                 was {}",
                if self.steps_in_task < self.cfg.task_steps {
                    "cut short"
                } else {
                    "held at drop_end at the end"
                }
            );
        }
        let mut reports: Vec<(String, f64)> = Vec::new();
        let (mut active, mut reused, mut total, mut used) = (0usize, 0usize, 0usize, 0usize);
        for layer in &mut self.layers {
            let w = ctx.values_ref(layer.param)?;
            let (mut a, mut r) = (0usize, 0usize);
            for (i, &w) in w.iter().enumerate() {
                if layer.mask[i] {
                    a += 1;
                    if layer.frozen[i] {
                        r += 1;
                    } else {
                        layer.consolidated[i] = w;
                        layer.frozen[i] = true;
                    }
                }
            }
            let n = layer.init.len();
            let u = layer.frozen.iter().filter(|&&f| f).count();
            reports.push((format!("density.{}", layer.name), a as f64 / n as f64));
            reports.push((format!("free.{}", layer.name), (n - u) as f64));
            // The working fields are dead until the next on_task_start: keep them out of the
            // checkpoints taken between tasks.
            layer.task_masks.push(Bits(std::mem::take(&mut layer.mask)));
            layer.fired = Vec::new();
            layer.trainable = Vec::new();
            layer.fixed = Vec::new();
            active += a;
            reused += r;
            total += n;
            used += u;
        }
        if self.cfg.bias == Bias::PerTask {
            let biases = self
                .biases
                .iter()
                .map(|(p, _)| ctx.values_ref(*p).map(|v| Floats(v.to_vec())))
                .collect::<Result<Vec<_>>>()?;
            self.task_biases.push(biases);
        }
        let buffers = self
            .buffers
            .iter()
            .map(|(p, _)| ctx.values_ref(*p).map(|v| Floats(v.to_vec())))
            .collect::<Result<Vec<_>>>()?;
        self.task_buffers.push(buffers);
        reports.extend([
            ("density.total".to_string(), active as f64 / total as f64),
            ("active_weights".to_string(), active as f64),
            ("reused_weights".to_string(), reused as f64),
            (
                "reuse".to_string(),
                if active > 0 {
                    reused as f64 / active as f64
                } else {
                    0.0
                },
            ),
            ("free_weights".to_string(), (total - used) as f64),
            (
                "free_fraction".to_string(),
                (total - used) as f64 / total as f64,
            ),
            ("topology_updates".to_string(), self.updates_in_task as f64),
        ]);
        info!(
            task = task.task,
            density = active as f64 / total as f64,
            reused,
            free = total - used,
            updates = self.updates_in_task,
            "task consolidated"
        );
        if ctx.can_report() {
            for (k, v) in &reports {
                ctx.report(k, *v)?;
            }
        }
        self.training = None;
        Ok(())
    }

    fn before_eval(&mut self, ctx: &mut Ctx<'_>, task: Option<usize>) -> Result<()> {
        self.saved.clear();
        let Some(j) = task else { return Ok(()) };
        // Tasks not trained yet have no mask: they see the network as it is.
        if j >= self.finished_tasks() {
            return Ok(());
        }
        self.check_layout(ctx)?;
        for layer in &self.layers {
            let w = ctx.values(layer.param)?;
            self.saved.push((layer.param, w.to_vec()));
            for ((w, &m), &c) in w
                .iter_mut()
                .zip(layer.task_masks[j].iter())
                .zip(&layer.consolidated)
            {
                *w = if m { c } else { 0.0 };
            }
        }
        let per_task = [
            (&self.biases, self.task_biases.get(j)),
            (&self.buffers, self.task_buffers.get(j)),
        ];
        for (tensors, values) in per_task {
            let Some(values) = values else { continue };
            for ((param, _), b) in tensors.iter().zip(values) {
                let v = ctx.values(*param)?;
                self.saved.push((*param, v.to_vec()));
                v.copy_from_slice(b);
            }
        }
        Ok(())
    }

    fn after_eval(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        for (param, values) in std::mem::take(&mut self.saved) {
            ctx.values(param)?.copy_from_slice(&values);
        }
        Ok(())
    }
}

clef_sdk::export_plugin!(Dst);

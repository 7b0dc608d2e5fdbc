//! `par`: task-difficulty-aware parameter allocation and regularisation (Wang, Hu, Chen, Zhang,
//! "Task Difficulty Aware Parameter Allocation & Regularization for Lifelong Learning", CVPR
//! 2023, arXiv 2304.05288; official code `github.com/WenjinW/PAR`, approach `par_v2`), over the
//! host's expert pool (ABI 1.2).
//!
//! # What it does (task-IL only)
//!
//! At the start of every task `t` the plugin takes the first `proto_fraction` of the task's
//! training samples (PAR uses a 10% validation split), maps them through a **fixed feature
//! extractor** (`features`: raw pixels, a fixed Gaussian random projection, or the penultimate
//! features of the first task's expert frozen at the end of task 0) and computes one prototype
//! per class. For every old task `j` it estimates the nearest-prototype divergence `D(t, j)`
//! and the relatedness `s(t, j)` ([`relatedness`]); an expert's score `S(t, e)` aggregates
//! the scores of its tasks (mean by default), and the most related expert `e*` has the
//! smallest score. Then ([`relatedness::decide`]):
//!
//! | condition | action | `decision` |
//! |---|---|---|
//! | `S ≤ alpha`, task smaller than `reuse_ratio` × the largest task `e*` has seen | freeze `e*`, train a new head only | 0 |
//! | `S ≤ alpha`, otherwise | fine-tune `e*` with a new head, distillation on `e*`'s old heads | 1 |
//! | `alpha < S ≤ beta` | new expert with `e*`'s architecture | 2 |
//! | `S > beta`, or no expert yet | new expert from the architecture search | 3 |
//!
//! `policy = "new-expert"` is the "one new expert per task" reference instead: every task gets
//! a new expert with the configured network's architecture (`decision` 4).
//!
//! Distillation ([`kd`]): at the start of a transfer task the plugin copies `e*`'s body (the
//! teacher); in `after_backward` it adds, for every old task `j` on `e*`, the gradient of
//! `kd_weight · KD_T(head_j(student), head_j(teacher))` on the batch's current-task rows through
//! the host's `head_forward` / `head_vjp` (old heads stay fixed).
//!
//! Search ([`search`]): `search_epochs` rounds of MdeNAS sampling over depth × width ×
//! activation; each sampled architecture is an expert trained by the plugin itself (plain SGD,
//! `search_steps` steps of `search_batch` rows at `search_lr`, through `forward` and `vjp`) on
//! the first half of up to `search_subset` training samples and scored on the second half. An
//! architecture sampled again continues training its expert (the per-path weight sharing of
//! MdeNAS's supernet). The chosen architecture is then trained from scratch as the task's
//! expert by the normal training loop.
//!
//! Convolutional backbones (`CONV_BACKBONES`): every expert is a ConvNet body added through
//! the ABI 1.5 `expert_add_conv` (the backbone's image shape, norm, activation and dense
//! layers), and the search runs over the number of convolutions (1..=`max_conv_depth`) × their
//! channel count (`min_channels`..=`max_channels`, powers of two): the paper's cell search
//! restricted to the depth and width of a plain ConvNet, which is what clef's backends build.
//!
//! Reported per task (`strategy_metrics`): `decision`, `expert`, `relatedness.task<j>` for
//! every old task, `score.expert<e>` for every expert, `arch.conv`, `arch.depth`, `arch.width`,
//! `arch.activation` (0 relu, 1 tanh, 2 sigmoid), `experts` (experts in use) and
//! `params.total` (the pool's parameters at the end of the task, from `expert_params`).
//!
//! Hyperparameters: [`Config`]; the table, defaults and their sources are in
//! `docs/strategies.md` (`par`).
//!
//! # Checkpoints
//!
//! `type State = SerdeState`: the whole strategy (its hyperparameters, the base architecture,
//! its record of every expert and route, the prototypes, the random projection and the frozen
//! extractor) through serde. The experts themselves (weights, buffers, heads, routing, frozen
//! copies, optimizer state) are in the host's expert pool, which the trial checkpoint holds
//! (checkpoint format version 2), so a killed PAR trial resumes bit-identically. The teacher of a
//! transfer task and the batch rows live within a task only and are not saved (checkpoints
//! are written at task boundaries).

pub mod config;
pub mod kd;
pub mod relatedness;
pub mod search;

use clef_sdk::prelude::*;
use clef_sdk::{Activation, Split};

use config::doublings;
pub use config::{BaseActivation, Config, Features, Policy};

use relatedness::{Decision, Prototypes};
use search::{Arch, Multinomial, Space};

/// What the plugin knows about one expert it routed tasks to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExpertRec {
    arch: Arch,
    /// Tasks routed to it.
    tasks: Vec<usize>,
    /// Largest training set among them.
    largest: usize,
}

/// The teacher of a transfer task.
#[derive(Debug)]
struct Transfer {
    /// Body values of the expert at the start of the task.
    body: Vec<Vec<f32>>,
    /// Old tasks on the expert and their units.
    old: Vec<(usize, Vec<usize>)>,
}

/// The frozen feature extractor of `features = "expert"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Extractor {
    arch: Arch,
    /// Weights and biases of the hidden layers, `[w0, b0, w1, b1, ...]`.
    #[serde(with = "clef_sdk::state::tensors")]
    body: Vec<Vec<f32>>,
}

/// The PAR strategy (its checkpoint state: everything but the task-local teacher and batch).
#[derive(Debug, Serialize, Deserialize)]
pub struct Par {
    cfg: Config,
    space: Space,
    base: Option<Arch>,
    /// Expert id → record.
    experts: Vec<(usize, ExpertRec)>,
    /// Task → expert id.
    routes: Vec<Option<usize>>,
    /// Task → prototypes (in the extractor's feature space).
    protos: Vec<Option<Prototypes>>,
    projection: Option<Vec<f32>>,
    extractor: Option<Extractor>,
    /// Within a transfer task only (checkpoints are written between tasks).
    #[serde(skip)]
    transfer: Option<Transfer>,
    frozen: Option<usize>,
    /// Current-task rows of the batch.
    #[serde(skip)]
    x: Vec<f32>,
    #[serde(skip)]
    rows: usize,
}

/// Box–Muller standard normal from two uniforms.
fn normal(ctx: &mut Ctx<'_>) -> f64 {
    let u1 = ctx.rng_f64().max(1e-300);
    let u2 = ctx.rng_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn act(a: Activation, v: f32) -> f32 {
    match a {
        Activation::Relu => v.max(0.0),
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
    }
}

impl Extractor {
    /// Penultimate features of `rows` inputs of `input` values.
    fn features(&self, x: &[f32], rows: usize, input: usize) -> Vec<f32> {
        let mut h = x.to_vec();
        let mut width = input;
        for l in 0..self.arch.hidden.len() {
            let (w, b) = (&self.body[2 * l], &self.body[2 * l + 1]);
            let out = b.len();
            let mut next = vec![0f32; rows * out];
            for r in 0..rows {
                let hr = &h[r * width..(r + 1) * width];
                for o in 0..out {
                    let row = &w[o * width..(o + 1) * width];
                    let z: f32 = row.iter().zip(hr).map(|(a, b)| a * b).sum::<f32>() + b[o];
                    next[r * out + o] = act(self.arch.activation, z);
                }
            }
            h = next;
            width = out;
        }
        h
    }
}

impl Par {
    fn rec(&self, id: usize) -> Option<&ExpertRec> {
        self.experts.iter().find(|(e, _)| *e == id).map(|(_, r)| r)
    }

    fn rec_mut(&mut self, id: usize) -> Option<&mut ExpertRec> {
        self.experts
            .iter_mut()
            .find(|(e, _)| *e == id)
            .map(|(_, r)| r)
    }

    /// Fixed features of `rows` inputs; `None` if the extractor does not exist yet (`expert`
    /// features during task 0).
    fn embed(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: &[f32],
        rows: usize,
        input: usize,
    ) -> Result<Option<(Vec<f32>, usize)>> {
        Ok(match self.cfg.features {
            Features::Raw => Some((x.to_vec(), input)),
            Features::Projection => {
                let k = self.cfg.projection_dim;
                if self.projection.is_none() {
                    let scale = 1.0 / (k as f64).sqrt();
                    let m: Vec<f32> = (0..k * input)
                        .map(|_| (normal(ctx) * scale) as f32)
                        .collect();
                    self.projection = Some(m);
                }
                let Some(m) = &self.projection else {
                    bail!("strategy `par`: projection missing");
                };
                let mut out = vec![0f32; rows * k];
                for r in 0..rows {
                    let xr = &x[r * input..(r + 1) * input];
                    for j in 0..k {
                        out[r * k + j] = m[j * input..(j + 1) * input]
                            .iter()
                            .zip(xr)
                            .map(|(a, b)| a * b)
                            .sum();
                    }
                }
                Some((out, k))
            }
            Features::Expert => self.extractor.as_ref().map(|e| {
                let f = e.features(x, rows, input);
                let d = e.arch.feature_dim(input);
                (f, d)
            }),
        })
    }

    /// Samples for prototypes of the current task: `(x, targets, rows)`.
    fn proto_samples(
        &self,
        ctx: &mut Ctx<'_>,
        info: &TaskInfo,
    ) -> Result<(Vec<f32>, Vec<usize>, usize)> {
        let n = ((info.train_samples as f64 * self.cfg.proto_fraction).ceil() as usize)
            .clamp(1.min(info.train_samples), info.train_samples);
        let (x, y) = ctx.task_samples(info.task, Split::Train, 0, n)?;
        Ok((x, y, n))
    }

    /// Adds an expert of `arch` (a ConvNet body through `expert_add_conv`, else an MLP) and
    /// returns its id.
    fn add_expert(&mut self, ctx: &mut Ctx<'_>, arch: &Arch) -> Result<usize> {
        if arch.is_conv() {
            return ctx.expert_add_conv(&arch.channels, &arch.hidden);
        }
        ctx.expert_add(&arch.hidden, arch.activation)
    }

    /// The architecture search on the current task (see the crate docs).
    fn search(&mut self, ctx: &mut Ctx<'_>, info: &TaskInfo) -> Result<Arch> {
        let n = info.train_samples.min(self.cfg.search_subset);
        ensure!(
            n >= 2,
            "strategy `par`: task {} has {n} training samples, the search needs 2",
            info.task
        );
        let (x, y) = ctx.task_samples(info.task, Split::Train, 0, n)?;
        let d = info.input_dim;
        let half = n / 2;
        let (xt, yt) = (&x[..half * d], &y[..half]);
        let (xv, yv) = (&x[half * d..], &y[half..]);
        let units = &info.units;
        let k = info.num_outputs;
        let mut mn = Multinomial::uniform(&self.space.sizes());
        let mut cache: Vec<(Vec<usize>, usize)> = Vec::new();
        let b = self.cfg.search_batch.min(half).max(1);
        for _ in 0..self.cfg.search_epochs {
            let u = [ctx.rng_f64(), ctx.rng_f64(), ctx.rng_f64()];
            let choice = mn.sample(&u);
            let id = match cache.iter().find(|(c, _)| *c == choice) {
                Some((_, id)) => *id,
                None => {
                    let arch = self.space.arch([choice[0], choice[1], choice[2]]);
                    let id = self.add_expert(ctx, &arch)?;
                    cache.push((choice.clone(), id));
                    id
                }
            };
            ctx.expert_select(id)?;
            let np = ctx.param_count()?;
            let mut xb = vec![0f32; b * d];
            for _ in 0..self.cfg.search_steps {
                let mut yb = Vec::with_capacity(b);
                for r in 0..b {
                    let i = ctx.rng_below(half);
                    xb[r * d..(r + 1) * d].copy_from_slice(&xt[i * d..(i + 1) * d]);
                    yb.push(yt[i]);
                }
                let logits = ctx.forward(&xb, b)?;
                let mut cot = vec![0f32; b * k];
                for r in 0..b {
                    let z: Vec<f64> = units.iter().map(|&u| logits[r * k + u] as f64).collect();
                    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
                    let s: f64 = e.iter().sum();
                    for (j, &u) in units.iter().enumerate() {
                        let target = f64::from(u8::from(u == yb[r]));
                        cot[r * k + u] = ((e[j] / s - target) / b as f64) as f32;
                    }
                }
                for i in 0..np {
                    ctx.grads(i)?.fill(0.0);
                }
                ctx.vjp(&xb, b, &cot)?;
                let lr = self.cfg.search_lr as f32;
                for i in 0..np {
                    let g = ctx.grads_ref(i)?.to_vec();
                    for (w, gi) in ctx.values(i)?.iter_mut().zip(&g) {
                        *w -= lr * gi;
                    }
                }
            }
            for i in 0..np {
                ctx.grads(i)?.fill(0.0);
            }
            let logits = ctx.forward(xv, yv.len())?;
            let correct = yv
                .iter()
                .enumerate()
                .filter(|&(r, &t)| {
                    let best = units.iter().copied().max_by(|&a, &b| {
                        logits[r * k + a]
                            .total_cmp(&logits[r * k + b])
                            .then(b.cmp(&a))
                    });
                    best == Some(t)
                })
                .count();
            let acc = correct as f64 / yv.len().max(1) as f64;
            mn.update(&choice, acc, self.cfg.lr_search);
        }
        let best = mn.best();
        Ok(self.space.arch([best[0], best[1], best[2]]))
    }

    fn report(ctx: &mut Ctx<'_>, key: &str, value: f64) -> Result<()> {
        if ctx.can_report() {
            ctx.report(key, value)?;
        }
        Ok(())
    }
}

impl Strategy for Par {
    const NAME: &'static str = "par";
    const DESCRIPTION: &'static str =
        "relatedness-driven expert reuse, distillation and architecture search (Wang et al. 2023)";
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(cfg: Config) -> Result<Self> {
        ensure!(
            cfg.alpha <= cfg.beta,
            "strategy `par`: hparam `alpha` ({}) must not exceed hparam `beta` ({})",
            cfg.alpha,
            cfg.beta
        );
        ensure!(
            cfg.min_width <= cfg.max_width,
            "strategy `par`: hparam `min_width` ({}) must not exceed hparam `max_width` ({})",
            cfg.min_width,
            cfg.max_width
        );
        ensure!(
            cfg.min_channels <= cfg.max_channels,
            "strategy `par`: hparam `min_channels` ({}) must not exceed hparam `max_channels` ({})",
            cfg.min_channels,
            cfg.max_channels
        );
        // The MLP space; on_model_built switches to the ConvNet space on a conv backbone.
        let space = Space {
            depths: (1..=cfg.max_depth).collect(),
            widths: doublings(cfg.min_width, cfg.max_width),
            activations: vec![Activation::Relu, Activation::Tanh],
            conv: None,
        };
        Ok(Par {
            cfg,
            space,
            base: None,
            experts: Vec::new(),
            routes: Vec::new(),
            protos: Vec::new(),
            projection: None,
            extractor: None,
            transfer: None,
            frozen: None,
            x: Vec::new(),
            rows: 0,
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        // The configured network's architecture (the new-expert policy's): its conv channels
        // (4-D weights) and dense hidden widths (2-D weights but the output layer's).
        let params = ctx.params()?;
        let weights = |ndim: usize| -> Vec<usize> {
            params
                .iter()
                .filter(|p| p.role == clef_sdk::Role::Weight && p.shape.len() == ndim)
                .map(|p| p.shape[0])
                .collect()
        };
        let channels = weights(4);
        let dense = weights(2);
        let hidden = dense[..dense.len().saturating_sub(1)].to_vec();
        let activation = self.cfg.base_activation.activation();
        if !channels.is_empty() {
            ensure!(
                self.cfg.features != Features::Expert,
                "strategy `par`: hparam `features` = \"expert\" needs an MLP backbone (the \
                 plugin evaluates the frozen extractor itself); use \"raw\" or \"projection\""
            );
            // The ConvNet space: number of convolutions x channel count; the dense part and
            // the activation are the backbone's.
            self.space = Space {
                depths: (1..=self.cfg.max_conv_depth).collect(),
                widths: doublings(self.cfg.min_channels, self.cfg.max_channels),
                activations: vec![activation],
                conv: Some(hidden.clone()),
            };
        }
        self.base = Some(Arch {
            channels,
            hidden,
            activation,
        });
        Ok(())
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, info: &TaskInfo) -> Result<()> {
        ensure!(
            info.setting == Setting::TaskIl,
            "strategy `par` needs the task-IL setting (experts are routed by task id)"
        );
        ensure!(
            ctx.can_use_experts(),
            "strategy `par` needs a host with the ABI 1.2 expert services"
        );
        ensure!(
            self.space.conv.is_none() || ctx.can_add_conv_experts(),
            "strategy `par` on a convolutional backbone needs a host with the ABI 1.5 service \
             `expert_add_conv`"
        );
        let t = info.task;
        if self.routes.len() < info.num_tasks {
            self.routes.resize(info.num_tasks, None);
            self.protos.resize(info.num_tasks, None);
        }
        let d = info.input_dim;
        // Prototypes of the new task.
        let (x, y, n) = self.proto_samples(ctx, info)?;
        let feats = self.embed(ctx, &x, n, d)?;
        let mut rel: Vec<(usize, f64)> = Vec::new();
        if let Some((f, fd)) = &feats {
            let own = relatedness::prototypes(f, *fd, &y);
            for (j, old) in self.protos.iter().enumerate().take(t) {
                if let Some(old) = old {
                    let dv = relatedness::divergence(f, *fd, &y, &own, old);
                    rel.push((j, relatedness::relatedness(dv)));
                }
            }
            self.protos[t] = Some(own);
        }
        // Expert scores.
        let mut best: Option<(usize, f64)> = None;
        let mut scores = Vec::new();
        for (e, r) in &self.experts {
            let s: Vec<f64> = rel
                .iter()
                .filter(|(j, _)| r.tasks.contains(j))
                .map(|&(_, s)| s)
                .collect();
            if s.is_empty() {
                continue;
            }
            let score = self.cfg.aggregate.apply(&s);
            scores.push((*e, score));
            if best.is_none_or(|(_, b)| score < b) {
                best = Some((*e, score));
            }
        }
        let decision = if self.cfg.policy == Policy::NewExpert {
            Decision::NewBase
        } else {
            let largest = best.and_then(|(e, _)| self.rec(e)).map_or(0, |r| r.largest);
            relatedness::decide(
                best,
                self.cfg.alpha,
                self.cfg.beta,
                info.train_samples,
                largest,
                self.cfg.reuse_ratio,
            )
        };
        let (id, arch) = match decision {
            Decision::ReuseHead { expert } | Decision::Transfer { expert } => {
                let arch = self.rec(expert).map(|r| r.arch.clone());
                let Some(arch) = arch else {
                    bail!("strategy `par`: expert {expert} is unknown");
                };
                (expert, arch)
            }
            Decision::ReuseArch { expert } => {
                let Some(arch) = self.rec(expert).map(|r| r.arch.clone()) else {
                    bail!("strategy `par`: expert {expert} is unknown");
                };
                (self.add_expert(ctx, &arch)?, arch)
            }
            Decision::Search => {
                let arch = self.search(ctx, info)?;
                (self.add_expert(ctx, &arch)?, arch)
            }
            Decision::NewBase => {
                let Some(arch) = self.base.clone() else {
                    bail!("strategy `par`: on_task_start before on_model_built");
                };
                (self.add_expert(ctx, &arch)?, arch)
            }
        };
        // Teacher of a transfer task: the expert's body before this task.
        self.transfer = None;
        if let Decision::Transfer { expert } = decision {
            ctx.expert_select(expert)?;
            let np = ctx.param_count()?;
            let body = (0..np.saturating_sub(2))
                .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
                .collect::<Result<Vec<_>>>()?;
            let old_tasks = self
                .rec(expert)
                .map(|r| r.tasks.clone())
                .unwrap_or_default();
            let mut old = Vec::new();
            for j in old_tasks {
                let mask = ctx.task_mask(j)?;
                old.push((
                    j,
                    mask.iter()
                        .enumerate()
                        .filter_map(|(u, &m)| m.then_some(u))
                        .collect(),
                ));
            }
            self.transfer = Some(Transfer { body, old });
        } else {
            ctx.expert_select(id)?;
        }
        if let Decision::ReuseHead { expert } = decision {
            ctx.expert_freeze(expert, true)?;
            self.frozen = Some(expert);
        }
        match self.rec_mut(id) {
            Some(r) => {
                r.tasks.push(t);
                r.largest = r.largest.max(info.train_samples);
            }
            None => self.experts.push((
                id,
                ExpertRec {
                    arch: arch.clone(),
                    tasks: vec![t],
                    largest: info.train_samples,
                },
            )),
        }
        self.routes[t] = Some(id);
        clef_sdk::tracing::info!(
            task = t,
            decision = decision.code(),
            expert = id,
            ?arch,
            "par decision"
        );
        Self::report(ctx, "decision", f64::from(decision.code()))?;
        Self::report(ctx, "expert", id as f64)?;
        for (j, s) in &rel {
            Self::report(ctx, &format!("relatedness.task{j}"), *s)?;
        }
        for (e, s) in &scores {
            Self::report(ctx, &format!("score.expert{e}"), *s)?;
        }
        // Depth and width: of the convolutions for a ConvNet body, else of the hidden layers.
        let layers = if arch.is_conv() {
            &arch.channels
        } else {
            &arch.hidden
        };
        Self::report(ctx, "arch.conv", f64::from(u8::from(arch.is_conv())))?;
        Self::report(ctx, "arch.depth", layers.len() as f64)?;
        Self::report(
            ctx,
            "arch.width",
            layers.first().copied().unwrap_or(0) as f64,
        )?;
        Self::report(
            ctx,
            "arch.activation",
            f64::from(search::activation_code(arch.activation)),
        )?;
        Ok(())
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.transfer.is_none() {
            return Ok(());
        }
        let b = ctx.batch()?;
        self.rows = b.current_rows;
        self.x.clear();
        self.x.extend_from_slice(&b.x[..b.current_rows * b.cols]);
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        let Some(tr) = &self.transfer else {
            return Ok(());
        };
        if self.rows == 0 || tr.old.is_empty() {
            return Ok(());
        }
        let rows = self.rows;
        let k = ctx.task_info()?.num_outputs;
        for (j, units) in &tr.old {
            let student = ctx.head_forward(*j, &self.x, rows)?;
            // Teacher: the old body in the views, forward, then the current body back.
            let nb = tr.body.len();
            let mut current = Vec::with_capacity(nb);
            for (i, old) in tr.body.iter().enumerate() {
                let v = ctx.values(i)?;
                current.push(v.to_vec());
                v.copy_from_slice(old);
            }
            let teacher = ctx.head_forward(*j, &self.x, rows);
            for (i, cur) in current.iter().enumerate() {
                ctx.values(i)?.copy_from_slice(cur);
            }
            let teacher = teacher?;
            let c = units.len();
            let pick = |z: &[f32]| -> Vec<f32> {
                (0..rows)
                    .flat_map(|r| units.iter().map(move |&u| z[r * k + u]))
                    .collect()
            };
            let (_, g) = kd::kd_loss_grad(
                &pick(&student),
                &pick(&teacher),
                rows,
                c,
                self.cfg.kd_temperature,
            );
            let mut cot = vec![0f32; rows * k];
            for r in 0..rows {
                for (i, &u) in units.iter().enumerate() {
                    cot[r * k + u] = self.cfg.kd_weight as f32 * g[r * c + i];
                }
            }
            ctx.head_vjp(*j, &self.x, rows, &cot)?;
        }
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, info: &TaskInfo) -> Result<()> {
        if let Some(e) = self.frozen.take() {
            ctx.expert_freeze(e, false)?;
        }
        self.transfer = None;
        if self.cfg.features == Features::Expert && self.extractor.is_none() {
            // The first task's expert, frozen from now on as the feature extractor.
            let id = self.routes.get(info.task).copied().flatten();
            let arch = id.and_then(|e| self.rec(e)).map(|r| r.arch.clone());
            if let Some(arch) = arch {
                let nb = 2 * arch.hidden.len();
                let body = (0..nb)
                    .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
                    .collect::<Result<Vec<_>>>()?;
                self.extractor = Some(Extractor { arch, body });
                let (x, y, n) = self.proto_samples(ctx, info)?;
                if let Some((f, fd)) = self.embed(ctx, &x, n, info.input_dim)? {
                    self.protos[info.task] = Some(relatedness::prototypes(&f, fd, &y));
                }
            }
        }
        let total = ctx.expert_params(None)?;
        Self::report(ctx, "params.total", total as f64)?;
        Self::report(ctx, "experts", self.experts.len() as f64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

clef_sdk::export_plugin!(Par);

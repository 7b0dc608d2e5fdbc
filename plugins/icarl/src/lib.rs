//! `icarl`: Incremental Classifier and Representation Learning (Rebuffi, Kolesnikov, Sperl and
//! Lampert 2017, CVPR; official code <https://github.com/srebuffi/iCaRL>; Mammoth's
//! `models/icarl.py`, <https://github.com/aimagelab/mammoth>).
//!
//! # What it does
//!
//! * **Exemplars.** A memory of at most K = `memory_size` samples, `m = K / (classes seen)`
//!   per class. At the end of every task (`on_task_end`) the classes already in the memory keep
//!   their first `m` exemplars (Algorithm 5), and each class of the task's training split gets
//!   the first `m` picks of **herding** on its L2-normalised features (`Ctx::features`,
//!   evaluation mode; `clef_sdk::memory::herding`, Algorithm 4), stored in priority order.
//! * **Training** on the union of the task's data and the exemplars: `before_batch` appends
//!   exemplar rows to every batch, visiting the exemplars in a shuffled cycle. With
//!   `replay_batch_size = 0` (the default) a batch of `B` current rows gets the union's share of
//!   exemplars, `B · M / N` (M exemplars held, N training samples of the task; the fraction is
//!   carried over so an epoch over the task's data visits every exemplar once, as one epoch
//!   over the union would); otherwise `replay_batch_size` rows.
//! * **Loss** (`loss` hook, Algorithm 3): sigmoid binary cross-entropy over every output unit
//!   seen so far, with one-hot targets on the current task's units and, on the older units,
//!   the sigmoid outputs of the **old network** (the network at the end of the previous task),
//!   averaged over rows × units as Mammoth's `binary_cross_entropy_with_logits`. The old
//!   network's tensors (batch-norm buffers included) are copied in `on_task_start`; its logits
//!   on the whole batch are computed in `before_batch` by writing those tensors into the
//!   parameter views around one `forward` (evaluation mode: batch norm with the old running
//!   statistics, as Mammoth's `deepcopy(net.eval())`) and writing the current ones back.
//! * **Evaluation** (`predict`): with `classifier = "ncm"`, nearest mean of exemplars: the mean
//!   of each class's L2-normalised exemplar features, renormalised (computed once per task end
//!   with the network as it ended the task), and the score `−‖φ(x)/‖φ(x)‖ − μ_y‖`; a class
//!   without exemplars scores `ncm::NO_MEAN_SCORE`. With `classifier = "head"` the network's
//!   logits.
//!
//! Domain-IL is refused (old and new classes share the output units, so the distillation
//! targets and the labels would compete for the same units; Mammoth's iCaRL is class-IL and
//! task-IL only).

pub mod exemplars;
pub mod ncm;

use clef_sdk::memory::SampleStore;
use clef_sdk::prelude::*;

use crate::ncm::{ncm_scores, sigmoid, DistillBce};

/// How evaluation inputs are classified (`classifier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Classifier {
    /// Nearest mean of exemplars (iCaRL's classifier).
    Ncm,
    /// The network's own output layer.
    Head,
}

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// exemplar memory K in samples, K / (classes seen) per class, chosen by herding
    #[hparam(default = 500, range = 1..=100_000_000)]
    pub memory_size: usize,
    /// exemplar rows appended per batch; 0 = the union's share, current rows × exemplars /
    /// task samples
    #[hparam(default = 0, range = 0..=1_000_000, needs_past_tasks)]
    pub replay_batch_size: usize,
    /// evaluation by nearest mean of exemplars (iCaRL) or by the network's own head
    #[hparam(default = "ncm")]
    pub classifier: Classifier,
}

/// The iCaRL strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Icarl {
    memory_size: usize,
    replay_batch_size: usize,
    classifier: Classifier,
    /// The exemplars, each class's in herding priority order (created at the first task end).
    memory: Option<SampleStore>,
    /// The class mean of each output unit's exemplars (empty: no exemplar), from the last task
    /// end.
    #[serde(with = "clef_sdk::state::tensors")]
    means: Vec<Vec<f32>>,
    /// The old network: every tensor at the start of the current task (empty in the first
    /// task and between tasks).
    #[serde(with = "clef_sdk::state::tensors")]
    old: Vec<Vec<f32>>,
    /// The exemplars' visiting order in this task, and the next position in it.
    order: Vec<usize>,
    cursor: usize,
    /// Remainder of `current rows × M` not yet turned into exemplar rows (`replay_batch_size = 0`).
    carry: u64,
    /// Scratch of one step, rebuilt every batch.
    #[serde(skip)]
    step: Step,
}

/// What `before_batch` prepares for the `loss` hook of the same step.
#[derive(Debug, Default)]
struct Step {
    /// The task whose unit sets these are.
    task: Option<usize>,
    /// Units seen so far (tasks `0..=task`), and the current task's.
    seen: Vec<bool>,
    new: Vec<bool>,
    /// The batch's inputs (current rows, then the appended exemplars) and counts.
    x: Vec<f32>,
    rows: usize,
    current_rows: usize,
    /// The old network's sigmoid outputs on `x` (empty in the first task).
    old_probs: Vec<f32>,
    /// Whether `before_batch` prepared this step.
    ready: bool,
    /// The current tensors while the old network's are in the views.
    stash: Vec<Vec<f32>>,
}

impl Icarl {
    /// Fills the unit sets of `task` (once per task).
    fn units(&mut self, ctx: &mut Ctx<'_>, task: usize, k: usize) -> Result<()> {
        if self.step.task == Some(task) {
            return Ok(());
        }
        let mut seen = vec![false; k];
        for j in 0..=task {
            for (s, m) in seen.iter_mut().zip(ctx.task_mask(j)?) {
                *s |= m;
            }
        }
        self.step.new = ctx.task_mask(task)?;
        self.step.seen = seen;
        self.step.task = Some(task);
        Ok(())
    }

    /// The next `count` exemplar indices of the shuffled cycle (a fresh permutation, drawn
    /// with the host's RNG, whenever the cycle is used up).
    fn next_exemplars(&mut self, ctx: &mut Ctx<'_>, held: usize, count: usize) -> Vec<usize> {
        let mut picks = Vec::with_capacity(count);
        while picks.len() < count && held > 0 {
            if self.cursor >= self.order.len() || self.order.len() != held {
                self.order = (0..held).collect();
                for i in (1..held).rev() {
                    let j = ctx.rng_below(i + 1);
                    self.order.swap(i, j);
                }
                self.cursor = 0;
            }
            picks.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        picks
    }
}

fn check_setting(setting: Setting) -> Result<()> {
    match setting {
        Setting::ClassIl | Setting::TaskIl => Ok(()),
        Setting::DomainIl => bail!(
            "iCaRL needs class-IL or task-IL: in domain-IL every task reuses the same output \
             units, so the old network's targets and the new labels would compete for them"
        ),
        Setting::Other(code) => bail!("unsupported evaluation setting (code {code})"),
    }
}

impl Strategy for Icarl {
    const NAME: &'static str = "icarl";
    const DESCRIPTION: &'static str =
        "iCaRL: herding exemplars, sigmoid distillation, nearest-mean-of-exemplars evaluation";
    // Features, forward and the loss work on any backbone; buffers are swapped, not trained.
    const CONV_BACKBONES: bool = true;
    const CUSTOM_LOSS: bool = true;
    const PREDICTS: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            memory_size: config.memory_size,
            replay_batch_size: config.replay_batch_size,
            classifier: config.classifier,
            memory: None,
            means: Vec::new(),
            old: Vec::new(),
            order: Vec::new(),
            cursor: 0,
            carry: 0,
            step: Step::default(),
        })
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        check_setting(task.setting)?;
        self.order.clear();
        self.cursor = 0;
        self.carry = 0;
        self.old = if task.task == 0 {
            Vec::new()
        } else {
            (0..ctx.param_count()?)
                .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
                .collect::<Result<_>>()?
        };
        self.units(ctx, task.task, task.num_outputs)
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let info = ctx.task_info()?;
        check_setting(info.setting)?;
        self.units(ctx, info.task, info.num_outputs)?;
        self.step.ready = false;
        let (current, cols) = {
            let batch = ctx.batch()?;
            let (x, _) = batch.current()?;
            self.step.x.clear();
            self.step.x.extend_from_slice(x);
            (batch.current_rows, batch.cols)
        };
        let held = self.memory.as_ref().map_or(0, SampleStore::len);
        let count = if held == 0 {
            0
        } else if self.replay_batch_size > 0 {
            self.replay_batch_size.min(held)
        } else if info.train_samples == 0 {
            0
        } else {
            let n = info.train_samples as u64;
            self.carry += current as u64 * held as u64;
            let c = self.carry / n;
            self.carry %= n;
            c as usize
        };
        let picks = self.next_exemplars(ctx, held, count);
        let rows = match &self.memory {
            Some(m) if !picks.is_empty() => {
                ensure!(
                    m.dim() == cols,
                    "the exemplars have {} features, the batch {cols}",
                    m.dim()
                );
                Some(m.gather(&picks))
            }
            _ => None,
        };
        if let Some(r) = &rows {
            self.step.x.extend_from_slice(&r.x);
        }
        let total = current + picks.len();
        self.step.old_probs.clear();
        if !self.old.is_empty() && total > 0 {
            let logits =
                exemplars::old_logits(ctx, &self.old, &mut self.step.stash, &self.step.x, total)?;
            self.step.old_probs.extend(logits.into_iter().map(sigmoid));
        }
        if let Some(r) = rows {
            // Every row's mask is the units seen so far, which the loss runs over (task-IL's
            // default mask, the current task's head, would not hold an old exemplar's label).
            let masks = self.step.seen.repeat(r.targets.len());
            ctx.append_rows(&r.x, &r.targets, Some(&masks))
                .context("appending the exemplars")?;
        }
        self.step.rows = total;
        self.step.current_rows = current;
        self.step.ready = true;
        Ok(())
    }

    fn loss(
        &mut self,
        _ctx: &mut Ctx<'_>,
        batch: &LossBatch<'_>,
        cotangent: &mut [f32],
    ) -> Result<f32> {
        let s = &mut self.step;
        ensure!(s.ready, "the loss hook ran without before_batch");
        s.ready = false;
        ensure!(
            batch.rows == s.rows && batch.current_rows == s.current_rows,
            "the loss hook got {} rows ({} current), before_batch prepared {} ({} current)",
            batch.rows,
            batch.current_rows,
            s.rows,
            s.current_rows
        );
        ensure!(
            batch.x == s.x.as_slice(),
            "the batch's inputs changed between before_batch and the loss hook, so the old \
             network's outputs would not be of these inputs"
        );
        let targets: Vec<usize> = (0..batch.rows).map(|r| batch.target(r)).collect();
        let loss = DistillBce {
            k: batch.num_outputs,
            seen: &s.seen,
            new: &s.new,
            old_probs: &s.old_probs,
        }
        .apply(batch.logits, &targets, cotangent)?;
        Ok(loss as f32)
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        check_setting(task.setting)?;
        self.units(ctx, task.task, task.num_outputs)?;
        let classes_seen = self.step.seen.iter().filter(|&&s| s).count();
        let (x, y) = exemplars::task_data(ctx, task)?;
        let (feats, fdim) = exemplars::features_of(ctx, &x, y.len())?;
        let memory = self
            .memory
            .get_or_insert_with(|| SampleStore::new(task.input_dim, 0));
        ensure!(
            memory.dim() == task.input_dim,
            "the exemplars have {} features, the task's samples {}",
            memory.dim(),
            task.input_dim
        );
        let m = exemplars::update_memory(
            memory,
            self.memory_size,
            classes_seen,
            task.task,
            (&x, &y),
            (&feats, fdim),
        )?;
        self.means = exemplars::class_means(ctx, memory, task.num_outputs)?;
        self.old = Vec::new();
        self.order.clear();
        self.cursor = 0;
        info!(
            task = task.task,
            exemplars = memory.len(),
            per_class = m,
            "exemplar sets updated by herding"
        );
        if ctx.can_report() {
            ctx.report("exemplars", memory.len() as f64)?;
            ctx.report("exemplars_per_class", m as f64)?;
        }
        Ok(())
    }

    fn predict(
        &mut self,
        ctx: &mut Ctx<'_>,
        _task: Option<usize>,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let no_means = self.means.iter().all(Vec::is_empty);
        if self.classifier == Classifier::Head || no_means {
            // Before the first task ends there are no exemplars: the network's logits.
            return ctx.forward_into(x, rows, out);
        }
        let (feats, fdim) = exemplars::features_of(ctx, x, rows)?;
        ensure!(
            self.means.len() * rows == out.len(),
            "iCaRL holds class means for {} outputs, the evaluation wants {} scores for {rows} \
             rows",
            self.means.len(),
            out.len()
        );
        ncm_scores(&feats, fdim, &self.means, out)
    }
}

clef_sdk::export_plugin!(Icarl);

#[cfg(test)]
mod tests;

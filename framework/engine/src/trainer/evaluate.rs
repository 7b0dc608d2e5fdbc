//! Measuring the network: accuracy on a task's test split (the accuracy matrix, the untrained
//! network's accuracies) and the loss-of-plasticity diagnostics on a probe of a task.

use std::time::Instant;

use clef_backend::{Inputs, ModelSpec, Network};
use clef_data::Setting;

use super::trial::Trial;
use super::{hook_err, TrialStatus};
use crate::plasticity::{self, TaskDiagnostics};
use crate::strategy::Strategy;

impl Trial<'_> {
    /// The accuracy of the untrained network on every task (for forward transfer).
    pub(super) fn evaluate_untrained(&mut self) -> Result<(), TrialStatus> {
        let t0 = Instant::now();
        self.measured.random_init_accuracy = (0..self.scenario.tasks.len())
            .map(|j| self.evaluate(None, j, None))
            .collect::<Result<_, _>>()?;
        self.measured.eval_seconds += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Row `ti` of the accuracy matrix: every task evaluated after training task `ti`, each
    /// between `before_eval` and `after_eval` (with the expert pool in use, task-IL routes each
    /// task to its own expert and head, and comes back to `ti`'s afterwards).
    pub(super) fn evaluate_row(
        &mut self,
        ti: usize,
        strategy: &mut dyn Strategy,
    ) -> Result<Vec<f64>, TrialStatus> {
        let sc = self.scenario;
        let t_eval = Instant::now();
        let mut row = Vec::with_capacity(sc.tasks.len());
        let routed = self.experts.enabled() && sc.setting == Setting::TaskIl;
        for j in 0..sc.tasks.len() {
            let id = (sc.setting == Setting::TaskIl).then_some(j);
            if routed {
                self.experts
                    .for_eval(j, &mut self.net, &mut self.opt)
                    .map_err(|e| TrialStatus::Failed(format!("expert pool: {e}")))?;
            }
            strategy
                .before_eval(&mut self.ctx(ti), id)
                .map_err(|e| hook_err(strategy, "before_eval", e))?;
            let scorer = if strategy.predicts() {
                Some((&mut *strategy, ti, id))
            } else {
                None
            };
            row.push(self.evaluate(Some(ti), j, scorer)?);
            strategy
                .after_eval(&mut self.ctx(ti))
                .map_err(|e| hook_err(strategy, "after_eval", e))?;
        }
        if routed {
            // Back to the expert and head the current task trained.
            self.experts
                .for_eval(ti, &mut self.net, &mut self.opt)
                .map_err(|e| TrialStatus::Failed(format!("expert pool: {e}")))?;
        }
        self.measured.eval_seconds += t_eval.elapsed().as_secs_f64();
        Ok(row)
    }

    /// Accuracy on task `j`'s test split after training through `trained`. With a `scorer`
    /// (a strategy that predicts, the task whose hooks run, and the evaluated task's id as
    /// `before_eval` got it), the strategy's scores replace the network's logits.
    fn evaluate<'d>(
        &mut self,
        trained: Option<usize>,
        j: usize,
        mut scorer: Option<(&mut (dyn Strategy + 'd), usize, Option<usize>)>,
    ) -> Result<f64, TrialStatus> {
        let sc = self.scenario;
        let task = &sc.tasks[j];
        let mask = sc.eval_mask(trained, j);
        let n = task.test.len();
        let bs = self.cfg.train.eval_batch_size;
        let c = sc.num_outputs;
        let (mut x, mut y, mut logits) = (Vec::new(), Vec::new(), Vec::new());
        let mut correct = 0usize;
        let rows: Vec<usize> = (0..n).collect();
        for chunk in rows.chunks(bs) {
            x.clear();
            y.clear();
            sc.gather(task, true, chunk, &mut x, &mut y);
            let inputs = Inputs::new(&x, chunk.len(), sc.input_dim())
                .map_err(|e| TrialStatus::Failed(format!("evaluation batch: {e}")))?;
            match scorer.as_mut() {
                Some((strategy, ti, id)) => {
                    logits.clear();
                    logits.resize(chunk.len() * c, 0.0);
                    strategy
                        .predict(&mut self.ctx(*ti), *id, &x, chunk.len(), &mut logits)
                        .map_err(|e| hook_err(&**strategy, "predict", e))?;
                }
                None => self
                    .net
                    .forward(inputs, &mut logits)
                    .map_err(|e| TrialStatus::Failed(format!("evaluation forward: {e}")))?,
            }
            for (r, &target) in y.iter().enumerate() {
                correct +=
                    (argmax(&logits[r * c..(r + 1) * c], mask.as_deref()) == target) as usize;
            }
        }
        Ok(correct as f64 / n.max(1) as f64)
    }

    /// Loss-of-plasticity diagnostics at the end of task `ti`, on the network as the strategy
    /// evaluates the task just trained (between `before_eval` and `after_eval`).
    pub(super) fn diagnose(
        &mut self,
        ti: usize,
        strategy: &mut dyn Strategy,
    ) -> Result<TaskDiagnostics, TrialStatus> {
        let id = (self.scenario.setting == Setting::TaskIl).then_some(ti);
        strategy
            .before_eval(&mut self.ctx(ti), id)
            .map_err(|e| hook_err(strategy, "before_eval", e))?;
        let d = self.probe_diagnostics(ti)?;
        strategy
            .after_eval(&mut self.ctx(ti))
            .map_err(|e| hook_err(strategy, "after_eval", e))?;
        Ok(d)
    }

    /// The diagnostics on a probe of task `ti`'s first training samples (see
    /// [`crate::plasticity`]).
    fn probe_diagnostics(&mut self, ti: usize) -> Result<TaskDiagnostics, TrialStatus> {
        let d = self.cfg.diagnostics;
        let sc = self.scenario;
        let net: &mut dyn Network = &mut *self.net;
        let task = &sc.tasks[ti];
        let n = task.train.len().min(d.probe_size);
        let fail = |what: &str, e: String| TrialStatus::Failed(format!("diagnostics: {what}: {e}"));
        let rows: Vec<usize> = (0..n).collect();
        let (mut x, mut y, mut logits, mut feats) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        sc.gather(task, false, &rows, &mut x, &mut y);
        let inputs =
            Inputs::new(&x, n, sc.input_dim()).map_err(|e| fail("probe", e.to_string()))?;
        net.forward(inputs, &mut logits)
            .map_err(|e| fail("forward", e.to_string()))?;
        let mask = sc.eval_mask(Some(ti), ti);
        let c = sc.num_outputs;
        let correct = y
            .iter()
            .enumerate()
            .filter(|&(r, &t)| argmax(&logits[r * c..(r + 1) * c], mask.as_deref()) == t)
            .count();
        net.features(inputs, &mut feats)
            .map_err(|e| fail("features", e.to_string()))?;
        let units = feats.len() / n.max(1);
        // Conv feature maps: dormancy per channel (pooled over positions); ranks on the
        // features as the head reads them.
        let (channels, positions) = feature_layout(net.spec(), units);
        let sv = plasticity::singular_values(&feats, n, units).map_err(|e| fail("features", e))?;
        let weights = plasticity::weight_stats(net.params()).map_err(|e| fail("weights", e))?;
        Ok(TaskDiagnostics {
            train_accuracy: correct as f64 / n.max(1) as f64,
            dormant_fraction: plasticity::dormant_channel_fraction(
                &feats,
                n,
                channels,
                positions,
                d.dormant_threshold,
            ),
            feature_srank: plasticity::srank(&sv, d.srank_delta),
            feature_effective_rank: plasticity::effective_rank(&sv),
            sigma_max: weights.iter().map(|w| w.0).collect(),
            mean_abs_weight: weights.iter().map(|w| w.1).collect(),
        })
    }
}

/// How the diagnostics group `units` feature values per row: `(channels, positions)` from the
/// spec's conv feature map ([`ModelSpec::feature_map`]), or `(units, 1)` (one unit each) for
/// dense features and whenever the map does not account for exactly `units` values.
fn feature_layout(spec: &ModelSpec, units: usize) -> (usize, usize) {
    match spec.feature_map() {
        Some((c, p)) if c * p == units => (c, p),
        _ => (units, 1),
    }
}

/// Index of the largest logit among the units allowed by `mask` (ties: the first). NaN logits
/// never win.
pub fn argmax(logits: &[f32], mask: Option<&[bool]>) -> usize {
    let mut best = usize::MAX;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if mask.is_some_and(|m| !m[i]) {
            continue;
        }
        if best == usize::MAX || v > best_v {
            best = i;
            best_v = if v.is_nan() { f32::NEG_INFINITY } else { v };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_respects_the_mask() {
        let l = [0.1, 5.0, 0.3, 0.2];
        assert_eq!(argmax(&l, None), 1);
        assert_eq!(argmax(&l, Some(&[true, false, true, true])), 2);
        assert_eq!(argmax(&[f32::NAN, 1.0], None), 1);
    }

    #[test]
    fn feature_layout_pools_conv_maps_only() {
        use clef_backend::{Activation, ConvNetSpec, ImageShape, Init, MlpSpec, Norm};
        let conv = |hidden: Vec<usize>| {
            ModelSpec::ConvNet(ConvNetSpec {
                input: ImageShape {
                    channels: 1,
                    height: 28,
                    width: 28,
                },
                channels: vec![8, 8, 16, 16],
                hidden,
                output: 10,
                norm: Norm::None,
                activation: Activation::Relu,
                init: Init::TorchDefault,
                pool: Default::default(),
            })
        };
        assert_eq!(feature_layout(&conv(vec![]), 784), (16, 49));
        // A width the map does not explain (e.g. an expert's features): one unit per value.
        assert_eq!(feature_layout(&conv(vec![]), 100), (100, 1));
        assert_eq!(feature_layout(&conv(vec![32]), 32), (32, 1));
        let mlp = ModelSpec::Mlp(MlpSpec {
            input: 784,
            hidden: vec![100],
            output: 10,
            activation: Activation::Relu,
            init: Init::TorchDefault,
        });
        assert_eq!(feature_layout(&mlp, 100), (100, 1));
    }
}

//! The trainer's expert pool: routing changes what is trained and evaluated, a frozen expert's
//! body is bitwise unchanged, heads are per task, and parameter accounting is exact.

use std::path::Path;
use std::sync::Arc;

use clef_backend::{Activation, Network};
use clef_data::scenario::{self, Scenario, Task};
use clef_engine::strategy::{Ctx, Strategy, StrategyResult};
use clef_engine::trainer::{run_trial, TrialStatus};
use clef_experiment::config::{self, ScenarioConfig, Setting};
use indicatif::ProgressBar;

const DIM: usize = 6;

fn cfg() -> config::Config {
    let text = clef_testkit::Cfg::digits()
        .name("experts")
        .tasks(3)
        .hidden(&[5])
        .sgd(0.1)
        .momentum(0.9)
        .iterations(20)
        .batch_size(8)
        .strategy("finetune")
        .toml();
    config::parse(&text, Path::new("experts.toml")).unwrap()
}

fn scenario(setting: Setting) -> Scenario {
    let data = Arc::new(clef_data::synthetic::gaussian_blobs(6, DIM, 20, 8, 1.0, 3));
    let sc = ScenarioConfig::class_split(3, 2);
    scenario::build(&sc, data, setting, 0).unwrap()
}

fn snapshot(net: &dyn Network) -> Vec<Vec<f32>> {
    net.params().values().to_vec()
}

/// Task 0 trains on a new expert 1 ([4, 3] tanh), which is then frozen; task 1 goes back to
/// expert 0; task 2 reuses the frozen expert 1 with a new head. Records what it sees.
#[derive(Default)]
struct Router {
    /// Expert 0's values at the start of task 0 and at the end of task 0.
    e0_start: Vec<Vec<f32>>,
    e0_after_task0: Vec<Vec<f32>>,
    /// Expert 1's values when frozen (end of task 0) and at the end of task 2.
    e1_frozen: Vec<Vec<f32>>,
    e1_after_task2: Vec<Vec<f32>>,
    /// Per task: `expert_params(None)` at the end of the task.
    totals: Vec<usize>,
    e1_params: usize,
    /// Spec widths of the network each evaluation saw.
    eval_widths: Vec<Vec<usize>>,
}

impl Strategy for Router {
    fn name(&self) -> &str {
        "router"
    }
    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &Task) -> StrategyResult {
        match task.id {
            0 => {
                self.e0_start = snapshot(&**ctx.net);
                let id = ctx
                    .experts
                    .add(vec![4, 3], Activation::Tanh, ctx.optimizer)
                    .map_err(anyhow::Error::msg)?;
                assert_eq!(id, 1);
                ctx.experts
                    .select(0, 1, ctx.net, ctx.optimizer)
                    .map_err(anyhow::Error::msg)?;
                assert_eq!(ctx.net.spec().as_mlp().unwrap().hidden, vec![4, 3]);
            }
            1 => {
                ctx.experts
                    .select(1, 0, ctx.net, ctx.optimizer)
                    .map_err(anyhow::Error::msg)?;
                assert_eq!(ctx.net.spec().as_mlp().unwrap().hidden, vec![5]);
            }
            _ => {
                ctx.experts
                    .select(2, 1, ctx.net, ctx.optimizer)
                    .map_err(anyhow::Error::msg)?;
            }
        }
        Ok(())
    }
    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &Task) -> StrategyResult {
        match task.id {
            0 => {
                ctx.experts
                    .freeze(1, true, &**ctx.net)
                    .map_err(anyhow::Error::msg)?;
                self.e1_frozen = snapshot(&**ctx.net);
            }
            2 => self.e1_after_task2 = snapshot(&**ctx.net),
            _ => {}
        }
        self.totals.push(ctx.experts.total_params(ctx.scenario));
        self.e1_params = ctx.experts.params_of(1, ctx.scenario).unwrap_or(0);
        Ok(())
    }
    fn before_eval(&mut self, ctx: &mut Ctx<'_>, _task: Option<usize>) -> StrategyResult {
        if ctx.task == 0 && self.e0_after_task0.is_empty() {
            // Expert 0 was not trained during task 0.
            if ctx.experts.active() == 0 {
                self.e0_after_task0 = snapshot(&**ctx.net);
            }
        }
        self.eval_widths
            .push(ctx.net.spec().as_mlp().unwrap().widths());
        Ok(())
    }
}

#[test]
fn routing_freezing_heads_and_parameter_counts() {
    let cfg = cfg();
    let sc = scenario(Setting::TaskIl);
    let mut s = Router::default();
    let out = run_trial(cfg.trial_spec(), &sc, &mut s, 0, &ProgressBar::hidden());
    assert_eq!(out.status, TrialStatus::Completed, "{:?}", out.status);
    // Task 0 trained expert 1, not expert 0: expert 0 (evaluated for unrouted tasks 1 and 2
    // after task 0) still has its initial values, bit for bit.
    assert!(!s.e0_after_task0.is_empty());
    assert_eq!(s.e0_after_task0, s.e0_start);
    // The frozen expert's body (all but the output layer) is bitwise unchanged by task 2's
    // training; its output layer holds task 2's new head, which did train.
    let body = s.e1_frozen.len() - 2;
    assert_eq!(s.e1_after_task2[..body], s.e1_frozen[..body]);
    assert_ne!(s.e1_after_task2[body..], s.e1_frozen[body..]);
    // Evaluation after task 2 routes task 0 and 2 to expert 1 and task 1 to expert 0.
    let last: Vec<&Vec<usize>> = s.eval_widths.iter().rev().take(3).rev().collect();
    assert_eq!(last[0], &vec![DIM, 4, 3, 6]);
    assert_eq!(last[1], &vec![DIM, 5, 6]);
    assert_eq!(last[2], &vec![DIM, 4, 3, 6]);
    // Task 0's head on expert 1 survived task 2 (which trained another head on the same
    // expert): task 0's accuracy after task 2 equals its accuracy after task 0, because both
    // body and head are unchanged.
    assert_eq!(
        out.measured.accuracy_matrix[2][0],
        out.measured.accuracy_matrix[0][0]
    );
    // Parameters, counted by hand. Expert 1 body: 6*4+4 + 4*3+3 = 43; a head of 2 units on
    // feature width 3: 2*(3+1) = 8. Expert 0 body: 6*5+5 = 35; head 2*(5+1) = 12.
    assert_eq!(s.totals, vec![43 + 8, 43 + 8 + 35 + 12, 43 + 16 + 35 + 12]);
    assert_eq!(s.e1_params, 43 + 16);
    assert_eq!(out.num_params, 43 + 16 + 35 + 12);
}

/// A strategy that never touches the pool leaves the trial bit-identical (same accuracy matrix
/// and losses as the built-in finetune).
#[test]
fn unused_pool_changes_nothing() {
    let cfg = cfg();
    let sc = scenario(Setting::TaskIl);
    let mut a = clef_engine::strategy::Finetune;
    let out_a = run_trial(cfg.trial_spec(), &sc, &mut a, 0, &ProgressBar::hidden());
    let mut b = clef_engine::strategy::Finetune;
    let out_b = run_trial(cfg.trial_spec(), &sc, &mut b, 0, &ProgressBar::hidden());
    assert_eq!(
        out_a.measured.accuracy_matrix,
        out_b.measured.accuracy_matrix
    );
    assert_eq!(out_a.measured.mean_loss, out_b.measured.mean_loss);
    // Without routing the parameter count is the configured network's.
    assert_eq!(out_a.num_params, DIM * 5 + 5 + 5 * 6 + 6);
}

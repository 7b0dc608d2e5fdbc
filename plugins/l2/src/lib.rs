//! `l2`: an isotropic quadratic penalty pulling the weights towards their values at the end of
//! the previous task.
//!
//! After task `t` ends the plugin stores the anchor `θ*` (every parameter tensor, weights and
//! biases). While training any later task it adds
//!
//! ```text
//! penalty(θ) = (λ / 2) · Σ_i (θ_i − θ*_i)²        gradient: λ · (θ − θ*)
//! ```
//!
//! to the loss by adding the gradient to the gradient buffers in `after_backward`. Only the most
//! recent anchor is kept (the anchor is replaced at the end of every task, as in Hsu et al.
//! 2018's `L2` agent with `online_reg = True`). There is no penalty during the first task.
//!
//! | hyperparameter | default | range | |
//! |---|---|---|---|
//! | `lambda` | 0.01 | [0, 1e12], log scale | penalty strength λ |
//!
//! Default: Hsu et al. 2018 ("Re-evaluating continual learning scenarios", split MNIST, task-IL)
//! report `reg_coef = 0.01` for L2. Their penalty is `reg_coef · Σ (θ − θ*)²`, without the ½,
//! so the same strength is `lambda = 2 · reg_coef` here (0.02 for their task-IL value, 200 for
//! their class-IL value of 100).
//!
//! Stability: with SGD (learning rate η, momentum β) the penalty alone diverges once
//! `η·λ > 2(1 + β)`.
//!
//! State (`save_state`): the anchor, if any.

use clef_sdk::anchor::{self, Tensors};
use clef_sdk::tracing::info;
use clef_sdk::{ensure, Ctx, HParam, Result, Strategy, TaskInfo};
use serde::Deserialize;

/// The validated `hparams` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Penalty strength λ (≥ 0).
    pub lambda: f64,
}

/// The L2-to-previous-task strategy.
#[derive(Debug)]
pub struct L2 {
    lambda: f32,
    /// Parameters at the end of the last finished task (`None` before the first task ends).
    anchor: Option<Tensors>,
}

const MAGIC: &[u8; 8] = b"clefl2\0\0";

/// The penalty `(λ/2) Σ (θ − θ*)²` in f64 (for tests and diagnostics).
pub fn penalty(lambda: f64, params: &[Vec<f64>], anchor: &[Vec<f32>]) -> f64 {
    anchor::squared_distance(params, anchor) * (lambda / 2.0)
}

/// Encodes the plugin state (the anchor, if any).
pub fn encode_state(anchor: Option<&[Vec<f32>]>) -> Vec<u8> {
    anchor::encode(MAGIC, anchor)
}

/// Decodes [`encode_state`]'s output (an empty blob is a fresh state).
pub fn decode_state(bytes: &[u8]) -> Result<Option<Tensors>> {
    anchor::decode(MAGIC, bytes)
}

impl Strategy for L2 {
    const NAME: &'static str = "l2";
    const DESCRIPTION: &'static str =
        "L2 penalty (lambda/2)·||θ − θ*||² towards the weights at the end of the previous task";
    type Config = Config;

    fn hparams() -> Vec<HParam> {
        vec![HParam::float(
            "lambda",
            0.01,
            0.0,
            1e12,
            "penalty strength λ in (λ/2)·Σ(θ−θ*)² (Hsu et al. 2018 split-MNIST TIL: 0.01)",
        )
        .log_scale()]
    }

    fn new(config: Config) -> Result<Self> {
        ensure!(
            config.lambda.is_finite() && config.lambda >= 0.0,
            "lambda must be finite and >= 0, got {}",
            config.lambda
        );
        Ok(Self {
            lambda: config.lambda as f32,
            anchor: None,
        })
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        match &self.anchor {
            Some(a) => anchor::add_pull(ctx, a, self.lambda, "the anchor"),
            None => Ok(()),
        }
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        self.anchor = Some(anchor::capture(ctx)?);
        info!(task = task.task, "stored the anchor θ*");
        Ok(())
    }

    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        Ok(encode_state(self.anchor.as_deref()))
    }

    fn load_state(&mut self, _ctx: &mut Ctx<'_>, state: &[u8]) -> Result<()> {
        self.anchor = decode_state(state)?;
        Ok(())
    }
}

clef_sdk::export_plugin!(L2);

#[cfg(test)]
mod tests {
    use super::*;
    use clef_sdk::testing::{describe, MockHost, MockPlugin};

    #[test]
    fn schema_is_valid() {
        clef_sdk::validate::<L2>().unwrap();
        // SAFETY: the descriptor the export macro built.
        let info = unsafe { describe(clef_plugin_entry_v1()) };
        assert_eq!(info.name, "l2");
        assert_eq!(info.hparams.len(), 1);
        assert_eq!(info.hparams[0].default_value, 0.01);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(MockPlugin::create::<L2>("lambda = -1.0").is_err());
        assert!(MockPlugin::create::<L2>("lambda = nan").is_err());
        assert!(MockPlugin::create::<L2>("lambda = 1.0\nextra = 1").is_err());
    }

    #[test]
    fn no_penalty_during_the_first_task() {
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2>("lambda = 5.0").unwrap();
        plugin.on_model_built(&mut host).unwrap();
        plugin.on_task_start(&mut host).unwrap();
        host.seed_grads();
        host.perturb(0.3);
        let before = host.grads();
        plugin.before_batch(&mut host).unwrap();
        plugin.after_backward(&mut host, 1.0).unwrap();
        plugin.after_step(&mut host).unwrap();
        assert_eq!(host.grads(), before);
    }

    #[test]
    fn gradient_matches_finite_differences_of_the_penalty() {
        let lambda = 3.0;
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2>(&format!("lambda = {lambda:?}")).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        plugin.on_task_start(&mut host).unwrap();
        plugin.on_task_end(&mut host).unwrap();
        let anchor = decode_state(&plugin.save_state(&mut host).unwrap())
            .unwrap()
            .expect("anchor stored at the end of task 0");
        assert_eq!(anchor, host.values());

        // Task 1: move the weights, then check the added gradient.
        host.state_mut().task = 1;
        plugin.on_task_start(&mut host).unwrap();
        host.perturb(0.05);
        host.seed_grads();
        let before = host.grads();
        plugin.after_backward(&mut host, 1.0).unwrap();
        let after = host.grads();
        let theta: Vec<Vec<f64>> = host
            .values()
            .iter()
            .map(|t| t.iter().map(|&v| f64::from(v)).collect())
            .collect();
        let h = 1e-4;
        let mut checked = 0;
        for i in 0..theta.len() {
            for j in 0..theta[i].len() {
                let added = f64::from(after[i][j]) - f64::from(before[i][j]);
                let mut plus = theta.clone();
                plus[i][j] += h;
                let mut minus = theta.clone();
                minus[i][j] -= h;
                let fd = (penalty(lambda, &plus, &anchor) - penalty(lambda, &minus, &anchor))
                    / (2.0 * h);
                assert!(
                    (added - fd).abs() <= 1e-4 * fd.abs().max(1e-2),
                    "param {i}[{j}]: added {added}, finite difference {fd}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 3 * 4 + 4);
        // The perturbation is large enough that the check is not vacuous.
        assert!(after
            .iter()
            .zip(&before)
            .any(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3)));
    }

    #[test]
    fn anchor_is_replaced_at_every_task_end() {
        let mut host = MockHost::new(2, 2, 2);
        let mut plugin = MockPlugin::create::<L2>("lambda = 1.0").unwrap();
        plugin.on_task_end(&mut host).unwrap();
        host.perturb(0.1);
        host.state_mut().task = 1;
        plugin.on_task_end(&mut host).unwrap();
        let anchor = decode_state(&plugin.save_state(&mut host).unwrap()).unwrap();
        assert_eq!(anchor, Some(host.values()));
        // At the anchor the penalty gradient is exactly zero.
        let before = host.grads();
        plugin.after_backward(&mut host, 0.0).unwrap();
        assert_eq!(host.grads(), before);
    }

    #[test]
    fn state_round_trip() {
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2>("lambda = 2.0").unwrap();
        let empty = plugin.save_state(&mut host).unwrap();
        assert_eq!(decode_state(&empty).unwrap(), None);
        plugin.on_task_end(&mut host).unwrap();
        let saved = plugin.save_state(&mut host).unwrap();

        let mut fresh = MockPlugin::create::<L2>("lambda = 2.0").unwrap();
        fresh.load_state(&mut host, &saved).unwrap();
        assert_eq!(fresh.save_state(&mut host).unwrap(), saved);

        // The restored instance applies the same penalty.
        host.perturb(0.2);
        let base = host.grads();
        plugin.after_backward(&mut host, 0.0).unwrap();
        let g1 = host.grads();
        host.state_mut()
            .params
            .iter_mut()
            .zip(&base)
            .for_each(|(p, b)| p.grads.clone_from(b));
        fresh.after_backward(&mut host, 0.0).unwrap();
        assert_eq!(host.grads(), g1);

        // Corrupt state is rejected; an empty blob resets.
        assert!(fresh
            .load_state(&mut host, &saved[..saved.len() - 1])
            .is_err());
        assert!(fresh.load_state(&mut host, b"garbage!garbage!").is_err());
        fresh.load_state(&mut host, &[]).unwrap();
        assert_eq!(fresh.save_state(&mut host).unwrap(), empty);
    }

    #[test]
    fn mismatched_anchor_is_an_error_not_a_panic() {
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2>("lambda = 1.0").unwrap();
        let bad = encode_state(Some(&[vec![0.0; 5], vec![0.0; 4]]));
        plugin.load_state(&mut host, &bad).unwrap();
        let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
        assert!(err.message.contains("parameter 0"), "{err}");
    }
}

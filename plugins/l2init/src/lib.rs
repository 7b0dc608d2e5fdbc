//! `l2init`: L2 Init (Kumar, Marklund & Van Roy 2023, "Maintaining Plasticity in Continual
//! Learning via Regenerative Regularization"), an isotropic pull towards the initial weights.
//!
//! When the network is built (`on_model_built`) the plugin stores θ0, every parameter tensor
//! (weights and biases). During every task, including the first, it adds
//!
//! ```text
//! penalty(θ) = λ · ‖θ − θ0‖² = λ · Σ_i (θ_i − θ0_i)²        gradient: 2λ · (θ − θ0)
//! ```
//!
//! to the loss, by adding the gradient to the gradient buffers in `after_backward`. θ0 is the
//! initialisation of the whole run, never refreshed at task boundaries: the paper regularises
//! towards "the initial parameters" to keep them as a regenerative anchor for plasticity.
//! The penalty has no ½, as in the paper (`L_reg(θ) = L(θ) + λ‖θ − θ0‖²`).
//!
//! | hyperparameter | default | range | |
//! |---|---|---|---|
//! | `lambda` | 0.01 | [0, 1e12], log scale | penalty strength λ |
//!
//! Default: Kumar et al. select λ from {1e-2, 1e-3, 1e-4, 1e-5} and report 1e-2 as the best
//! value across their problems.
//!
//! Stability: with SGD (learning rate η, momentum β) the penalty alone diverges once
//! `2·η·λ > 2(1 + β)`, i.e. `η·λ > 1 + β`.
//!
//! State (`save_state`): θ0, if stored.

use clef_sdk::anchor::{self, Tensors};
use clef_sdk::tracing::{info, warn};
use clef_sdk::{bail, ensure, Ctx, HParam, Result, Strategy, TaskInfo};
use serde::Deserialize;

/// The validated `hparams` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Penalty strength λ (≥ 0).
    pub lambda: f64,
}

/// The L2 Init strategy.
#[derive(Debug)]
pub struct L2Init {
    lambda: f32,
    /// Parameters at initialisation (`None` until the model is built).
    init: Option<Tensors>,
}

const MAGIC: &[u8; 8] = b"clefl2i\0";

/// The penalty `λ Σ (θ − θ0)²` in f64 (for tests and diagnostics).
pub fn penalty(lambda: f64, params: &[Vec<f64>], init: &[Vec<f32>]) -> f64 {
    anchor::squared_distance(params, init) * lambda
}

/// Encodes the plugin state (θ0, if any).
pub fn encode_state(init: Option<&[Vec<f32>]>) -> Vec<u8> {
    anchor::encode(MAGIC, init)
}

/// Decodes [`encode_state`]'s output (an empty blob is a fresh state).
pub fn decode_state(bytes: &[u8]) -> Result<Option<Tensors>> {
    anchor::decode(MAGIC, bytes)
}

impl Strategy for L2Init {
    const NAME: &'static str = "l2init";
    const DESCRIPTION: &'static str =
        "L2 Init (Kumar et al. 2023): penalty lambda·||θ − θ0||² towards the initial weights";
    type Config = Config;

    fn hparams() -> Vec<HParam> {
        vec![HParam::float(
            "lambda",
            0.01,
            0.0,
            1e12,
            "penalty strength λ in λ·Σ(θ−θ0)² (Kumar et al. 2023: best 1e-2)",
        )
        .log_scale()]
    }

    fn new(config: Config) -> Result<Self> {
        ensure!(
            config.lambda.is_finite() && config.lambda >= 0.0,
            "l2init: hyperparameter `lambda` must be finite and >= 0, got {}",
            config.lambda
        );
        Ok(Self {
            lambda: config.lambda as f32,
            init: None,
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.init = Some(anchor::capture(ctx)?);
        info!("stored the initial parameters θ0");
        Ok(())
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if self.init.is_none() {
            // Only when the host never reported the model as built: the best available θ0.
            warn!(
                task = task.task,
                "no on_model_built before this task: using the current weights as θ0"
            );
            self.init = Some(anchor::capture(ctx)?);
        }
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.lambda == 0.0 {
            return Ok(());
        }
        let Some(init) = &self.init else {
            bail!("l2init: θ0 is not stored (no on_model_built or on_task_start yet)");
        };
        // ∇ λ‖θ − θ0‖² = 2λ(θ − θ0).
        anchor::add_pull(ctx, init, 2.0 * self.lambda, "l2init: θ0")
    }

    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        Ok(encode_state(self.init.as_deref()))
    }

    fn load_state(&mut self, _ctx: &mut Ctx<'_>, state: &[u8]) -> Result<()> {
        self.init = decode_state(state)?;
        Ok(())
    }
}

clef_sdk::export_plugin!(L2Init);

#[cfg(test)]
mod tests {
    use super::*;
    use clef_sdk::testing::{describe, MockHost, MockPlugin};

    #[test]
    fn schema_is_valid() {
        clef_sdk::validate::<L2Init>().unwrap();
        // SAFETY: the descriptor the export macro built.
        let info = unsafe { describe(clef_plugin_entry_v1()) };
        assert_eq!(info.name, "l2init");
        assert_eq!(info.hparams.len(), 1);
        assert_eq!(info.hparams[0].default_value, 0.01);
    }

    #[test]
    fn rejects_bad_config_naming_plugin_and_key() {
        let err = MockPlugin::create::<L2Init>("lambda = -1.0").unwrap_err();
        assert!(
            err.message.contains("l2init") && err.message.contains("`lambda`"),
            "{err}"
        );
        assert!(MockPlugin::create::<L2Init>("lambda = nan").is_err());
        assert!(MockPlugin::create::<L2Init>("lambda = 1.0\nextra = 1").is_err());
    }

    #[test]
    fn hand_computed_gradient() {
        // θ0 = (w, b) of the mock; move one weight by +0.5: gradient 2·λ·0.5 = λ there only.
        let mut host = MockHost::new(2, 2, 1);
        let mut plugin = MockPlugin::create::<L2Init>("lambda = 0.25").unwrap();
        plugin.on_model_built(&mut host).unwrap();
        host.state_mut().params[0].values[3] += 0.5;
        plugin.after_backward(&mut host, 0.0).unwrap();
        let g = host.grads();
        assert_eq!(g[0], vec![0.0, 0.0, 0.0, 0.25]);
        assert_eq!(g[1], vec![0.0, 0.0]);
    }

    #[test]
    fn gradient_matches_finite_differences_from_the_first_task() {
        let lambda = 3.0;
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2Init>(&format!("lambda = {lambda:?}")).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        let init = decode_state(&plugin.save_state(&mut host).unwrap())
            .unwrap()
            .expect("θ0 stored when the model was built");
        assert_eq!(init, host.values());
        // The penalty applies during the first task already, and θ0 survives task ends.
        plugin.on_task_start(&mut host).unwrap();
        plugin.on_task_end(&mut host).unwrap();
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
        // The penalty is quadratic, so central differences are exact up to rounding: with
        // h = 1e-4 in f64 the error is ~1e-12 / h; the f32 gradient has relative error ~1e-7.
        let h = 1e-4;
        for i in 0..theta.len() {
            for j in 0..theta[i].len() {
                let added = f64::from(after[i][j]) - f64::from(before[i][j]);
                let mut plus = theta.clone();
                plus[i][j] += h;
                let mut minus = theta.clone();
                minus[i][j] -= h;
                let fd =
                    (penalty(lambda, &plus, &init) - penalty(lambda, &minus, &init)) / (2.0 * h);
                assert!(
                    (added - fd).abs() <= 1e-4 * fd.abs().max(1e-2),
                    "param {i}[{j}]: added {added}, finite difference {fd}"
                );
            }
        }
        assert!(after
            .iter()
            .zip(&before)
            .any(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-2)));
    }

    #[test]
    fn zero_at_init_and_zero_lambda_adds_nothing() {
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2Init>("lambda = 1.0").unwrap();
        plugin.on_model_built(&mut host).unwrap();
        host.seed_grads();
        let before = host.grads();
        plugin.after_backward(&mut host, 0.0).unwrap();
        assert_eq!(host.grads(), before);

        let mut off = MockPlugin::create::<L2Init>("lambda = 0.0").unwrap();
        off.on_model_built(&mut host).unwrap();
        host.perturb(0.3);
        off.after_backward(&mut host, 0.0).unwrap();
        assert_eq!(host.grads(), before);
    }

    #[test]
    fn missing_init_is_an_error_and_task_start_falls_back() {
        let mut host = MockHost::new(2, 2, 1);
        let mut plugin = MockPlugin::create::<L2Init>("lambda = 1.0").unwrap();
        let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
        assert!(err.message.contains("θ0 is not stored"), "{err}");
        plugin.on_task_start(&mut host).unwrap();
        plugin.after_backward(&mut host, 0.0).unwrap();
    }

    #[test]
    fn state_round_trip() {
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2Init>("lambda = 2.0").unwrap();
        let empty = plugin.save_state(&mut host).unwrap();
        assert_eq!(decode_state(&empty).unwrap(), None);
        plugin.on_model_built(&mut host).unwrap();
        let saved = plugin.save_state(&mut host).unwrap();

        let mut fresh = MockPlugin::create::<L2Init>("lambda = 2.0").unwrap();
        fresh.load_state(&mut host, &saved).unwrap();
        assert_eq!(fresh.save_state(&mut host).unwrap(), saved);

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

        assert!(fresh
            .load_state(&mut host, &saved[..saved.len() - 1])
            .is_err());
        assert!(fresh.load_state(&mut host, b"garbage!garbage!").is_err());
        fresh.load_state(&mut host, &[]).unwrap();
        assert_eq!(fresh.save_state(&mut host).unwrap(), empty);
    }

    #[test]
    fn mismatched_init_is_an_error_not_a_panic() {
        let mut host = MockHost::new(3, 4, 2);
        let mut plugin = MockPlugin::create::<L2Init>("lambda = 1.0").unwrap();
        let bad = encode_state(Some(&[vec![0.0; 5], vec![0.0; 4]]));
        plugin.load_state(&mut host, &bad).unwrap();
        let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
        assert!(err.message.contains("parameter 0"), "{err}");
    }
}

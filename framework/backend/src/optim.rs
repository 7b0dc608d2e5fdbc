//! SGD and Adam on host-owned parameter buffers.
//!
//! The update rules follow PyTorch's `torch.optim.SGD` (dampening 0) and `torch.optim.Adam`
//! (L2 weight decay added to the gradient, bias-corrected moments), so results are comparable
//! with PyTorch-based CL code. The optimizer state is exposed by name ([`Optimizer::state`],
//! [`Optimizer::state_mut`]) because some strategies mask it (dynamic sparse training) or read it
//! (momentum-based regrowth).

use serde::{Deserialize, Serialize};

use crate::ParamStore;

/// Optimizer choice and hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OptimizerSpec {
    /// Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum coefficient (0 = plain SGD).
        momentum: f32,
        /// L2 weight decay added to the gradient.
        weight_decay: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// L2 weight decay added to the gradient.
        weight_decay: f32,
    },
}

impl OptimizerSpec {
    /// The learning rate.
    pub fn lr(&self) -> f32 {
        match self {
            OptimizerSpec::Sgd { lr, .. } | OptimizerSpec::Adam { lr, .. } => *lr,
        }
    }
}

/// Optimizer with per-tensor state buffers matching a [`ParamStore`].
#[derive(Debug, Clone)]
pub struct Optimizer {
    spec: OptimizerSpec,
    /// SGD: momentum buffer. Adam: first moment.
    first: Vec<Vec<f32>>,
    /// Adam: second moment (empty for SGD).
    second: Vec<Vec<f32>>,
    steps: u64,
}

impl Optimizer {
    /// Fresh state (all zeros) for the tensors of `params`.
    pub fn new(spec: OptimizerSpec, params: &ParamStore) -> Self {
        let zeros: Vec<Vec<f32>> = params
            .infos()
            .iter()
            .map(|i| vec![0.0; i.numel()])
            .collect();
        let second = match spec {
            OptimizerSpec::Adam { .. } => zeros.clone(),
            OptimizerSpec::Sgd { .. } => Vec::new(),
        };
        Optimizer {
            spec,
            first: zeros,
            second,
            steps: 0,
        }
    }

    /// The hyperparameters.
    pub fn spec(&self) -> &OptimizerSpec {
        &self.spec
    }

    /// Number of steps taken since creation or the last reset.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Zeroes every state buffer and the step count (e.g. at a task boundary).
    pub fn reset(&mut self) {
        for b in self.first.iter_mut().chain(self.second.iter_mut()) {
            b.fill(0.0);
        }
        self.steps = 0;
    }

    /// Names of the state slots: `["momentum"]` for SGD, `["exp_avg", "exp_avg_sq"]` for Adam.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self.spec {
            OptimizerSpec::Sgd { .. } => &["momentum"],
            OptimizerSpec::Adam { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }

    /// State slot `name` of tensor `i`.
    pub fn state(&self, name: &str, i: usize) -> Option<&[f32]> {
        self.slot(name).and_then(|s| s.get(i)).map(Vec::as_slice)
    }

    /// Mutable state slot `name` of tensor `i`.
    pub fn state_mut(&mut self, name: &str, i: usize) -> Option<&mut [f32]> {
        let slot = match (self.spec.clone(), name) {
            (OptimizerSpec::Sgd { .. }, "momentum") | (OptimizerSpec::Adam { .. }, "exp_avg") => {
                &mut self.first
            }
            (OptimizerSpec::Adam { .. }, "exp_avg_sq") => &mut self.second,
            _ => return None,
        };
        slot.get_mut(i).map(Vec::as_mut_slice)
    }

    fn slot(&self, name: &str) -> Option<&Vec<Vec<f32>>> {
        match (&self.spec, name) {
            (OptimizerSpec::Sgd { .. }, "momentum") | (OptimizerSpec::Adam { .. }, "exp_avg") => {
                Some(&self.first)
            }
            (OptimizerSpec::Adam { .. }, "exp_avg_sq") => Some(&self.second),
            _ => None,
        }
    }

    /// Applies one update to every tensor of `params` from its current gradient.
    pub fn step(&mut self, params: &mut ParamStore) {
        self.steps += 1;
        let t = self.steps;
        for i in 0..params.len() {
            let (w, g) = params.value_and_grad_mut(i);
            match self.spec {
                OptimizerSpec::Sgd {
                    lr,
                    momentum,
                    weight_decay,
                    nesterov,
                } => sgd_update(
                    w,
                    g,
                    &mut self.first[i],
                    lr,
                    momentum,
                    weight_decay,
                    nesterov,
                    t,
                ),
                OptimizerSpec::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let bc1 = 1.0 - beta1.powi(t.min(i32::MAX as u64) as i32);
                    let bc2 = 1.0 - beta2.powi(t.min(i32::MAX as u64) as i32);
                    let (m, v) = (&mut self.first[i], &mut self.second[i]);
                    for k in 0..w.len() {
                        let gk = g[k] + weight_decay * w[k];
                        m[k] = beta1 * m[k] + (1.0 - beta1) * gk;
                        v[k] = beta2 * v[k] + (1.0 - beta2) * gk * gk;
                        let denom = (v[k] / bc2).sqrt() + eps;
                        w[k] -= lr * (m[k] / bc1) / denom;
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sgd_update(
    w: &mut [f32],
    g: &[f32],
    buf: &mut [f32],
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: bool,
    t: u64,
) {
    for k in 0..w.len() {
        let d = g[k] + weight_decay * w[k];
        if momentum == 0.0 {
            w[k] -= lr * d;
            continue;
        }
        // PyTorch: the first step initialises the buffer with the gradient itself.
        buf[k] = if t == 1 { d } else { momentum * buf[k] + d };
        let step = if nesterov {
            d + momentum * buf[k]
        } else {
            buf[k]
        };
        w[k] -= lr * step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParamInfo, ParamRole};

    fn store(values: &[f32], grads: &[f32]) -> ParamStore {
        let mut s = ParamStore::zeros(vec![ParamInfo {
            name: "w".into(),
            shape: vec![values.len()],
            role: ParamRole::Weight,
            layer: 0,
        }]);
        s.value_mut(0).copy_from_slice(values);
        s.grad_mut(0).copy_from_slice(grads);
        s
    }

    #[test]
    fn sgd_momentum_matches_hand_computed_pytorch_sequence() {
        // w=1, g=0.5 constant, lr=0.1, momentum=0.9, wd=0.
        // step1: buf=0.5, w=0.95; step2: buf=0.9*0.5+0.5=0.95, w=0.855.
        let mut p = store(&[1.0], &[0.5]);
        let spec = OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        };
        let mut opt = Optimizer::new(spec, &p);
        opt.step(&mut p);
        assert!((p.value(0)[0] - 0.95).abs() < 1e-6);
        opt.step(&mut p);
        assert!((p.value(0)[0] - 0.855).abs() < 1e-6);
        assert!((opt.state("momentum", 0).unwrap()[0] - 0.95).abs() < 1e-6);
        opt.reset();
        assert_eq!(opt.state("momentum", 0).unwrap()[0], 0.0);
        assert_eq!(opt.steps(), 0);
    }

    #[test]
    fn sgd_weight_decay_adds_l2_gradient() {
        // w=2, g=0, wd=0.1, lr=0.5 -> w = 2 - 0.5*0.2 = 1.9
        let mut p = store(&[2.0], &[0.0]);
        let spec = OptimizerSpec::Sgd {
            lr: 0.5,
            momentum: 0.0,
            weight_decay: 0.1,
            nesterov: false,
        };
        Optimizer::new(spec, &p).step(&mut p);
        assert!((p.value(0)[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn adam_first_step_moves_by_lr_times_sign() {
        // Bias-corrected Adam's first step is lr * g / (|g| + eps) ~= lr * sign(g).
        let mut p = store(&[1.0, 1.0], &[0.3, -2.0]);
        let spec = OptimizerSpec::Adam {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = Optimizer::new(spec, &p);
        opt.step(&mut p);
        assert!((p.value(0)[0] - 0.99).abs() < 1e-5);
        assert!((p.value(0)[1] - 1.01).abs() < 1e-5);
        // second step with the same gradient: m_hat = g, v_hat = g^2 -> again lr * sign(g)
        opt.step(&mut p);
        assert!((p.value(0)[0] - 0.98).abs() < 1e-5);
        assert!(opt.state("exp_avg_sq", 0).is_some());
        assert!(opt.state("momentum", 0).is_none());
    }
}

//! SGD and Adam on host-owned parameter buffers.
//!
//! The update rules follow PyTorch's `torch.optim.SGD` (dampening 0) and `torch.optim.Adam`
//! (L2 weight decay added to the gradient, bias-corrected moments), so results are comparable
//! with PyTorch-based CL code. The optimizer state is exposed by name ([`Optimizer::state`],
//! [`Optimizer::state_mut`]) because some strategies mask it (dynamic sparse training) or read it
//! (momentum-based regrowth).

use serde::{Deserialize, Serialize};

use crate::{ParamRole, ParamStore};

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
    /// Tensors with role [`ParamRole::Buffer`]: no state, never updated.
    buffers: Vec<bool>,
    steps: u64,
}

impl Optimizer {
    /// Fresh state (all zeros) for the tensors of `params`; buffers (role
    /// [`ParamRole::Buffer`]) get no state and are never updated.
    pub fn new(spec: OptimizerSpec, params: &ParamStore) -> Self {
        let buffers: Vec<bool> = params
            .infos()
            .iter()
            .map(|i| i.role == ParamRole::Buffer)
            .collect();
        let zeros: Vec<Vec<f32>> = params
            .infos()
            .iter()
            .zip(&buffers)
            .map(|(i, &buf)| vec![0.0; if buf { 0 } else { i.numel() }])
            .collect();
        let second = match spec {
            OptimizerSpec::Adam { .. } => zeros.clone(),
            OptimizerSpec::Sgd { .. } => Vec::new(),
        };
        Optimizer {
            spec,
            first: zeros,
            second,
            buffers,
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

    /// Sets the step count (restoring a checkpoint; Adam's bias correction depends on it).
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
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

    /// State slot `name` of tensor `i` (`None` for a buffer, which has no state).
    pub fn state(&self, name: &str, i: usize) -> Option<&[f32]> {
        if self.buffers.get(i).copied().unwrap_or(false) {
            return None;
        }
        self.slot(name).and_then(|s| s.get(i)).map(Vec::as_slice)
    }

    /// Mutable state slot `name` of tensor `i` (`None` for a buffer).
    pub fn state_mut(&mut self, name: &str, i: usize) -> Option<&mut [f32]> {
        if self.buffers.get(i).copied().unwrap_or(false) {
            return None;
        }
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
    ///
    /// The update is elementwise, so large tensors are cut into two halves updated side by side
    /// on the rayon pool; the cut cannot change any result.
    pub fn step(&mut self, params: &mut ParamStore) {
        self.steps += 1;
        let rule = Rule::new(&self.spec, self.steps);
        let second = &mut self.second;
        for (i, first) in self.first.iter_mut().enumerate() {
            if self.buffers.get(i).copied().unwrap_or(false) {
                continue;
            }
            let (w, g) = params.value_and_grad_mut(i);
            let v: &mut [f32] = match second.get_mut(i) {
                Some(v) => v,
                None => &mut [],
            };
            if w.len() < PARALLEL_MIN_LEN || rayon::current_num_threads() < 2 {
                rule.apply(w, g, first, v);
                continue;
            }
            let half = w.len() / 2;
            let (w0, w1) = w.split_at_mut(half);
            let (g0, g1) = g.split_at(half);
            let (m0, m1) = first.split_at_mut(half);
            let (v0, v1) = v.split_at_mut(half.min(v.len()));
            rayon::join(|| rule.apply(w0, g0, m0, v0), || rule.apply(w1, g1, m1, v1));
        }
    }
}

/// Tensors with fewer values than this are updated on the calling thread.
const PARALLEL_MIN_LEN: usize = 1 << 15;

/// One step's update rule with its step-dependent constants.
#[derive(Clone, Copy)]
enum Rule {
    Sgd {
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: bool,
        /// PyTorch's first step initialises the momentum buffer with the gradient itself.
        first_step: bool,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        /// Bias corrections `1 - beta^t`.
        bc1: f32,
        bc2: f32,
    },
}

impl Rule {
    fn new(spec: &OptimizerSpec, t: u64) -> Self {
        match *spec {
            OptimizerSpec::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
            } => Rule::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
                first_step: t == 1,
            },
            OptimizerSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let t = t.min(i32::MAX as u64) as i32;
                Rule::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    bc1: 1.0 - beta1.powi(t),
                    bc2: 1.0 - beta2.powi(t),
                }
            }
        }
    }

    /// Updates `w` from `g` with the first (`m`: momentum or Adam's `exp_avg`) and second
    /// (`v`: Adam's `exp_avg_sq`, empty for SGD) state slices of the same elements.
    fn apply(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        match *self {
            Rule::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
                first_step,
            } => {
                if momentum == 0.0 {
                    for (w, &g) in w.iter_mut().zip(g) {
                        *w -= lr * (g + weight_decay * *w);
                    }
                    return;
                }
                for ((w, &g), b) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                    let d = g + weight_decay * *w;
                    *b = if first_step { d } else { momentum * *b + d };
                    let step = if nesterov { d + momentum * *b } else { *b };
                    *w -= lr * step;
                }
            }
            Rule::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                bc1,
                bc2,
            } => {
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let gk = g + weight_decay * *w;
                    *m = beta1 * *m + (1.0 - beta1) * gk;
                    *v = beta2 * *v + (1.0 - beta2) * gk * gk;
                    let denom = (*v / bc2).sqrt() + eps;
                    *w -= lr * (*m / bc1) / denom;
                }
            }
        }
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

    /// Large tensors are updated in two halves side by side: every element must get exactly
    /// the update it gets on one thread, whatever the pool size, for every rule.
    #[test]
    fn split_updates_equal_the_one_thread_update_element_by_element() {
        let n = 3 * PARALLEL_MIN_LEN + 7;
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let grads: Vec<f32> = (0..n)
            .map(|i| ((i * 11) % 53) as f32 / 26.0 - 1.0)
            .collect();
        let specs = [
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: true,
            },
            OptimizerSpec::Adam {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
        ];
        for spec in specs {
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut p = store(&values, &grads);
                    let mut opt = Optimizer::new(spec.clone(), &p);
                    for _ in 0..3 {
                        opt.step(&mut p);
                    }
                    p.value(0).to_vec()
                })
            };
            let one = run(1);
            // The hand-written rule on the first element, for SGD (nesterov, wd).
            if let OptimizerSpec::Sgd { .. } = spec {
                let (mut w, g, mut b) = (values[0], grads[0], 0.0f32);
                for t in 1..=3 {
                    let d = g + 0.01 * w;
                    b = if t == 1 { d } else { 0.9 * b + d };
                    w -= 0.1 * (d + 0.9 * b);
                }
                assert_eq!(one[0], w);
            }
            assert_ne!(one, values, "{spec:?} did not move the weights");
            assert_eq!(run(2), one, "{spec:?}: 2 threads vs 1");
        }
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

    #[test]
    fn buffers_get_no_state_and_are_never_updated() {
        let infos = vec![
            ParamInfo {
                name: "w".into(),
                shape: vec![2],
                role: ParamRole::Weight,
                layer: 0,
            },
            ParamInfo {
                name: "bn.running_var".into(),
                shape: vec![2],
                role: ParamRole::Buffer,
                layer: 0,
            },
        ];
        for spec in [
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.5,
                nesterov: false,
            },
            OptimizerSpec::Adam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.5,
            },
        ] {
            let mut p = ParamStore::zeros(infos.clone());
            p.value_mut(0).copy_from_slice(&[1.0, 2.0]);
            p.value_mut(1).copy_from_slice(&[3.0, 4.0]);
            p.grad_mut(0).copy_from_slice(&[0.5, 0.5]);
            p.grad_mut(1).copy_from_slice(&[7.0, 7.0]);
            let mut opt = Optimizer::new(spec, &p);
            opt.step(&mut p);
            opt.step(&mut p);
            assert_eq!(p.value(1), &[3.0, 4.0], "a buffer was updated");
            assert_ne!(p.value(0), &[1.0, 2.0], "the weight was not updated");
            for name in opt.state_names() {
                assert!(opt.state(name, 1).is_none());
                assert!(opt.state_mut(name, 1).is_none());
                assert_eq!(opt.state(name, 0).map(<[f32]>::len), Some(2));
            }
        }
    }
}

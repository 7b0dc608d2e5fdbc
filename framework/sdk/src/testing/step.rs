//! The trainer's part of a training step on the mock: the batch's loss and gradient
//! ([`MockHost::loss_backward`]) and the optimizer step ([`MockHost::step`]).

use clef_abi::{CLEF_INVALID_ARGUMENT, CLEF_UNSUPPORTED};

use super::host::MockHost;
use super::model::{linear, training_mask};
use super::plugin::HookError;
use super::state::MockOptimizer;
#[cfg(doc)]
use super::state::MockState;

impl MockHost {
    /// One optimizer step on every parameter tensor from its current gradient, with
    /// [`MockState::optimizer`]'s rule (the real host's: PyTorch's SGD with dampening 0 —
    /// the first momentum step stores the gradient itself — and Adam with bias correction).
    /// A missing state slot starts at zero.
    pub fn step(&mut self) {
        let s = self.state_mut();
        s.steps += 1;
        let t = s.steps;
        match s.optimizer {
            MockOptimizer::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
            } => {
                for p in &mut s.params {
                    if momentum == 0.0 {
                        for (w, &g) in p.values.iter_mut().zip(&p.grads) {
                            *w -= lr * (g + weight_decay * *w);
                        }
                        continue;
                    }
                    let n = p.values.len();
                    let m = p.momentum.get_or_insert_with(|| vec![0.0; n]);
                    for ((w, &g), b) in p.values.iter_mut().zip(&p.grads).zip(m.iter_mut()) {
                        let d = g + weight_decay * *w;
                        *b = if t == 1 { d } else { momentum * *b + d };
                        let step = if nesterov { d + momentum * *b } else { *b };
                        *w -= lr * step;
                    }
                }
            }
            MockOptimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let ti = t.min(i32::MAX as u64) as i32;
                let (bc1, bc2) = (1.0 - beta1.powi(ti), 1.0 - beta2.powi(ti));
                for p in &mut s.params {
                    let n = p.values.len();
                    let m = p.exp_avg.get_or_insert_with(|| vec![0.0; n]);
                    let v = p.exp_avg_sq.get_or_insert_with(|| vec![0.0; n]);
                    for (((w, &g), m), v) in p
                        .values
                        .iter_mut()
                        .zip(&p.grads)
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
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

    /// Zeroes the gradients and adds the gradient of the batch's loss, as the trainer does
    /// before `after_backward`: the mean softmax cross-entropy of the linear model over the
    /// batch ([`MockState::batch_x`], [`MockState::batch_targets`]) and the rows appended
    /// since `appended[first_appended..]`, each row's softmax over its class mask (appended
    /// rows with masks: theirs; the others: the current task's training units, as
    /// [`Ctx::training_units`](crate::Ctx::training_units) gives them). Returns the loss.
    pub fn loss_backward(&mut self, first_appended: usize) -> Result<f32, HookError> {
        let s = self.state_mut();
        let (d, k) = (s.input_dim, s.num_outputs);
        let train = training_mask(s);
        /// One row of the loss: inputs, target, class mask.
        type Row<'r> = (&'r [f32], usize, Option<&'r [bool]>);
        let mut rows: Vec<Row<'_>> = s
            .batch_x
            .chunks_exact(d.max(1))
            .zip(&s.batch_targets)
            .map(|(x, &t)| (x, t, train.as_deref()))
            .collect();
        for a in s.appended.iter().skip(first_appended) {
            for (r, (x, &t)) in a.x.chunks_exact(d.max(1)).zip(&a.targets).enumerate() {
                let mask = match &a.masks {
                    Some(m) => m.get(r * k..(r + 1) * k),
                    None => train.as_deref(),
                };
                rows.push((x, t, mask));
            }
        }
        let unsupported = |message: String| HookError {
            status: CLEF_UNSUPPORTED,
            message,
        };
        let Some((w, b)) = linear(s) else {
            return Err(unsupported(
                "the mock's loss needs its linear model (params[0], params[1])".into(),
            ));
        };
        let n = rows.len().max(1) as f32;
        let mut gw = vec![0.0f32; k * d];
        let mut gb = vec![0.0f32; k];
        let mut loss = 0.0f32;
        for (x, t, mask) in &rows {
            let allowed = |o: usize| mask.is_none_or(|m| m.get(o).copied().unwrap_or(false));
            if *t >= k || !allowed(*t) {
                return Err(HookError {
                    status: CLEF_INVALID_ARGUMENT,
                    message: format!("target {t} is not in its row's class mask"),
                });
            }
            let z: Vec<f32> = (0..k)
                .map(|o| (0..d).map(|i| w[o * d + i] * x[i]).sum::<f32>() + b[o])
                .collect();
            let max = (0..k)
                .filter(|&o| allowed(o))
                .map(|o| z[o])
                .fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = (0..k)
                .map(|o| if allowed(o) { (z[o] - max).exp() } else { 0.0 })
                .collect();
            let sum: f32 = e.iter().sum();
            loss -= (e[*t] / sum).ln() / n;
            for o in 0..k {
                let dz = (e[o] / sum - f32::from(o == *t)) / n;
                gb[o] += dz;
                for i in 0..d {
                    gw[o * d + i] += dz * x[i];
                }
            }
        }
        s.params[0].grads.copy_from_slice(&gw);
        s.params[1].grads.copy_from_slice(&gb);
        for p in s.params.iter_mut().skip(2) {
            p.grads.fill(0.0);
        }
        Ok(loss)
    }
}

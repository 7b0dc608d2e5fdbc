//! The trainer's part of a training step on the mock: the batch's loss and gradient
//! ([`MockHost::loss_backward`]) and the optimizer step ([`MockHost::step`]).

use clef_abi::{CLEF_INVALID_ARGUMENT, CLEF_UNSUPPORTED};

use super::host::MockHost;
use super::model::{linear, training_mask};
use super::plugin::HookError;
use super::state::{MockOptimizer, MockState};

impl MockHost {
    /// One optimizer step on every parameter tensor from its current gradient, with
    /// [`MockState::optimizer`]'s rule (the real host's: PyTorch's SGD with dampening 0 —
    /// the first momentum step stores the gradient itself — and Adam with bias correction).
    /// A missing state slot starts at zero.
    pub fn step(&mut self) {
        optimizer_step(self.state_mut());
    }

    /// Zeroes the gradients and adds the gradient of the batch's loss, as the trainer does
    /// before `after_backward`: the mean softmax cross-entropy of the linear model over the
    /// batch ([`MockState::batch_x`], [`MockState::batch_targets`]) and the rows appended
    /// since `appended[first_appended..]`, each row's softmax over its class mask (appended
    /// rows with masks: theirs; the others: the current task's training units, as
    /// [`Ctx::training_units`](crate::Ctx::training_units) gives them). Returns the loss.
    pub fn loss_backward(&mut self, first_appended: usize) -> Result<f32, HookError> {
        let (x, targets, masks) = batch_rows(self.state(), first_appended);
        let s = self.state_mut();
        let (loss, gw, gb) = linear_cross_entropy(s, &x, &targets, masks.as_deref())?;
        s.params[0].grads.copy_from_slice(&gw);
        s.params[1].grads.copy_from_slice(&gb);
        for p in s.params.iter_mut().skip(2) {
            p.grads.fill(0.0);
        }
        Ok(loss)
    }
}

/// The optimizer step of [`MockHost::step`] on a state.
pub(super) fn optimizer_step(s: &mut MockState) {
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

/// The rows of the mock's batch and of the rows appended since `appended[first_appended..]`:
/// inputs, targets and per-row masks (`rows * num_outputs`; `None` when every row may use every
/// unit): appended rows with masks use theirs, the others the current task's training mask.
pub(super) fn batch_rows(
    s: &MockState,
    first_appended: usize,
) -> (Vec<f32>, Vec<usize>, Option<Vec<bool>>) {
    let k = s.num_outputs;
    let train = training_mask(s);
    let mut x = s.batch_x.clone();
    let mut targets = s.batch_targets.clone();
    let mut masks: Vec<Option<Vec<bool>>> = vec![train.clone(); targets.len()];
    for a in s.appended.iter().skip(first_appended) {
        x.extend_from_slice(&a.x);
        targets.extend_from_slice(&a.targets);
        for r in 0..a.targets.len() {
            masks.push(match &a.masks {
                Some(m) => m.get(r * k..(r + 1) * k).map(<[bool]>::to_vec),
                None => train.clone(),
            });
        }
    }
    let masks = masks.iter().any(Option::is_some).then(|| {
        masks
            .into_iter()
            .flat_map(|m| m.unwrap_or_else(|| vec![true; k]))
            .collect()
    });
    (x, targets, masks)
}

/// The mean softmax cross-entropy of the linear model over labelled rows (`masks`: `rows *
/// num_outputs` flags or `None` for every unit) and its gradients `(loss, d/dW, d/db)`.
pub(super) fn linear_cross_entropy(
    s: &MockState,
    x: &[f32],
    targets: &[usize],
    masks: Option<&[bool]>,
) -> Result<(f32, Vec<f32>, Vec<f32>), HookError> {
    let (d, k) = (s.input_dim, s.num_outputs);
    let Some((w, b)) = linear(s) else {
        return Err(HookError {
            status: CLEF_UNSUPPORTED,
            message: "the mock's loss needs its linear model (params[0], params[1])".into(),
        });
    };
    let n = targets.len().max(1) as f32;
    let mut gw = vec![0.0f32; k * d];
    let mut gb = vec![0.0f32; k];
    let mut loss = 0.0f32;
    for (r, &t) in targets.iter().enumerate() {
        let x = &x[r * d..(r + 1) * d];
        let mask = masks.map(|m| &m[r * k..(r + 1) * k]);
        let allowed = |o: usize| mask.is_none_or(|m| m[o]);
        if t >= k || !allowed(t) {
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
        loss -= (e[t] / sum).ln() / n;
        for o in 0..k {
            let dz = (e[o] / sum - f32::from(o == t)) / n;
            gb[o] += dz;
            for i in 0..d {
                gw[o * d + i] += dz * x[i];
            }
        }
    }
    Ok((loss, gw, gb))
}

/// The linear model's logits of `rows` inputs.
pub(super) fn linear_logits(s: &MockState, x: &[f32], rows: usize) -> Result<Vec<f32>, HookError> {
    let (d, k) = (s.input_dim, s.num_outputs);
    let Some((w, b)) = linear(s) else {
        return Err(HookError {
            status: CLEF_UNSUPPORTED,
            message: "the mock's logits need its linear model (params[0], params[1])".into(),
        });
    };
    Ok((0..rows * k)
        .map(|j| {
            let (r, o) = (j / k, j % k);
            (0..d).map(|i| w[o * d + i] * x[r * d + i]).sum::<f32>() + b[o]
        })
        .collect())
}

/// Adds the linear model's `J(x)^T * cotangent` into its gradients.
pub(super) fn linear_vjp(s: &mut MockState, x: &[f32], rows: usize, cotangent: &[f32]) {
    let (d, k) = (s.input_dim, s.num_outputs);
    for r in 0..rows {
        for o in 0..k {
            let co = cotangent[r * k + o];
            for i in 0..d {
                s.params[0].grads[o * d + i] += co * x[r * d + i];
            }
            s.params[1].grads[o] += co;
        }
    }
}

//! The mock's [`ServiceModel`]: the linear model's arithmetic behind the shared service layer.

use std::borrow::Cow;
use std::sync::Mutex;

use clef_services::{
    Access, Activation, BatchRef, Facts, ParamFacts, Rows, ServiceError, ServiceModel,
    ServiceResult, TaskFacts, View, ViewOf,
};

use super::state::{AppendedRows, MockState};
use super::step::{linear_cross_entropy, linear_logits, linear_vjp, optimizer_step};

/// The mock's [`ServiceModel`]: the state, and nothing but the model's arithmetic.
pub(super) struct MockModel {
    pub(super) state: MockState,
}

/// Log lines received with a null context (from any mock host), `(level, message)`.
pub fn global_logs() -> Vec<(i32, String)> {
    GLOBAL_LOGS.lock().map(|l| l.clone()).unwrap_or_default()
}

static GLOBAL_LOGS: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

/// The linear model's weight and bias, if `params` has that shape.
pub(super) fn linear(s: &MockState) -> Option<(&[f32], &[f32])> {
    let (w, b) = (s.params.first()?, s.params.get(1)?);
    (w.values.len() == s.num_outputs * s.input_dim && b.values.len() == s.num_outputs)
        .then_some((&w.values, &b.values))
}

/// The training mask of the current task's rows (`None` = every unit).
pub(super) fn training_mask(s: &MockState) -> Option<Vec<bool>> {
    if s.task >= s.tasks.len() {
        return None;
    }
    let units =
        clef_services::training_units(s.setting, s.task, s.num_outputs, |j| &s.tasks[j].units)?;
    if units.len() == s.num_outputs {
        return None;
    }
    let mut mask = vec![false; s.num_outputs];
    for u in units {
        mask[u] = true;
    }
    Some(mask)
}

fn not_linear() -> ServiceError {
    ServiceError::unsupported(
        "the mock host's model services need its linear model (params[0] of shape \
         [num_outputs, input_dim], params[1] of shape [num_outputs])",
    )
}

impl ServiceModel for MockModel {
    fn access(&self) -> Access {
        self.state.phase.access()
    }

    fn log(&mut self, level: i32, message: &str) {
        self.state.logs.push((level, message.to_owned()));
    }

    fn log_without_ctx(level: i32, message: &str) {
        if let Ok(mut logs) = GLOBAL_LOGS.lock() {
            logs.push((level, message.to_owned()));
        }
    }

    fn facts(&self) -> Facts {
        let s = &self.state;
        Facts {
            setting: s.setting,
            task: s.task,
            num_tasks: s.tasks.len(),
            input_dim: s.input_dim,
            num_outputs: s.num_outputs,
            feature_dim: s.input_dim,
            num_threads: s.num_threads,
            seed: s.seed,
        }
    }

    fn task_facts(&self, task: usize) -> TaskFacts<'_> {
        let t = &self.state.tasks[task];
        TaskFacts {
            units: &t.units,
            train_samples: t.train_y.len(),
            test_samples: t.test_y.len(),
        }
    }

    fn rng_u64(&mut self) -> u64 {
        // splitmix64
        let s = &mut self.state;
        s.rng = s.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn param_count(&self) -> usize {
        self.state.params.len()
    }

    fn param_info(&self, index: usize) -> ParamFacts<'_> {
        let p = &self.state.params[index];
        ParamFacts {
            name: p.name.to_str().unwrap_or("?"),
            shape: &p.shape,
            role: p.role,
            layer: p.layer,
            numel: p.values.len(),
        }
    }

    fn param_values(&mut self, index: usize) -> View {
        // `Vec::as_mut_ptr` (through `view`) creates no reference to the elements, so views
        // the plugin already holds stay valid.
        self.state.params[index].values.view()
    }

    fn param_grads(&mut self, index: usize) -> View {
        self.state.params[index].grads.view()
    }

    fn optimizer_slots(&self) -> Vec<&'static str> {
        let Some(p) = self.state.params.first() else {
            return Vec::new();
        };
        [
            ("momentum", p.momentum.is_some()),
            ("exp_avg", p.exp_avg.is_some()),
            ("exp_avg_sq", p.exp_avg_sq.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect()
    }

    fn optimizer_state(&mut self, slot: &str, index: usize) -> Option<View> {
        let p = &mut self.state.params[index];
        match slot {
            "momentum" => p.momentum.as_mut().map(ViewOf::view),
            "exp_avg" => p.exp_avg.as_mut().map(ViewOf::view),
            "exp_avg_sq" => p.exp_avg_sq.as_mut().map(ViewOf::view),
            _ => None,
        }
    }

    fn forward(&mut self, x: &[f32], rows: usize, out: &mut Vec<f32>) -> ServiceResult {
        linear(&self.state).ok_or_else(not_linear)?;
        *out = linear_logits(&self.state, x, rows)
            .map_err(|e| ServiceError::new(e.status, e.message))?;
        Ok(())
    }

    fn features(&mut self, x: &[f32], _rows: usize, out: &mut Vec<f32>) -> ServiceResult {
        out.clear();
        out.extend_from_slice(x);
        Ok(())
    }

    fn vjp(&mut self, x: &[f32], rows: usize, cotangent: &[f32]) -> ServiceResult {
        linear(&self.state).ok_or_else(not_linear)?;
        linear_vjp(&mut self.state, x, rows, cotangent);
        Ok(())
    }

    fn ntk_gram(
        &mut self,
        a: &[f32],
        rows_a: usize,
        b: &[f32],
        rows_b: usize,
        _output: usize,
        out: &mut [f64],
    ) -> ServiceResult {
        let s = &self.state;
        if !s.ntk_supported {
            return Err(ServiceError::unsupported(
                "ntk_gram is switched off on this mock host (ntk_supported = false)",
            ));
        }
        linear(s).ok_or_else(not_linear)?;
        let d = s.input_dim;
        // For a linear model, d f_o / d W[o, :] = x and d f_o / d b[o] = 1.
        for i in 0..rows_a {
            for j in 0..rows_b {
                let dot: f64 = (0..d)
                    .map(|t| f64::from(a[i * d + t]) * f64::from(b[j * d + t]))
                    .sum();
                out[i * rows_b + j] = dot + 1.0;
            }
        }
        Ok(())
    }

    fn batch(&self) -> Option<BatchRef<'_>> {
        let s = &self.state;
        Some(BatchRef {
            x: &s.batch_x,
            targets: &s.batch_targets,
            current_rows: s.batch_current_rows,
            mask: training_mask(s).map(Cow::Owned),
        })
    }

    fn append_rows(&mut self, rows: Rows) {
        self.state.appended.push(AppendedRows {
            x: rows.x,
            targets: rows.targets,
            masks: rows.masks,
        });
    }

    fn task_samples(
        &mut self,
        task: usize,
        start: usize,
        rows: usize,
        x: &mut Vec<f32>,
        targets: &mut Vec<usize>,
    ) -> ServiceResult {
        let s = &self.state;
        let d = s.input_dim;
        let t = &s.tasks[task];
        let (Some(xs), Some(ys)) = (
            t.train_x.get(start * d..(start + rows) * d),
            t.train_y.get(start..start + rows),
        ) else {
            return Err(ServiceError::error(format!(
                "task {task}'s train_x has {} values for {} targets (set up inconsistently)",
                t.train_x.len(),
                t.train_y.len()
            )));
        };
        x.extend_from_slice(xs);
        targets.extend_from_slice(ys);
        Ok(())
    }

    fn batch_grad(
        &mut self,
        x: &[f32],
        _rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
        out: &mut [f32],
    ) -> ServiceResult<f32> {
        let s = &self.state;
        let (loss, gw, gb) = linear_cross_entropy(s, x, targets, masks)
            .map_err(|e| ServiceError::new(e.status, e.message))?;
        let mut off = 0;
        for (i, p) in s.params.iter().enumerate() {
            let n = p.values.len();
            let src: &[f32] = match i {
                0 => &gw,
                1 => &gb,
                _ => &[],
            };
            out[off..off + n].fill(0.0);
            out[off..off + src.len()].copy_from_slice(src);
            off += n;
        }
        Ok(loss)
    }

    fn sample_grads(
        &mut self,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
        power: u32,
    ) -> ServiceResult {
        let s = &mut self.state;
        let (d, k) = (s.input_dim, s.num_outputs);
        linear(s).ok_or_else(not_linear)?;
        let pow = |v: f32| if power == 1 { v.abs() } else { v * v };
        // The linear model's per-sample gradient: d/dW[o, i] = c_o x_i, d/db[o] = c_o.
        for r in 0..rows {
            for o in 0..k {
                let co = cotangent[r * k + o];
                for i in 0..d {
                    s.params[0].grads[o * d + i] += pow(co * x[r * d + i]);
                }
                s.params[1].grads[o] += pow(co);
            }
        }
        Ok(())
    }

    fn reinit(&mut self) -> ServiceResult {
        let s = &mut self.state;
        if s.pool_used {
            return Err(ServiceError::not_allowed(
                "not while the expert pool is in use",
            ));
        }
        linear(s).ok_or_else(not_linear)?;
        s.reinits += 1;
        let mut z = s.seed ^ s.reinits.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for p in s.params.iter_mut().take(2) {
            for v in &mut p.values {
                z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let u = ((z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 40) as f32;
                *v = (u / (1u64 << 24) as f32 - 0.5) * 0.2;
            }
            for b in [&mut p.momentum, &mut p.exp_avg, &mut p.exp_avg_sq]
                .into_iter()
                .flatten()
            {
                b.fill(0.0);
            }
        }
        s.steps = 0;
        Ok(())
    }

    fn train_step(
        &mut self,
        x: &[f32],
        _rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> ServiceResult<f32> {
        let s = &mut self.state;
        let (loss, gw, gb) = linear_cross_entropy(s, x, targets, masks)
            .map_err(|e| ServiceError::new(e.status, e.message))?;
        if !loss.is_finite() {
            return Err(ServiceError::error(format!(
                "train_step: the loss is {loss}; no update was made"
            )));
        }
        s.params[0].grads.copy_from_slice(&gw);
        s.params[1].grads.copy_from_slice(&gb);
        for p in s.params.iter_mut().skip(2) {
            p.grads.fill(0.0);
        }
        optimizer_step(s);
        Ok(loss)
    }

    fn report(&mut self, key: String, value: f64) {
        let task = self.state.task;
        self.state.reports.push((task, key, value));
    }

    fn expert_count(&self) -> usize {
        self.state.experts.len()
    }

    fn active_expert(&self) -> usize {
        self.state.active_expert
    }

    fn route_of(&self, task: usize) -> Option<usize> {
        self.state.routes.get(task).copied().flatten()
    }

    fn expert_add(&mut self, hidden: Vec<usize>, activation: Activation) -> ServiceResult<usize> {
        let s = &mut self.state;
        s.experts.push((hidden, activation.code(), false));
        s.pool_used = true;
        Ok(s.experts.len() - 1)
    }

    fn expert_select(&mut self, id: usize) -> ServiceResult {
        let s = &mut self.state;
        s.active_expert = id;
        s.pool_used = true;
        let task = s.task;
        if let Some(r) = s.routes.get_mut(task) {
            *r = Some(id);
        }
        // Selecting resets the expert's optimizer state (as the real host does).
        s.steps = 0;
        for p in &mut s.params {
            for b in [&mut p.momentum, &mut p.exp_avg, &mut p.exp_avg_sq]
                .into_iter()
                .flatten()
            {
                b.fill(0.0);
            }
        }
        Ok(())
    }

    fn expert_freeze(&mut self, id: usize, frozen: bool) -> ServiceResult {
        let s = &mut self.state;
        s.experts[id].2 = frozen;
        s.pool_used = true;
        Ok(())
    }

    fn expert_params(&mut self, id: Option<usize>) -> ServiceResult<usize> {
        let s = &self.state;
        let used = s.pool_used || s.experts.len() > 1 || s.routes.iter().any(Option::is_some);
        Ok(match id {
            Some(id) => mock_expert_params(s, id),
            None if used => (0..s.experts.len())
                .filter(|&e| s.routes.contains(&Some(e)))
                .map(|e| mock_expert_params(s, e))
                .sum(),
            None => s.params.iter().map(|p| p.values.len()).sum(),
        })
    }

    fn head_forward(
        &mut self,
        _task: usize,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
    ) -> ServiceResult {
        self.forward(x, rows, out)
    }

    fn head_vjp(&mut self, _task: usize, _x: &[f32], _rows: usize, _cot: &[f32]) -> ServiceResult {
        // The linear model's body is empty and the head is held fixed: nothing to add.
        Ok(())
    }
}

/// Parameters of mock expert `id`, counted like the real host.
fn mock_expert_params(s: &MockState, id: usize) -> usize {
    let hidden = &s.experts[id].0;
    let mut widths = vec![s.input_dim];
    widths.extend_from_slice(hidden);
    let body: usize = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let feat = widths.last().copied().unwrap_or(s.input_dim);
    let heads: usize = s
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == Some(id))
        .map(|(t, _)| s.tasks[t].units.len() * (feat + 1))
        .sum();
    body + heads
}

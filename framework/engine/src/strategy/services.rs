//! Training arithmetic a strategy may ask of its [`Ctx`] beyond the network's own calls (the
//! ABI 1.6 services): the gradient of a second batch, per-sample gradient powers, and, at task
//! boundaries, a re-initialised network and optimizer steps on the strategy's own rows.

use clef_backend::{Inputs, ParamRole, ParamStore};
use clef_data::seed::derive_seed;

use super::Ctx;

/// Why a service on the [`Ctx`] did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceError {
    /// The call is not allowed here (e.g. `reinit` while the expert pool is in use).
    NotAllowed(String),
    /// The computation failed (a backend error, a non-finite loss).
    Failed(String),
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::NotAllowed(m) | ServiceError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ServiceError {}

fn failed(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Failed(e.to_string())
}

/// Values of the buffers (batch norm's running statistics) of `params`, to put back after a
/// training-mode pass that must not change them.
fn save_buffers(params: &ParamStore) -> Vec<(usize, Vec<f32>)> {
    params
        .infos()
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == ParamRole::Buffer)
        .map(|(i, _)| (i, params.value(i).to_vec()))
        .collect()
}

fn restore_buffers(params: &mut ParamStore, saved: Vec<(usize, Vec<f32>)>) {
    for (i, v) in saved {
        params.value_mut(i).copy_from_slice(&v);
    }
}

impl Ctx<'_> {
    /// The gradient of the mean masked cross-entropy of `rows` rows (`masks`: `rows *
    /// num_outputs` flags, or `None` for every unit) written flat into `out` (every tensor in
    /// storage order; `out.len()` must be the total number of scalars), in training mode; the
    /// gradient buffers and batch norm's running statistics are left exactly as they were.
    /// Returns the loss.
    pub fn batch_grad(
        &mut self,
        x: &[f32],
        rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
        out: &mut [f32],
    ) -> Result<f32, ServiceError> {
        let params = self.net.params();
        if out.len() != params.numel() {
            return Err(failed(format!(
                "batch_grad: {} output values for {} parameters",
                out.len(),
                params.numel()
            )));
        }
        let grads: Vec<Vec<f32>> = params.grads().to_vec();
        let buffers = save_buffers(params);
        let inputs = Inputs::new(x, rows, self.scenario.input_dim()).map_err(failed)?;
        self.net.params_mut().zero_grads();
        let mut logits = Vec::new();
        let result = self.net.loss_backward(inputs, targets, masks, &mut logits);
        let params = self.net.params_mut();
        let mut off = 0;
        for (i, saved) in grads.iter().enumerate() {
            let g = params.grad_mut(i);
            out[off..off + g.len()].copy_from_slice(g);
            off += g.len();
            g.copy_from_slice(saved);
        }
        restore_buffers(params, buffers);
        result.map_err(failed)
    }

    /// Adds `sum_i |J(x_i)^T c_i|^power` into the gradients (`power` 1 or 2; `cotangent`:
    /// `rows * num_outputs`) in evaluation mode ([`clef_backend::Network::sample_grad_powers`]:
    /// one backward pass for an MLP, one per row on a convolutional backbone).
    pub fn sample_grads(
        &mut self,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
        power: u32,
    ) -> Result<(), ServiceError> {
        let inputs = Inputs::new(x, rows, self.scenario.input_dim()).map_err(failed)?;
        self.net
            .sample_grad_powers(inputs, cotangent, power)
            .map_err(failed)
    }

    /// Re-initialises the network (a fresh seeded draw of its initialisation, derived from the
    /// trial seed, the task, the boundary and the number of earlier re-initialisations of this
    /// hook) and resets the optimizer. Not while the expert pool is in use.
    pub fn reinit_network(&mut self) -> Result<(), ServiceError> {
        if self.experts.enabled() {
            return Err(ServiceError::NotAllowed(
                "not while the expert pool is in use".into(),
            ));
        }
        let init_seed = derive_seed(self.seed, "init");
        let seed = derive_seed(
            init_seed,
            &format!(
                "reinit-task-{}-{:?}-{}",
                self.task, self.boundary, self.reinits
            ),
        );
        self.reinits += 1;
        let fresh = ParamStore::init(self.net.spec(), seed);
        self.net.params_mut().copy_values_from(&fresh);
        self.optimizer.reset();
        Ok(())
    }

    /// One optimizer step on the mean masked cross-entropy of `rows` rows (training mode, batch
    /// norm's running statistics updated; gradients zeroed first). A non-finite loss leaves the
    /// parameters (and running statistics) unchanged and fails. Returns the loss.
    pub fn train_step(
        &mut self,
        x: &[f32],
        rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> Result<f32, ServiceError> {
        let inputs = Inputs::new(x, rows, self.scenario.input_dim()).map_err(failed)?;
        let buffers = save_buffers(self.net.params());
        self.net.params_mut().zero_grads();
        let mut logits = Vec::new();
        let loss = self
            .net
            .loss_backward(inputs, targets, masks, &mut logits)
            .map_err(failed)?;
        if !loss.is_finite() {
            restore_buffers(self.net.params_mut(), buffers);
            self.net.params_mut().zero_grads();
            return Err(failed(format!(
                "train_step: the loss is {loss}; no update was made"
            )));
        }
        self.optimizer.step(self.net.params_mut());
        if self.experts.enabled() {
            self.experts.after_step(&mut **self.net);
        }
        Ok(loss)
    }
}

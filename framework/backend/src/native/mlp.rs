//! [`NativeMlp`]: the network, its data-parallel split of a batch, and the [`Network`]
//! implementation.

use std::fmt;

use crate::network::check_loss_args;
use crate::pool::install;
use crate::{BackendError, Inputs, MlpSpec, ModelSpec, Network, ParamStore};

use super::layers::*;

/// A dense MLP with a fused forward/backward pass on the `gemm` crate.
///
/// Parameters and gradients are the host buffers of [`Network::params`]; see the crate-level
/// [`Network`] contract. Built by [`NativeMlp::new`] or [`crate::build_network_with`].
pub struct NativeMlp {
    spec: MlpSpec,
    /// `spec` as the [`ModelSpec`] that [`Network::spec`] returns.
    model: ModelSpec,
    /// `[input, hidden.., output]`.
    widths: Vec<usize>,
    params: ParamStore,
    /// One set per block of rows (see [`DATA_PARALLEL_MIN_ROWS`]).
    scratch: [Scratch; 2],
    /// Gradients of the second half of a data-parallel batch, before they are added to the
    /// store.
    side_grads: Vec<Vec<f32>>,
}

impl fmt::Debug for NativeMlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeMlp")
            .field("spec", &self.spec)
            .field("num_params", &self.params.numel())
            .finish_non_exhaustive()
    }
}

impl NativeMlp {
    /// Validates `spec` and initialises the parameters with [`ParamStore::init_mlp`] from
    /// `seed` (the same bits as every other backend for the same seed).
    pub fn new(spec: MlpSpec, seed: u64) -> Result<Self, BackendError> {
        spec.validate()?;
        let params = ParamStore::init_mlp(&spec, seed);
        let widths = spec.widths();
        let scratch = || Scratch {
            hidden: vec![Vec::new(); spec.hidden.len()],
            ..Scratch::default()
        };
        Ok(NativeMlp {
            widths,
            params,
            scratch: [scratch(), scratch()],
            side_grads: Vec::new(),
            model: ModelSpec::Mlp(spec.clone()),
            spec,
        })
    }

    /// Checks that the parameter store still has this network's tensors (callers may replace
    /// it wholesale through [`Network::params_mut`]).
    fn check_params(&self) -> Result<(), BackendError> {
        let expected = 2 * self.spec.num_layers();
        if self.params.len() != expected {
            return Err(BackendError::Spec(format!(
                "parameter store has {} tensors, the network needs {expected}",
                self.params.len()
            )));
        }
        for (l, w) in self.widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let (wi, bi) = (2 * l, 2 * l + 1);
            if self.params.value(wi).len() != fan_out * fan_in
                || self.params.grad(wi).len() != fan_out * fan_in
                || self.params.value(bi).len() != fan_out
                || self.params.grad(bi).len() != fan_out
            {
                return Err(BackendError::Spec(format!(
                    "parameter tensors of layer {l} do not have shapes [{fan_out}, {fan_in}] \
                     and [{fan_out}]"
                )));
            }
        }
        Ok(())
    }

    /// Checks `x` against the spec (same errors as the dfdx backend).
    fn check_input(&self, x: &Inputs<'_>) -> Result<(), BackendError> {
        if x.cols != self.spec.input {
            return Err(BackendError::shape(
                "x (input columns)",
                self.spec.input,
                x.cols,
            ));
        }
        if x.rows.checked_mul(x.cols) != Some(x.data.len()) {
            return Err(BackendError::shape(
                "x (input data length)",
                format!("{} x {} values", x.rows, x.cols),
                x.data.len(),
            ));
        }
        Ok(())
    }

    /// Splits `self` into what a pass reads and what it writes.
    fn parts(&mut self) -> Parts<'_> {
        let (values, grads) = self.params.values_and_grads_mut();
        Parts {
            weights: Weights {
                widths: &self.widths,
                activation: self.spec.activation,
                values,
            },
            scratch: &mut self.scratch,
            grads,
            side_grads: &mut self.side_grads,
        }
    }

    /// Forward and backward of a batch of `rows` rows, adding its gradients into the store:
    /// `pass` does one [`Block`] of rows and returns its part of the result. Batches of at least
    /// [`DATA_PARALLEL_MIN_ROWS`] rows go as two halves side by side, the second half into
    /// `side_grads` (overwritten), which are then added to the store; smaller ones as one block
    /// with the large GEMMs split.
    fn data_parallel<R: Send>(
        &mut self,
        rows: usize,
        pass: impl Fn(Weights<'_>, Block<'_>) -> R + Sync,
    ) -> (R, Option<R>) {
        let Parts {
            weights: w,
            scratch,
            grads,
            side_grads: side,
        } = self.parts();
        if rows < DATA_PARALLEL_MIN_ROWS {
            let block = Block {
                scratch: &mut scratch[0],
                row0: 0,
                rows,
                grads,
                accumulate: true,
                par: true,
            };
            return (install(|| pass(w, block)), None);
        }
        let fits = side.len() == grads.len()
            && side
                .iter()
                .zip(grads.iter())
                .all(|(s, g)| s.len() == g.len());
        if !fits {
            *side = grads.iter().map(|g| vec![0.0; g.len()]).collect();
        }
        let half = rows / 2;
        let (s0, s1) = scratch.split_at_mut(1);
        let pass = &pass;
        install(|| {
            let first = Block {
                scratch: &mut s0[0],
                row0: 0,
                rows: half,
                grads: &mut *grads,
                accumulate: true,
                par: false,
            };
            let second = Block {
                scratch: &mut s1[0],
                row0: half,
                rows: rows - half,
                grads: &mut side[..],
                accumulate: false,
                par: false,
            };
            let results = if rayon::current_num_threads() < 2 {
                (pass(w, first), pass(w, second))
            } else {
                rayon::join(|| pass(w, first), || pass(w, second))
            };
            add_grads(grads, side);
            (results.0, Some(results.1))
        })
    }
}

impl Network for NativeMlp {
    fn backend_name(&self) -> &'static str {
        "native"
    }

    fn spec(&self) -> &ModelSpec {
        &self.model
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn forward(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        self.check_input(&x)?;
        self.check_params()?;
        out.clear();
        if x.rows == 0 {
            return Ok(());
        }
        out.resize(x.rows * self.spec.output, 0.0);
        let Parts {
            weights: w,
            scratch,
            ..
        } = self.parts();
        install(|| {
            w.forward_hidden(&mut scratch[0], x.data, x.rows, true);
            w.forward_output(&mut scratch[0], x.data, x.rows, out, true);
        });
        Ok(())
    }

    fn features(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        self.check_input(&x)?;
        self.check_params()?;
        out.clear();
        if x.rows == 0 || self.spec.hidden.is_empty() {
            // No hidden layer: the penultimate representation is the input itself.
            out.extend_from_slice(x.data);
            return Ok(());
        }
        let Parts {
            weights: w,
            scratch,
            ..
        } = self.parts();
        install(|| w.forward_hidden(&mut scratch[0], x.data, x.rows, true));
        out.extend_from_slice(w.penultimate(&scratch[0].hidden, x.data, x.rows));
        Ok(())
    }

    /// See [`Network::loss_backward`]. With zero rows the loss is defined as 0 and no gradient
    /// is added.
    fn loss_backward(
        &mut self,
        x: Inputs<'_>,
        targets: &[usize],
        class_mask: Option<&[bool]>,
        logits_out: &mut Vec<f32>,
    ) -> Result<f32, BackendError> {
        let (rows, classes, cols) = (x.rows, self.spec.output, x.cols);
        let mask = check_loss_args(rows, classes, targets, class_mask)?;
        self.check_input(&x)?;
        self.check_params()?;
        logits_out.clear();
        if rows == 0 {
            return Ok(0.0);
        }
        logits_out.resize(rows * classes, 0.0);
        // Each block writes its own rows of the logits; the cells hand them out.
        let half = if rows < DATA_PARALLEL_MIN_ROWS {
            rows
        } else {
            rows / 2
        };
        let (lo, hi) = logits_out.split_at_mut(half * classes);
        let cells = [std::sync::Mutex::new(lo), std::sync::Mutex::new(hi)];
        let inv_rows = 1.0 / rows as f32;
        let (first, second) = self.data_parallel(rows, |w, b| {
            let mut logits = cells[usize::from(b.row0 > 0)]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (r0, n) = (b.row0, b.rows);
            let rows_of = LossRows {
                x: &x.data[r0 * cols..(r0 + n) * cols],
                targets: &targets[r0..r0 + n],
                logits: &mut logits[..],
            };
            loss_block(w, b, rows_of, &mask, inv_rows)
        });
        let total = first + second.unwrap_or(0.0);
        Ok((total / rows as f64) as f32)
    }

    fn vjp(&mut self, x: Inputs<'_>, cotangent: &[f32]) -> Result<(), BackendError> {
        let classes = self.spec.output;
        if x.rows.checked_mul(classes) != Some(cotangent.len()) {
            return Err(BackendError::shape(
                "cotangent (one per logit)",
                format!("{} x {classes} values", x.rows),
                cotangent.len(),
            ));
        }
        self.check_input(&x)?;
        self.check_params()?;
        if x.rows == 0 {
            return Ok(());
        }
        let cols = x.cols;
        // The logits themselves are not needed: only the hidden activations.
        self.data_parallel(x.rows, |w, b| {
            let (r0, n) = (b.row0, b.rows);
            let xb = &x.data[r0 * cols..(r0 + n) * cols];
            let cot = &cotangent[r0 * classes..(r0 + n) * classes];
            w.forward_hidden(b.scratch, xb, n, b.par);
            w.backward(b.scratch, xb, n, Some(cot), b.grads, b.accumulate, b.par);
        });
        Ok(())
    }
}

//! Per-sample gradient powers of a convolutional backbone, `Σ_i |J(x_i)ᵀ c_i|^p` over every
//! trainable tensor (batch norm's running statistics, role `Buffer`, excluded).
//!
//! A convolution's per-sample weight gradient is a sum over output positions, not an outer
//! product, so the MLP's factorisation (`crate::sample_grads`) does not apply: each row gets
//! one evaluation-mode forward and backward pass of its own (the NTK's per-sample path,
//! `NativeCnn::per_row_grads`), whose powers are summed in f64 in row order. The gradient
//! buffers are saved before and restored after, so buffers' gradients stay as they were.

use super::NativeCnn;
use crate::pool::install;
use crate::sample_grads::{check_args, pow};
use crate::{BackendError, Inputs, Network, ParamRole};

impl NativeCnn {
    /// Adds `Σ_i |J(x_i)ᵀ c_i|^power` into the trainable tensors' gradients
    /// ([`Network::sample_grad_powers`]).
    pub(super) fn sample_grad_powers_into(
        &mut self,
        x: Inputs<'_>,
        cotangent: &[f32],
        power: u32,
    ) -> Result<(), BackendError> {
        let classes = self.spec().output();
        check_args(x.rows, classes, cotangent.len(), power)?;
        self.check_input(&x)?;
        self.check_params()?;
        if x.rows == 0 {
            return Ok(());
        }
        let trainable: Vec<usize> = self
            .params()
            .infos()
            .iter()
            .enumerate()
            .filter(|(_, i)| i.role != ParamRole::Buffer)
            .map(|(k, _)| k)
            .collect();
        let mut sums: Vec<Vec<f64>> = trainable
            .iter()
            .map(|&k| vec![0.0; self.params().grad(k).len()])
            .collect();
        let saved: Vec<Vec<f32>> = self.params().grads().to_vec();
        let result = install(|| {
            self.per_row_grads(
                x,
                |r, top| top.copy_from_slice(&cotangent[r * classes..(r + 1) * classes]),
                |params| {
                    for (s, &k) in sums.iter_mut().zip(&trainable) {
                        for (s, &g) in s.iter_mut().zip(params.grad(k)) {
                            *s += pow(f64::from(g), power);
                        }
                    }
                },
            )
        });
        for (k, g) in saved.iter().enumerate() {
            self.params_mut().grad_mut(k).copy_from_slice(g);
        }
        result?;
        for (s, &k) in sums.iter().zip(&trainable) {
            for (g, &v) in self.params_mut().grad_mut(k).iter_mut().zip(s) {
                *g += v as f32;
            }
        }
        Ok(())
    }
}

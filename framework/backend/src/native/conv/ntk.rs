//! The empirical neural tangent kernel of a convolutional backbone: `K_c(a_i, b_j) =
//! J_c(a_i) · J_c(b_j)ᵀ` over every trainable tensor (batch norm's running statistics, role
//! `Buffer`, excluded), with batch norm in evaluation mode (running statistics).
//!
//! The per-layer factorisation of the MLP kernel (`crate::ntk`) does not carry over to shared
//! convolution weights, so each row's gradient of output `c` is computed by one forward and one
//! backward pass of that row alone in evaluation mode (the running statistics make the rows
//! independent, so a batch of one is exact), collected as f32, and the Gram is one f64 GEMM of
//! the stacked Jacobians, `J_A J_Bᵀ`. The gradient buffers are saved before and restored after,
//! so the service can be called from any hook.

use super::norm::Mode;
use super::NativeCnn;
use crate::pool::install;
use crate::{BackendError, Inputs, Network, ParamRole};

/// Rows of `B` whose Jacobians are stacked before one GEMM against `J_A`.
const CHUNK: usize = 256;

impl NativeCnn {
    /// The NTK Gram of output unit `output` between `a` and `b` into `out` (`a.rows × b.rows`,
    /// row-major).
    pub fn ntk_gram_into(
        &mut self,
        a: Inputs<'_>,
        b: Inputs<'_>,
        output: usize,
        out: &mut [f64],
    ) -> Result<(), BackendError> {
        let classes = self.spec().output();
        if output >= classes {
            return Err(BackendError::shape(
                "ntk output unit",
                format!("< {classes}"),
                output,
            ));
        }
        if out.len() != a.rows * b.rows {
            return Err(BackendError::shape(
                "ntk output buffer",
                format!("{} x {}", a.rows, b.rows),
                out.len(),
            ));
        }
        self.check_input(&a)?;
        self.check_input(&b)?;
        self.check_params()?;
        if a.rows == 0 || b.rows == 0 {
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
        let p: usize = trainable.iter().map(|&k| self.params().grad(k).len()).sum();
        let saved: Vec<Vec<f32>> = (0..self.params().len())
            .map(|k| self.params().grad(k).to_vec())
            .collect();
        let result = install(|| -> Result<(), BackendError> {
            let ja = self.jacobian(a, output, &trainable, p)?;
            let same = std::ptr::eq(a.data, b.data) && a.rows == b.rows;
            let mut start = 0;
            while start < b.rows {
                let n = CHUNK.min(b.rows - start);
                let jb_owned;
                let jb: &[f64] = if same {
                    &ja[start * p..(start + n) * p]
                } else {
                    let rows = Inputs {
                        data: &b.data[start * b.cols..(start + n) * b.cols],
                        rows: n,
                        cols: b.cols,
                    };
                    jb_owned = self.jacobian(rows, output, &trainable, p)?;
                    &jb_owned
                };
                let block = crate::ntk::gemm_abt(&ja, jb, a.rows, n, p);
                for i in 0..a.rows {
                    out[i * b.rows + start..i * b.rows + start + n]
                        .copy_from_slice(&block[i * n..(i + 1) * n]);
                }
                start += n;
            }
            Ok(())
        });
        for (k, g) in saved.iter().enumerate() {
            self.params_mut().grad_mut(k).copy_from_slice(g);
        }
        result
    }

    /// `rows × p` row-major: the gradient of logit `output` of each row over the trainable
    /// tensors `trainable` (concatenated in order), in evaluation mode.
    fn jacobian(
        &mut self,
        x: Inputs<'_>,
        output: usize,
        trainable: &[usize],
        p: usize,
    ) -> Result<Vec<f64>, BackendError> {
        let mut jac = Vec::with_capacity(x.rows * p);
        self.per_row_grads(
            x,
            |_, top| {
                top.fill(0.0);
                top[output] = 1.0;
            },
            |params| {
                for &k in trainable {
                    jac.extend(params.grad(k).iter().map(|&g| f64::from(g)));
                }
            },
        )?;
        Ok(jac)
    }

    /// Per-sample gradients in evaluation mode: for each row `r` of `x`, zeroes the gradients,
    /// runs one forward and one backward pass of that row alone with the logits' gradient set
    /// by `top(r, logits_grad)` (running statistics make the rows independent, so a batch of one
    /// is exact), then hands the store, holding `J(x_r)ᵀ top_r`, to `visit`. Leaves the
    /// gradients of the last row in the store: callers save and restore them.
    pub(super) fn per_row_grads(
        &mut self,
        x: Inputs<'_>,
        mut top: impl FnMut(usize, &mut [f32]),
        mut visit: impl FnMut(&crate::ParamStore),
    ) -> Result<(), BackendError> {
        let classes = self.spec().output();
        let last = self.ops();
        for r in 0..x.rows {
            self.params_mut().zero_grads();
            self.forward_to(&x.data[r * x.cols..(r + 1) * x.cols], 1, last, Mode::Eval)?;
            top(r, self.top_grad(classes));
            self.backward(1, Mode::Eval);
            visit(self.params());
        }
        Ok(())
    }
}

//! Model evaluation on inputs the plugin chooses: `forward`, `features`, `vjp`, `ntk_gram`.

use super::{check, to_i64, Ctx, Dims};
use crate::error::{Error, Result};

impl Ctx<'_> {
    /// Checks that `len` is `rows * input_dim` (`what` names the buffer in the error).
    pub(super) fn check_rows(
        &mut self,
        service: &str,
        what: &str,
        len: usize,
        rows: usize,
    ) -> Result<Dims> {
        let dims = self.dims()?;
        if rows.checked_mul(dims.input_dim) != Some(len) {
            return Err(Error::msg(format!(
                "`{service}`: {what} has {len} values, expected rows ({rows}) * input_dim ({})",
                dims.input_dim
            )));
        }
        Ok(dims)
    }

    /// The logits of `rows` inputs (`x.len() == rows * input_dim`), `rows * num_outputs`
    /// values, row-major. Gradients are not touched.
    pub fn forward(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let dims = self.check_rows("forward", "x", x.len(), rows)?;
        let mut out = vec![0.0f32; rows * dims.num_outputs];
        self.forward_into(x, rows, &mut out)?;
        Ok(out)
    }

    /// Like [`forward`](Ctx::forward), into a caller buffer of `rows * num_outputs` values.
    pub fn forward_into(&mut self, x: &[f32], rows: usize, out: &mut [f32]) -> Result<()> {
        self.check_rows("forward", "x", x.len(), rows)?;
        // SAFETY: valid table and context (Ctx::new); `x` and `out` are live buffers of the
        // lengths passed; the host checks `out_len`.
        check("forward", unsafe {
            (self.host.forward)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })
    }

    /// The penultimate activations of `rows` inputs: `rows * feature_dim` values.
    pub fn features(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let dims = self.check_rows("features", "x", x.len(), rows)?;
        let mut out = vec![0.0f32; rows * dims.feature_dim];
        // SAFETY: valid table and context (Ctx::new); `x` and `out` are live buffers of the
        // lengths passed.
        check("features", unsafe {
            (self.host.features)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })?;
        Ok(out)
    }

    /// Adds `J(x)^T * cotangent` into the parameter gradients, where `cotangent` is
    /// d (your loss) / d (logits at `x`), `rows * num_outputs` values: the gradient of any loss
    /// on the outputs at inputs you choose (distillation, function-space regularisers).
    pub fn vjp(&mut self, x: &[f32], rows: usize, cotangent: &[f32]) -> Result<()> {
        let dims = self.check_rows("vjp", "x", x.len(), rows)?;
        if cotangent.len() != rows * dims.num_outputs {
            return Err(Error::msg(format!(
                "`vjp`: cotangent has {} values, expected rows ({rows}) * num_outputs ({})",
                cotangent.len(),
                dims.num_outputs
            )));
        }
        // SAFETY: valid table and context (Ctx::new); both buffers are live with the lengths
        // passed.
        check("vjp", unsafe {
            (self.host.vjp)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                cotangent.as_ptr(),
                to_i64(cotangent.len()),
            )
        })
    }

    /// The neural-tangent-kernel Gram matrix of output unit `output` between `a` (`rows_a`
    /// inputs) and `b` (`rows_b` inputs): `out[i * rows_b + j] = <d f(a_i)/d params,
    /// d f(b_j)/d params>`. Fails with [`HostStatus::Unsupported`](crate::HostStatus) if the
    /// backend cannot compute it.
    pub fn ntk_gram(
        &mut self,
        a: &[f32],
        rows_a: usize,
        b: &[f32],
        rows_b: usize,
        output: usize,
    ) -> Result<Vec<f64>> {
        self.check_rows("ntk_gram", "a", a.len(), rows_a)?;
        self.check_rows("ntk_gram", "b", b.len(), rows_b)?;
        let mut out = vec![0.0f64; rows_a * rows_b];
        // SAFETY: valid table and context (Ctx::new); all buffers are live with the lengths
        // passed.
        check("ntk_gram", unsafe {
            (self.host.ntk_gram)(
                self.raw,
                a.as_ptr(),
                to_i64(rows_a),
                b.as_ptr(),
                to_i64(rows_b),
                to_i64(output),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })?;
        Ok(out)
    }
}

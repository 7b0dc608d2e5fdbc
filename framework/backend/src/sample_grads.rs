//! Per-sample gradient powers of a dense MLP: `Σ_i |J(x_i)ᵀ c_i|^p` (`p` 1 or 2) over every
//! weight and bias, without one backward pass per sample.
//!
//! With `δ_{l,i} = ∂(c_i · f(x_i)) / ∂z_l` and `h_{l,i}` the input of layer `l`, sample `i`'s
//! gradient of `W_l` is the outer product `δ_{l,i} h_{l,i}ᵀ`, and `|a bᵀ|^p = |a|^p (|b|^p)ᵀ`
//! element-wise, so
//!
//! ```text
//! Σ_i |δ_{l,i} h_{l,i}ᵀ|^p = (|Δ_l|^p)ᵀ |H_l|^p        Σ_i |δ_{l,i}|^p   (bias)
//! ```
//!
//! (rows of `Δ_l`, `H_l` are samples): one forward trace and one backward pass of the cotangent
//! for the whole set ([`crate::ntk`]'s `Trace` and `Weights::backprop`, in f64) and one GEMM per
//! layer, exact. Rows go through in fixed chunks of [`CHUNK`] (bounded memory); the chunking
//! and the GEMMs' cuts depend on the shapes only, so the result is bit-identical for any
//! thread count.

use crate::ntk::{gemm_ab, Weights};
use crate::{BackendError, Inputs, ModelSpec, ParamStore};

/// Rows traced and back-propagated together.
const CHUNK: usize = 1024;

/// Checks the arguments every backend checks the same way: `power` is 1 or 2 and the
/// cotangent has one value per row and output.
pub(crate) fn check_args(
    rows: usize,
    outputs: usize,
    cotangent_len: usize,
    power: u32,
) -> Result<(), BackendError> {
    if power != 1 && power != 2 {
        return Err(BackendError::shape(
            "power (of the per-sample gradients)",
            "1 (absolute values) or 2 (squares)",
            power,
        ));
    }
    if rows.checked_mul(outputs) != Some(cotangent_len) {
        return Err(BackendError::shape(
            "cotangent (one per logit)",
            format!("{rows} x {outputs} values"),
            cotangent_len,
        ));
    }
    Ok(())
}

/// `|v|^power` for the checked powers 1 and 2.
#[inline]
pub(crate) fn pow(v: f64, power: u32) -> f64 {
    if power == 1 {
        v.abs()
    } else {
        v * v
    }
}

/// `Σ_i |J(x_i)ᵀ c_i|^power` of the MLP `spec` with parameters `params` (tensors named
/// `layers.{l}.weight` / `layers.{l}.bias`), `c_i` being row `i` of `cotangent`
/// (`x.rows × output`) and `power` 1 or 2: one `(tensor index, sums)` pair per tensor, in f64.
/// Other backbones are an error here ([`crate::Network::sample_grad_powers`] dispatches them
/// to their backend).
pub fn mlp_sample_grad_powers(
    spec: &ModelSpec,
    params: &ParamStore,
    x: Inputs<'_>,
    cotangent: &[f32],
    power: u32,
) -> Result<Vec<(usize, Vec<f64>)>, BackendError> {
    let mlp = spec.as_mlp().ok_or_else(|| {
        BackendError::Spec(format!(
            "sample_grad_powers: the factorised per-sample gradients are implemented for MLPs \
             only, this network is a {}",
            spec.kind_name()
        ))
    })?;
    check_args(x.rows, mlp.output, cotangent.len(), power)?;
    let net = Weights::new(mlp, params)?;
    let widths = net.widths.clone();
    if x.cols != widths[0] {
        return Err(BackendError::shape("x (input columns)", widths[0], x.cols));
    }
    Inputs::new(x.data, x.rows, x.cols)?;
    let layers = net.layers();
    let mut w_sums: Vec<Vec<f64>> = (0..layers)
        .map(|l| vec![0.0; widths[l] * widths[l + 1]])
        .collect();
    let mut b_sums: Vec<Vec<f64>> = (0..layers).map(|l| vec![0.0; widths[l + 1]]).collect();
    let k = mlp.output;
    let mut start = 0;
    while start < x.rows {
        let n = CHUNK.min(x.rows - start);
        let chunk = Inputs {
            data: &x.data[start * x.cols..(start + n) * x.cols],
            rows: n,
            cols: x.cols,
        };
        let trace = net.trace(chunk)?;
        let top: Vec<f64> = cotangent[start * k..(start + n) * k]
            .iter()
            .map(|&c| f64::from(c))
            .collect();
        let deltas = net.backprop(&trace, top);
        for l in 0..layers {
            let (fin, fout) = (widths[l], widths[l + 1]);
            // |Δ_l|^p transposed (fout × n) and |H_l|^p (n × fin).
            let mut dt = vec![0.0f64; fout * n];
            for (i, row) in deltas[l].chunks_exact(fout).enumerate() {
                for (j, &d) in row.iter().enumerate() {
                    let v = pow(d, power);
                    dt[j * n + i] = v;
                    b_sums[l][j] += v;
                }
            }
            let hp: Vec<f64> = trace.inputs[l].iter().map(|&h| pow(h, power)).collect();
            let g = gemm_ab(&dt, &hp, fout, fin, n);
            for (s, g) in w_sums[l].iter_mut().zip(&g) {
                *s += g;
            }
        }
        start += n;
    }
    let mut out = Vec::with_capacity(2 * layers);
    for (l, (w, b)) in w_sums.into_iter().zip(b_sums).enumerate() {
        for (name, sums) in [
            (format!("layers.{l}.weight"), w),
            (format!("layers.{l}.bias"), b),
        ] {
            // `Weights::new` found every tensor.
            let idx = params.index_of(&name).ok_or_else(|| {
                BackendError::Spec(format!("sample_grad_powers: no tensor `{name}`"))
            })?;
            out.push((idx, sums));
        }
    }
    Ok(out)
}

/// Adds `sums` (from [`mlp_sample_grad_powers`]) into the gradient buffers, rounded to f32.
pub(crate) fn add_sums(params: &mut ParamStore, sums: &[(usize, Vec<f64>)]) {
    for (idx, s) in sums {
        for (g, &v) in params.grad_mut(*idx).iter_mut().zip(s) {
            *g += v as f32;
        }
    }
}

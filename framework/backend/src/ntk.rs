//! The empirical neural tangent kernel (NTK) of a dense MLP, without Jacobians.
//!
//! For output unit `c` the NTK between inputs `a` and `b` is `K_c(a, b) = J_c(a) · J_c(b)ᵀ` with
//! `J_c(x) = ∂f_c(x) / ∂θ` over every weight and bias. For a dense layer `l` with input `h_l(x)`
//! and pre-activation `z_l(x)`, `∂f_c/∂W_l = δ_l(x) h_l(x)ᵀ` and `∂f_c/∂b_l = δ_l(x)`, where
//! `δ_l = ∂f_c/∂z_l` is the back-propagated signal of output `c`. So
//!
//! ```text
//! K_c(A, B) = Σ_l (Δ_l^A Δ_l^Bᵀ) ⊙ (H_l^A H_l^Bᵀ + 1)
//! ```
//!
//! (rows of `Δ_l`, `H_l` are samples), which costs a few GEMMs per layer instead of one
//! `rows × num_params` Jacobian per input set. At the output layer `Δ = e_c` for every row, so its
//! factor is the all-ones matrix. The products of `H_l` do not depend on `c`: [`ntk_grams`]
//! shares them (and the forward passes) between several outputs.
//!
//! Everything runs in f64 (parameters are converted once per call), with the GEMMs of the
//! `gemm` crate, cut into two halves run side by side when large; the cut depends only on the
//! shapes, so results are bit-identical across runs and thread counts.

use crate::{Activation, BackendError, Inputs, MlpSpec, ModelSpec, ParamStore};

/// One input set after the forward pass: each layer's input and each hidden layer's activation
/// derivative.
pub(crate) struct Trace {
    pub(crate) rows: usize,
    /// `inputs[l]`: input of layer `l`, `rows × widths[l]` (f64).
    pub(crate) inputs: Vec<Vec<f64>>,
    /// `derivs[l]`: `act'(z_l)` of hidden layer `l`, `rows × widths[l + 1]`.
    pub(crate) derivs: Vec<Vec<f64>>,
}

/// The network's f64 weights and biases, checked against the spec.
pub(crate) struct Weights {
    pub(crate) widths: Vec<usize>,
    activation: Activation,
    w: Vec<Vec<f64>>,
    b: Vec<Vec<f64>>,
}

impl Weights {
    pub(crate) fn new(spec: &MlpSpec, params: &ParamStore) -> Result<Self, BackendError> {
        spec.validate()?;
        let widths = spec.widths();
        let layers = widths.len() - 1;
        let (mut w, mut b) = (Vec::with_capacity(layers), Vec::with_capacity(layers));
        for l in 0..layers {
            let name_w = format!("layers.{l}.weight");
            let name_b = format!("layers.{l}.bias");
            let iw = params.index_of(&name_w).ok_or_else(|| {
                BackendError::Spec(format!("ntk: the parameters have no `{name_w}`"))
            })?;
            let ib = params.index_of(&name_b).ok_or_else(|| {
                BackendError::Spec(format!("ntk: the parameters have no `{name_b}`"))
            })?;
            let (vw, vb) = (params.value(iw), params.value(ib));
            if vw.len() != widths[l] * widths[l + 1] || vb.len() != widths[l + 1] {
                return Err(BackendError::shape(
                    "ntk parameters",
                    format!(
                        "layer {l}: {} x {} weights and {} biases",
                        widths[l + 1],
                        widths[l],
                        widths[l + 1]
                    ),
                    format!("{} weights and {} biases", vw.len(), vb.len()),
                ));
            }
            w.push(vw.iter().map(|&v| f64::from(v)).collect());
            b.push(vb.iter().map(|&v| f64::from(v)).collect());
        }
        Ok(Weights {
            widths,
            activation: spec.activation,
            w,
            b,
        })
    }

    pub(crate) fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// Forward pass over the hidden layers, keeping what the kernel needs.
    pub(crate) fn trace(&self, x: Inputs<'_>) -> Result<Trace, BackendError> {
        if x.cols != self.widths[0] {
            return Err(BackendError::shape(
                "ntk inputs (columns)",
                self.widths[0],
                x.cols,
            ));
        }
        Inputs::new(x.data, x.rows, x.cols)?;
        let rows = x.rows;
        let mut inputs = vec![x.data.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>()];
        let mut derivs = Vec::new();
        for l in 0..self.layers() - 1 {
            let (fin, fout) = (self.widths[l], self.widths[l + 1]);
            // z = H · Wᵀ + b
            let mut z = gemm_abt(&inputs[l], &self.w[l], rows, fout, fin);
            for row in z.chunks_exact_mut(fout) {
                for (v, b) in row.iter_mut().zip(&self.b[l]) {
                    *v += b;
                }
            }
            let mut d = vec![0.0; z.len()];
            for (v, d) in z.iter_mut().zip(d.iter_mut()) {
                let (a, da) = match self.activation {
                    Activation::Relu => {
                        if *v > 0.0 {
                            (*v, 1.0)
                        } else {
                            (0.0, 0.0)
                        }
                    }
                    Activation::Tanh => {
                        let t = v.tanh();
                        (t, 1.0 - t * t)
                    }
                    Activation::Sigmoid => {
                        let s = 1.0 / (1.0 + (-*v).exp());
                        (s, s * (1.0 - s))
                    }
                };
                *v = a;
                *d = da;
            }
            inputs.push(z);
            derivs.push(d);
        }
        Ok(Trace {
            rows,
            inputs,
            derivs,
        })
    }

    /// `Δ_l` of output `c` for every hidden layer `l` (index `l`), the output layer's being the
    /// constant `e_c` (not stored).
    fn signals(&self, t: &Trace, c: usize) -> Vec<Vec<f64>> {
        let hidden = self.layers() - 1;
        let mut out: Vec<Vec<f64>> = vec![Vec::new(); hidden];
        if hidden == 0 {
            return out;
        }
        // Layer hidden - 1: Δ = W_L[c, :] ⊙ act'(z).
        let last = self.layers() - 1;
        let fin = self.widths[last];
        let wc = &self.w[last][c * fin..(c + 1) * fin];
        let mut delta: Vec<f64> = t.derivs[hidden - 1]
            .chunks_exact(fin)
            .flat_map(|d| d.iter().zip(wc).map(|(d, w)| d * w))
            .collect();
        for l in (0..hidden).rev() {
            if l > 0 {
                // Δ_{l-1} = (Δ_l · W_l) ⊙ act'(z_{l-1}), W_l being `[widths[l+1], widths[l]]`.
                let (fin, fout) = (self.widths[l], self.widths[l + 1]);
                let mut prev = gemm_ab(&delta, &self.w[l], t.rows, fin, fout);
                for (p, d) in prev.iter_mut().zip(&t.derivs[l - 1]) {
                    *p *= d;
                }
                out[l] = std::mem::replace(&mut delta, prev);
            } else {
                out[0] = std::mem::take(&mut delta);
            }
        }
        out
    }

    /// `Δ_l = ∂(Σ_i c_i · f(x_i)) / ∂z_l` for every layer `l` (the output layer's is `top`
    /// itself, `rows × output`): the back-propagation of a general cotangent, where
    /// [`Weights::signals`] handles a one-hot one.
    pub(crate) fn backprop(&self, t: &Trace, top: Vec<f64>) -> Vec<Vec<f64>> {
        let layers = self.layers();
        let mut out: Vec<Vec<f64>> = vec![Vec::new(); layers];
        let mut delta = top;
        for l in (1..layers).rev() {
            // Δ_{l-1} = (Δ_l · W_l) ⊙ act'(z_{l-1}), W_l being `[widths[l+1], widths[l]]`.
            let (fin, fout) = (self.widths[l], self.widths[l + 1]);
            let mut prev = gemm_ab(&delta, &self.w[l], t.rows, fin, fout);
            for (p, d) in prev.iter_mut().zip(&t.derivs[l - 1]) {
                *p *= d;
            }
            out[l] = std::mem::replace(&mut delta, prev);
        }
        out[0] = delta;
        out
    }
}

/// The NTK Gram of output unit `output` between `a` and `b`: `out[i * b.rows + j] =
/// J(a_i) · J(b_j)ᵀ` (`out.len() == a.rows * b.rows`), for the MLP `spec` (other backbones:
/// an error here; [`crate::Network::ntk_gram`] dispatches them to their backend) with parameters
/// `params` (tensors named `layers.{l}.weight` / `layers.{l}.bias`, as every backend stores
/// them).
pub fn ntk_gram(
    spec: &ModelSpec,
    params: &ParamStore,
    a: Inputs<'_>,
    b: Inputs<'_>,
    output: usize,
    out: &mut [f64],
) -> Result<(), BackendError> {
    if out.len() != a.rows * b.rows {
        return Err(BackendError::shape(
            "ntk output buffer",
            format!("{} x {}", a.rows, b.rows),
            out.len(),
        ));
    }
    let grams = ntk_grams(spec, params, a, b, &[output])?;
    out.copy_from_slice(&grams[0]);
    Ok(())
}

/// [`ntk_gram`] for several outputs at once (one Gram per entry of `outputs`, each
/// `a.rows × b.rows`, row-major), sharing the forward passes and the output-independent
/// products.
pub fn ntk_grams(
    spec: &ModelSpec,
    params: &ParamStore,
    a: Inputs<'_>,
    b: Inputs<'_>,
    outputs: &[usize],
) -> Result<Vec<Vec<f64>>, BackendError> {
    let spec = spec.as_mlp().ok_or_else(|| {
        BackendError::Spec(format!(
            "ntk: the neural-tangent kernel is implemented for MLPs only, this network is a {}",
            spec.kind_name()
        ))
    })?;
    if let Some(&bad) = outputs.iter().find(|&&o| o >= spec.output) {
        return Err(BackendError::shape(
            "ntk output unit",
            format!("< {}", spec.output),
            bad,
        ));
    }
    let net = Weights::new(spec, params)?;
    let ta = net.trace(a)?;
    let tb = net.trace(b)?;
    let (m, n) = (ta.rows, tb.rows);
    let layers = net.layers();
    // H_l^A H_l^Bᵀ + 1 for every layer: independent of the output unit.
    let h_grams: Vec<Vec<f64>> = (0..layers)
        .map(|l| {
            let mut g = gemm_abt(&ta.inputs[l], &tb.inputs[l], m, n, net.widths[l]);
            g.iter_mut().for_each(|v| *v += 1.0);
            g
        })
        .collect();
    let mut grams = Vec::with_capacity(outputs.len());
    for &c in outputs {
        // Output layer: Δ Δᵀ = 1.
        let mut k = h_grams[layers - 1].clone();
        let sa = net.signals(&ta, c);
        let sb = net.signals(&tb, c);
        for l in 0..layers - 1 {
            let d = gemm_abt(&sa[l], &sb[l], m, n, net.widths[l + 1]);
            for ((k, d), h) in k.iter_mut().zip(&d).zip(&h_grams[l]) {
                *k += d * h;
            }
        }
        grams.push(k);
    }
    Ok(grams)
}

/// Products with fewer multiply-adds than this run on one thread.
const SPLIT_MIN_MACS: usize = 1 << 20;

/// `A · Bᵀ` with `A` `m × k` and `B` `n × k`, both row-major: an `m × n` row-major result.
pub(crate) fn gemm_abt(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    // B is n × k row-major, so Bᵀ (k × n) has row stride 1 and column stride k.
    matmul(a, b, m, n, k, (1, k as isize))
}

/// `A · B` with `A` `m × k` and `B` `k × n`, both row-major.
pub(crate) fn gemm_ab(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    matmul(a, b, m, n, k, (n as isize, 1))
}

/// `A (m × k, row-major) · R` where `R` (`k × n`) is read from `b` with strides
/// `(row stride, column stride)`; the rows of the result are cut into two halves computed side
/// by side when the product is large.
fn matmul(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, rs_cs: (isize, isize)) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    if k == 0 {
        return out;
    }
    let (rs, cs) = rs_cs;
    // Internal invariants (every caller passes consistent shapes); they make the unsafe call in
    // `kernel` sound.
    assert!(
        a.len() == m * k && b.len() == k * n && rs > 0 && cs > 0,
        "ntk: inconsistent GEMM operands"
    );
    let max_b = (k - 1) * rs as usize + (n - 1) * cs as usize;
    assert!(max_b < b.len(), "ntk: GEMM operand out of bounds");
    let kernel = |dst: &mut [f64], a: &[f64]| {
        let rows = dst.len() / n;
        if rows == 0 {
            return;
        }
        // SAFETY: `dst` is `rows × n` row-major (row stride n, column stride 1) and uniquely
        // borrowed; `a` holds `rows × k` row-major values (`a.len() == rows * k`, checked by the
        // slicing below); every element of `b` read is `i * rs + j * cs` with `i < k`, `j < n`,
        // which is at most `max_b < b.len()` (asserted above); `dst` cannot alias `a` or `b`
        // (a fresh allocation); strides are small positive values that fit an isize.
        unsafe {
            gemm::gemm(
                rows,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                cs,
                rs,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    // The cut depends on the shapes only (on a one-thread pool `join` runs both halves in
    // turn), so the bits do not depend on the thread count.
    if m >= 2 && m * n * k >= SPLIT_MIN_MACS {
        let half = m / 2;
        let (lo, hi) = out.split_at_mut(half * n);
        let (a_lo, a_hi) = a.split_at(half * k);
        rayon::join(|| kernel(lo, a_lo), || kernel(hi, a_hi));
    } else {
        kernel(&mut out, a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Init, NativeMlp, Network};

    fn spec(hidden: Vec<usize>, activation: Activation) -> MlpSpec {
        MlpSpec {
            input: 5,
            hidden,
            output: 3,
            activation,
            init: Init::TorchDefault,
        }
    }

    fn inputs(rows: usize, cols: usize, salt: u64) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
                ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The explicit Jacobian row `∂f_c(x)/∂θ` of one sample (f32 from the backend's vjp with a
    /// one-hot cotangent), flattened over every tensor, as f64.
    fn jacobian_row(net: &mut NativeMlp, x: &[f32], c: usize) -> Vec<f64> {
        let k = net.spec().output();
        let mut cot = vec![0.0f32; k];
        cot[c] = 1.0;
        net.params_mut().zero_grads();
        net.vjp(Inputs::new(x, 1, x.len()).unwrap(), &cot).unwrap();
        net.params()
            .grads()
            .iter()
            .flatten()
            .map(|&g| f64::from(g))
            .collect()
    }

    fn check_against_jacobians(spec: MlpSpec) {
        let mut net = NativeMlp::new(spec.clone(), 7).unwrap();
        let d = spec.input;
        let (ra, rb) = (4, 3);
        let xa = inputs(ra, d, 1);
        let xb = inputs(rb, d, 2);
        let outputs: Vec<usize> = (0..spec.output).collect();
        let model = ModelSpec::from(spec.clone());
        let grams = ntk_grams(
            &model,
            net.params(),
            Inputs::new(&xa, ra, d).unwrap(),
            Inputs::new(&xb, rb, d).unwrap(),
            &outputs,
        )
        .unwrap();
        for &c in &outputs {
            let ja: Vec<Vec<f64>> = (0..ra)
                .map(|i| jacobian_row(&mut net, &xa[i * d..(i + 1) * d], c))
                .collect();
            let jb: Vec<Vec<f64>> = (0..rb)
                .map(|j| jacobian_row(&mut net, &xb[j * d..(j + 1) * d], c))
                .collect();
            let mut single = vec![0.0; ra * rb];
            ntk_gram(
                &model,
                net.params(),
                Inputs::new(&xa, ra, d).unwrap(),
                Inputs::new(&xb, rb, d).unwrap(),
                c,
                &mut single,
            )
            .unwrap();
            assert_eq!(
                single, grams[c],
                "single-output Gram differs from ntk_grams"
            );
            for i in 0..ra {
                for j in 0..rb {
                    let explicit: f64 = ja[i].iter().zip(&jb[j]).map(|(a, b)| a * b).sum();
                    let got = grams[c][i * rb + j];
                    let tol = 1e-5 * explicit.abs().max(1.0);
                    assert!(
                        (got - explicit).abs() < tol,
                        "{spec:?} output {c} ({i}, {j}): ntk {got} vs J Jᵀ {explicit}"
                    );
                }
            }
        }
    }

    #[test]
    fn gram_equals_explicit_jacobian_products() {
        check_against_jacobians(spec(vec![6, 4], Activation::Relu));
        check_against_jacobians(spec(vec![6, 4], Activation::Tanh));
        check_against_jacobians(spec(vec![4], Activation::Sigmoid));
        check_against_jacobians(spec(vec![7, 5, 4], Activation::Tanh));
        check_against_jacobians(spec(vec![], Activation::Relu));
    }

    #[test]
    fn large_products_split_the_same_way_as_one_thread() {
        // Big enough to take the two-halves path; the result must equal the sequential one.
        let (m, n, k) = (130, 120, 90);
        let a: Vec<f64> = inputs(m, k, 3).iter().map(|&v| f64::from(v)).collect();
        let b: Vec<f64> = inputs(n, k, 4).iter().map(|&v| f64::from(v)).collect();
        let got = gemm_abt(&a, &b, m, n, k);
        for i in [0, 64, 65, 129] {
            for j in [0, 7, 119] {
                let r: f64 = (0..k).map(|t| a[i * k + t] * b[j * k + t]).sum();
                assert!((got[i * n + j] - r).abs() < 1e-12);
            }
        }
        let got2 = gemm_ab(&a, &b[..k * n], m, n, k);
        let r: f64 = (0..k).map(|t| a[5 * k + t] * b[t * n + 3]).sum();
        assert!((got2[5 * n + 3] - r).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_arguments() {
        let m = spec(vec![4], Activation::Relu);
        let s = ModelSpec::from(m.clone());
        let net = NativeMlp::new(m, 1).unwrap();
        let x = inputs(2, 5, 1);
        let xi = Inputs::new(&x, 2, 5).unwrap();
        let mut out = vec![0.0; 4];
        assert!(ntk_gram(&s, net.params(), xi, xi, 3, &mut out).is_err());
        assert!(ntk_gram(&s, net.params(), xi, xi, 0, &mut out[..3]).is_err());
        let bad = Inputs {
            data: &x[..8],
            rows: 2,
            cols: 4,
        };
        assert!(ntk_gram(&s, net.params(), bad, xi, 0, &mut out).is_err());
    }
}

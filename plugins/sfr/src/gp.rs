//! The sparse function-space summary of SFR in f64 (Scannell et al., ICLR 2024), on plain
//! kernel matrices: dual parameters, the inducing-point projection, `Λ = K_zz⁻¹ B_u K_zz⁻¹`, the
//! dual update and the predictive mean and variance.
//!
//! For one output unit with kernel `k` (the NTK scaled by `1 / (δ N)`), inducing inputs `Z`
//! (`M` of them) and data `(x_i, β̂_i, ỹ_i)`:
//!
//! ```text
//! B_u = Σ_i k(Z, x_i) β̂_i k(x_i, Z)        ỹ_u = Σ_i k(Z, x_i) ỹ_i
//! α_u = (K_zz + B_u)⁻¹ ỹ_u
//! μ(x)  = k(x, Z) α_u
//! σ²(x) = k(x, x) − k(x, Z) [K_zz⁻¹ − (K_zz + B_u)⁻¹] k(Z, x)
//! Λ     = K_zz⁻¹ B_u K_zz⁻¹
//! ```
//!
//! The *dual update* adds data to `B_u` and `ỹ_u` ([`OutputSummary::accumulate`]) without
//! retraining the network. Matrices are row-major `Vec<f64>`; Cholesky factorisations (faer)
//! retry with the jitter multiplied by 4 when a pivot is not positive.

use clef_sdk::{bail, ensure, Result};
use faer::linalg::solvers::{Llt, Solve};
use faer::{Accum, Mat, MatRef, Par, Side};
use serde::{Deserialize, Serialize};

/// Cholesky attempts before giving up (the jitter grows 4× each time: up to 4⁹ × the start).
const CHOLESKY_TRIES: usize = 10;

/// Smallest β̂ kept (the official code clips the CE Hessian diagonal at 1e-7).
pub const BETA_MIN: f64 = 1e-7;

/// Per-sample dual parameters of the masked softmax cross-entropy at logits `f` (one row):
/// for every unit `u` of `units`, `β̂_u = max(p_u (1 − p_u), BETA_MIN)` and `ỹ_u = α̂_u + β̂_u f_u`
/// with `α̂ = onehot(target) − p`, `p = softmax(f[units])`. Returns `(β̂, ỹ)` in the order of
/// `units`. `target` must be one of `units`.
pub fn softmax_dual(f: &[f32], units: &[usize], target: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    ensure!(
        units.contains(&target),
        "target {target} is not one of the training units {units:?}"
    );
    let max = units
        .iter()
        .map(|&u| f64::from(f[u]))
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = units
        .iter()
        .map(|&u| (f64::from(f[u]) - max).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    let mut beta = Vec::with_capacity(units.len());
    let mut ytilde = Vec::with_capacity(units.len());
    for (&u, e) in units.iter().zip(&e) {
        let p = e / sum;
        let b = (p * (1.0 - p)).max(BETA_MIN);
        let alpha = if u == target { 1.0 - p } else { -p };
        beta.push(b);
        ytilde.push(alpha + b * f64::from(f[u]));
    }
    Ok((beta, ytilde))
}

/// Dual parameters of a Gaussian likelihood with noise variance `noise_var` at prediction `f`
/// and target `y`: `β̂ = 1/σ²`, `ỹ = (y − f)/σ² + β̂ f = y/σ²`.
pub fn gaussian_dual(f: f64, y: f64, noise_var: f64) -> (f64, f64) {
    let beta = 1.0 / noise_var;
    (beta, (y - f) * beta + beta * f)
}

/// A Cholesky factor with the jitter that made the factorisation succeed.
pub struct Factor {
    llt: Llt<f64>,
    /// Jitter added to the diagonal.
    pub jitter: f64,
}

impl Factor {
    /// Factorises `a + jitter·I` (`a` symmetric, `n × n`), multiplying the jitter by 4 on
    /// failure (up to 10 attempts; a zero jitter starts at 1e-10 after the first failure).
    pub fn new(a: MatRef<'_, f64>, jitter: f64) -> Result<Self> {
        let n = a.nrows();
        let mut j = jitter;
        for _ in 0..CHOLESKY_TRIES {
            let m = Mat::from_fn(n, n, |r, c| a[(r, c)] + if r == c { j } else { 0.0 });
            if let Ok(llt) = m.llt(Side::Lower) {
                return Ok(Self { llt, jitter: j });
            }
            j = if j > 0.0 { 4.0 * j } else { 1e-10 };
        }
        bail!("Cholesky factorisation failed even with jitter {j:e} (non-finite kernel?)")
    }

    /// `A⁻¹ B`.
    pub fn solve(&self, b: MatRef<'_, f64>) -> Mat<f64> {
        self.llt.solve(b)
    }

    /// The lower factor `L` (`A + jitter·I = L Lᵀ`).
    pub fn l(&self) -> MatRef<'_, f64> {
        self.llt.L()
    }
}

/// Row-major `rows × cols` values as a faer matrix.
pub fn mat(values: &[f64], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |r, c| values[r * cols + c])
}

/// A faer matrix as row-major values.
pub fn row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(m.nrows() * m.ncols());
    for r in 0..m.nrows() {
        for c in 0..m.ncols() {
            out.push(m[(r, c)]);
        }
    }
    out
}

/// The function-space summary of one output unit at `M` inducing points (part of the
/// plugin's checkpoint state, every `f64` saved bit for bit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSummary {
    /// Number of inducing points.
    pub m: usize,
    /// `K_zz`, symmetrised, `M × M` row-major (without jitter).
    pub kzz: Vec<f64>,
    /// `B_u = Σ_i k(Z, x_i) β̂_i k(x_i, Z)`, `M × M`.
    pub bu: Vec<f64>,
    /// `ỹ_u = Σ_i k(Z, x_i) ỹ_i`, `M`.
    pub yu: Vec<f64>,
    /// Diagonal jitter added to `K_zz` before factorising (grown ×4 on failure).
    pub jitter: f64,
    /// Diagonal added to `B_u` when forming `Λ` (the official code adds its jitter there;
    /// 0 is the paper's formula).
    pub bu_jitter: f64,
}

impl OutputSummary {
    /// An empty summary (no data yet) with kernel `kzz` (`m × m`, symmetrised here).
    pub fn new(kzz: &[f64], m: usize, jitter: f64) -> Result<Self> {
        ensure!(
            kzz.len() == m * m,
            "K_zz has {} values, expected {m} x {m}",
            kzz.len()
        );
        ensure!(
            kzz.iter().all(|v| v.is_finite()),
            "K_zz has non-finite values"
        );
        let mut sym = vec![0.0; m * m];
        for r in 0..m {
            for c in 0..m {
                sym[r * m + c] = 0.5 * (kzz[r * m + c] + kzz[c * m + r]);
            }
        }
        Ok(Self {
            m,
            kzz: sym,
            bu: vec![0.0; m * m],
            yu: vec![0.0; m],
            jitter,
            bu_jitter: 0.0,
        })
    }

    /// Sets the diagonal added to `B_u` when forming `Λ` ([`OutputSummary::lambda`]).
    pub fn with_bu_jitter(mut self, bu_jitter: f64) -> Self {
        self.bu_jitter = bu_jitter;
        self
    }

    /// Adds `n` data points (the dual update): `kzx` is `k(Z, X)` (`M × n` row-major), `beta`
    /// and `ytilde` their dual parameters for this unit.
    pub fn accumulate(
        &mut self,
        kzx: &[f64],
        n: usize,
        beta: &[f64],
        ytilde: &[f64],
    ) -> Result<()> {
        let m = self.m;
        ensure!(
            kzx.len() == m * n && beta.len() == n && ytilde.len() == n,
            "dual update: k(Z, X) has {} values for {m} x {n}, {} betas, {} pseudo-targets",
            kzx.len(),
            beta.len(),
            ytilde.len()
        );
        let k = mat(kzx, m, n);
        let kb = Mat::from_fn(m, n, |r, c| k[(r, c)] * beta[c]);
        let mut bu = mat(&self.bu, m, m);
        faer::linalg::matmul::matmul(
            bu.as_mut(),
            Accum::Add,
            kb.as_ref(),
            k.as_ref().transpose(),
            1.0,
            Par::Seq,
        );
        // Keep B_u exactly symmetric.
        for r in 0..m {
            for c in 0..m {
                self.bu[r * m + c] = 0.5 * (bu[(r, c)] + bu[(c, r)]);
            }
        }
        for (r, y) in self.yu.iter_mut().enumerate() {
            *y += (0..n).map(|c| k[(r, c)] * ytilde[c]).sum::<f64>();
        }
        Ok(())
    }

    /// `Λ = K_zz⁻¹ (B_u + bu_jitter·I) K_zz⁻¹` (`M × M` row-major, symmetrised), via two
    /// Cholesky solves, and the jitter that `K_zz` needed.
    pub fn lambda(&self) -> Result<(Vec<f64>, f64)> {
        let m = self.m;
        let f = Factor::new(mat(&self.kzz, m, m).as_ref(), self.jitter)?;
        let mut b = mat(&self.bu, m, m);
        for i in 0..m {
            b[(i, i)] += self.bu_jitter;
        }
        let x = f.solve(b.as_ref()); // K⁻¹ B
        let l = f.solve(x.as_ref().transpose()); // K⁻¹ (K⁻¹ B)ᵀ = K⁻¹ B K⁻¹
        let mut out = vec![0.0; m * m];
        for r in 0..m {
            for c in 0..m {
                out[r * m + c] = 0.5 * (l[(r, c)] + l[(c, r)]);
            }
        }
        Ok((out, f.jitter))
    }

    /// The largest eigenvalue of `Λ Q` with `Q = K_zz / scale` (the unscaled NTK at `Z`): the
    /// curvature that `½ (f − f_old)ᵀ Λ (f − f_old)` adds to the loss in parameter space, along
    /// its stiffest direction, for a network linear in its parameters (the Hessian there is
    /// `J_Zᵀ Λ J_Z`, whose non-zero eigenvalues are those of `Λ J_Z J_Zᵀ = Λ Q`). Computed as
    /// the largest eigenvalue of the symmetric `Q^½ Λ Q^½` (from the eigendecomposition of `Q`,
    /// negative rounding-level eigenvalues clamped to 0). Multiply by `τ / M` for the
    /// regulariser's curvature.
    pub fn curvature(&self, lambda: &[f64], scale: f64) -> Result<f64> {
        let m = self.m;
        ensure!(
            lambda.len() == m * m,
            "Λ has {} values, expected {m} x {m}",
            lambda.len()
        );
        ensure!(scale > 0.0, "kernel scale must be positive, got {scale}");
        let q = Mat::from_fn(m, m, |r, c| self.kzz[r * m + c] / scale);
        let Ok(evd) = q.self_adjoint_eigen(Side::Lower) else {
            bail!("the eigendecomposition of K_zz did not converge (non-finite kernel?)")
        };
        let (u, d) = (evd.U(), evd.S());
        // Q^½ = U D^½ Uᵀ ⇒ Q^½ Λ Q^½ has the eigenvalues of D^½ Uᵀ Λ U D^½.
        let root: Vec<f64> = (0..m).map(|i| d[i].max(0.0).sqrt()).collect();
        let ulu = u.transpose() * mat(lambda, m, m) * u;
        let sym = Mat::from_fn(m, m, |r, c| {
            0.5 * root[r] * root[c] * (ulu[(r, c)] + ulu[(c, r)])
        });
        let Ok(eig) = sym.self_adjoint_eigenvalues(Side::Lower) else {
            bail!("the eigenvalues of Q^½ Λ Q^½ did not converge (non-finite Λ?)")
        };
        Ok(eig.last().copied().unwrap_or(0.0).max(0.0))
    }

    /// The posterior for predictions: factors of `K_zz` and `K_zz + B_u`, and `α_u`.
    pub fn posterior(&self) -> Result<Posterior> {
        let m = self.m;
        let kzz = mat(&self.kzz, m, m);
        let kzz_f = Factor::new(kzz.as_ref(), self.jitter)?;
        let kb = Mat::from_fn(m, m, |r, c| kzz[(r, c)] + self.bu[r * m + c]);
        let kb_f = Factor::new(kb.as_ref(), self.jitter)?;
        let alpha = kb_f.solve(Mat::from_fn(m, 1, |r, _| self.yu[r]).as_ref());
        Ok(Posterior {
            m,
            alpha: (0..m).map(|r| alpha[(r, 0)]).collect(),
            kzz: kzz_f,
            kzz_bu: kb_f,
        })
    }
}

/// The sparse GP posterior of one output unit ([`OutputSummary::posterior`]).
pub struct Posterior {
    m: usize,
    /// `α_u = (K_zz + B_u)⁻¹ ỹ_u`.
    pub alpha: Vec<f64>,
    kzz: Factor,
    kzz_bu: Factor,
}

impl Posterior {
    /// Predictive means `μ(x) = k(x, Z) α_u` of `n` points; `kxz` is `k(X, Z)`, `n × M`.
    pub fn mean(&self, kxz: &[f64], n: usize) -> Result<Vec<f64>> {
        let m = self.m;
        ensure!(
            kxz.len() == n * m,
            "k(X, Z) has {} values, expected {n} x {m}",
            kxz.len()
        );
        Ok((0..n)
            .map(|i| {
                kxz[i * m..(i + 1) * m]
                    .iter()
                    .zip(&self.alpha)
                    .map(|(k, a)| k * a)
                    .sum()
            })
            .collect())
    }

    /// Predictive variances `σ²(x) = k(x,x) − k(x,Z)[K_zz⁻¹ − (K_zz + B_u)⁻¹]k(Z,x)` of `n`
    /// points; `kxz` is `k(X, Z)` (`n × M`), `kxx` the `n` values `k(x, x)`.
    pub fn variance(&self, kxz: &[f64], kxx: &[f64]) -> Result<Vec<f64>> {
        let (m, n) = (self.m, kxx.len());
        ensure!(
            kxz.len() == n * m,
            "k(X, Z) has {} values, expected {n} x {m}",
            kxz.len()
        );
        let kzx = Mat::from_fn(m, n, |r, c| kxz[c * m + r]);
        let a = self.kzz.solve(kzx.as_ref());
        let b = self.kzz_bu.solve(kzx.as_ref());
        Ok((0..n)
            .map(|i| {
                let q: f64 = (0..m).map(|r| kzx[(r, i)] * (a[(r, i)] - b[(r, i)])).sum();
                kxx[i] - q
            })
            .collect())
    }
}

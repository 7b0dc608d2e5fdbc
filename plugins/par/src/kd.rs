//! PAR's distillation loss on one old head, as in the official code (`utils.cross_entropy`
//! with `exp = 1/T`): both softmaxes are sharpened by `p^{1/T}` and renormalised (which equals
//! `softmax(z / T)`), the student's is smoothed by `ε / C` and renormalised, and the loss is the
//! cross-entropy, averaged over rows:
//!
//! ```text
//! q_s = softmax(z_s / T),  q_t = softmax(z_t / T)
//! q̃_s = (q_s + ε / C) / (1 + ε)
//! L   = −(1/B) Σ_b Σ_u q_t[b,u] · log q̃_s[b,u]
//! ∂L/∂z_s[b,u] = (1/(B·T)) · q_s[u] · (a[u] − Σ_v q_s[v] a[v]),  a[u] = −q_t[u] / ((1 + ε) q̃_s[u])
//! ```
//!
//! `C` is the number of units of the head (its classes).

/// The smoothing constant of the original code.
pub const EPS: f64 = 1e-5;

fn softmax(z: &[f64], t: f64) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| ((v - m) / t).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Loss and gradient with respect to the student logits. `student` and `teacher` hold `rows`
/// rows of `c` logits (the head's units only).
pub fn kd_loss_grad(
    student: &[f32],
    teacher: &[f32],
    rows: usize,
    c: usize,
    t: f64,
) -> (f64, Vec<f32>) {
    let mut loss = 0.0;
    let mut grad = vec![0f32; rows * c];
    let scale = 1.0 / rows.max(1) as f64;
    for r in 0..rows {
        let zs: Vec<f64> = student[r * c..(r + 1) * c]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let zt: Vec<f64> = teacher[r * c..(r + 1) * c]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let qs = softmax(&zs, t);
        let qt = softmax(&zt, t);
        let smooth: Vec<f64> = qs
            .iter()
            .map(|q| (q + EPS / c as f64) / (1.0 + EPS))
            .collect();
        loss -= qt.iter().zip(&smooth).map(|(p, q)| p * q.ln()).sum::<f64>() * scale;
        let a: Vec<f64> = qt
            .iter()
            .zip(&smooth)
            .map(|(p, q)| -p / ((1.0 + EPS) * q))
            .collect();
        let qa: f64 = qs.iter().zip(&a).map(|(q, a)| q * a).sum();
        for u in 0..c {
            grad[r * c + u] = (scale / t * qs[u] * (a[u] - qa)) as f32;
        }
    }
    (loss, grad)
}

//! The distillation loss and its gradient with respect to the student's logits.

use clef_sdk::{ensure, Result};

/// Knowledge-distillation loss over a set of heads, at a temperature, with a scale.
///
/// For every row `r` and head `H` (a set of output units):
///
/// ```text
/// p = softmax(teacher[r, H] / T)        q = softmax(student[r, H] / T)
/// KD_T(r, H) = −Σ_{u∈H} p_u · log q_u                       (cross-entropy)
/// loss = scale · Σ_r Σ_H KD_T(r, H)
/// d loss / d student[r, u] = scale · (q_u − p_u) / T         (u ∈ H; summed over heads)
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Distillation<'a> {
    /// The heads: sets of output units, one softmax each.
    pub heads: &'a [Vec<usize>],
    /// Temperature `T > 0`.
    pub temperature: f64,
    /// Factor on the summed loss (e.g. `α · T² / rows`).
    pub scale: f64,
}

impl Distillation<'_> {
    /// The loss for `rows × outputs` logits (row-major); **adds** its gradient with respect to
    /// the student's logits into `grad` (same layout). Computed in f64.
    pub fn apply(
        &self,
        teacher: &[f32],
        student: &[f32],
        rows: usize,
        outputs: usize,
        grad: &mut [f32],
    ) -> Result<f64> {
        distillation(self, teacher, student, rows, outputs, grad)
    }
}

fn distillation(
    cfg: &Distillation<'_>,
    teacher: &[f32],
    student: &[f32],
    rows: usize,
    outputs: usize,
    grad: &mut [f32],
) -> Result<f64> {
    let Distillation {
        heads,
        temperature,
        scale,
    } = *cfg;
    let n = rows * outputs;
    ensure!(
        teacher.len() == n && student.len() == n && grad.len() == n,
        "distillation: logits must have rows ({rows}) * outputs ({outputs}) values \
         (teacher {}, student {}, grad {})",
        teacher.len(),
        student.len(),
        grad.len()
    );
    ensure!(
        temperature.is_finite() && temperature > 0.0,
        "distillation: the temperature must be positive, got {temperature}"
    );
    for h in heads {
        ensure!(!h.is_empty(), "distillation: empty head");
        ensure!(
            h.iter().all(|&u| u < outputs),
            "distillation: head {h:?} has units outside 0..{outputs}"
        );
    }
    let width = heads.iter().map(Vec::len).max().unwrap_or(0);
    let (mut p, mut log_q) = (vec![0.0f64; width], vec![0.0f64; width]);
    let mut loss = 0.0;
    for r in 0..rows {
        let t_row = &teacher[r * outputs..(r + 1) * outputs];
        let s_row = &student[r * outputs..(r + 1) * outputs];
        let g_row = &mut grad[r * outputs..(r + 1) * outputs];
        for h in heads {
            let m = h.len();
            log_softmax(t_row, h, temperature, &mut p[..m]);
            p[..m].iter_mut().for_each(|v| *v = v.exp());
            log_softmax(s_row, h, temperature, &mut log_q[..m]);
            for (j, &u) in h.iter().enumerate() {
                loss -= p[j] * log_q[j];
                let q = log_q[j].exp();
                g_row[u] += (scale * (q - p[j]) / temperature) as f32;
            }
        }
    }
    Ok(scale * loss)
}

/// `out[j] = log softmax(logits[units] / t)[j]`, max-shifted.
fn log_softmax(logits: &[f32], units: &[usize], t: f64, out: &mut [f64]) {
    let max = units
        .iter()
        .map(|&u| f64::from(logits[u]) / t)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, &u) in out.iter_mut().zip(units) {
        *o = f64::from(logits[u]) / t - max;
        sum += o.exp();
    }
    let log_sum = sum.ln();
    out.iter_mut().for_each(|o| *o -= log_sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kd(heads: &[Vec<usize>], temperature: f64) -> Distillation<'_> {
        Distillation {
            heads,
            temperature,
            scale: 1.0,
        }
    }

    /// The loss, straight from the formula, in f64 (independent of the implementation).
    fn reference_loss(
        teacher: &[f64],
        student: &[f64],
        rows: usize,
        outputs: usize,
        heads: &[Vec<usize>],
        t: f64,
        scale: f64,
    ) -> f64 {
        let mut loss = 0.0;
        for r in 0..rows {
            for h in heads {
                let zt: Vec<f64> = h.iter().map(|&u| teacher[r * outputs + u] / t).collect();
                let zs: Vec<f64> = h.iter().map(|&u| student[r * outputs + u] / t).collect();
                let st: f64 = zt.iter().map(|v| v.exp()).sum();
                let ss: f64 = zs.iter().map(|v| v.exp()).sum();
                for (a, b) in zt.iter().zip(&zs) {
                    let p = a.exp() / st;
                    let q = b.exp() / ss;
                    loss -= p * q.ln();
                }
            }
        }
        scale * loss
    }

    fn logits(rows: usize, outputs: usize, salt: u32) -> Vec<f32> {
        (0..rows * outputs)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761) ^ salt;
                (h.wrapping_mul(40_503) % 1000) as f32 / 250.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (rows, outputs) = (3, 6);
        let teacher = logits(rows, outputs, 17);
        let student = logits(rows, outputs, 91);
        let t64: Vec<f64> = teacher.iter().map(|&v| f64::from(v)).collect();
        let s64: Vec<f64> = student.iter().map(|&v| f64::from(v)).collect();
        for (heads, t, scale) in [
            // Task-IL: two old heads, a softmax within each; unit 5 (current task) untouched.
            (vec![vec![0, 1], vec![2, 3]], 2.0, 0.7),
            // Class-IL: one softmax over the old units.
            (vec![vec![0, 1, 2, 3, 4]], 2.0, 1.3),
            // Domain-IL: every unit; also another temperature.
            (vec![(0..outputs).collect::<Vec<_>>()], 0.5, 1.0),
        ] {
            let mut grad = vec![0.0f32; rows * outputs];
            let kd = Distillation {
                heads: &heads,
                temperature: t,
                scale,
            };
            let loss = kd
                .apply(&teacher, &student, rows, outputs, &mut grad)
                .unwrap();
            let want = reference_loss(&t64, &s64, rows, outputs, &heads, t, scale);
            assert!(
                (loss - want).abs() < 1e-9 * want.abs().max(1.0),
                "{loss} vs {want}"
            );
            let h = 1e-5;
            for i in 0..rows * outputs {
                let mut plus = s64.clone();
                plus[i] += h;
                let mut minus = s64.clone();
                minus[i] -= h;
                let fd = (reference_loss(&t64, &plus, rows, outputs, &heads, t, scale)
                    - reference_loss(&t64, &minus, rows, outputs, &heads, t, scale))
                    / (2.0 * h);
                let g = f64::from(grad[i]);
                assert!(
                    (g - fd).abs() <= 1e-5 * fd.abs() + 1e-7,
                    "heads {heads:?} T {t}: logit {i}: gradient {g}, finite difference {fd}"
                );
            }
            let in_a_head = |i: usize| heads.iter().any(|h| h.contains(&(i % outputs)));
            for (i, &g) in grad.iter().enumerate() {
                if !in_a_head(i) {
                    assert_eq!(
                        g,
                        0.0,
                        "unit {} outside every head got a gradient",
                        i % outputs
                    );
                }
            }
            assert!(grad.iter().any(|&g| g.abs() > 1e-3), "vacuous check");
        }
    }

    #[test]
    fn gradient_is_added_and_vanishes_when_student_equals_teacher() {
        let teacher = logits(2, 4, 5);
        let mut grad = vec![1.0f32; 8];
        kd(&[vec![0, 1, 2, 3]], 2.0)
            .apply(&teacher, &teacher, 2, 4, &mut grad)
            .unwrap();
        assert!(grad.iter().all(|&g| (g - 1.0).abs() < 1e-6), "{grad:?}");
    }

    #[test]
    fn large_logits_stay_finite() {
        let teacher = [1e4f32, -1e4, 0.0, 3e4];
        let student = [-1e4f32, 1e4, 2e4, 0.0];
        let mut grad = vec![0.0f32; 4];
        let loss = kd(&[vec![0, 1], vec![2, 3]], 2.0)
            .apply(&teacher, &student, 1, 4, &mut grad)
            .unwrap();
        assert!(loss.is_finite() && grad.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut grad = vec![0.0f32; 4];
        let z = [0.0f32; 4];
        assert!(kd(&[vec![4]], 2.0).apply(&z, &z, 1, 4, &mut grad).is_err());
        assert!(kd(&[vec![]], 2.0).apply(&z, &z, 1, 4, &mut grad).is_err());
        assert!(kd(&[vec![0]], 2.0)
            .apply(&z, &z[..3], 1, 4, &mut grad)
            .is_err());
        assert!(kd(&[vec![0]], 0.0).apply(&z, &z, 1, 4, &mut grad).is_err());
    }
}

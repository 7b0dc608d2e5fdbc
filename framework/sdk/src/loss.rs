//! Training losses a strategy computes itself (ABI 1.6 `loss` hook, [`Strategy::loss`]):
//! the batch as the hook sees it ([`LossBatch`]) and the per-row pieces the zoo's losses are
//! made of, each returning its value and adding its gradient with respect to the logits.
//!
//! [`Strategy::loss`]: crate::Strategy::loss

use clef_abi::ClefLossInput;

use crate::error::{Error, Result};

/// The training batch with its training-mode logits, as the `loss` hook receives it: the
/// current task's rows first (`current_rows` of them), then the rows the strategy appended in
/// `before_batch`, in the order it appended them.
#[derive(Debug, Clone, Copy)]
pub struct LossBatch<'a> {
    /// Rows in the batch.
    pub rows: usize,
    /// Logits per row.
    pub num_outputs: usize,
    /// Features per row.
    pub input_dim: usize,
    /// Rows from the current task's stream.
    pub current_rows: usize,
    /// `rows * input_dim` inputs (after augmentation).
    pub x: &'a [f32],
    /// `rows * num_outputs` logits in training mode.
    pub logits: &'a [f32],
    targets: &'a [i64],
    masks: &'a [u8],
}

impl<'a> LossBatch<'a> {
    /// A batch over plugin-side slices (tests; the hook builds it from the host's input).
    /// Checks every length and target.
    pub fn new(
        num_outputs: usize,
        current_rows: usize,
        x: &'a [f32],
        logits: &'a [f32],
        targets: &'a [i64],
        masks: &'a [u8],
    ) -> Result<Self> {
        let rows = targets.len();
        let bad = |what: &str| Err(Error::msg(format!("loss batch: {what}")));
        if num_outputs == 0 || logits.len() != rows * num_outputs {
            return bad(&format!(
                "{} logits for {rows} rows of {num_outputs} outputs",
                logits.len()
            ));
        }
        if masks.len() != logits.len() {
            return bad(&format!(
                "{} mask bytes for {} logits",
                masks.len(),
                logits.len()
            ));
        }
        if current_rows > rows {
            return bad(&format!("{current_rows} current rows of {rows}"));
        }
        let input_dim = x.len().checked_div(rows).unwrap_or(0);
        if input_dim * rows != x.len() {
            return bad(&format!("{} inputs for {rows} rows", x.len()));
        }
        if let Some(r) = targets
            .iter()
            .position(|&t| usize::try_from(t).map_or(true, |t| t >= num_outputs))
        {
            return bad(&format!(
                "target {} of row {r} is not an output",
                targets[r]
            ));
        }
        Ok(LossBatch {
            rows,
            num_outputs,
            input_dim,
            current_rows,
            x,
            logits,
            targets,
            masks,
        })
    }

    /// The host's input, checked.
    ///
    /// # Safety
    /// `input` must be a valid `ClefLossInput` whose arrays hold the lengths it states, valid
    /// for `'a`.
    pub(crate) unsafe fn from_raw(input: &ClefLossInput) -> Result<Self> {
        let count = |v: i64, what: &str| {
            usize::try_from(v).map_err(|_| Error::msg(format!("loss input: negative {what}")))
        };
        let rows = count(input.rows, "rows")?;
        let outs = count(input.num_outputs, "num_outputs")?;
        let dim = count(input.input_dim, "input_dim")?;
        let current = count(input.current_rows, "current_rows")?;
        let n = rows * outs;
        // SAFETY: the host's arrays hold `rows * input_dim`, `rows * num_outputs`, `rows`
        // and `rows * num_outputs` values (caller); empty slices need no pointer.
        let (x, logits, targets, masks) = unsafe {
            (
                slice(input.x, rows * dim),
                slice(input.logits, n),
                slice(input.targets, rows),
                slice(input.masks, n),
            )
        };
        Self::new(outs, current, x, logits, targets, masks)
    }

    /// The target unit of row `r`.
    pub fn target(&self, r: usize) -> usize {
        self.targets[r] as usize
    }

    /// The logits of row `r`.
    pub fn logits_of(&self, r: usize) -> &'a [f32] {
        &self.logits[r * self.num_outputs..(r + 1) * self.num_outputs]
    }

    /// The training mask of row `r` (non-zero = the unit is in the row's softmax).
    pub fn mask_of(&self, r: usize) -> &'a [u8] {
        &self.masks[r * self.num_outputs..(r + 1) * self.num_outputs]
    }

    /// The inputs of row `r`.
    pub fn x_of(&self, r: usize) -> &'a [f32] {
        &self.x[r * self.input_dim..(r + 1) * self.input_dim]
    }

    /// The trainer's default loss over the whole batch: the mean masked softmax
    /// cross-entropy, its gradient written into `cotangent` (`rows * num_outputs`).
    pub fn default_loss(&self, cotangent: &mut [f32]) -> f32 {
        let n = self.rows.max(1) as f64;
        let mut total = 0.0;
        for r in 0..self.rows {
            let k = self.num_outputs;
            total += cross_entropy(
                self.logits_of(r),
                self.target(r),
                |u| self.mask_of(r)[u] != 0,
                1.0 / n,
                &mut cotangent[r * k..(r + 1) * k],
            );
        }
        (total / n) as f32
    }
}

/// # Safety
/// `p` valid for `len` reads during `'a` (unchecked when `len` is 0).
unsafe fn slice<'a, T>(p: *const T, len: usize) -> &'a [T] {
    if len == 0 || p.is_null() {
        &[]
    } else {
        // SAFETY: caller.
        unsafe { std::slice::from_raw_parts(p, len) }
    }
}

/// Softmax cross-entropy of one row over the units `allowed` admits (the others get no mass
/// and no gradient): returns `-log p(target)` and adds `scale * (p - onehot(target))` into
/// `grad`. Computed in f64, max-shifted.
pub fn cross_entropy(
    logits: &[f32],
    target: usize,
    allowed: impl Fn(usize) -> bool,
    scale: f64,
    grad: &mut [f32],
) -> f64 {
    let max = (0..logits.len())
        .filter(|&u| allowed(u))
        .map(|u| f64::from(logits[u]))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = (0..logits.len())
        .filter(|&u| allowed(u))
        .map(|u| (f64::from(logits[u]) - max).exp())
        .sum();
    for u in (0..logits.len()).filter(|&u| allowed(u)) {
        let p = (f64::from(logits[u]) - max).exp() / sum;
        let y = if u == target { 1.0 } else { 0.0 };
        grad[u] += (scale * (p - y)) as f32;
    }
    max + sum.ln() - f64::from(logits[target])
}

/// Binary cross-entropy with logits, summed over the units `allowed` admits: `sum_u
/// -(q_u log σ(z_u) + (1 - q_u) log(1 - σ(z_u)))` for targets `q` in [0, 1]; adds `scale *
/// (σ(z_u) - q_u)` into `grad`. Numerically stable for large |z|.
pub fn binary_cross_entropy(
    logits: &[f32],
    targets: &[f32],
    allowed: impl Fn(usize) -> bool,
    scale: f64,
    grad: &mut [f32],
) -> f64 {
    let mut total = 0.0;
    for u in (0..logits.len()).filter(|&u| allowed(u)) {
        let z = f64::from(logits[u]);
        let q = f64::from(targets[u]);
        // -(q log σ(z) + (1-q) log σ(-z)) = max(z, 0) - q z + log(1 + e^{-|z|})
        total += z.max(0.0) - q * z + (-z.abs()).exp().ln_1p();
        let s = 1.0 / (1.0 + (-z).exp());
        grad[u] += (scale * (s - q)) as f32;
    }
    total
}

/// Squared error `sum_u (z_u - t_u)^2` over all units; adds `scale * 2 (z_u - t_u)` into
/// `grad`.
pub fn squared_error(logits: &[f32], targets: &[f32], scale: f64, grad: &mut [f32]) -> f64 {
    let mut total = 0.0;
    for ((g, &z), &t) in grad.iter_mut().zip(logits).zip(targets) {
        let d = f64::from(z) - f64::from(t);
        total += d * d;
        *g += (scale * 2.0 * d) as f32;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of `f` at `z`.
    fn fd(z: &[f32], f: impl Fn(&[f32]) -> f64) -> Vec<f64> {
        (0..z.len())
            .map(|i| {
                let h = 1e-3f32;
                let mut a = z.to_vec();
                let mut b = z.to_vec();
                a[i] += h;
                b[i] -= h;
                (f(&a) - f(&b)) / (2.0 * f64::from(h))
            })
            .collect()
    }

    #[test]
    fn losses_match_hand_values_and_finite_differences() {
        let z = [0.5f32, -1.0, 2.0, 0.0];
        let mask = |u: usize| u != 3;
        // CE by hand: -log(e^2 / (e^0.5 + e^-1 + e^2)).
        let s = 0.5f64.exp() + (-1.0f64).exp() + 2.0f64.exp();
        let mut g = [0.0f32; 4];
        let v = cross_entropy(&z, 2, mask, 1.0, &mut g);
        assert!((v - (s.ln() - 2.0)).abs() < 1e-12);
        assert_eq!(g[3], 0.0);
        let num = fd(&z, |z| cross_entropy(z, 2, mask, 1.0, &mut [0.0; 4]));
        for u in 0..3 {
            assert!((f64::from(g[u]) - num[u]).abs() < 1e-3, "{g:?} {num:?}");
        }
        // BCE by hand on one unit: z = 2, q = 0.25.
        let q = [0.0f32, 0.0, 0.25, 0.0];
        let mut g = [0.0f32; 4];
        let v = binary_cross_entropy(&z, &q, |u| u == 2, 0.5, &mut g);
        let sig = 1.0 / (1.0 + (-2.0f64).exp());
        assert!((v - (-(0.25 * sig.ln() + 0.75 * (1.0 - sig).ln()))).abs() < 1e-12);
        assert!((f64::from(g[2]) - 0.5 * (sig - 0.25)).abs() < 1e-7);
        let num = fd(&z, |z| {
            binary_cross_entropy(z, &q, |_| true, 1.0, &mut [0.0; 4])
        });
        let mut g = [0.0f32; 4];
        binary_cross_entropy(&z, &q, |_| true, 1.0, &mut g);
        for u in 0..4 {
            assert!((f64::from(g[u]) - num[u]).abs() < 1e-3);
        }
        // Large logits stay finite.
        assert!(
            binary_cross_entropy(&[1e4, -1e4], &[0.0, 1.0], |_| true, 1.0, &mut [0.0; 2])
                .is_finite()
        );
        let t = [1.0f32, 1.0, 1.0, 1.0];
        let mut g = [0.0f32; 4];
        let v = squared_error(&z, &t, 0.25, &mut g);
        assert!((v - (0.25 + 4.0 + 1.0 + 1.0)).abs() < 1e-12);
        assert_eq!(g, [-0.25, -1.0, 0.5, -0.5]);
    }

    #[test]
    fn the_default_loss_is_the_mean_masked_cross_entropy_and_inputs_are_checked() {
        let logits = [1.0f32, 2.0, 0.0, 0.5, -0.5, 3.0];
        let masks = [1u8, 1, 0, 1, 1, 1];
        let b = LossBatch::new(3, 1, &[0.0; 4], &logits, &[1, 2], &masks).unwrap();
        assert_eq!((b.rows, b.input_dim, b.target(1)), (2, 2, 2));
        let mut cot = [0.0f32; 6];
        let v = b.default_loss(&mut cot);
        let mut g = [0.0f32; 3];
        let l0 = cross_entropy(&logits[..3], 1, |u| u < 2, 0.5, &mut g);
        let l1 = cross_entropy(&logits[3..], 2, |_| true, 0.5, &mut [0.0; 3]);
        assert!((f64::from(v) - (l0 + l1) / 2.0).abs() < 1e-6);
        assert_eq!(&cot[..3], &g);
        assert!(LossBatch::new(3, 1, &[0.0; 4], &logits, &[1, 3], &masks).is_err());
        assert!(LossBatch::new(3, 3, &[0.0; 4], &logits, &[1, 2], &masks).is_err());
        assert!(LossBatch::new(3, 1, &[0.0; 4], &logits[..5], &[1, 2], &masks).is_err());
    }
}

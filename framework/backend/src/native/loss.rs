//! The masked, max-shifted softmax cross-entropy and its gradient with respect to the logits.

/// Masked softmax cross-entropy of `logits` (`rows x classes`): writes
/// `(softmax - onehot) * inv_rows` into `dlogits` and returns the summed loss. `allowed(r, c)`
/// tells whether class `c` takes part in row `r`'s softmax; targets were checked to be allowed.
pub(super) fn softmax_cross_entropy(
    logits: &[f32],
    classes: usize,
    targets: &[usize],
    allowed: impl Fn(usize, usize) -> bool,
    inv_rows: f32,
    dlogits: &mut [f32],
) -> f64 {
    let mut total = 0.0f64;
    for (r, (row, drow)) in logits
        .chunks_exact(classes)
        .zip(dlogits.chunks_exact_mut(classes))
        .enumerate()
    {
        // Max-shifted log-sum-exp over the enabled classes (the target is one of them, so
        // there is at least one and `max` is finite unless a logit is infinite).
        let mut max = f32::NEG_INFINITY;
        for (c, &v) in row.iter().enumerate() {
            if allowed(r, c) && v > max {
                max = v;
            }
        }
        let mut sum = 0.0f32;
        for (c, (&v, d)) in row.iter().zip(drow.iter_mut()).enumerate() {
            *d = if allowed(r, c) {
                let e = (v - max).exp();
                sum += e;
                e
            } else {
                0.0
            };
        }
        let t = targets[r];
        total += f64::from(max) + f64::from(sum).ln() - f64::from(row[t]);
        let scale = inv_rows / sum;
        for d in drow.iter_mut() {
            *d *= scale;
        }
        drow[t] -= inv_rows;
    }
    total
}

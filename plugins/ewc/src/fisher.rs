//! The plain math of the Fisher estimate: masked softmax and label sampling.

/// `out[j] = softmax(logits[units])[j]`, computed in f64 (max-shifted, so large logits do
/// not overflow). `out.len()` must equal `units.len()`.
pub fn masked_softmax(logits: &[f32], units: &[usize], out: &mut [f64]) {
    debug_assert_eq!(units.len(), out.len());
    let max = units
        .iter()
        .map(|&u| f64::from(logits[u]))
        .fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, &u) in out.iter_mut().zip(units) {
        *o = (f64::from(logits[u]) - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Index `j` of a categorical distribution `probs` (summing to 1) for a uniform `u` in
/// `[0, 1)`: the first `j` whose cumulative probability exceeds `u`. Rounding leftovers fall
/// on the last index with positive probability.
pub fn sample_categorical(probs: &[f64], u: f64) -> usize {
    let mut cum = 0.0;
    let mut last_positive = 0;
    for (j, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last_positive = j;
        }
        cum += p;
        if u < cum {
            return j;
        }
    }
    last_positive
}

#[cfg(test)]
mod tests {
    use super::*;

    use clef_sdk::rng::SplitMix64;

    #[test]
    fn masked_softmax_ignores_other_units_and_is_stable() {
        let logits = [1.0f32, 1000.0, 2.0, 3.0];
        let mut p = [0.0; 3];
        masked_softmax(&logits, &[0, 2, 3], &mut p);
        let z = [1.0f64, 2.0, 3.0];
        let s: f64 = z.iter().map(|v| v.exp()).sum();
        for (p, z) in p.iter().zip(z) {
            assert!((p - z.exp() / s).abs() < 1e-15);
        }
        let mut q = [0.0; 2];
        masked_softmax(&[1e30, -1e30], &[0, 1], &mut q);
        assert_eq!(q, [1.0, 0.0]);
    }

    #[test]
    fn categorical_sampling_follows_the_cumulative_distribution() {
        let p = [0.2, 0.0, 0.5, 0.3];
        assert_eq!(sample_categorical(&p, 0.0), 0);
        assert_eq!(sample_categorical(&p, 0.1999), 0);
        assert_eq!(sample_categorical(&p, 0.2), 2);
        assert_eq!(sample_categorical(&p, 0.6999), 2);
        assert_eq!(sample_categorical(&p, 0.7), 3);
        // Rounding leftovers never pick a zero-probability unit.
        assert_eq!(sample_categorical(&[0.5, 0.49999, 0.0], 0.999999), 1);
        // Empirical frequencies match.
        let mut rng = SplitMix64::new(7);
        let mut counts = [0usize; 4];
        let n = 200_000;
        for _ in 0..n {
            counts[sample_categorical(&p, rng.f64())] += 1;
        }
        for (c, &p) in counts.iter().zip(&p) {
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (*c as f64 - n as f64 * p).abs() <= 5.0 * sd + 1e-9,
                "{counts:?}"
            );
        }
    }
}

//! `wasserstein`: Wasserstein regularisation towards the initial weight distribution
//! (Lewandowski et al. 2024, arXiv 2406.06811 v1; also the curvature paper, arXiv 2312.00246).
//!
//! Unlike L2 Init, which pulls every weight back to its own initial value, this penalty only
//! asks each layer's *distribution* of weights to stay close to the initial one: any
//! permutation of the initial weights costs nothing. For each regularised tensor `W_l` with
//! `n_l` entries, sorted in ascending order (`W_l(i)` is its i-th smallest entry) and its sorted
//! initial values `W0_l(i)` (cached once when the model is built):
//!
//! ```text
//! penalty(θ) = λ · Σ_l c_l · Σ_i (W_l(i) − W0_l(i))²
//! c_l = 1 ("sum", default: n_l · W₂²)  or  1/n_l ("mean": the squared 2-Wasserstein distance W₂²)
//! gradient:  ∂/∂W_l[argsort(W_l)[i]] = 2λ · c_l · (W_l(i) − W0_l(i))
//! ```
//!
//! In one dimension the optimal transport plan between two equal-size empirical distributions
//! matches them in sorted order, so the sum above is exactly `n_l · W₂²(W_l, W0_l)`. The penalty is
//! piecewise quadratic; its gradient (routed back through the sort) is exact wherever no two
//! weights of a layer are equal, and a valid subgradient at ties (broken by index). Since the
//! sorted matching is optimal, `Σ_i (W_l(i) − W0_l(i))² ≤ Σ_j (W_l[j] − W0_l[j])²`: with
//! `normalize = "sum"` the penalty never exceeds L2 Init's at the same λ.
//!
//! θ0 is the initialisation of the whole run (stored in `on_model_built`, never refreshed at task
//! boundaries), as in the paper, which regularises towards the initial weight distribution.
//! The penalty applies from the first task on.
//!
//! | hyperparameter | default | range | |
//! |---|---|---|---|
//! | `lambda` | 0.01 | [0, 1e12], log scale | penalty strength λ |
//! | `normalize` | `"sum"` | `sum` / `mean` | `c_l` above |
//! | `biases` | false | bool | also regularise each bias vector's distribution |
//!
//! Choices where the sources are silent: the 1/n normalisation is unconfirmed, so `sum` (the
//! form in our method notes, with λ on the same scale as L2 Init's) is the default; only weight
//! matrices are regularised by default, because biases start at zero in clef (their initial
//! distribution is a point mass, so the penalty on them would be a plain `λ‖b‖²`).
//!
//! Cost per step: one sort of each regularised tensor, done as a 3-pass LSD radix sort of
//! (order-preserving 32-bit key, index) pairs, O(n) per tensor.
//!
//! State (`save_state`): the regularised tensor indices and their sorted initial values.

use clef_sdk::tracing::{info, warn};
use clef_sdk::{bail, ensure, Ctx, HParam, Result, Role, Strategy, TaskInfo};
use serde::Deserialize;

use clef_sdk::state::{Reader, Writer};

/// How each layer's sum of squared sorted differences is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// `Σ_i (W(i) − W0(i))²` = n·W₂².
    Sum,
    /// `(1/n) Σ_i (W(i) − W0(i))²` = W₂².
    Mean,
}

/// The validated `hparams` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Penalty strength λ (≥ 0).
    pub lambda: f64,
    /// Per-layer scaling.
    pub normalize: Normalize,
    /// Whether bias vectors are regularised too.
    pub biases: bool,
}

/// One regularised tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Parameter index.
    pub index: usize,
    /// Its initial values, sorted ascending.
    pub sorted_init: Vec<f32>,
}

/// The Wasserstein-to-init strategy.
#[derive(Debug)]
pub struct Wasserstein {
    lambda: f32,
    normalize: Normalize,
    biases: bool,
    /// `None` until the model is built.
    layers: Option<Vec<Layer>>,
    /// The (key, index) pairs of the tensor being sorted.
    keys: Vec<(u32, u32)>,
    /// The radix sort's second buffer.
    scratch: Vec<(u32, u32)>,
}

const MAGIC: &[u8; 8] = b"clefwas\0";
const VERSION: u32 = 1;

/// Order-preserving map of a finite f32 to a u32 (`a < b` ⇔ `key(a) < key(b)`; −0 < +0).
#[inline]
pub fn sort_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Sorts `(key, index)` pairs by key with a stable 3-pass LSD radix sort (11-bit digits, all
/// three histograms counted in one pass), so equal keys keep their input order. `scratch` is
/// resized as needed.
pub fn radix_sort(pairs: &mut Vec<(u32, u32)>, scratch: &mut Vec<(u32, u32)>) {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    const MASK: u32 = (1 << BITS) - 1;
    scratch.clear();
    scratch.resize(pairs.len(), (0, 0));
    let mut counts = vec![[0u32; BUCKETS]; 3];
    for &(k, _) in pairs.iter() {
        counts[0][(k & MASK) as usize] += 1;
        counts[1][((k >> BITS) & MASK) as usize] += 1;
        counts[2][(k >> (2 * BITS)) as usize] += 1;
    }
    for (pass, counts) in counts.iter_mut().enumerate() {
        // Skip a pass where every key has the same digit (common for the high bits).
        if counts.iter().any(|&c| c as usize == pairs.len()) {
            continue;
        }
        let mut offset = 0u32;
        for c in counts.iter_mut() {
            let n = *c;
            *c = offset;
            offset += n;
        }
        let shift = pass as u32 * BITS;
        for &p in pairs.iter() {
            let d = ((p.0 >> shift) & MASK) as usize;
            scratch[counts[d] as usize] = p;
            counts[d] += 1;
        }
        std::mem::swap(pairs, scratch);
    }
}

/// Fills `pairs` with `(sort_key(values[j]), j)` and sorts them; errors on a non-finite value.
pub fn argsort(
    values: &[f32],
    pairs: &mut Vec<(u32, u32)>,
    scratch: &mut Vec<(u32, u32)>,
) -> Result<()> {
    ensure!(
        values.len() < u32::MAX as usize,
        "wasserstein: tensor of {} values is too large",
        values.len()
    );
    pairs.clear();
    let mut finite = true;
    pairs.extend(values.iter().enumerate().map(|(j, &v)| {
        finite &= v.is_finite();
        (sort_key(v), j as u32)
    }));
    ensure!(finite, "wasserstein: non-finite parameter value");
    radix_sort(pairs, scratch);
    Ok(())
}

/// Per-layer scale `c_l`.
pub fn scale(normalize: Normalize, n: usize) -> f64 {
    match normalize {
        Normalize::Sum => 1.0,
        Normalize::Mean => 1.0 / n.max(1) as f64,
    }
}

/// The penalty of one tensor, `λ · c · Σ_i (sorted(values)_i − sorted_init_i)²`, in f64
/// (sorting with `f64::total_cmp`; for tests and diagnostics).
pub fn penalty(lambda: f64, normalize: Normalize, values: &[f64], sorted_init: &[f32]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let sum: f64 = sorted
        .iter()
        .zip(sorted_init)
        .map(|(&w, &w0)| (w - f64::from(w0)).powi(2))
        .sum();
    lambda * scale(normalize, values.len()) * sum
}

/// Adds the penalty's gradient for one tensor to `grad`; `pairs` must be `values` argsorted.
pub fn add_penalty_grad(
    lambda: f32,
    normalize: Normalize,
    values: &[f32],
    sorted_init: &[f32],
    pairs: &[(u32, u32)],
    grad: &mut [f32],
) {
    let c = (2.0 * f64::from(lambda) * scale(normalize, values.len())) as f32;
    for (&(_, j), &w0) in pairs.iter().zip(sorted_init) {
        let j = j as usize;
        grad[j] += c * (values[j] - w0);
    }
}

/// Encodes the plugin state.
pub fn encode_state(layers: Option<&[Layer]>) -> Vec<u8> {
    let mut w = Writer::new(MAGIC, VERSION);
    match layers {
        None => w.u8(0),
        Some(layers) => {
            w.u8(1);
            w.usize(layers.len());
            for l in layers {
                w.usize(l.index);
                w.f32s(&l.sorted_init);
            }
        }
    }
    w.finish()
}

/// Decodes [`encode_state`]'s output.
pub fn decode_state(bytes: &[u8]) -> Result<Option<Vec<Layer>>> {
    let mut r = Reader::new(bytes, MAGIC, VERSION)?;
    let layers = match r.u8()? {
        0 => None,
        1 => {
            let n = r.usize()?;
            // Each layer takes at least 16 bytes, so a corrupt count cannot allocate much.
            ensure!(
                n <= bytes.len() / 16,
                "wasserstein: corrupt layer count {n} in the state"
            );
            let mut layers = Vec::with_capacity(n);
            for _ in 0..n {
                let index = r.usize()?;
                let sorted_init = r.f32s()?;
                ensure!(
                    sorted_init.windows(2).all(|w| w[0] <= w[1]),
                    "wasserstein: the stored initial values of parameter {index} are not sorted"
                );
                layers.push(Layer { index, sorted_init });
            }
            Some(layers)
        }
        other => bail!("wasserstein: invalid flag {other} in the state"),
    };
    r.finish()?;
    Ok(layers)
}

impl Wasserstein {
    /// Stores the sorted initial values of every regularised tensor.
    fn capture(&mut self, ctx: &Ctx<'_>) -> Result<()> {
        let mut layers = Vec::new();
        for (index, p) in ctx.params()?.into_iter().enumerate() {
            let wanted = match p.role {
                Role::Weight => true,
                Role::Bias => self.biases,
                Role::Other(_) => false,
            };
            if !wanted {
                continue;
            }
            let values = ctx.values_ref(index)?;
            argsort(values, &mut self.keys, &mut self.scratch)?;
            let sorted_init = self.keys.iter().map(|&(_, j)| values[j as usize]).collect();
            layers.push(Layer { index, sorted_init });
        }
        info!(
            tensors = layers.len(),
            "stored the sorted initial weight distributions"
        );
        self.layers = Some(layers);
        Ok(())
    }
}

impl Strategy for Wasserstein {
    const NAME: &'static str = "wasserstein";
    const DESCRIPTION: &'static str =
        "Wasserstein regularisation: lambda·Σ_l Σ_i (sort(W_l)_i − sort(W0_l)_i)² towards the initial weight distribution";
    type Config = Config;

    fn hparams() -> Vec<HParam> {
        vec![
            HParam::float(
                "lambda",
                0.01,
                0.0,
                1e12,
                "penalty strength λ in λ·Σ_l c_l·Σ_i (sort(W_l)_i − sort(W0_l)_i)²",
            )
            .log_scale(),
            HParam::choice(
                "normalize",
                "sum",
                &["sum", "mean"],
                "per-layer scale c_l: sum = 1 (n·W₂²), mean = 1/n (W₂²)",
            ),
            HParam::bool(
                "biases",
                false,
                "also regularise each bias vector's distribution (biases start at 0 in clef)",
            ),
        ]
    }

    fn new(config: Config) -> Result<Self> {
        ensure!(
            config.lambda.is_finite() && config.lambda >= 0.0,
            "wasserstein: hyperparameter `lambda` must be finite and >= 0, got {}",
            config.lambda
        );
        Ok(Self {
            lambda: config.lambda as f32,
            normalize: config.normalize,
            biases: config.biases,
            layers: None,
            keys: Vec::new(),
            scratch: Vec::new(),
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.capture(ctx)
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if self.layers.is_none() {
            warn!(
                task = task.task,
                "no on_model_built before this task: using the current weights as θ0"
            );
            self.capture(ctx)?;
        }
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.lambda == 0.0 {
            return Ok(());
        }
        let Some(layers) = &self.layers else {
            bail!("wasserstein: θ0 is not stored (no on_model_built or on_task_start yet)");
        };
        let count = ctx.param_count()?;
        for layer in layers {
            ensure!(
                layer.index < count,
                "wasserstein: parameter {} is stored but the model has {count} tensors",
                layer.index
            );
            let (w, g) = ctx.values_and_grads(layer.index)?;
            ensure!(
                w.len() == layer.sorted_init.len() && g.len() == w.len(),
                "wasserstein: parameter {} has {} values, its stored initial distribution {}",
                layer.index,
                w.len(),
                layer.sorted_init.len()
            );
            argsort(w, &mut self.keys, &mut self.scratch)?;
            add_penalty_grad(
                self.lambda,
                self.normalize,
                w,
                &layer.sorted_init,
                &self.keys,
                g,
            );
        }
        Ok(())
    }

    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        Ok(encode_state(self.layers.as_deref()))
    }

    fn load_state(&mut self, _ctx: &mut Ctx<'_>, state: &[u8]) -> Result<()> {
        self.layers = if state.is_empty() {
            None
        } else {
            decode_state(state)?
        };
        Ok(())
    }
}

clef_sdk::export_plugin!(Wasserstein);

#[cfg(test)]
mod tests {
    use super::*;
    use clef_sdk::abi::{CLEF_ROLE_BIAS, CLEF_ROLE_WEIGHT};
    use clef_sdk::testing::{describe, MockHost, MockParam, MockPlugin};
    use std::ffi::CString;

    fn cfg(lambda: f64, normalize: &str, biases: bool) -> String {
        format!("lambda = {lambda:?}\nnormalize = \"{normalize}\"\nbiases = {biases}")
    }

    /// A tensor built from the mock's own (so that fields the SDK adds later keep their
    /// defaults), with distinct values in a scrambled order.
    fn param(
        template: &MockParam,
        name: &str,
        shape: Vec<usize>,
        role: i32,
        layer: usize,
        salt: usize,
    ) -> MockParam {
        let n: usize = shape.iter().product();
        let mut p = template.clone();
        p.values = (0..n)
            .map(|j| 0.05 * (((j * 7 + salt * 3) % n) as f32 - n as f32 / 2.0) + 0.001 * j as f32)
            .collect();
        p.name = CString::new(name).unwrap();
        p.shape = shape;
        p.role = role;
        p.layer = layer;
        p.grads = vec![0.0; n];
        p.momentum = p.momentum.map(|_| vec![0.0; n]);
        p
    }

    /// A tiny two-layer model: 3 -> 4 -> 2, with non-zero biases.
    fn tiny_host() -> MockHost {
        let mut host = MockHost::new(3, 4, 2);
        let t = host.state().params[0].clone();
        host.state_mut().params = vec![
            param(&t, "layers.0.weight", vec![4, 3], CLEF_ROLE_WEIGHT, 0, 1),
            param(&t, "layers.0.bias", vec![4], CLEF_ROLE_BIAS, 0, 2),
            param(&t, "layers.1.weight", vec![2, 4], CLEF_ROLE_WEIGHT, 1, 3),
            param(&t, "layers.1.bias", vec![2], CLEF_ROLE_BIAS, 1, 4),
        ];
        host
    }

    /// Moves the parameters by a deterministic, irregular amount (large enough to reorder).
    fn perturb(host: &mut MockHost, scale: f32) {
        for (i, p) in host.state_mut().params.iter_mut().enumerate() {
            for (j, v) in p.values.iter_mut().enumerate() {
                *v += scale * ((((i * 13 + j * 5) % 7) as f32 - 3.0) + 0.1 * j as f32);
            }
        }
    }

    #[test]
    fn schema_is_valid() {
        clef_sdk::validate::<Wasserstein>().unwrap();
        // SAFETY: the descriptor the export macro built.
        let info = unsafe { describe(clef_plugin_entry_v1()) };
        assert_eq!(info.name, "wasserstein");
        assert_eq!(info.hparams.len(), 3);
    }

    #[test]
    fn rejects_bad_config_naming_plugin_and_key() {
        let err = MockPlugin::create::<Wasserstein>(&cfg(-1.0, "sum", false)).unwrap_err();
        assert!(
            err.message.contains("wasserstein") && err.message.contains("`lambda`"),
            "{err}"
        );
        assert!(MockPlugin::create::<Wasserstein>(&cfg(1.0, "median", false)).is_err());
        assert!(MockPlugin::create::<Wasserstein>("lambda = 1.0").is_err());
    }

    #[test]
    fn radix_sort_matches_a_comparison_sort() {
        let values: Vec<f32> = (0..5000u32)
            .map(|i| {
                let x = (i.wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32;
                (x - 0.5) * if i % 3 == 0 { 1e-3 } else { 10.0 }
            })
            .chain([0.0, -0.0, 1.0, 1.0, -7.5, f32::MIN_POSITIVE, -f32::MAX])
            .collect();
        let (mut pairs, mut scratch) = (Vec::new(), Vec::new());
        argsort(&values, &mut pairs, &mut scratch).unwrap();
        let mut expected: Vec<u32> = (0..values.len() as u32).collect();
        expected.sort_by(|&a, &b| values[a as usize].total_cmp(&values[b as usize]));
        let got: Vec<u32> = pairs.iter().map(|&(_, j)| j).collect();
        assert_eq!(got, expected, "stable, ascending, ties by index");
        assert!(argsort(&[1.0, f32::NAN], &mut pairs, &mut scratch).is_err());
    }

    #[test]
    fn hand_computed_gradient() {
        // W0 = [0.5, 0.1, 0.2] (sorted 0.1, 0.2, 0.5); W = [3, 1, 2] (sorted 1, 2, 3 at indices
        // 1, 2, 0). Gradient 2λ(W(i) − W0(i)) at argsort: index 1 gets 2λ(1 − 0.1), index 2
        // gets 2λ(2 − 0.2), index 0 gets 2λ(3 − 0.5). λ = 0.5.
        let mut host = MockHost::new(3, 1, 1);
        host.state_mut().params[0].values = vec![0.5, 0.1, 0.2];
        let mut plugin = MockPlugin::create::<Wasserstein>(&cfg(0.5, "sum", false)).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        host.state_mut().params[0].values = vec![3.0, 1.0, 2.0];
        plugin.after_backward(&mut host, 0.0).unwrap();
        let g = &host.state().params[0].grads;
        for (got, want) in g.iter().zip([2.5f32, 0.9, 1.8]) {
            assert!((got - want).abs() < 1e-6, "{g:?}");
        }
        // Biases are not regularised by default.
        assert_eq!(host.state().params[1].grads, vec![0.0]);
        // `mean` divides by n = 3.
        host.state_mut().params[0].grads = vec![0.0; 3];
        let mut mean = MockPlugin::create::<Wasserstein>(&cfg(0.5, "mean", false)).unwrap();
        host.state_mut().params[0].values = vec![0.5, 0.1, 0.2];
        mean.on_model_built(&mut host).unwrap();
        host.state_mut().params[0].values = vec![3.0, 1.0, 2.0];
        mean.after_backward(&mut host, 0.0).unwrap();
        let g = &host.state().params[0].grads;
        for (got, want) in g.iter().zip([2.5f32 / 3.0, 0.3, 0.6]) {
            assert!((got - want).abs() < 1e-6, "{g:?}");
        }
    }

    #[test]
    fn a_permutation_of_the_initial_weights_costs_nothing() {
        let mut host = tiny_host();
        let mut plugin = MockPlugin::create::<Wasserstein>(&cfg(1.0, "sum", true)).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        for p in &mut host.state_mut().params {
            p.values.reverse();
        }
        plugin.after_backward(&mut host, 0.0).unwrap();
        assert!(host.grads().iter().flatten().all(|&g| g == 0.0));
    }

    /// Central finite differences of the f64 penalty against the added gradient, for every
    /// parameter of a two-layer model, in both normalisations, with and without biases.
    #[test]
    fn gradient_matches_finite_differences() {
        for (normalize, biases) in [("sum", false), ("sum", true), ("mean", true)] {
            let lambda = 0.7;
            let mut host = tiny_host();
            let mut plugin =
                MockPlugin::create::<Wasserstein>(&cfg(lambda, normalize, biases)).unwrap();
            plugin.on_model_built(&mut host).unwrap();
            let layers = decode_state(&plugin.save_state(&mut host).unwrap())
                .unwrap()
                .unwrap();
            assert_eq!(layers.len(), if biases { 4 } else { 2 });
            perturb(&mut host, 0.03);
            for p in &mut host.state_mut().params {
                p.grads.iter_mut().for_each(|g| *g = 0.125);
            }
            plugin.after_backward(&mut host, 0.0).unwrap();
            let norm = if normalize == "sum" {
                Normalize::Sum
            } else {
                Normalize::Mean
            };
            let state = host.state();
            let mut nonzero = 0;
            for (i, p) in state.params.iter().enumerate() {
                let layer = layers.iter().find(|l| l.index == i);
                let theta: Vec<f64> = p.values.iter().map(|&v| f64::from(v)).collect();
                let mut sorted = theta.clone();
                sorted.sort_by(f64::total_cmp);
                let gap = sorted
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .fold(f64::INFINITY, f64::min);
                assert!(
                    gap > 1e-3,
                    "param {i}: values too close ({gap}) for the check"
                );
                // The penalty is quadratic between ties; h is far below the smallest gap
                // between two values of a tensor (> 1e-3 here), so the difference is exact up to
                // f64 rounding (~1e-16 / h); the f32 gradient is accurate to ~1e-6 relative.
                let h = 1e-6;
                for j in 0..theta.len() {
                    let added = f64::from(p.grads[j]) - 0.125;
                    let fd = match layer {
                        None => 0.0,
                        Some(l) => {
                            let mut plus = theta.clone();
                            plus[j] += h;
                            let mut minus = theta.clone();
                            minus[j] -= h;
                            (penalty(lambda, norm, &plus, &l.sorted_init)
                                - penalty(lambda, norm, &minus, &l.sorted_init))
                                / (2.0 * h)
                        }
                    };
                    assert!(
                        (added - fd).abs() <= 1e-5 * fd.abs().max(1e-1),
                        "{normalize}/{biases}: param {i}[{j}]: added {added}, fd {fd}"
                    );
                    if fd.abs() > 1e-3 {
                        nonzero += 1;
                    }
                }
            }
            assert!(nonzero > 10, "the check is not vacuous ({nonzero})");
        }
    }

    #[test]
    fn never_exceeds_l2_init() {
        let mut host = tiny_host();
        let init: Vec<Vec<f32>> = host
            .state()
            .params
            .iter()
            .map(|p| p.values.clone())
            .collect();
        let mut plugin = MockPlugin::create::<Wasserstein>(&cfg(1.0, "sum", true)).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        let layers = decode_state(&plugin.save_state(&mut host).unwrap())
            .unwrap()
            .unwrap();
        perturb(&mut host, 0.05);
        for (l, (p, w0)) in layers.iter().zip(host.state().params.iter().zip(&init)) {
            let theta: Vec<f64> = p.values.iter().map(|&v| f64::from(v)).collect();
            let w = penalty(1.0, Normalize::Sum, &theta, &l.sorted_init);
            let l2: f64 = theta
                .iter()
                .zip(w0)
                .map(|(a, &b)| (a - f64::from(b)).powi(2))
                .sum();
            assert!(w <= l2 + 1e-9 && w > 0.0, "{w} vs {l2}");
        }
    }

    #[test]
    fn state_round_trip_and_errors() {
        let mut host = tiny_host();
        let mut plugin = MockPlugin::create::<Wasserstein>(&cfg(2.0, "sum", false)).unwrap();
        let empty = plugin.save_state(&mut host).unwrap();
        assert_eq!(decode_state(&empty).unwrap(), None);
        let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
        assert!(err.message.contains("θ0 is not stored"), "{err}");
        plugin.on_model_built(&mut host).unwrap();
        let saved = plugin.save_state(&mut host).unwrap();

        let mut fresh = MockPlugin::create::<Wasserstein>(&cfg(2.0, "sum", false)).unwrap();
        fresh.load_state(&mut host, &saved).unwrap();
        assert_eq!(fresh.save_state(&mut host).unwrap(), saved);
        perturb(&mut host, 0.02);
        plugin.after_backward(&mut host, 0.0).unwrap();
        let g1 = host.grads();
        for p in &mut host.state_mut().params {
            p.grads.iter_mut().for_each(|g| *g = 0.0);
        }
        fresh.after_backward(&mut host, 0.0).unwrap();
        assert_eq!(host.grads(), g1);

        assert!(fresh
            .load_state(&mut host, &saved[..saved.len() - 1])
            .is_err());
        assert!(fresh.load_state(&mut host, b"garbage!garbage!").is_err());
        // A stored layout that does not fit the model is an error, not a panic.
        let bad = encode_state(Some(&[Layer {
            index: 9,
            sorted_init: vec![0.0],
        }]));
        fresh.load_state(&mut host, &bad).unwrap();
        let err = fresh.after_backward(&mut host, 0.0).unwrap_err();
        assert!(err.message.contains("parameter 9"), "{err}");
        let bad = encode_state(Some(&[Layer {
            index: 0,
            sorted_init: vec![0.0; 5],
        }]));
        fresh.load_state(&mut host, &bad).unwrap();
        assert!(fresh.after_backward(&mut host, 0.0).is_err());
        let unsorted = encode_state(Some(&[Layer {
            index: 0,
            sorted_init: vec![1.0, 0.0],
        }]));
        assert!(fresh.load_state(&mut host, &unsorted).is_err());
        fresh.load_state(&mut host, &[]).unwrap();
        assert_eq!(fresh.save_state(&mut host).unwrap(), empty);
    }
}

//! Tests of the wasserstein plugin: the radix argsort, hand-computed gradients, finite
//! differences of the penalty, the bound by L2 Init, errors; the kit's standard tests.

use super::*;
use clef_sdk::abi::{CLEF_ROLE_BIAS, CLEF_ROLE_BUFFER, CLEF_ROLE_WEIGHT};
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockParam, MockPlugin};
use std::ffi::CString;

clef_sdk::standard_tests!(
    Wasserstein,
    config = "lambda = 0.3\nnormalize = \"mean\"\nbiases = true",
    docs = "../../docs/strategies.md"
);

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
        let layers = kit::saved::<Wasserstein>(&mut plugin, &mut host)
            .layers
            .expect("θ0 stored");
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
    let layers = kit::saved::<Wasserstein>(&mut plugin, &mut host)
        .layers
        .expect("θ0 stored");
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
fn missing_theta0_or_another_models_state_is_an_error_not_a_panic() {
    let mut host = tiny_host();
    let mut plugin = MockPlugin::create::<Wasserstein>(&cfg(2.0, "sum", false)).unwrap();
    assert!(kit::saved::<Wasserstein>(&mut plugin, &mut host)
        .layers
        .is_none());
    let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
    assert!(err.message.contains("θ0 is not stored"), "{err}");

    // The state of other models loaded for the two-layer model: a 5 -> 1 linear model (its
    // weight has 5 values, the model's 12), and one with more tensors than the model.
    let mut small = MockHost::new(5, 1, 1);
    let mut big = tiny_host();
    let t = big.state().params[0].clone();
    big.state_mut().params.push(param(
        &t,
        "layers.2.weight",
        vec![3, 2],
        CLEF_ROLE_WEIGHT,
        2,
        5,
    ));
    for (other, expected) in [
        (
            &mut small,
            "parameter 0 has 12 values, its stored initial distribution 5",
        ),
        (
            &mut big,
            "parameter 4 is stored but the model has 4 tensors",
        ),
    ] {
        let mut p = MockPlugin::create::<Wasserstein>(&cfg(2.0, "sum", false)).unwrap();
        p.on_model_built(other).unwrap();
        let blob = p.save_state(other).unwrap();
        let mut fresh = MockPlugin::create::<Wasserstein>(&cfg(2.0, "sum", false)).unwrap();
        fresh.on_model_built(&mut host).unwrap();
        fresh.load_state(&mut host, &blob).unwrap();
        let err = fresh.after_backward(&mut host, 0.0).unwrap_err();
        assert!(err.message.contains(expected), "{err}");
    }
}

/// A small convolutional model as the host describes one: a `[4, 2, 3, 3]` conv, batch norm
/// (scale at its initial 1, shift, two running-statistic buffers), a `[3, 4, 3, 3]` conv with a
/// bias and a dense head `[3, 36]` with a bias.
fn conv_host() -> MockHost {
    let mut host = MockHost::new(36, 3, 1);
    let t = host.state().params[0].clone();
    let mut scale = param(&t, "norms.0.weight", vec![4], CLEF_ROLE_WEIGHT, 0, 2);
    scale.values = vec![1.0; 4];
    host.state_mut().params = vec![
        param(
            &t,
            "convs.0.weight",
            vec![4, 2, 3, 3],
            CLEF_ROLE_WEIGHT,
            0,
            1,
        ),
        scale,
        param(&t, "norms.0.bias", vec![4], CLEF_ROLE_BIAS, 0, 3),
        param(&t, "norms.0.running_mean", vec![4], CLEF_ROLE_BUFFER, 0, 4),
        param(&t, "norms.0.running_var", vec![4], CLEF_ROLE_BUFFER, 0, 5),
        param(
            &t,
            "convs.1.weight",
            vec![3, 4, 3, 3],
            CLEF_ROLE_WEIGHT,
            1,
            6,
        ),
        param(&t, "convs.1.bias", vec![3], CLEF_ROLE_BIAS, 1, 7),
        param(&t, "layers.0.weight", vec![3, 36], CLEF_ROLE_WEIGHT, 2, 8),
        param(&t, "layers.0.bias", vec![3], CLEF_ROLE_BIAS, 2, 9),
    ];
    host
}

/// On conv tensors: the regularised tensors are the kernels, the norm scale and the head (and
/// the biases and the norm's shift with `biases = true`), never the buffers; the added gradient
/// matches central finite differences of the f64 penalty over every tensor (buffers: zero);
/// the norm scale, whose initial distribution is a point mass at 1, gets `2λ(γ_i − 1)`.
#[test]
fn conv_tensors_gradient_matches_finite_differences_and_buffers_are_skipped() {
    for (normalize, biases) in [("sum", false), ("mean", true)] {
        let lambda = 0.7;
        let mut host = conv_host();
        let mut plugin =
            MockPlugin::create::<Wasserstein>(&cfg(lambda, normalize, biases)).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        let layers = kit::saved::<Wasserstein>(&mut plugin, &mut host)
            .layers
            .expect("θ0 stored");
        let indices: Vec<usize> = layers.iter().map(|l| l.index).collect();
        let want = if biases {
            vec![0, 1, 2, 5, 6, 7, 8]
        } else {
            vec![0, 1, 5, 7]
        };
        assert_eq!(indices, want, "{normalize}/{biases}");
        assert_eq!(layers[1].sorted_init, vec![1.0; 4]);
        perturb(&mut host, 0.03);
        for p in &mut host.state_mut().params {
            p.grads.iter_mut().for_each(|g| *g = 0.125);
        }
        let before = host.grads();
        plugin.after_backward(&mut host, 0.0).unwrap();
        let after = host.grads();
        let norm = if normalize == "sum" {
            Normalize::Sum
        } else {
            Normalize::Mean
        };
        // Values of a tensor are > 1e-3 apart (the helper's construction, and the perturbation
        // of the scale: 1 + 0.03·(((13 + 5j) % 7) − 3 + 0.1j)), so with h = 1e-6 the
        // quadratic pieces do not change and the differences are exact to f64 rounding.
        let loss = |t: &[Vec<f64>]| {
            layers
                .iter()
                .map(|l| penalty(f64::from(lambda as f32), norm, &t[l.index], &l.sorted_init))
                .sum::<f64>()
        };
        kit::assert_grad_matches_fd(&kit::theta(&host), &before, &after, loss, 1e-6, 1e-5);
        for b in [3, 4] {
            assert_eq!(after[b], before[b], "buffer {b}");
        }
        // The scale by hand: 2λ·c·(γ_i − 1), c = 1 (sum) or 1/4 (mean).
        let c = if normalize == "sum" { 1.0 } else { 0.25 };
        for (j, (&g, &v)) in after[1]
            .iter()
            .zip(&host.state().params[1].values)
            .enumerate()
        {
            let want = 0.125 + 2.0 * lambda as f32 * c * (v - 1.0);
            assert!((g - want).abs() < 1e-6, "γ[{j}]: {g} vs {want}");
        }
    }
}

//! Tests of the spectral plugin: hand-computed values, finite differences of the penalty on a
//! two-layer model (the surrogate with the plugin's own `u`, `v`, and the exact penalty with
//! σ from a full SVD), power-iteration convergence against `faer`'s SVD, errors; the kit's
//! standard tests.

use super::*;
use clef_sdk::abi::{CLEF_ROLE_BIAS, CLEF_ROLE_BUFFER, CLEF_ROLE_WEIGHT};
use clef_sdk::kit;
use clef_sdk::rng::SplitMix64;
use clef_sdk::testing::{MockHost, MockParam, MockPlugin};
use std::ffi::CString;

clef_sdk::standard_tests!(
    Spectral,
    config =
        "lambda = 0.5\nk = 1.5\npower_iterations = 2\nbias = \"augmented\"\nnorm_scales = \"none\"",
    docs = "../../docs/strategies.md"
);

fn cfg(lambda: f64, k: f64, iters: usize, bias: &str) -> String {
    format!("lambda = {lambda:?}\nk = {k:?}\npower_iterations = {iters}\nbias = \"{bias}\"")
}

/// Deterministic pseudo-random values in [-1, 1): the first draw of a SplitMix64 stream
/// seeded from `i` (the stream adds its increment γ before drawing, so this is
/// `mix(i·γ + 0x1234_5678)`).
fn noise(i: u64) -> f64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let seed = i
        .wrapping_sub(1)
        .wrapping_mul(GAMMA)
        .wrapping_add(0x1234_5678);
    SplitMix64::new(seed).f64() * 2.0 - 1.0
}

/// A parameter tensor with pseudo-random values, built from the mock's own tensor (so that
/// fields the SDK adds later keep their defaults).
fn param(
    template: &MockParam,
    name: &str,
    shape: Vec<usize>,
    role: i32,
    layer: usize,
    salt: u64,
    scale: f64,
) -> MockParam {
    let n: usize = shape.iter().product();
    let mut p = template.clone();
    p.values = (0..n)
        .map(|j| (scale * noise(salt * 1000 + j as u64)) as f32)
        .collect();
    p.name = CString::new(name).unwrap();
    p.shape = shape;
    p.role = role;
    p.layer = layer;
    p.grads = vec![0.0; n];
    p.momentum = p.momentum.map(|_| vec![0.0; n]);
    p
}

/// A tiny two-layer model, 5 -> 4 -> 3, with σ_max of both weights well away from 1 and
/// non-zero biases.
fn tiny_host() -> MockHost {
    let mut host = MockHost::new(5, 3, 1);
    let t = host.state().params[0].clone();
    host.state_mut().params = vec![
        param(
            &t,
            "layers.0.weight",
            vec![4, 5],
            CLEF_ROLE_WEIGHT,
            0,
            1,
            1.0,
        ),
        param(&t, "layers.0.bias", vec![4], CLEF_ROLE_BIAS, 0, 2, 0.3),
        param(
            &t,
            "layers.1.weight",
            vec![3, 4],
            CLEF_ROLE_WEIGHT,
            1,
            3,
            0.4,
        ),
        param(&t, "layers.1.bias", vec![3], CLEF_ROLE_BIAS, 1, 4, 0.3),
    ];
    host
}

fn zero_grads(host: &mut MockHost) {
    for p in &mut host.state_mut().params {
        p.grads.iter_mut().for_each(|g| *g = 0.0);
    }
}

/// The layers and norm-term biases as the plugin's checkpoint holds them.
fn layers(plugin: &mut MockPlugin, host: &mut MockHost) -> (Vec<Layer>, Vec<usize>) {
    let saved = kit::saved::<Spectral>(plugin, host);
    (saved.layers.expect("set up"), saved.norm_biases)
}

/// Largest singular value of a row-major `rows x cols` f64 matrix, by a full SVD.
fn sigma_max(a: &[f64], rows: usize, cols: usize) -> f64 {
    let m = faer::Mat::<f64>::from_fn(rows, cols, |i, j| a[i * cols + j]);
    m.singular_values().expect("svd")[0]
}

/// The matrix a layer regularises (`[W | b]` when augmented), in f64.
fn layer_matrix(theta: &[Vec<f64>], l: &Layer) -> (Vec<f64>, usize) {
    let w = &theta[l.weight];
    match l.augment {
        None => (w.clone(), l.cols),
        Some(b) => {
            let mut a = Vec::with_capacity(l.rows * (l.cols + 1));
            for i in 0..l.rows {
                a.extend_from_slice(&w[i * l.cols..(i + 1) * l.cols]);
                a.push(theta[b][i]);
            }
            (a, l.cols + 1)
        }
    }
}

/// The penalty in f64. `exact`: σ from a full SVD; otherwise the surrogate `uᵀ A v` with the
/// plugin's stored vectors held fixed.
fn penalty_f64(
    lambda: f64,
    k: f64,
    theta: &[Vec<f64>],
    layers: &[Layer],
    norm_biases: &[usize],
    scales: &[usize],
    exact: bool,
) -> f64 {
    let mut p = 0.0;
    for &s in scales {
        let max = theta[s].iter().fold(0.0f64, |m, x| m.max(x.abs()));
        p += sigma_penalty(lambda, k, max);
    }
    for l in layers {
        let (a, n) = layer_matrix(theta, l);
        let sigma = if exact {
            sigma_max(&a, l.rows, n)
        } else {
            (0..l.rows)
                .map(|i| {
                    (0..n)
                        .map(|j| f64::from(l.u[i]) * a[i * n + j] * f64::from(l.v[j]))
                        .sum::<f64>()
                })
                .sum()
        };
        p += sigma_penalty(lambda, k, sigma);
    }
    for &b in norm_biases {
        p += bias_penalty(lambda, k, theta[b].iter().map(|x| x * x).sum());
    }
    p
}

/// Compares the gradient the plugin added (`after - before`) with central differences of
/// `penalty_f64`, for every parameter; returns the number of clearly non-zero entries.
#[allow(clippy::too_many_arguments)]
fn check_fd(
    host: &MockHost,
    before: &[Vec<f32>],
    lambda: f64,
    k: f64,
    layers: &[Layer],
    norm_biases: &[usize],
    scales: &[usize],
    exact: bool,
    h: f64,
    rel: f64,
) -> usize {
    let after = host.grads();
    let loss = |t: &[Vec<f64>]| penalty_f64(lambda, k, t, layers, norm_biases, scales, exact);
    kit::assert_grad_matches_fd(&kit::theta(host), before, &after, loss, h, rel);
    after
        .iter()
        .zip(before)
        .flat_map(|(a, b)| a.iter().zip(b))
        .filter(|(x, y)| (*x - *y).abs() > 1e-3)
        .count()
}

#[test]
fn power_step_converges_to_the_svd() {
    // Wide, tall and augmented matrices; σ from persistent-vector power iteration after 300
    // steps matches faer's full SVD to f32 accuracy.
    for (rows, cols, augment) in [(7, 5, false), (5, 9, false), (30, 20, false), (6, 4, true)] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| noise(rows as u64 * 7919 + i as u64) as f32)
            .collect();
        let b: Vec<f32> = (0..rows).map(|i| noise(99_000 + i as u64) as f32).collect();
        let a = Matrix {
            w: &w,
            extra: augment.then_some(b.as_slice()),
            rows,
            cols,
        };
        let mut u: Vec<f32> = (0..rows).map(|i| noise(5 + i as u64) as f32).collect();
        let nu = norm(&u) as f32;
        u.iter_mut().for_each(|x| *x /= nu);
        let mut v = vec![0.0; a.n()];
        let mut scratch = vec![0.0; rows];
        let mut sigma = 0.0;
        for _ in 0..300 {
            sigma = power_step(&a, &mut u, &mut v, &mut scratch);
        }
        let dense: Vec<f64> = (0..rows)
            .flat_map(|i| {
                let row = w[i * cols..(i + 1) * cols].iter().map(|&x| f64::from(x));
                row.chain(augment.then(|| f64::from(b[i])))
            })
            .collect();
        let exact = sigma_max(&dense, rows, a.n());
        assert!(
            (f64::from(sigma) - exact).abs() <= 1e-5 * exact,
            "{rows}x{cols} augmented {augment}: power iteration {sigma}, SVD {exact}"
        );
        // u and v are unit vectors with A v = σ u.
        assert!((norm(&u) - 1.0).abs() < 1e-5 && (norm(&v) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn one_step_per_optimizer_step_converges_through_the_plugin() {
    // The weights stay fixed; one power step per after_backward. The singular vectors persist
    // between calls, so σ converges to the SVD's value; a single call with 300 steps agrees.
    let mut host = tiny_host();
    let mut plugin = MockPlugin::create::<Spectral>(&cfg(0.1, 2.0, 1, "none")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    let mut first = Vec::new();
    for step in 0..300 {
        plugin.after_backward(&mut host, 0.0).unwrap();
        if step == 0 {
            first = layers(&mut plugin, &mut host).0;
        }
    }
    let (ls, biases) = layers(&mut plugin, &mut host);
    assert!(biases.is_empty(), "bias = none");
    let mut once = MockPlugin::create::<Spectral>(&cfg(0.1, 2.0, 300, "none")).unwrap();
    once.on_model_built(&mut host).unwrap();
    once.after_backward(&mut host, 0.0).unwrap();
    let (ls_once, _) = layers(&mut once, &mut host);
    let mut moved = false;
    for ((l, l1), l0) in ls.iter().zip(&ls_once).zip(&first) {
        let w: Vec<f64> = host.state().params[l.weight]
            .values
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let exact = sigma_max(&w, l.rows, l.cols);
        for s in [l.sigma, l1.sigma] {
            assert!(
                (f64::from(s) - exact).abs() <= 1e-5 * exact,
                "param {}: {s} vs SVD {exact}",
                l.weight
            );
        }
        // One step from a random start underestimates σ (the test is not vacuous).
        assert!(f64::from(l0.sigma) <= exact * (1.0 + 1e-6));
        moved |= (f64::from(l0.sigma) - exact).abs() > 1e-4 * exact;
    }
    assert!(moved, "the first estimate was already exact");
}

#[test]
fn hand_computed_gradient() {
    // W = diag(2, 0.5): σ = 2, u = ±e1, v = ±e1. k = 2, λ = 0.1:
    // ∂/∂W = 2λ(σ² − 1)·2σ·u vᵀ = 0.2·3·4·e1e1ᵀ = 2.4 at [0, 0].
    // b = (0.3, 0.4): ‖b‖² = 0.25; ∂/∂b = 2kλ‖b‖²·b = 0.4·0.25·b = (0.03, 0.04).
    let mut host = MockHost::new(2, 2, 1);
    host.state_mut().params[0].values = vec![2.0, 0.0, 0.0, 0.5];
    host.state_mut().params[1].values = vec![0.3, 0.4];
    let mut plugin = MockPlugin::create::<Spectral>(&cfg(0.1, 2.0, 50, "norm")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let g = host.grads();
    for (got, want) in g[0].iter().zip([2.4f32, 0.0, 0.0, 0.0]) {
        assert!((got - want).abs() < 1e-5, "{:?}", g[0]);
    }
    for (got, want) in g[1].iter().zip([0.03f32, 0.04]) {
        assert!((got - want).abs() < 1e-7, "{:?}", g[1]);
    }
    // k = 1: ∂/∂W = 2λ(σ − 1)·e1e1ᵀ = 0.2; ∂/∂b = 2λ·b = (0.06, 0.08).
    zero_grads(&mut host);
    let mut k1 = MockPlugin::create::<Spectral>(&cfg(0.1, 1.0, 50, "norm")).unwrap();
    k1.on_model_built(&mut host).unwrap();
    k1.after_backward(&mut host, 0.0).unwrap();
    let g = host.grads();
    assert!((g[0][0] - 0.2).abs() < 1e-6 && g[0][1..].iter().all(|x| x.abs() < 1e-6));
    assert!((g[1][0] - 0.06).abs() < 1e-7 && (g[1][1] - 0.08).abs() < 1e-7);
}

/// The added gradient equals central differences of `λ Σ ((uᵀAv)^k − 1)² + bias term` with the
/// plugin's own `u`, `v`, right after one power step from a random start (not converged).
///
/// Tolerance: the penalty is smooth in θ, so with h = 1e-5 the f64 difference is accurate to
/// ~1e-9; the plugin works in f32 (σ, u, v and the coefficient each to ~1e-6 relative), so a
/// relative error of 2e-4 (absolute 2e-6 below |g| = 0.01) leaves a wide margin for rounding
/// while catching any wrong factor (k, 2, σ^(k−1)) or a wrong index.
#[test]
fn gradient_matches_finite_differences_of_the_surrogate() {
    for (k, bias) in [
        (2.0, "norm"),
        (1.0, "norm"),
        (3.0, "norm"),
        (1.5, "augmented"),
        (2.0, "augmented"),
        (2.0, "none"),
    ] {
        let lambda = 0.3;
        let mut host = tiny_host();
        let mut plugin = MockPlugin::create::<Spectral>(&cfg(lambda, k, 1, bias)).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        for p in &mut host.state_mut().params {
            p.grads.iter_mut().for_each(|g| *g = 0.25);
        }
        let before = host.grads();
        plugin.after_backward(&mut host, 0.0).unwrap();
        let (ls, biases) = layers(&mut plugin, &mut host);
        assert_eq!(
            ls.iter().filter(|l| l.augment.is_some()).count(),
            if bias == "augmented" { 2 } else { 0 }
        );
        assert_eq!(biases.len(), if bias == "norm" { 2 } else { 0 });
        let nonzero = check_fd(
            &host,
            &before,
            lambda,
            k,
            &ls,
            &biases,
            &[],
            false,
            1e-5,
            2e-4,
        );
        assert!(
            nonzero >= 20,
            "k = {k}, {bias}: only {nonzero} non-zero entries"
        );
        if bias == "none" {
            let g = host.grads();
            assert_eq!(g[1], before[1]);
            assert_eq!(g[3], before[3]);
        }
    }
}

/// Once the power iteration has converged, the added gradient is the gradient of the exact
/// penalty `λ Σ (σ_max(A)^k − 1)² + bias term`, with σ_max from a full SVD at θ ± h.
///
/// Tolerance: after 300 steps the singular vectors are converged to f32 accuracy (the gap
/// σ2/σ1 of these matrices makes the error (σ2/σ1)^600 negligible); the SVD is accurate to
/// ~1e-15, so the difference with h = 1e-6 is accurate to ~1e-8. 1e-3 relative covers the
/// f32 arithmetic with a margin and still catches a gradient built from unconverged vectors.
#[test]
fn converged_gradient_matches_finite_differences_of_the_exact_penalty() {
    for (k, bias) in [(2.0, "norm"), (1.0, "augmented"), (2.5, "norm")] {
        let lambda = 0.2;
        let mut host = tiny_host();
        let mut plugin = MockPlugin::create::<Spectral>(&cfg(lambda, k, 1, bias)).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        for _ in 0..299 {
            plugin.after_backward(&mut host, 0.0).unwrap();
        }
        zero_grads(&mut host);
        let before = host.grads();
        plugin.after_backward(&mut host, 0.0).unwrap();
        let (ls, biases) = layers(&mut plugin, &mut host);
        let nonzero = check_fd(
            &host,
            &before,
            lambda,
            k,
            &ls,
            &biases,
            &[],
            true,
            1e-6,
            1e-3,
        );
        assert!(nonzero >= 20, "k = {k}: only {nonzero} non-zero entries");
    }
}

#[test]
fn same_seed_same_gradients() {
    let run = |seed: u64| {
        let mut host = tiny_host();
        host.state_mut().seed = seed;
        let mut plugin = MockPlugin::create::<Spectral>(&cfg(0.5, 2.0, 1, "norm")).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        plugin.after_backward(&mut host, 0.0).unwrap();
        plugin.after_backward(&mut host, 0.0).unwrap();
        host.grads()
    };
    assert_eq!(run(42), run(42));
}

#[test]
fn zero_lambda_adds_nothing_and_zero_matrix_is_safe() {
    let mut host = tiny_host();
    let mut off = MockPlugin::create::<Spectral>(&cfg(0.0, 2.0, 1, "norm")).unwrap();
    off.on_model_built(&mut host).unwrap();
    off.after_backward(&mut host, 0.0).unwrap();
    assert!(host.grads().iter().flatten().all(|&g| g == 0.0));

    // W = 0 and b = 0: σ = 0, no gradient, no NaN.
    for p in &mut host.state_mut().params {
        p.values.iter_mut().for_each(|v| *v = 0.0);
    }
    let mut plugin = MockPlugin::create::<Spectral>(&cfg(1.0, 0.5, 1, "norm")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    plugin.after_backward(&mut host, 0.0).unwrap();
    assert!(host.grads().iter().flatten().all(|&g| g == 0.0));
}

#[test]
fn non_finite_weights_are_an_error_not_a_panic() {
    let mut host = tiny_host();
    let mut plugin = MockPlugin::create::<Spectral>(&cfg(1.0, 2.0, 1, "norm")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    host.state_mut().params[2].values[3] = f32::NAN;
    let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
    assert!(err.message.contains("non-finite"), "{err}");
}

#[test]
fn not_set_up_or_another_models_state_is_an_error_not_a_panic() {
    let mut host = tiny_host();
    let mut plugin = MockPlugin::create::<Spectral>(&cfg(0.5, 2.0, 1, "augmented")).unwrap();
    let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
    assert!(err.message.contains("not set up"), "{err}");
    assert!(kit::saved::<Spectral>(&mut plugin, &mut host)
        .layers
        .is_none());

    // The state of a model with other shapes (a 2 -> 3 linear model) loaded for the 5-4-3 model.
    for bias in ["augmented", "none"] {
        let mut small = MockHost::new(2, 3, 1);
        let mut other = MockPlugin::create::<Spectral>(&cfg(0.5, 2.0, 1, bias)).unwrap();
        other.on_model_built(&mut small).unwrap();
        other.after_backward(&mut small, 0.0).unwrap();
        let blob = other.save_state(&mut small).unwrap();
        let mut fresh = MockPlugin::create::<Spectral>(&cfg(0.5, 2.0, 1, bias)).unwrap();
        fresh.on_model_built(&mut host).unwrap();
        fresh.load_state(&mut host, &blob).unwrap();
        let err = fresh.after_backward(&mut host, 0.0).unwrap_err();
        assert!(
            err.message.starts_with("spectral:") && err.message.contains("expected"),
            "{bias}: {err}"
        );
    }
}

/// A small convolutional model as the host describes one: a `[4, 2, 3, 3]` conv, then either
/// batch norm (scale `[4]` spread around 1, shift, two running-statistic buffers) or the conv's
/// own bias, a second conv `[3, 4, 3, 3]` with a bias, and a dense head `[3, 12]` with a bias.
fn conv_host(norm: bool) -> MockHost {
    let mut host = MockHost::new(12, 3, 1);
    let t = host.state().params[0].clone();
    let mut ps = vec![param(
        &t,
        "convs.0.weight",
        vec![4, 2, 3, 3],
        CLEF_ROLE_WEIGHT,
        0,
        11,
        0.4,
    )];
    if norm {
        let mut scale = param(&t, "norms.0.weight", vec![4], CLEF_ROLE_WEIGHT, 0, 12, 0.4);
        scale.values.iter_mut().for_each(|v| *v += 1.0);
        ps.push(scale);
        ps.push(param(
            &t,
            "norms.0.bias",
            vec![4],
            CLEF_ROLE_BIAS,
            0,
            13,
            0.2,
        ));
        ps.push(param(
            &t,
            "norms.0.running_mean",
            vec![4],
            CLEF_ROLE_BUFFER,
            0,
            14,
            0.5,
        ));
        ps.push(param(
            &t,
            "norms.0.running_var",
            vec![4],
            CLEF_ROLE_BUFFER,
            0,
            15,
            0.5,
        ));
    } else {
        ps.push(param(
            &t,
            "convs.0.bias",
            vec![4],
            CLEF_ROLE_BIAS,
            0,
            16,
            0.3,
        ));
    }
    ps.push(param(
        &t,
        "convs.1.weight",
        vec![3, 4, 3, 3],
        CLEF_ROLE_WEIGHT,
        1,
        17,
        0.3,
    ));
    ps.push(param(
        &t,
        "convs.1.bias",
        vec![3],
        CLEF_ROLE_BIAS,
        1,
        18,
        0.3,
    ));
    ps.push(param(
        &t,
        "layers.0.weight",
        vec![3, 12],
        CLEF_ROLE_WEIGHT,
        2,
        19,
        0.5,
    ));
    ps.push(param(
        &t,
        "layers.0.bias",
        vec![3],
        CLEF_ROLE_BIAS,
        2,
        20,
        0.3,
    ));
    host.state_mut().params = ps;
    host
}

fn cfg_scales(lambda: f64, k: f64, iters: usize, bias: &str, scales: &str) -> String {
    format!(
        "{}\nnorm_scales = \"{scales}\"",
        cfg(lambda, k, iters, bias)
    )
}

fn index(host: &MockHost, name: &str) -> usize {
    host.state()
        .params
        .iter()
        .position(|p| p.name.to_str() == Ok(name))
        .expect("tensor exists")
}

#[test]
fn conv_kernels_are_reshaped_matrices_and_norm_tensors_are_sorted_out() {
    for (norm, bias) in [(true, "norm"), (true, "augmented"), (false, "augmented")] {
        let mut host = conv_host(norm);
        let mut plugin =
            MockPlugin::create::<Spectral>(&cfg_scales(0.3, 2.0, 1, bias, "diagonal")).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        let saved = kit::saved::<Spectral>(&mut plugin, &mut host);
        let ls = saved.layers.expect("set up");
        // Every conv kernel as [out, in·kh·kw], the head as [out, in]; no 1-D weight.
        let shapes: Vec<(usize, usize)> = ls.iter().map(|l| (l.rows, l.cols)).collect();
        assert_eq!(shapes, vec![(4, 18), (3, 36), (3, 12)], "norm {norm}");
        let c0 = index(&host, "convs.0.weight");
        assert_eq!(ls[0].weight, c0);
        if norm {
            assert_eq!(saved.scales, vec![index(&host, "norms.0.weight")]);
            // The norm's shift is never appended to the conv kernel: it gets the norm term.
            assert_eq!(ls[0].augment, None);
            assert!(saved.norm_biases.contains(&index(&host, "norms.0.bias")));
        } else {
            assert!(saved.scales.is_empty());
            assert_eq!(ls[0].augment, Some(index(&host, "convs.0.bias")));
        }
        if bias == "augmented" {
            assert_eq!(ls[1].augment, Some(index(&host, "convs.1.bias")));
            assert_eq!(ls[2].augment, Some(index(&host, "layers.0.bias")));
        }
        // No buffer is in any list.
        let buffers: Vec<usize> = host
            .state()
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role == CLEF_ROLE_BUFFER)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(buffers.len(), if norm { 2 } else { 0 });
        for b in &buffers {
            assert!(!saved.norm_biases.contains(b) && !saved.scales.contains(b));
            assert!(ls.iter().all(|l| l.weight != *b && l.augment != Some(*b)));
        }
    }
}

/// Finite differences on the conv model: the surrogate (one power step, the plugin's own
/// `u`, `v`) and, after 300 steps with the weights fixed, the exact penalty with σ from a full
/// SVD of each reshaped kernel `[out, in·kh·kw]`, plus `λ(max|γ|^k − 1)²` for the norm scale.
/// Buffers keep their gradients. Tolerances as in the two-layer tests above.
#[test]
fn conv_gradient_matches_finite_differences() {
    for (norm, bias, k) in [
        (true, "norm", 2.0),
        (true, "augmented", 1.5),
        (false, "augmented", 2.0),
        (false, "norm", 3.0),
    ] {
        let lambda = 0.3;
        for exact in [false, true] {
            let mut host = conv_host(norm);
            let mut plugin =
                MockPlugin::create::<Spectral>(&cfg_scales(lambda, k, 1, bias, "diagonal"))
                    .unwrap();
            plugin.on_model_built(&mut host).unwrap();
            if exact {
                for _ in 0..300 {
                    plugin.after_backward(&mut host, 0.0).unwrap();
                }
            }
            for p in &mut host.state_mut().params {
                p.grads.iter_mut().for_each(|g| *g = 0.25);
            }
            let before = host.grads();
            plugin.after_backward(&mut host, 0.0).unwrap();
            let saved = kit::saved::<Spectral>(&mut plugin, &mut host);
            let ls = saved.layers.expect("set up");
            let (h, rel) = if exact { (1e-6, 1e-3) } else { (1e-5, 2e-4) };
            let nonzero = check_fd(
                &host,
                &before,
                lambda,
                k,
                &ls,
                &saved.norm_biases,
                &saved.scales,
                exact,
                h,
                rel,
            );
            assert!(
                nonzero >= 100,
                "norm {norm}, {bias}, k {k}: only {nonzero} entries"
            );
            let after = host.grads();
            for (i, p) in host.state().params.iter().enumerate() {
                if p.role == CLEF_ROLE_BUFFER {
                    assert_eq!(after[i], before[i], "buffer {i} got a gradient");
                }
            }
            if norm {
                // The scale's gradient sits on its largest |γ_i| only.
                let s = index(&host, "norms.0.weight");
                let moved = after[s]
                    .iter()
                    .zip(&before[s])
                    .filter(|(a, b)| a != b)
                    .count();
                assert_eq!(moved, 1, "{:?}", after[s]);
            }
        }
    }
}

#[test]
fn norm_scale_term_by_hand() {
    // γ = (1, −2, 0.5): diag(γ) has σ_max = 2 at index 1. k = 2, λ = 0.1:
    // ∂/∂γ_1 = 2λ(σ² − 1)·2σ·sign(γ_1) = 0.2·3·4·(−1) = −2.4; nothing elsewhere.
    let mut host = conv_host(true);
    let s = index(&host, "norms.0.weight");
    host.state_mut().params[s].values = vec![1.0, -2.0, 0.5, 0.0];
    let mut plugin =
        MockPlugin::create::<Spectral>(&cfg_scales(0.1, 2.0, 1, "none", "diagonal")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let g = host.grads();
    assert_eq!(g[s], vec![0.0, -2.4, 0.0, 0.0]);
    // At PyTorch's initialisation (γ = 1) the term is 0; with norm_scales = "none" it is off.
    for (values, mode) in [
        (vec![1.0; 4], "diagonal"),
        (vec![1.0, -2.0, 0.5, 0.0], "none"),
    ] {
        zero_grads(&mut host);
        host.state_mut().params[s].values = values;
        let mut plugin =
            MockPlugin::create::<Spectral>(&cfg_scales(0.1, 2.0, 1, "none", mode)).unwrap();
        plugin.on_model_built(&mut host).unwrap();
        plugin.after_backward(&mut host, 0.0).unwrap();
        assert!(host.grads()[s].iter().all(|&x| x == 0.0), "{mode}");
    }
}

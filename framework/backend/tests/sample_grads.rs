//! `Network::sample_grad_powers` (`Σ_i |J(x_i)ᵀ c_i|^p`, p = 1, 2) against explicit per-row
//! references: on the MLP (both backends) a `vjp` of one row, which is that row's exact
//! gradient; on the convolutional backbones central differences of `c_i · f(x_i)` on the f64
//! reference in evaluation mode (`common/cnn_ref.rs`), and, where there is no batch norm (so
//! training and evaluation mode agree), a `vjp` per row. Also: it adds into the gradients,
//! running statistics and buffers' gradients stay as they were, bad arguments are refused
//! with what was expected, and the result is bit-identical twice and for 1 or 2 threads.

mod common;

use clef_backend::{
    build_network_with, Activation, BackendKind, ConvNetSpec, ConvPool, ImageShape, Init, Inputs,
    ModelSpec, Network, Norm, ParamRole, ResNetSpec,
};
use common::cnn_ref::RefNet;
use common::Rng;

fn img(c: usize, h: usize, w: usize) -> ImageShape {
    ImageShape {
        channels: c,
        height: h,
        width: w,
    }
}

fn convnet(input: ImageShape, channels: &[usize], hidden: &[usize], norm: Norm) -> ModelSpec {
    ModelSpec::ConvNet(ConvNetSpec {
        input,
        channels: channels.to_vec(),
        hidden: hidden.to_vec(),
        output: 3,
        norm,
        activation: Activation::Tanh,
        init: Init::TorchDefault,
        pool: ConvPool::Flatten,
    })
}

fn resnet(input: ImageShape, norm: Norm) -> ModelSpec {
    ModelSpec::ResNet(ResNetSpec {
        input,
        width: 2,
        blocks: [1, 1, 1, 1],
        output: 3,
        norm,
        init: Init::TorchDefault,
    })
}

fn mlp(hidden: &[usize], activation: Activation) -> ModelSpec {
    ModelSpec::Mlp(common::spec(5, hidden, 3, activation))
}

fn pow(v: f64, p: u32) -> f64 {
    if p == 1 {
        v.abs()
    } else {
        v * v
    }
}

/// Every gradient buffer, flattened in store order.
fn grads(net: &dyn Network) -> Vec<f32> {
    net.params().grads().iter().flatten().copied().collect()
}

/// `sample_grad_powers` alone (gradients zeroed first), flattened.
fn powers(net: &mut dyn Network, x: &[f32], rows: usize, cot: &[f32], p: u32) -> Vec<f32> {
    let d = x.len() / rows.max(1);
    net.params_mut().zero_grads();
    net.sample_grad_powers(Inputs::new(x, rows, d).unwrap(), cot, p)
        .unwrap();
    grads(net)
}

/// The reference by one `vjp` per row: `Σ_i |vjp(x_i, c_i)|^p`, in f64, flattened.
fn per_row_vjp(net: &mut dyn Network, x: &[f32], rows: usize, cot: &[f32], p: u32) -> Vec<f64> {
    let d = x.len() / rows;
    let k = cot.len() / rows;
    let mut sums = vec![0.0f64; net.params().numel()];
    for r in 0..rows {
        net.params_mut().zero_grads();
        net.vjp(
            Inputs::new(&x[r * d..(r + 1) * d], 1, d).unwrap(),
            &cot[r * k..(r + 1) * k],
        )
        .unwrap();
        for (s, &g) in sums.iter_mut().zip(grads(net).iter()) {
            *s += pow(f64::from(g), p);
        }
    }
    sums
}

/// The reference by central differences of `c_i · f(x_i)` on the f64 network in evaluation
/// mode, over every tensor (buffers get 0), flattened in store order.
fn fd_reference(
    net: &dyn Network,
    spec: &ModelSpec,
    x: &[f32],
    rows: usize,
    cot: &[f32],
    p: u32,
) -> Vec<f64> {
    let mut r = RefNet::new(spec, net.params());
    r.train = false;
    let k = spec.output();
    let h = 1e-5;
    let dot = |logits: &[f64], row: usize| -> f64 {
        (0..k)
            .map(|c| f64::from(cot[row * k + c]) * logits[row * k + c])
            .sum()
    };
    let mut out = Vec::new();
    for info in net.params().infos() {
        if info.role == ParamRole::Buffer {
            out.extend(std::iter::repeat_n(0.0, info.numel()));
            continue;
        }
        for j in 0..info.numel() {
            let orig = r.p[&info.name][j];
            r.p.get_mut(&info.name).unwrap()[j] = orig + h;
            let (_, up) = r.forward(x, rows);
            r.p.get_mut(&info.name).unwrap()[j] = orig - h;
            let (_, down) = r.forward(x, rows);
            r.p.get_mut(&info.name).unwrap()[j] = orig;
            out.push(
                (0..rows)
                    .map(|i| pow((dot(&up, i) - dot(&down, i)) / (2.0 * h), p))
                    .sum(),
            );
        }
    }
    out
}

fn assert_close(got: &[f32], want: &[f64], abs: f64, rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= abs + rel * w.abs(),
            "{what}: element {i} is {g}, the reference {w}"
        );
    }
}

#[test]
fn mlp_matches_one_vjp_per_row_on_both_backends() {
    let cases = [
        mlp(&[6, 4], Activation::Relu),
        mlp(&[6, 4], Activation::Tanh),
        mlp(&[4], Activation::Sigmoid),
        mlp(&[7, 5, 4], Activation::Tanh),
        mlp(&[], Activation::Relu),
    ];
    for (n, spec) in cases.iter().enumerate() {
        let rows = 6;
        let mut rng = Rng(10 + n as u64);
        let x = rng.vec(rows * 5, 1.0);
        let cot = rng.vec(rows * 3, 1.0);
        let mut results = Vec::new();
        for kind in [BackendKind::Native, BackendKind::Dfdx] {
            let mut net = build_network_with(kind, spec, 3 + n as u64).unwrap();
            for p in [1, 2] {
                let got = powers(net.as_mut(), &x, rows, &cot, p);
                let want = per_row_vjp(net.as_mut(), &x, rows, &cot, p);
                assert!(
                    want.iter().any(|&w| w > 1e-3),
                    "case {n}: a trivial reference"
                );
                assert_close(&got, &want, 1e-6, 1e-5, &format!("case {n} {kind:?} p={p}"));
                results.push(got);
            }
        }
        // Same parameters, same (host-side) computation: the backends agree bit for bit.
        assert_eq!(
            results[0], results[2],
            "case {n}: p=1 differs between backends"
        );
        assert_eq!(
            results[1], results[3],
            "case {n}: p=2 differs between backends"
        );
    }
}

#[test]
fn mlp_matches_the_per_row_loop_across_row_chunks() {
    // More rows than one chunk (1024) of the factorised pass.
    let spec = mlp(&[8], Activation::Tanh);
    let mut net = build_network_with(BackendKind::Native, &spec, 5).unwrap();
    let rows = 1100;
    let mut rng = Rng(77);
    let x = rng.vec(rows * 5, 1.0);
    let cot = rng.vec(rows * 3, 1.0);
    for p in [1, 2] {
        let got = powers(net.as_mut(), &x, rows, &cot, p);
        let want = per_row_vjp(net.as_mut(), &x, rows, &cot, p);
        assert_close(&got, &want, 1e-5, 1e-5, &format!("1100 rows p={p}"));
    }
}

#[test]
fn a_single_row_with_a_one_hot_cotangent_is_the_hand_computed_gradient() {
    // No hidden layer: f(x) = W x + b, so J(x)ᵀ e_c puts x on row c of W and 1 on b_c.
    let spec = mlp(&[], Activation::Relu);
    let mut net = build_network_with(BackendKind::Native, &spec, 1).unwrap();
    let x = [0.5f32, -2.0, 0.0, 1.5, -0.25];
    let cot = [0.0f32, -3.0, 0.0];
    for (p, scale) in [(1, 3.0f32), (2, 9.0)] {
        let got = powers(net.as_mut(), &x, 1, &cot, p);
        let mut want = vec![0.0f32; 3 * 5 + 3];
        for (j, &v) in x.iter().enumerate() {
            want[5 + j] = if p == 1 { v.abs() * 3.0 } else { v * v * 9.0 };
        }
        want[15 + 1] = scale;
        assert_eq!(got, want, "p={p}");
    }
}

#[test]
fn conv_backbones_match_finite_difference_per_sample_gradients() {
    let cases = [
        convnet(img(2, 6, 5), &[3, 4], &[4], Norm::Batch),
        convnet(img(1, 6, 6), &[2, 4, 4], &[], Norm::Group { groups: 2 }),
        convnet(img(1, 5, 5), &[2, 3], &[], Norm::None),
        resnet(img(1, 8, 8), Norm::Batch),
        resnet(img(2, 6, 6), Norm::Group { groups: 2 }),
    ];
    for (n, spec) in cases.iter().enumerate() {
        let mut net = common::random_net(spec, 3 + n as u64, 0.3);
        let d = spec.input_dim();
        let mut rng = Rng(100 + n as u64);
        let rows = 3;
        let x = rng.vec(rows * d, 1.0);
        let cot = rng.vec(rows * 3, 1.0);
        for p in [1, 2] {
            let got = powers(net.as_mut(), &x, rows, &cot, p);
            let want = fd_reference(net.as_ref(), spec, &x, rows, &cot, p);
            assert_close(&got, &want, 1e-4, 1e-3, &format!("case {n} p={p}"));
        }
    }
}

#[test]
fn conv_backbones_without_batch_norm_match_one_vjp_per_row() {
    // Without batch norm, training mode (vjp) and evaluation mode agree.
    let cases = [
        convnet(img(1, 6, 6), &[2, 4, 4], &[5], Norm::Group { groups: 2 }),
        convnet(img(2, 5, 5), &[2, 3], &[], Norm::None),
        resnet(img(2, 6, 6), Norm::Group { groups: 2 }),
    ];
    for (n, spec) in cases.iter().enumerate() {
        let mut net = common::random_net(spec, 20 + n as u64, 0.3);
        let d = spec.input_dim();
        let mut rng = Rng(200 + n as u64);
        let rows = 5;
        let x = rng.vec(rows * d, 1.0);
        let cot = rng.vec(rows * 3, 1.0);
        for p in [1, 2] {
            let got = powers(net.as_mut(), &x, rows, &cot, p);
            let want = per_row_vjp(net.as_mut(), &x, rows, &cot, p);
            assert_close(&got, &want, 1e-6, 1e-5, &format!("case {n} p={p}"));
        }
    }
}

#[test]
fn it_adds_and_leaves_running_statistics_and_buffer_gradients_alone() {
    let cases = [
        mlp(&[4], Activation::Tanh),
        convnet(img(2, 6, 5), &[3, 4], &[4], Norm::Batch),
        resnet(img(1, 8, 8), Norm::Batch),
    ];
    for (n, spec) in cases.iter().enumerate() {
        let mut net = common::random_net(spec, 40 + n as u64, 0.3);
        let d = spec.input_dim();
        let mut rng = Rng(300 + n as u64);
        let rows = 4;
        let x = rng.vec(rows * d, 1.0);
        let cot = rng.vec(rows * 3, 1.0);
        let alone = powers(net.as_mut(), &x, rows, &cot, 2);
        let before: Vec<f32> = (0..net.params().len())
            .flat_map(|i| {
                let g = rng.vec(net.params().grad(i).len(), 1.0);
                net.params_mut().grad_mut(i).copy_from_slice(&g);
                g
            })
            .collect();
        let values = net.params().values().to_vec();
        net.sample_grad_powers(Inputs::new(&x, rows, d).unwrap(), &cot, 2)
            .unwrap();
        assert_eq!(
            net.params().values(),
            &values[..],
            "case {n}: values changed"
        );
        let mut at = 0;
        for (i, info) in net.params().infos().iter().enumerate() {
            let g = net.params().grad(i);
            for (j, &g) in g.iter().enumerate() {
                let want = if info.role == ParamRole::Buffer {
                    before[at + j]
                } else {
                    before[at + j] + alone[at + j]
                };
                assert_eq!(g, want, "case {n}: {}[{j}]", info.name);
            }
            at += g.len();
        }
        let buffers = net
            .params()
            .infos()
            .iter()
            .filter(|i| i.role == ParamRole::Buffer)
            .count();
        assert_eq!(
            buffers > 0,
            n > 0,
            "case {n}: batch norm has running statistics"
        );
    }
}

#[test]
fn bad_arguments_are_refused_with_what_was_expected() {
    for spec in [
        mlp(&[4], Activation::Relu),
        convnet(img(1, 4, 4), &[2, 2], &[], Norm::Batch),
    ] {
        let mut net = common::random_net(&spec, 1, 0.3);
        let d = spec.input_dim();
        let x = Rng(2).vec(2 * d, 1.0);
        let ix = Inputs::new(&x, 2, d).unwrap();
        net.params_mut().zero_grads();
        let e = net
            .sample_grad_powers(ix, &[0.5; 5], 2)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cotangent (one per logit)")
                && e.contains("2 x 3 values")
                && e.contains("got 5"),
            "{e}"
        );
        for p in [0, 3] {
            let e = net
                .sample_grad_powers(ix, &[0.5; 6], p)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("power")
                    && e.contains("1 (absolute values) or 2 (squares)")
                    && e.contains(&format!("got {p}")),
                "{e}"
            );
        }
        let narrow = Inputs::new(&x[..2 * (d - 1)], 2, d - 1).unwrap();
        let e = net
            .sample_grad_powers(narrow, &[0.5; 6], 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("input columns"), "{e}");
        assert!(
            grads(net.as_ref()).iter().all(|&g| g == 0.0),
            "a refused call wrote gradients"
        );
        // Zero rows: nothing to add.
        net.sample_grad_powers(Inputs::new(&[], 0, d).unwrap(), &[], 1)
            .unwrap();
        assert!(grads(net.as_ref()).iter().all(|&g| g == 0.0));
    }
}

#[test]
fn bit_identical_twice_and_for_one_or_two_threads() {
    let cases = [
        // Large enough for the GEMMs' two-halves cut (m · n · k ≥ 2^20).
        ModelSpec::Mlp(common::spec(96, &[128, 64], 10, Activation::Relu)),
        convnet(img(2, 6, 6), &[4, 4], &[8], Norm::Batch),
    ];
    for (n, spec) in cases.iter().enumerate() {
        let d = spec.input_dim();
        let k = spec.output();
        let rows = 300;
        let mut rng = Rng(500 + n as u64);
        let x = rng.vec(rows * d, 1.0);
        let cot = rng.vec(rows * k, 1.0);
        let mut runs = Vec::new();
        for threads in [1, 2, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut net = common::random_net(spec, 9, 0.3);
            runs.push(pool.install(|| powers(net.as_mut(), &x, rows, &cot, 2)));
        }
        assert!(runs[0].iter().any(|&g| g > 0.0));
        assert_eq!(runs[1], runs[2], "case {n}: two runs differ");
        assert_eq!(runs[0], runs[1], "case {n}: 1 and 2 threads differ");
    }
}

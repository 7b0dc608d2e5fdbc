//! Cross-backend conformance: [`NativeMlp`] against [`DfdxMlp`] and against an independent f64
//! reference (naive loops, analytic backpropagation), on architectures larger than the
//! finite-difference tests of `network_conformance.rs` can afford, plus the properties that are
//! specific to the native backend: reuse of its scratch buffers across batch sizes and
//! bit-identical results whatever the size of the thread pool the GEMM runs on.

use clef_backend::{
    build_network, build_network_with, Activation, BackendKind, DfdxMlp, Init, Inputs, MlpSpec,
    NativeMlp, Network, ParamRole,
};

// ---------------------------------------------------------------------------------------------
// helpers

mod common;
use common::{spec, Rng, ACTIVATIONS};

/// Architectures: linear, one, two and three hidden layers, odd widths (not multiples of any
/// SIMD width), and a wide output.
fn archs(activation: Activation) -> Vec<MlpSpec> {
    vec![
        spec(13, &[], 5, activation),
        spec(30, &[64], 10, activation),
        spec(20, &[33, 17], 7, activation),
        spec(50, &[40, 30, 20], 6, activation),
        spec(9, &[11], 37, activation),
    ]
}

/// A native and a dfdx network with the same parameters, biases randomised so that every
/// gradient entry is exercised.
fn pair(spec: &MlpSpec, seed: u64) -> (NativeMlp, DfdxMlp) {
    let mut native = NativeMlp::new(spec.clone(), seed).unwrap();
    let mut dfdx = DfdxMlp::new(spec.clone(), seed).unwrap();
    assert_eq!(
        native.params(),
        dfdx.params(),
        "same seed, same initial bits"
    );
    let mut rng = Rng(seed ^ 0xB1A5);
    for i in 0..native.params().len() {
        if native.params().infos()[i].role == ParamRole::Bias {
            let b = rng.vec(native.params().value(i).len(), 0.5);
            native.params_mut().value_mut(i).copy_from_slice(&b);
            dfdx.params_mut().value_mut(i).copy_from_slice(&b);
        }
    }
    (native, dfdx)
}

fn random_x(spec: &MlpSpec, rows: usize, seed: u64) -> Vec<f32> {
    Rng(seed).vec(rows * spec.input, 1.5)
}

/// Targets drawn from the classes each row's mask allows.
fn random_targets(spec: &MlpSpec, rows: usize, mask: &Mask, seed: u64) -> Vec<usize> {
    let mut rng = Rng(seed);
    (0..rows)
        .map(|r| {
            let allowed: Vec<usize> = (0..spec.output).filter(|&c| mask.on(r, c)).collect();
            allowed[rng.below(allowed.len())]
        })
        .collect()
}

/// The three kinds of class mask.
enum Mask {
    None,
    Shared(Vec<bool>),
    PerRow(Vec<bool>, usize),
}

impl Mask {
    fn shared(classes: usize) -> Self {
        // Every third class off, but never all of them.
        Mask::Shared((0..classes).map(|c| c % 3 != 1).collect())
    }
    fn per_row(rows: usize, classes: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let mut m = Vec::with_capacity(rows * classes);
        for _ in 0..rows {
            let row: Vec<bool> = (0..classes).map(|_| rng.below(2) == 0).collect();
            let any = row.iter().any(|&b| b);
            m.extend(row);
            if !any {
                let len = m.len();
                m[len - classes + rng.below(classes)] = true;
            }
        }
        Mask::PerRow(m, classes)
    }
    fn on(&self, r: usize, c: usize) -> bool {
        match self {
            Mask::None => true,
            Mask::Shared(m) => m[c],
            Mask::PerRow(m, k) => m[r * k + c],
        }
    }
    fn as_slice(&self) -> Option<&[bool]> {
        match self {
            Mask::None => None,
            Mask::Shared(m) | Mask::PerRow(m, _) => Some(m),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the f64 reference: forward, masked cross-entropy, analytic backward

fn act(a: Activation, z: f64) -> f64 {
    match a {
        Activation::Relu => z.max(0.0),
        Activation::Tanh => z.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

/// Derivative of the activation from its output `y = act(z)`.
fn act_grad(a: Activation, y: f64) -> f64 {
    match a {
        Activation::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Tanh => 1.0 - y * y,
        Activation::Sigmoid => y * (1.0 - y),
    }
}

struct Reference {
    /// Layer inputs: `acts[0]` = x, `acts[l]` = output of hidden layer `l - 1`.
    acts: Vec<Vec<f64>>,
    logits: Vec<f64>,
}

fn ref_forward(spec: &MlpSpec, net: &dyn Network, x: &[f32], rows: usize) -> Reference {
    let widths = spec.widths();
    let layers = spec.num_layers();
    let p = net.params();
    let mut acts = vec![x.iter().map(|&v| v as f64).collect::<Vec<_>>()];
    let mut logits = Vec::new();
    for l in 0..layers {
        let (fin, fout) = (widths[l], widths[l + 1]);
        let (w, b) = (p.value(2 * l), p.value(2 * l + 1));
        let h = &acts[l];
        let mut next = vec![0.0f64; rows * fout];
        for r in 0..rows {
            for o in 0..fout {
                let mut s = b[o] as f64;
                for i in 0..fin {
                    s += h[r * fin + i] * w[o * fin + i] as f64;
                }
                next[r * fout + o] = if l + 1 < layers {
                    act(spec.activation, s)
                } else {
                    s
                };
            }
        }
        if l + 1 < layers {
            acts.push(next);
        } else {
            logits = next;
        }
    }
    Reference { acts, logits }
}

/// Mean masked cross-entropy and its gradient with respect to the logits.
fn ref_loss(logits: &[f64], classes: usize, targets: &[usize], mask: &Mask) -> (f64, Vec<f64>) {
    let rows = targets.len();
    let mut loss = 0.0;
    let mut d = vec![0.0; rows * classes];
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let max = (0..classes)
            .filter(|&c| mask.on(r, c))
            .map(|c| row[c])
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..classes)
            .filter(|&c| mask.on(r, c))
            .map(|c| (row[c] - max).exp())
            .sum();
        loss += max + sum.ln() - row[targets[r]];
        for c in (0..classes).filter(|&c| mask.on(r, c)) {
            d[r * classes + c] = (row[c] - max).exp() / sum / rows as f64;
        }
        d[r * classes + targets[r]] -= 1.0 / rows as f64;
    }
    (loss / rows as f64, d)
}

/// Parameter gradients of `sum(logits ⊙ top)`, in ParamStore order.
fn ref_backward(
    spec: &MlpSpec,
    net: &dyn Network,
    fwd: &Reference,
    top: &[f64],
    rows: usize,
) -> Vec<Vec<f64>> {
    let widths = spec.widths();
    let layers = spec.num_layers();
    let p = net.params();
    let mut grads = vec![Vec::new(); 2 * layers];
    let mut d = top.to_vec();
    for l in (0..layers).rev() {
        let (fin, fout) = (widths[l], widths[l + 1]);
        let h = &fwd.acts[l];
        let mut gw = vec![0.0; fout * fin];
        let mut gb = vec![0.0; fout];
        for r in 0..rows {
            for o in 0..fout {
                let dv = d[r * fout + o];
                gb[o] += dv;
                for i in 0..fin {
                    gw[o * fin + i] += dv * h[r * fin + i];
                }
            }
        }
        grads[2 * l] = gw;
        grads[2 * l + 1] = gb;
        if l > 0 {
            let w = p.value(2 * l);
            let mut dh = vec![0.0; rows * fin];
            for r in 0..rows {
                for i in 0..fin {
                    let mut s = 0.0;
                    for o in 0..fout {
                        s += d[r * fout + o] * w[o * fin + i] as f64;
                    }
                    dh[r * fin + i] = s * act_grad(spec.activation, h[r * fin + i]);
                }
            }
            d = dh;
        }
    }
    grads
}

/// Asserts `|got - want| <= tol * (scale + |want|)` elementwise, where `scale` is the largest
/// magnitude in `want` (so tiny entries of a large tensor are judged on the tensor's scale).
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs())).max(1e-3);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (scale + w.abs()),
            "{what}[{i}]: got {g}, want {w} (abs err {err:e}, tensor scale {scale:e})"
        );
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

const TOL: f64 = 2e-5;

// ---------------------------------------------------------------------------------------------
// 1. forward and features

#[test]
fn forward_and_features_match_dfdx_and_reference() {
    for a in ACTIVATIONS {
        for (k, spec) in archs(a).iter().enumerate() {
            for rows in [1, 3, 37] {
                let (mut native, mut dfdx) = pair(spec, 10 + k as u64);
                let x = random_x(spec, rows, 11 + rows as u64);
                let inputs = Inputs::new(&x, rows, spec.input).unwrap();
                let want = ref_forward(spec, &native, &x, rows);
                let what = format!("{a:?} {:?} rows={rows}", spec.widths());

                let (mut ln, mut ld) = (vec![7.0; 3], Vec::new());
                native.forward(inputs, &mut ln).unwrap();
                dfdx.forward(inputs, &mut ld).unwrap();
                assert_close(&format!("{what} native logits"), &ln, &want.logits, TOL);
                assert_close(
                    &format!("{what} native vs dfdx logits"),
                    &ln,
                    &to_f64(&ld),
                    TOL,
                );

                let (mut fnat, mut fdf) = (vec![7.0; 3], Vec::new());
                native.features(inputs, &mut fnat).unwrap();
                dfdx.features(inputs, &mut fdf).unwrap();
                let want_feats = want.acts.last().unwrap();
                assert_close(&format!("{what} native features"), &fnat, want_feats, TOL);
                assert_close(
                    &format!("{what} native vs dfdx feats"),
                    &fnat,
                    &to_f64(&fdf),
                    TOL,
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. loss and gradients, with no mask, a shared mask and per-row masks

fn check_loss_backward(spec: &MlpSpec, rows: usize, mask: &Mask, seed: u64) {
    let (mut native, mut dfdx) = pair(spec, seed);
    let x = random_x(spec, rows, seed + 1);
    let targets = random_targets(spec, rows, mask, seed + 2);
    let inputs = Inputs::new(&x, rows, spec.input).unwrap();

    let fwd = ref_forward(spec, &native, &x, rows);
    let (want_loss, dlogits) = ref_loss(&fwd.logits, spec.output, &targets, mask);
    let want = ref_backward(spec, &native, &fwd, &dlogits, rows);

    let (mut ln, mut ld) = (Vec::new(), Vec::new());
    let loss_n = native
        .loss_backward(inputs, &targets, mask.as_slice(), &mut ln)
        .unwrap();
    let loss_d = dfdx
        .loss_backward(inputs, &targets, mask.as_slice(), &mut ld)
        .unwrap();
    let what = format!("{:?} {:?} rows={rows}", spec.activation, spec.widths());
    assert!(
        (loss_n as f64 - want_loss).abs() <= 1e-5 * (1.0 + want_loss.abs()),
        "{what}: native loss {loss_n} vs reference {want_loss}"
    );
    assert!(
        (loss_n - loss_d).abs() <= 1e-5 * (1.0 + loss_d.abs()),
        "{what}: native loss {loss_n} vs dfdx {loss_d}"
    );
    assert_close(&format!("{what} raw logits"), &ln, &fwd.logits, TOL);
    for (i, info) in native.params().infos().iter().enumerate() {
        let g = native.params().grad(i);
        assert_close(
            &format!("{what} native grad {}", info.name),
            g,
            &want[i],
            TOL,
        );
        let gd = to_f64(dfdx.params().grad(i));
        assert_close(
            &format!("{what} native vs dfdx grad {}", info.name),
            g,
            &gd,
            TOL,
        );
    }
    // Classes masked out everywhere get exactly zero gradient in the output layer.
    let last = 2 * (spec.num_layers() - 1);
    let fin = spec.feature_dim();
    for c in 0..spec.output {
        if (0..rows).all(|r| !mask.on(r, c)) {
            let p = native.params();
            assert!(p.grad(last)[c * fin..(c + 1) * fin]
                .iter()
                .all(|&g| g == 0.0));
            assert_eq!(p.grad(last + 1)[c], 0.0, "{what}: masked class {c} bias");
        }
    }
    assert!(native.params().all_finite());
}

#[test]
fn loss_and_gradients_match_dfdx_and_reference_without_mask() {
    for (s, a) in ACTIVATIONS.iter().enumerate() {
        for (k, spec) in archs(*a).iter().enumerate() {
            for rows in [1, 29] {
                check_loss_backward(spec, rows, &Mask::None, 100 + 10 * s as u64 + k as u64);
            }
        }
    }
}

#[test]
fn loss_and_gradients_match_dfdx_and_reference_with_shared_mask() {
    for (s, a) in ACTIVATIONS.iter().enumerate() {
        for (k, spec) in archs(*a).iter().enumerate() {
            let mask = Mask::shared(spec.output);
            check_loss_backward(spec, 23, &mask, 200 + 10 * s as u64 + k as u64);
        }
    }
}

#[test]
fn loss_and_gradients_match_dfdx_and_reference_with_per_row_masks() {
    for (s, a) in ACTIVATIONS.iter().enumerate() {
        for (k, spec) in archs(*a).iter().enumerate() {
            let rows = 19;
            let seed = 300 + 10 * s as u64 + k as u64;
            let mask = Mask::per_row(rows, spec.output, seed);
            check_loss_backward(spec, rows, &mask, seed);
        }
    }
}

/// The benchmark architecture at realistic batches: long reductions (784 inputs), and batches
/// of 64 rows and more go through the network as two halves (one of odd size for 97 rows)
/// whose gradients are then added.
#[test]
fn mnist_sized_network_matches_dfdx_and_reference() {
    let spec = MlpSpec {
        input: 784,
        hidden: vec![256, 256],
        output: 10,
        activation: Activation::Relu,
        init: Init::TorchDefault,
    };
    check_loss_backward(&spec, 64, &Mask::None, 400);
    check_loss_backward(&spec, 64, &Mask::per_row(64, 10, 401), 402);
    check_loss_backward(&spec, 97, &Mask::per_row(97, 10, 403), 404);
}

// ---------------------------------------------------------------------------------------------
// 3. vjp

#[test]
fn vjp_matches_dfdx_and_reference() {
    for (s, a) in ACTIVATIONS.iter().enumerate() {
        // 17 rows: one block; 71 rows: two halves side by side (35 + 36).
        for (k, (spec, rows)) in archs(*a)
            .iter()
            .flat_map(|spec| [(spec, 17), (spec, 71)])
            .enumerate()
        {
            let seed = 500 + 10 * s as u64 + k as u64;
            let (mut native, mut dfdx) = pair(spec, seed);
            let x = random_x(spec, rows, seed + 1);
            let cot = Rng(seed + 2).vec(rows * spec.output, 1.0);
            let inputs = Inputs::new(&x, rows, spec.input).unwrap();
            let fwd = ref_forward(spec, &native, &x, rows);
            let want = ref_backward(spec, &native, &fwd, &to_f64(&cot), rows);
            native.vjp(inputs, &cot).unwrap();
            dfdx.vjp(inputs, &cot).unwrap();
            let what = format!("{a:?} {:?}", spec.widths());
            for (i, info) in native.params().infos().iter().enumerate() {
                let g = native.params().grad(i);
                assert_close(&format!("{what} vjp {}", info.name), g, &want[i], TOL);
                let gd = to_f64(dfdx.params().grad(i));
                assert_close(&format!("{what} vjp vs dfdx {}", info.name), g, &gd, TOL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. scratch reuse

/// Everything one call sequence produces, as bits.
fn run_all(net: &mut dyn Network, spec: &MlpSpec, rows: usize, seed: u64) -> Vec<Vec<u32>> {
    let x = random_x(spec, rows, seed);
    let mask = Mask::per_row(rows, spec.output, seed + 1);
    let targets = random_targets(spec, rows, &mask, seed + 2);
    let cot = Rng(seed + 3).vec(rows * spec.output, 1.0);
    let inputs = Inputs::new(&x, rows, spec.input).unwrap();
    let (mut logits, mut feats, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    net.params_mut().zero_grads();
    net.forward(inputs, &mut logits).unwrap();
    net.features(inputs, &mut feats).unwrap();
    let loss = net
        .loss_backward(inputs, &targets, mask.as_slice(), &mut raw)
        .unwrap();
    net.vjp(inputs, &cot).unwrap();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let mut out = vec![
        vec![loss.to_bits()],
        bits(&logits),
        bits(&feats),
        bits(&raw),
    ];
    out.extend(net.params().grads().iter().map(|g| bits(g)));
    out
}

/// Batches that shrink and grow again on one network give exactly what a fresh network gives:
/// no stale scratch content leaks into a result.
#[test]
fn scratch_buffers_are_reused_across_batch_sizes_without_leaking_state() {
    for a in ACTIVATIONS {
        let spec = spec(20, &[33, 17], 7, a);
        let mut reused = NativeMlp::new(spec.clone(), 1).unwrap();
        for (step, rows) in [37usize, 5, 1, 64, 2, 37].into_iter().enumerate() {
            let seed = 600 + step as u64;
            let got = run_all(&mut reused, &spec, rows, seed);
            let mut fresh = NativeMlp::new(spec.clone(), 1).unwrap();
            let want = run_all(&mut fresh, &spec, rows, seed);
            assert_eq!(got, want, "{a:?}: batch {rows} after other batch sizes");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. determinism across thread counts

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

/// The GEMM splits the work over rayon's current pool; the results must not depend on its
/// size (the shapes are large enough for every GEMM of the step to be split).
#[test]
fn results_are_bit_identical_for_any_thread_count() {
    let spec = spec(784, &[256, 256], 10, Activation::Relu);
    let rows = 256;
    let reference = in_pool(1, || {
        let mut net = NativeMlp::new(spec.clone(), 9).unwrap();
        run_all(&mut net, &spec, rows, 700)
    });
    for threads in [2, 3, 4] {
        let got = in_pool(threads, || {
            let mut net = NativeMlp::new(spec.clone(), 9).unwrap();
            let first = run_all(&mut net, &spec, rows, 700);
            // ... and the same network again gives the same bits.
            assert_eq!(first, run_all(&mut net, &spec, rows, 700));
            first
        });
        assert_eq!(got, reference, "{threads} threads vs 1 thread");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. training agrees with dfdx, and the factory

/// Twenty SGD steps on each backend from the same initial bits stay close: the two compute the
/// same function, not merely functions with the same gradient at one point.
#[test]
fn sgd_trajectories_of_both_backends_stay_close() {
    use clef_backend::{Optimizer, OptimizerSpec};
    let spec = spec(30, &[64, 32], 10, Activation::Tanh);
    let rows = 32;
    let (mut native, mut dfdx) = pair(&spec, 800);
    let sgd = OptimizerSpec::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
    };
    let mut opt_n = Optimizer::new(sgd.clone(), native.params());
    let mut opt_d = Optimizer::new(sgd, dfdx.params());
    let mut logits = Vec::new();
    for step in 0..20 {
        let x = random_x(&spec, rows, 801 + step);
        let targets = random_targets(&spec, rows, &Mask::None, 901 + step);
        let inputs = Inputs::new(&x, rows, spec.input).unwrap();
        native.params_mut().zero_grads();
        dfdx.params_mut().zero_grads();
        let ln = native
            .loss_backward(inputs, &targets, None, &mut logits)
            .unwrap();
        let ld = dfdx
            .loss_backward(inputs, &targets, None, &mut logits)
            .unwrap();
        assert!((ln - ld).abs() < 1e-4, "step {step}: loss {ln} vs {ld}");
        opt_n.step(native.params_mut());
        opt_d.step(dfdx.params_mut());
    }
    for i in 0..native.params().len() {
        let want = to_f64(dfdx.params().value(i));
        assert_close(
            "params after 20 steps",
            native.params().value(i),
            &want,
            1e-4,
        );
    }
}

#[test]
fn factory_builds_the_requested_backend_from_the_same_bits() {
    let spec = spec(4, &[5], 3, Activation::Relu);
    let default = build_network(&spec, 3).unwrap();
    assert_eq!(default.backend_name(), BackendKind::default().name());
    assert_eq!(BackendKind::default(), BackendKind::Native);
    for kind in BackendKind::ALL {
        let net = build_network_with(kind, &spec, 3).unwrap();
        assert_eq!(net.backend_name(), kind.name());
        assert_eq!(net.params(), default.params());
    }
}

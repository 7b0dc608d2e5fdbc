//! Conformance tests for every MLP backend ([`BackendKind`]) against an independent f64
//! reference. Each test is a function of the backend kind; the `per_backend!` list at the end
//! runs it once per kind (`dfdx::<test>` and `native::<test>`).
//!
//! The reference forward pass below is written with naive loops over the [`ParamStore`] layout
//! (weights `[out, in]` row-major, `h = x · Wᵀ + b`, activation after every hidden layer), and
//! all finite differences are taken on it in f64, so the analytical f32 gradients of the backend
//! are checked against something that shares no code with it.

use clef_backend::{
    build_network, build_network_with, Activation, BackendError, BackendKind, Inputs, MlpSpec,
    Network, Optimizer, OptimizerSpec, ParamInfo, ParamRole, ParamStore,
};

// ---------------------------------------------------------------------------------------------
// helpers

mod common;
use common::{spec, Rng, ACTIVATIONS};

/// A network with randomised (non-zero) biases so every gradient entry is exercised.
fn net_with_random_biases(kind: BackendKind, spec: &MlpSpec, seed: u64) -> Box<dyn Network> {
    let mut net = build_network_with(kind, spec, seed).expect("valid spec");
    let mut rng = Rng(seed ^ 0xB1A5);
    let p = net.params_mut();
    for i in 0..p.len() {
        if p.infos()[i].role == ParamRole::Bias {
            let n = p.value(i).len();
            p.value_mut(i).copy_from_slice(&rng.vec(n, 0.5));
        }
    }
    net
}

fn values_f64(p: &ParamStore) -> Vec<Vec<f64>> {
    p.values()
        .iter()
        .map(|v| v.iter().map(|&x| x as f64).collect())
        .collect()
}

fn act(a: Activation, z: f64) -> f64 {
    match a {
        Activation::Relu => z.max(0.0),
        Activation::Tanh => z.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

/// Naive f64 forward. Returns (logits, penultimate features), both row-major.
fn ref_forward(spec: &MlpSpec, vals: &[Vec<f64>], x: &[f32], rows: usize) -> (Vec<f64>, Vec<f64>) {
    let widths = spec.widths();
    let layers = spec.num_layers();
    let mut h: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut feats = h.clone();
    for l in 0..layers {
        let (fin, fout) = (widths[l], widths[l + 1]);
        let (w, b) = (&vals[2 * l], &vals[2 * l + 1]);
        let mut next = vec![0.0f64; rows * fout];
        for r in 0..rows {
            for o in 0..fout {
                let mut s = b[o];
                for i in 0..fin {
                    s += h[r * fin + i] * w[o * fin + i];
                }
                next[r * fout + o] = if l + 1 < layers {
                    act(spec.activation, s)
                } else {
                    s
                };
            }
        }
        if l + 1 == layers - 1 {
            feats = next.clone();
        }
        h = next;
    }
    if layers == 1 {
        feats = x.iter().map(|&v| v as f64).collect();
    }
    (h, feats)
}

/// Softmax over the classes in `mask` (all classes if None) of one row of logits.
fn ref_softmax(row: &[f64], mask: Option<&[bool]>) -> Vec<f64> {
    let on = |c: usize| mask.is_none_or(|m| m[c]);
    let max = (0..row.len())
        .filter(|&c| on(c))
        .map(|c| row[c])
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = (0..row.len())
        .map(|c| if on(c) { (row[c] - max).exp() } else { 0.0 })
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Mean (masked) softmax cross-entropy, in f64.
fn ref_loss(
    spec: &MlpSpec,
    vals: &[Vec<f64>],
    x: &[f32],
    rows: usize,
    targets: &[usize],
    mask: Option<&[bool]>,
) -> f64 {
    let (logits, _) = ref_forward(spec, vals, x, rows);
    let k = spec.output;
    let mut total = 0.0;
    for r in 0..rows {
        let p = ref_softmax(&logits[r * k..(r + 1) * k], mask);
        total -= p[targets[r]].ln();
    }
    total / rows as f64
}

/// Central finite differences of `f` with respect to every parameter value.
fn finite_diff(vals: &[Vec<f64>], f: impl Fn(&[Vec<f64>]) -> f64) -> Vec<Vec<f64>> {
    let h = 1e-6;
    let mut v = vals.to_vec();
    let mut out = Vec::new();
    for t in 0..vals.len() {
        let mut g = vec![0.0; vals[t].len()];
        for k in 0..vals[t].len() {
            let orig = v[t][k];
            v[t][k] = orig + h;
            let up = f(&v);
            v[t][k] = orig - h;
            let down = f(&v);
            v[t][k] = orig;
            g[k] = (up - down) / (2.0 * h);
        }
        out.push(g);
    }
    out
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise, reporting the worst entry.
fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: got {g}, want {w} (abs err {err:e})"
        );
    }
}

fn random_problem(spec: &MlpSpec, rows: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = Rng(seed);
    let x = rng.vec(rows * spec.input, 1.5);
    let targets = (0..rows).map(|_| rng.below(spec.output)).collect();
    (x, targets)
}

fn grads_of(net: &dyn Network) -> Vec<Vec<f32>> {
    net.params().grads().to_vec()
}

/// Architectures exercised by the numerical tests: linear, one and two hidden layers.
fn archs(activation: Activation) -> Vec<MlpSpec> {
    vec![
        spec(4, &[5], 3, activation),
        spec(4, &[5, 6], 3, activation),
        spec(4, &[], 3, activation),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. gradient check of loss_backward

fn check_loss_gradients(kind: BackendKind, spec: &MlpSpec, mask: Option<&[bool]>, seed: u64) {
    let rows = 7;
    let mut net = net_with_random_biases(kind, spec, seed);
    let (x, mut targets) = random_problem(spec, rows, seed + 1);
    if let Some(m) = mask {
        let allowed: Vec<usize> = (0..spec.output).filter(|&c| m[c]).collect();
        for (r, t) in targets.iter_mut().enumerate() {
            *t = allowed[r % allowed.len()];
        }
    }
    let vals = values_f64(net.params());
    let inputs = Inputs::new(&x, rows, spec.input).unwrap();
    let mut logits = Vec::new();
    let loss = net
        .loss_backward(inputs, &targets, mask, &mut logits)
        .unwrap();

    let want_loss = ref_loss(spec, &vals, &x, rows, &targets, mask);
    assert!(
        (loss as f64 - want_loss).abs() <= 1e-5 * (1.0 + want_loss.abs()),
        "{spec:?} mask={mask:?}: loss {loss} vs reference {want_loss}"
    );
    let fd = finite_diff(&vals, |v| ref_loss(spec, v, &x, rows, &targets, mask));
    for (i, info) in net.params().infos().iter().enumerate() {
        assert_close(
            &format!(
                "{:?} {:?} grad {}",
                spec.activation,
                spec.widths(),
                info.name
            ),
            net.params().grad(i),
            &fd[i],
            2e-5,
            1e-3,
        );
    }
    // The gradient must not be trivially zero.
    assert!(net
        .params()
        .grads()
        .iter()
        .flatten()
        .any(|g| g.abs() > 1e-3));
}

fn loss_gradients_match_finite_differences(kind: BackendKind) {
    for (s, a) in ACTIVATIONS.iter().enumerate() {
        for (k, spec) in archs(*a).iter().enumerate() {
            check_loss_gradients(kind, spec, None, 100 + 10 * s as u64 + k as u64);
        }
    }
}

fn masked_loss_gradients_match_finite_differences(kind: BackendKind) {
    let mask = [true, false, true];
    for (s, a) in ACTIVATIONS.iter().enumerate() {
        for (k, spec) in archs(*a).iter().enumerate() {
            check_loss_gradients(kind, spec, Some(&mask), 200 + 10 * s as u64 + k as u64);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. forward and features against the reference

fn forward_and_features_match_reference(kind: BackendKind) {
    for a in ACTIVATIONS {
        for spec in archs(a).into_iter().chain([spec(9, &[17, 13], 6, a)]) {
            let rows = 11;
            let mut net = net_with_random_biases(kind, &spec, 7);
            let (x, _) = random_problem(&spec, rows, 8);
            let (want_logits, want_feats) = ref_forward(&spec, &values_f64(net.params()), &x, rows);
            let inputs = Inputs::new(&x, rows, spec.input).unwrap();
            let mut logits = vec![123.0; 2]; // stale content must be replaced
            net.forward(inputs, &mut logits).unwrap();
            assert_eq!(logits.len(), rows * spec.output);
            assert_close("logits", &logits, &want_logits, 1e-5, 1e-5);
            let mut feats = Vec::new();
            net.features(inputs, &mut feats).unwrap();
            assert_eq!(feats.len(), rows * spec.feature_dim());
            assert_close("features", &feats, &want_feats, 1e-5, 1e-5);
        }
    }
}

fn loss_backward_writes_raw_logits_and_forward_sees_edited_params(kind: BackendKind) {
    let spec = spec(4, &[5], 3, Activation::Tanh);
    let mut net = net_with_random_biases(kind, &spec, 3);
    let rows = 5;
    let (x, _) = random_problem(&spec, rows, 4);
    let targets = [0, 2, 2, 0, 2];
    let inputs = Inputs::new(&x, rows, 4).unwrap();
    let mut fwd = Vec::new();
    net.forward(inputs, &mut fwd).unwrap();
    let mut raw = Vec::new();
    net.loss_backward(inputs, &targets, Some(&[true, false, true]), &mut raw)
        .unwrap();
    assert_eq!(fwd, raw, "logits_out must be the unmasked logits");

    // Edit the parameters in place: the next call must use the new values.
    let p = net.params_mut();
    for i in 0..p.len() {
        for v in p.value_mut(i) {
            *v = -0.7 * *v + 0.01;
        }
    }
    let (want, _) = ref_forward(&spec, &values_f64(net.params()), &x, rows);
    net.forward(inputs, &mut fwd).unwrap();
    assert_close("logits after edit", &fwd, &want, 1e-5, 1e-5);
}

// ---------------------------------------------------------------------------------------------
// 3. vjp

fn vjp_matches_finite_difference_jacobian_transpose_product(kind: BackendKind) {
    for a in ACTIVATIONS {
        for spec in archs(a) {
            let rows = 6;
            let mut net = net_with_random_biases(kind, &spec, 11);
            let (x, _) = random_problem(&spec, rows, 12);
            let cot = Rng(13).vec(rows * spec.output, 1.0);
            let vals = values_f64(net.params());
            net.vjp(Inputs::new(&x, rows, spec.input).unwrap(), &cot)
                .unwrap();
            let fd = finite_diff(&vals, |v| {
                let (logits, _) = ref_forward(&spec, v, &x, rows);
                logits.iter().zip(&cot).map(|(l, &c)| l * c as f64).sum()
            });
            for (i, info) in net.params().infos().iter().enumerate() {
                assert_close(
                    &format!("{a:?} {:?} vjp {}", spec.widths(), info.name),
                    net.params().grad(i),
                    &fd[i],
                    2e-5,
                    1e-3,
                );
            }
        }
    }
}

fn vjp_with_cross_entropy_cotangent_equals_loss_backward(kind: BackendKind) {
    let spec = spec(4, &[5, 6], 3, Activation::Relu);
    let rows = 8;
    let (x, targets) = random_problem(&spec, rows, 21);
    let inputs = Inputs::new(&x, rows, spec.input).unwrap();

    let mut a = net_with_random_biases(kind, &spec, 20);
    let mut logits = Vec::new();
    a.loss_backward(inputs, &targets, None, &mut logits)
        .unwrap();

    // dCE/dlogits = (softmax - onehot) / rows, computed by hand from the returned logits.
    let k = spec.output;
    let mut cot = vec![0.0f32; rows * k];
    for r in 0..rows {
        let row: Vec<f64> = logits[r * k..(r + 1) * k]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let p = ref_softmax(&row, None);
        for c in 0..k {
            let onehot = if c == targets[r] { 1.0 } else { 0.0 };
            cot[r * k + c] = ((p[c] - onehot) / rows as f64) as f32;
        }
    }
    let mut b = net_with_random_biases(kind, &spec, 20);
    b.vjp(inputs, &cot).unwrap();
    for i in 0..a.params().len() {
        let want: Vec<f64> = a.params().grad(i).iter().map(|&g| g as f64).collect();
        assert_close("vjp vs loss grad", b.params().grad(i), &want, 1e-6, 1e-4);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. masked loss

fn masked_classes_get_exactly_zero_gradient_and_loss_matches_hand_computation(kind: BackendKind) {
    for a in ACTIVATIONS {
        let spec = spec(4, &[5], 5, a);
        let rows = 9;
        let mut net = net_with_random_biases(kind, &spec, 31);
        let mask = [true, false, true, false, true];
        let (x, _) = random_problem(&spec, rows, 32);
        let targets: Vec<usize> = (0..rows).map(|r| [0, 2, 4][r % 3]).collect();
        let mut logits = Vec::new();
        let loss = net
            .loss_backward(
                Inputs::new(&x, rows, 4).unwrap(),
                &targets,
                Some(&mask),
                &mut logits,
            )
            .unwrap();

        // Loss by hand from the returned (raw) logits, softmax over enabled classes only.
        let k = spec.output;
        let mut want = 0.0f64;
        for r in 0..rows {
            let row = &logits[r * k..(r + 1) * k];
            let max = (0..k)
                .filter(|&c| mask[c])
                .map(|c| row[c] as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let lse = max
                + (0..k)
                    .filter(|&c| mask[c])
                    .map(|c| (row[c] as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            want += lse - row[targets[r]] as f64;
        }
        want /= rows as f64;
        assert!(
            (loss as f64 - want).abs() < 1e-5,
            "masked loss {loss} vs {want}"
        );
        // ... and it differs from the unmasked loss.
        let unmasked = ref_loss(&spec, &values_f64(net.params()), &x, rows, &targets, None);
        assert!((unmasked - want).abs() > 1e-3);

        let p = net.params();
        let (w, b) = (
            p.index_of("layers.1.weight").unwrap(),
            p.index_of("layers.1.bias").unwrap(),
        );
        let fin = spec.feature_dim();
        for (c, &enabled) in mask.iter().enumerate() {
            let wrow = &p.grad(w)[c * fin..(c + 1) * fin];
            if enabled {
                assert!(
                    wrow.iter().any(|&g| g != 0.0),
                    "class {c} should get gradient"
                );
            } else {
                assert!(wrow.iter().all(|&g| g == 0.0), "masked class {c}: {wrow:?}");
                assert_eq!(p.grad(b)[c], 0.0, "masked class {c} bias");
            }
        }
        assert!(p.all_finite());
    }
}

fn mask_survives_extreme_logits_without_nan(kind: BackendKind) {
    let spec = spec(3, &[], 4, Activation::Relu);
    let mut net = build_network_with(kind, &spec, 1).unwrap();
    // Make the masked class's logit huge and an enabled class's logit hugely negative.
    let p = net.params_mut();
    p.value_mut(1).copy_from_slice(&[1e6, -1e6, 0.0, 5.0]);
    let x = [0.1, 0.2, 0.3, -0.1, 0.0, 0.4];
    let mut logits = Vec::new();
    let loss = net
        .loss_backward(
            Inputs::new(&x, 2, 3).unwrap(),
            &[1, 3],
            Some(&[false, true, true, true]),
            &mut logits,
        )
        .unwrap();
    assert!(loss.is_finite() && loss > 1e5, "loss {loss}");
    assert!(net.params().all_finite());
    assert_eq!(net.params().grad(1)[0], 0.0);
    assert!(logits[0] > 9e5, "raw logits are unmasked");
}

// ---------------------------------------------------------------------------------------------
// 5. accumulation

fn gradients_accumulate_across_calls(kind: BackendKind) {
    let spec = spec(4, &[5], 3, Activation::Sigmoid);
    let rows = 6;
    let (x, targets) = random_problem(&spec, rows, 41);
    let inputs = Inputs::new(&x, rows, 4).unwrap();
    let cot = Rng(42).vec(rows * 3, 1.0);
    let mut logits = Vec::new();

    let mut net = net_with_random_biases(kind, &spec, 40);
    net.loss_backward(inputs, &targets, None, &mut logits)
        .unwrap();
    let once = grads_of(net.as_ref());
    net.loss_backward(inputs, &targets, None, &mut logits)
        .unwrap();
    for (g2, g1) in net.params().grads().iter().zip(&once) {
        for (a, b) in g2.iter().zip(g1) {
            assert_eq!(*a, 2.0 * b, "two identical calls must give exactly 2x");
        }
    }

    // Pre-existing gradient content is added to, not overwritten; vjp adds too.
    let mut fresh = net_with_random_biases(kind, &spec, 40);
    fresh.vjp(inputs, &cot).unwrap();
    let vjp_only = grads_of(fresh.as_ref());
    let mut acc = net_with_random_biases(kind, &spec, 40);
    for i in 0..acc.params().len() {
        acc.params_mut().grad_mut(i).fill(0.25);
    }
    acc.vjp(inputs, &cot).unwrap();
    for (g, v) in acc.params().grads().iter().zip(&vjp_only) {
        for (a, b) in g.iter().zip(v) {
            assert_eq!(*a, 0.25 + b);
        }
    }
    acc.params_mut().zero_grads();
    assert!(acc.params().grads().iter().flatten().all(|&g| g == 0.0));
}

// ---------------------------------------------------------------------------------------------
// 6. bad shapes

fn shape_what(r: Result<impl std::fmt::Debug, BackendError>) -> &'static str {
    match r {
        Err(BackendError::Shape { what, .. }) => what,
        other => panic!("expected a shape error, got {other:?}"),
    }
}

fn bad_shapes_are_errors_naming_the_argument(kind: BackendKind) {
    let spec = spec(4, &[5], 3, Activation::Relu);
    let mut net = net_with_random_biases(kind, &spec, 50);
    let before = net.params().clone();
    let x = vec![0.5f32; 8];
    let good = Inputs::new(&x, 2, 4).unwrap();
    let wrong_cols = Inputs::new(&x, 4, 2).unwrap();
    let bad_len = Inputs {
        data: &x,
        rows: 3,
        cols: 4,
    };
    let mut out = Vec::new();

    assert!(matches!(
        Inputs::new(&x, 3, 4),
        Err(BackendError::Shape { what: "inputs", .. })
    ));
    assert!(shape_what(net.forward(wrong_cols, &mut out)).contains("x"));
    assert!(shape_what(net.forward(bad_len, &mut out)).contains("x"));
    assert!(shape_what(net.features(wrong_cols, &mut out)).contains("x"));
    assert!(shape_what(net.vjp(wrong_cols, &[0.0; 12])).contains("x"));
    assert!(shape_what(net.loss_backward(wrong_cols, &[0; 4], None, &mut out)).contains("x"));

    assert!(shape_what(net.loss_backward(good, &[0], None, &mut out)).contains("targets"));
    assert!(shape_what(net.loss_backward(good, &[0, 3], None, &mut out)).contains("targets"));
    assert!(
        shape_what(net.loss_backward(good, &[0, 1], Some(&[true, false, true]), &mut out))
            .contains("class_mask")
    );
    assert!(
        shape_what(net.loss_backward(good, &[0, 1], Some(&[true, true]), &mut out))
            .contains("class_mask")
    );
    assert!(shape_what(net.vjp(good, &[0.0; 5])).contains("cotangent"));

    // The error message names the argument too.
    let msg = net.vjp(good, &[0.0; 5]).unwrap_err().to_string();
    assert!(msg.contains("cotangent") && msg.contains("5"), "{msg}");

    // Failed calls leave the gradients untouched.
    assert_eq!(net.params(), &before);
}

fn invalid_spec_and_mismatched_param_store_are_errors(kind: BackendKind) {
    assert!(matches!(
        build_network_with(kind, &spec(4, &[0], 3, Activation::Relu), 0),
        Err(BackendError::Spec(_))
    ));
    assert!(matches!(
        build_network_with(kind, &spec(0, &[], 3, Activation::Relu), 0),
        Err(BackendError::Spec(_))
    ));

    let mut net = build_network_with(kind, &spec(4, &[5], 3, Activation::Relu), 0).unwrap();
    *net.params_mut() = ParamStore::zeros(vec![ParamInfo {
        name: "w".into(),
        shape: vec![3],
        role: ParamRole::Weight,
        layer: 0,
    }]);
    let x = [0.0f32; 4];
    let mut out = Vec::new();
    assert!(matches!(
        net.forward(Inputs::new(&x, 1, 4).unwrap(), &mut out),
        Err(BackendError::Spec(_))
    ));
    assert!(net
        .loss_backward(Inputs::new(&x, 1, 4).unwrap(), &[0], None, &mut out)
        .is_err());
}

fn zero_rows_is_a_no_op(kind: BackendKind) {
    let spec = spec(4, &[5], 3, Activation::Relu);
    let mut net = net_with_random_biases(kind, &spec, 60);
    let empty = Inputs::new(&[], 0, 4).unwrap();
    let mut out = vec![1.0; 3];
    net.forward(empty, &mut out).unwrap();
    assert!(out.is_empty());
    out.push(1.0);
    net.features(empty, &mut out).unwrap();
    assert!(out.is_empty());
    out.push(1.0);
    let loss = net.loss_backward(empty, &[], None, &mut out).unwrap();
    assert_eq!(loss, 0.0);
    assert!(out.is_empty());
    net.vjp(empty, &[]).unwrap();
    assert!(net.params().grads().iter().flatten().all(|&g| g == 0.0));
    // Shape checks still apply with zero rows.
    assert!(net
        .forward(Inputs::new(&[], 0, 3).unwrap(), &mut out)
        .is_err());
}

// ---------------------------------------------------------------------------------------------
// 7. training sanity

fn sgd_training_reduces_loss_on_separable_problem(kind: BackendKind) {
    // Three Gaussian-ish blobs in 2D.
    let centres = [(2.0f32, 0.0f32), (-1.0, 1.7), (-1.0, -1.7)];
    let mut rng = Rng(70);
    let rows = 90;
    let mut x = Vec::with_capacity(rows * 2);
    let mut targets = Vec::with_capacity(rows);
    for r in 0..rows {
        let c = r % 3;
        x.push(centres[c].0 + 0.4 * rng.uniform());
        x.push(centres[c].1 + 0.4 * rng.uniform());
        targets.push(c);
    }
    for a in ACTIVATIONS {
        let mut net = build_network_with(kind, &spec(2, &[16], 3, a), 71).unwrap();
        let mut opt = Optimizer::new(
            OptimizerSpec::Sgd {
                lr: 0.5,
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
            net.params(),
        );
        let inputs = Inputs::new(&x, rows, 2).unwrap();
        let mut logits = Vec::new();
        let mut first = None;
        let mut last = f32::NAN;
        for _ in 0..300 {
            net.params_mut().zero_grads();
            last = net
                .loss_backward(inputs, &targets, None, &mut logits)
                .unwrap();
            first.get_or_insert(last);
            opt.step(net.params_mut());
        }
        let first = first.unwrap();
        assert!(first > 0.5, "{a:?}: initial loss {first}");
        assert!(
            last < 0.1 * first && last < 0.1,
            "{a:?}: loss {first} -> {last}"
        );
        net.forward(inputs, &mut logits).unwrap();
        let correct = (0..rows)
            .filter(|&r| {
                let row = &logits[r * 3..r * 3 + 3];
                let argmax = (0..3).fold(0, |b, c| if row[c] > row[b] { c } else { b });
                argmax == targets[r]
            })
            .count();
        assert_eq!(correct, rows, "{a:?}: training accuracy");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. determinism

fn same_seed_gives_bit_identical_outputs_and_gradients(kind: BackendKind) {
    // Large enough for the matmul to be split across threads.
    let spec = spec(96, &[128, 64], 10, Activation::Relu);
    let rows = 100;
    let (x, targets) = random_problem(&spec, rows, 81);
    let inputs = Inputs::new(&x, rows, spec.input).unwrap();
    let cot = Rng(82).vec(rows * 10, 1.0);

    let run = |net: &mut dyn Network| {
        let mut logits = Vec::new();
        let mut feats = Vec::new();
        let loss = net
            .loss_backward(inputs, &targets, Some(&[true; 10]), &mut logits)
            .unwrap();
        net.vjp(inputs, &cot).unwrap();
        net.features(inputs, &mut feats).unwrap();
        (loss.to_bits(), logits, feats, grads_of(net))
    };
    let mut a = build_network_with(kind, &spec, 80).unwrap();
    let mut b = build_network_with(kind, &spec, 80).unwrap();
    assert_eq!(a.params(), b.params());
    let ra = run(a.as_mut());
    let rb = run(b.as_mut());
    assert_eq!(ra.0, rb.0);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&ra.1), bits(&rb.1));
    assert_eq!(bits(&ra.2), bits(&rb.2));
    for (ga, gb) in ra.3.iter().zip(&rb.3) {
        assert_eq!(bits(ga), bits(gb));
    }
    // Repeating on the same network (with zeroed grads) reproduces the same bits.
    a.params_mut().zero_grads();
    let again = run(a.as_mut());
    assert_eq!(again.0, ra.0);
    for (ga, gb) in again.3.iter().zip(&ra.3) {
        assert_eq!(bits(ga), bits(gb));
    }
    // A different seed gives different parameters.
    assert_ne!(
        build_network_with(kind, &spec, 81).unwrap().params(),
        a.params()
    );
}

fn metadata(kind: BackendKind) {
    let spec = spec(4, &[5], 3, Activation::Relu);
    let net = build_network_with(kind, &spec, 0).unwrap();
    assert_eq!(net.backend_name(), kind.name());
    assert_eq!(
        build_network(&spec, 0).unwrap().backend_name(),
        BackendKind::default().name()
    );
    assert_eq!(net.spec().as_mlp(), Some(&spec));
    assert_eq!(net.params().numel(), spec.num_params());
    let names: Vec<&str> = net
        .params()
        .infos()
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias"
        ]
    );
    assert_eq!(net.params(), &ParamStore::init_mlp(&spec, 0));
}

/// A per-row mask gives each row its own softmax support: the loss and gradients equal the
/// row-weighted combination of two calls with shared masks on the two halves of the batch.
fn per_row_masks_equal_separate_shared_mask_calls(kind: BackendKind) {
    let spec = spec(4, &[5], 4, Activation::Relu);
    let rows = 6;
    let (x, _) = random_problem(&spec, rows, 77);
    let targets = vec![0, 1, 0, 2, 3, 3];
    let head_a = [true, true, false, false];
    let head_b = [false, false, true, true];
    let mut per_row = Vec::new();
    for r in 0..rows {
        per_row.extend_from_slice(if r < 3 { &head_a } else { &head_b });
    }
    let mut logits = Vec::new();
    let mut joint = net_with_random_biases(kind, &spec, 5);
    let loss = joint
        .loss_backward(
            Inputs::new(&x, rows, 4).unwrap(),
            &targets,
            Some(&per_row),
            &mut logits,
        )
        .unwrap();

    let mut split = net_with_random_biases(kind, &spec, 5);
    let half = 3 * 4;
    let la = split
        .loss_backward(
            Inputs::new(&x[..half], 3, 4).unwrap(),
            &targets[..3],
            Some(&head_a),
            &mut logits,
        )
        .unwrap();
    let lb = split
        .loss_backward(
            Inputs::new(&x[half..], 3, 4).unwrap(),
            &targets[3..],
            Some(&head_b),
            &mut logits,
        )
        .unwrap();
    // Each half-call averages over 3 rows; the joint call over 6.
    assert!((loss - (la + lb) / 2.0).abs() < 1e-5, "{loss} vs {la} {lb}");
    for i in 0..joint.params().len() {
        for (g, h) in joint.params().grad(i).iter().zip(split.params().grad(i)) {
            assert!((g - h / 2.0).abs() < 1e-5, "param {i}: {g} vs {}", h / 2.0);
        }
    }
    // A target outside its own row's head is rejected.
    let mut bad = targets.clone();
    bad[4] = 0;
    let e = joint
        .loss_backward(
            Inputs::new(&x, rows, 4).unwrap(),
            &bad,
            Some(&per_row),
            &mut logits,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 4"), "{e}");
    // A mask of the wrong length names the argument.
    let e = joint
        .loss_backward(
            Inputs::new(&x, rows, 4).unwrap(),
            &targets,
            Some(&per_row[..5]),
            &mut logits,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("class_mask"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// every test above, once per backend

macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {
        mod dfdx {
            use clef_backend::BackendKind;
            $(#[test]
            fn $test() {
                super::$test(BackendKind::Dfdx)
            })*
        }
        mod native {
            use clef_backend::BackendKind;
            $(#[test]
            fn $test() {
                super::$test(BackendKind::Native)
            })*
        }
    };
}

per_backend!(
    loss_gradients_match_finite_differences,
    masked_loss_gradients_match_finite_differences,
    forward_and_features_match_reference,
    loss_backward_writes_raw_logits_and_forward_sees_edited_params,
    vjp_matches_finite_difference_jacobian_transpose_product,
    vjp_with_cross_entropy_cotangent_equals_loss_backward,
    masked_classes_get_exactly_zero_gradient_and_loss_matches_hand_computation,
    mask_survives_extreme_logits_without_nan,
    gradients_accumulate_across_calls,
    bad_shapes_are_errors_naming_the_argument,
    invalid_spec_and_mismatched_param_store_are_errors,
    zero_rows_is_a_no_op,
    sgd_training_reduces_loss_on_separable_problem,
    same_seed_gives_bit_identical_outputs_and_gradients,
    metadata,
    per_row_masks_equal_separate_shared_mask_calls,
);

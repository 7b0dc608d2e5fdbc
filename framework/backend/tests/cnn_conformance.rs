//! The convolutional backbones against an f64 reference written from the PyTorch definitions
//! (`common/cnn_ref.rs`): forward and features in evaluation mode, the loss, gradients (finite
//! differences of the reference) and running statistics in training mode, the vjp, and
//! bit-identical results for one and two threads.

mod common;

use clef_backend::{
    build_network, Activation, ConvNetSpec, ConvPool, ImageShape, Init, Inputs, ModelSpec, Network,
    Norm, ParamRole, ResNetSpec,
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

fn convnet(
    input: ImageShape,
    channels: &[usize],
    hidden: &[usize],
    norm: Norm,
    act: Activation,
) -> ModelSpec {
    ModelSpec::ConvNet(ConvNetSpec {
        input,
        channels: channels.to_vec(),
        hidden: hidden.to_vec(),
        output: 5,
        norm,
        activation: act,
        init: Init::TorchDefault,
        pool: ConvPool::Flatten,
    })
}

/// The same ConvNet with global average pooling before the dense part.
fn avg_pooled(spec: ModelSpec) -> ModelSpec {
    match spec {
        ModelSpec::ConvNet(s) => ModelSpec::ConvNet(ConvNetSpec {
            pool: ConvPool::Avg,
            ..s
        }),
        other => other,
    }
}

fn resnet(input: ImageShape, width: usize, blocks: [usize; 4], norm: Norm) -> ModelSpec {
    ModelSpec::ResNet(ResNetSpec {
        input,
        width,
        blocks,
        output: 4,
        norm,
        init: Init::TorchDefault,
    })
}

/// Small backbones covering every layer: odd sizes, every norm and activation, both ConvNet
/// pools, stride-2
/// stages with projection shortcuts, identity shortcuts (two blocks per stage).
fn cases() -> Vec<ModelSpec> {
    vec![
        convnet(img(1, 8, 8), &[3, 4], &[], Norm::None, Activation::Relu),
        convnet(
            img(2, 7, 9),
            &[4, 4, 6],
            &[6],
            Norm::Batch,
            Activation::Relu,
        ),
        convnet(
            img(3, 6, 5),
            &[4, 6],
            &[5],
            Norm::Group { groups: 2 },
            Activation::Tanh,
        ),
        convnet(img(1, 5, 6), &[3, 3], &[], Norm::Batch, Activation::Sigmoid),
        // Global average pooling: over an odd 3x4 map straight into the head, and into a
        // dense hidden layer under group norm.
        avg_pooled(convnet(
            img(2, 7, 9),
            &[4, 4, 6],
            &[],
            Norm::Batch,
            Activation::Relu,
        )),
        avg_pooled(convnet(
            img(3, 6, 5),
            &[4, 6],
            &[5],
            Norm::Group { groups: 2 },
            Activation::Tanh,
        )),
        resnet(img(3, 12, 12), 4, [1, 1, 1, 1], Norm::Batch),
        resnet(img(2, 9, 7), 2, [2, 1, 1, 1], Norm::Group { groups: 2 }),
        resnet(img(1, 8, 8), 2, [1, 2, 1, 1], Norm::None),
    ]
}

/// [`common::random_net`] with this file's weight noise.
fn random_net(spec: &ModelSpec, seed: u64) -> Box<dyn Network> {
    common::random_net(spec, seed, 0.1)
}

fn close(a: f64, b: f64, atol: f64, rtol: f64) -> bool {
    (a - b).abs() <= atol + rtol * b.abs()
}

#[test]
fn forward_and_features_match_the_reference_in_eval_mode() {
    for (k, spec) in cases().iter().enumerate() {
        for rows in [1, 3] {
            let mut net = random_net(spec, 10 + k as u64);
            let d = spec.input_dim();
            let x = Rng(k as u64 * 31 + rows as u64).vec(rows * d, 1.0);
            let (mut logits, mut feats) = (Vec::new(), Vec::new());
            net.forward(Inputs::new(&x, rows, d).unwrap(), &mut logits)
                .unwrap();
            net.features(Inputs::new(&x, rows, d).unwrap(), &mut feats)
                .unwrap();
            let mut r = RefNet::new(spec, net.params());
            let (rf, rl) = r.forward(&x, rows);
            assert_eq!(logits.len(), rows * spec.output());
            assert_eq!(feats.len(), rows * spec.feature_dim());
            for (a, b) in logits.iter().zip(&rl).chain(feats.iter().zip(&rf)) {
                assert!(
                    close(f64::from(*a), *b, 1e-4, 1e-4),
                    "case {k} rows {rows}: {a} vs {b}"
                );
            }
        }
    }
}

/// Native gradients of the training loss against central differences of the f64 reference,
/// and the running statistics after the step against the reference's batch statistics.
#[test]
fn loss_gradients_and_running_statistics_match_the_reference() {
    for (k, spec) in cases().iter().enumerate() {
        for rows in [1, 4] {
            let mut net = random_net(spec, 20 + k as u64);
            let d = spec.input_dim();
            let mut rng = Rng(k as u64 * 17 + rows as u64);
            let x = rng.vec(rows * d, 1.0);
            let y: Vec<usize> = (0..rows).map(|_| rng.below(spec.output())).collect();
            let before = net.params().clone();
            net.params_mut().zero_grads();
            let mut logits = Vec::new();
            let loss = net
                .loss_backward(Inputs::new(&x, rows, d).unwrap(), &y, None, &mut logits)
                .unwrap();
            let mut r = RefNet::new(spec, &before);
            r.train = true;
            let ref_loss = r.loss(&x, rows, &y, None);
            assert!(
                close(f64::from(loss), ref_loss, 1e-5, 1e-4),
                "case {k}: loss {loss} vs {ref_loss}"
            );
            check_grads(
                &mut r,
                net.as_ref(),
                &before,
                &format!("case {k} rows {rows}"),
                |r| r.loss(&x, rows, &y, None),
            );
            // Running statistics: 0.9 old + 0.1 batch (unbiased variance).
            r.loss(&x, rows, &y, None);
            for (i, info) in before.infos().iter().enumerate() {
                if info.role != ParamRole::Buffer {
                    continue;
                }
                let (name, var) = match info.name.strip_suffix(".running_mean") {
                    Some(n) => (n, false),
                    None => (info.name.strip_suffix(".running_var").unwrap(), true),
                };
                let (bm, bv) = &r.batch_stats[name];
                let batch = if var { bv } else { bm };
                for (j, (&new, &old)) in net
                    .params()
                    .value(i)
                    .iter()
                    .zip(before.value(i))
                    .enumerate()
                {
                    let want = 0.9 * f64::from(old) + 0.1 * batch[j];
                    assert!(
                        close(f64::from(new), want, 1e-5, 1e-4),
                        "{}[{j}]: {new} vs {want}",
                        info.name
                    );
                }
                assert!(
                    net.params().grad(i).iter().all(|&g| g == 0.0),
                    "{} has a gradient",
                    info.name
                );
            }
        }
    }
}

/// Compares every trainable gradient of `net` (sampled) with central differences of `f`.
fn check_grads(
    r: &mut RefNet,
    net: &dyn Network,
    before: &clef_backend::ParamStore,
    what: &str,
    f: impl Fn(&mut RefNet) -> f64,
) {
    let h = 1e-6;
    for (i, info) in before.infos().iter().enumerate() {
        if info.role == ParamRole::Buffer {
            continue;
        }
        let n = info.numel();
        let step = (n / 9).max(1);
        for j in (0..n).step_by(step) {
            let orig = r.p[&info.name][j];
            r.p.get_mut(&info.name).unwrap()[j] = orig + h;
            let up = f(r);
            r.p.get_mut(&info.name).unwrap()[j] = orig - h;
            let down = f(r);
            r.p.get_mut(&info.name).unwrap()[j] = orig;
            let fd = (up - down) / (2.0 * h);
            let g = f64::from(net.params().grad(i)[j]);
            assert!(
                close(g, fd, 2e-4, 2e-3),
                "{what}: d/d {}[{j}]: native {g} vs finite differences {fd}",
                info.name
            );
        }
    }
}

#[test]
fn vjp_matches_the_reference_and_leaves_running_statistics_alone() {
    for (k, spec) in cases().iter().enumerate() {
        let rows = 3;
        let mut net = random_net(spec, 40 + k as u64);
        let d = spec.input_dim();
        let mut rng = Rng(k as u64 * 5 + 3);
        let x = rng.vec(rows * d, 1.0);
        let cot = rng.vec(rows * spec.output(), 1.0);
        let before = net.params().clone();
        net.params_mut().zero_grads();
        net.vjp(Inputs::new(&x, rows, d).unwrap(), &cot).unwrap();
        for (i, info) in before.infos().iter().enumerate() {
            if info.role == ParamRole::Buffer {
                assert_eq!(
                    net.params().value(i),
                    before.value(i),
                    "vjp changed {}",
                    info.name
                );
            }
        }
        let mut r = RefNet::new(spec, &before);
        r.train = true;
        check_grads(
            &mut r,
            net.as_ref(),
            &before,
            &format!("vjp case {k}"),
            |r| {
                let (_, l) = r.forward(&x, rows);
                l.iter().zip(&cot).map(|(a, &c)| a * f64::from(c)).sum()
            },
        );
    }
}

/// Everything a step computes, as bits.
fn run_all(spec: &ModelSpec, rows: usize) -> Vec<Vec<u32>> {
    let mut net = random_net(spec, 5);
    let d = spec.input_dim();
    let mut rng = Rng(99);
    let x = rng.vec(rows * d, 1.0);
    let y: Vec<usize> = (0..rows).map(|_| rng.below(spec.output())).collect();
    let cot = rng.vec(rows * spec.output(), 1.0);
    let mut out = Vec::new();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let mut logits = Vec::new();
    let xi = Inputs::new(&x, rows, d).unwrap();
    let loss = net.loss_backward(xi, &y, None, &mut logits).unwrap();
    out.push(vec![loss.to_bits()]);
    out.push(bits(&logits));
    net.vjp(xi, &cot).unwrap();
    net.forward(xi, &mut logits).unwrap();
    out.push(bits(&logits));
    net.features(xi, &mut logits).unwrap();
    out.push(bits(&logits));
    for (v, g) in net.params().values().iter().zip(net.params().grads()) {
        out.push(bits(v));
        out.push(bits(g));
    }
    out
}

#[test]
fn results_are_bit_identical_for_one_and_two_threads() {
    let specs = [
        convnet(
            img(3, 16, 16),
            &[8, 8, 16, 16],
            &[16],
            Norm::Batch,
            Activation::Relu,
        ),
        convnet(
            img(1, 12, 12),
            &[8, 8],
            &[],
            Norm::Group { groups: 4 },
            Activation::Relu,
        ),
        avg_pooled(convnet(
            img(1, 12, 12),
            &[8, 8],
            &[],
            Norm::Batch,
            Activation::Relu,
        )),
        resnet(img(3, 16, 16), 8, [1, 1, 1, 1], Norm::Batch),
    ];
    for spec in &specs {
        for rows in [1, 7, 40] {
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let two = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let a = one.install(|| run_all(spec, rows));
            let b = two.install(|| run_all(spec, rows));
            assert!(
                a == b,
                "{} rows {rows}: results differ between 1 and 2 threads",
                spec.kind_name()
            );
            assert_eq!(a, run_all(spec, rows), "not reproducible");
        }
    }
}

#[test]
fn parameter_counts_names_and_validation() {
    // The ConvNet of the notes: 96 362 parameters without norm (hand count: convs 320 + 9 248
    // + 18 496 + 36 928, head 3 136 x 10 + 10).
    let mut c = convnet(
        img(1, 28, 28),
        &[32, 32, 64, 64],
        &[],
        Norm::None,
        Activation::Relu,
    );
    if let ModelSpec::ConvNet(s) = &mut c {
        s.output = 10;
    }
    assert_eq!(c.num_params(), 96_362);
    assert_eq!(c.feature_dim(), 64 * 7 * 7);
    assert_eq!(
        c.forward_macs(),
        288 * 784 + 32 * 288 * 784 + 64 * 288 * 196 + 64 * 576 * 196 + 31_360
    );
    // Global average pooling: the same convs (64 992), a head of 64 x 10 + 10 reading one mean
    // per channel (the mean itself counts no multiply-adds).
    let avg = avg_pooled(c.clone());
    assert_eq!(avg.num_params(), 64_992 + 650);
    assert_eq!(avg.feature_dim(), 64);
    assert_eq!(avg.forward_macs(), c.forward_macs() - 31_360 + 640);
    // With batch norm: no conv bias, gamma and beta per channel, running stats are buffers.
    if let ModelSpec::ConvNet(s) = &mut c {
        s.norm = Norm::Batch;
    }
    assert_eq!(c.num_params(), 96_362 - 192 + 2 * 192);
    let net = build_network(&c, 0).unwrap();
    let names: Vec<&str> = net
        .params()
        .infos()
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(
        &names[..6],
        [
            "convs.0.weight",
            "norms.0.weight",
            "norms.0.bias",
            "norms.0.running_mean",
            "norms.0.running_var",
            "convs.1.weight"
        ]
    );
    assert_eq!(net.params().infos()[0].shape, vec![32, 1, 3, 3]);
    assert_eq!(net.params().numel(), c.num_params() + 2 * 192);
    // Reduced ResNet-18 (width 20), hand count per Mammoth's definition.
    let r = resnet(img(3, 32, 32), 20, [2, 2, 2, 2], Norm::Batch);
    let conv = |i: usize, o: usize, k: usize| i * o * k * k;
    let bn = |c: usize| 2 * c;
    let mut want = conv(3, 20, 3) + bn(20);
    let mut cin = 20;
    for s in 0..4 {
        let p = 20 << s;
        for b in 0..2 {
            want += conv(cin, p, 3) + bn(p) + conv(p, p, 3) + bn(p);
            if b == 0 && s > 0 {
                want += conv(cin, p, 1) + bn(p);
            }
            cin = p;
        }
    }
    want += 160 * 4 + 4;
    assert_eq!(r.num_params(), want);
    assert_eq!(r.feature_dim(), 160);
    let net = build_network(&r, 0).unwrap();
    for name in [
        "conv1.weight",
        "bn1.running_var",
        "layer2.0.shortcut.0.weight",
        "layer2.0.shortcut.1.bias",
        "layer4.1.bn2.weight",
        "linear.weight",
    ] {
        assert!(net.params().index_of(name).is_some(), "no {name}");
    }
    assert!(net
        .params()
        .index_of("layer1.0.shortcut.0.weight")
        .is_none());
    // Bad specs say what is wrong.
    let err = convnet(
        img(1, 3, 3),
        &[4, 4, 4, 4],
        &[],
        Norm::None,
        Activation::Relu,
    )
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("max-pool") && err.contains("1x1"), "{err}");
    let err = convnet(
        img(1, 8, 8),
        &[6],
        &[],
        Norm::Group { groups: 4 },
        Activation::Relu,
    )
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("divisible by 4") && err.contains("6 channels"),
        "{err}"
    );
    let err = resnet(img(3, 4, 4), 4, [1, 1, 1, 1], Norm::Batch)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stage 4") && err.contains("below 1x1"),
        "{err}"
    );
    assert!(resnet(img(3, 8, 8), 4, [1, 1, 1, 1], Norm::Batch)
        .validate()
        .is_ok());
    let err = build_network(&resnet(img(0, 8, 8), 4, [1, 1, 1, 1], Norm::Batch), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("input image shape"), "{err}");
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    let spec = resnet(img(3, 8, 8), 2, [1, 1, 1, 1], Norm::Batch);
    let mut net = build_network(&spec, 1).unwrap();
    let mut out = Vec::new();
    let x = vec![0.5; 3 * 64];
    // Wrong width.
    let err = net
        .forward(Inputs::new(&x[..100], 1, 100).unwrap(), &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("channels x height x width"), "{err}");
    // One sample reaching a 1x1 batch norm in training: no variance, refused before any change.
    let before = net.params().clone();
    let err = net
        .loss_backward(Inputs::new(&x, 1, 192).unwrap(), &[0], None, &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch norm needs more than one value per channel"),
        "{err}"
    );
    assert_eq!(net.params(), &before);
    // In evaluation a single sample is fine.
    net.forward(Inputs::new(&x, 1, 192).unwrap(), &mut out)
        .unwrap();
    assert_eq!(out.len(), 4);
    // The dfdx backend and the NTK are MLP-only, and say so.
    let err = clef_backend::build_network_with(clef_backend::BackendKind::Dfdx, &spec, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("dfdx backend builds MLPs only"), "{err}");
    let xi = Inputs::new(&x, 1, 192).unwrap();
    let mut gram = [0.0f64; 1];
    let err = clef_backend::ntk::ntk_gram(&spec, net.params(), xi, xi, 0, &mut gram)
        .unwrap_err()
        .to_string();
    assert!(err.contains("MLPs only") && err.contains("resnet"), "{err}");
}

#[test]
fn initialisation_follows_pytorch_defaults_and_the_init_schemes() {
    let mut spec = convnet(
        img(3, 8, 8),
        &[16, 16],
        &[32],
        Norm::Batch,
        Activation::Relu,
    );
    let net = build_network(&spec, 3).unwrap();
    let p = net.params();
    for (i, info) in p.infos().iter().enumerate() {
        let v = p.value(i);
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        match (info.role, info.shape.len()) {
            (ParamRole::Weight, 1) => assert!(v.iter().all(|&x| x == 1.0), "{}", info.name),
            (ParamRole::Bias, 1) if info.name.starts_with("norms") => {
                assert!(v.iter().all(|&x| x == 0.0), "{}", info.name)
            }
            (ParamRole::Buffer, _) => {
                let want = if info.name.ends_with("running_var") {
                    1.0
                } else {
                    0.0
                };
                assert!(v.iter().all(|&x| x == want), "{}", info.name);
            }
            _ => {
                // U(±1/sqrt(fan_in)) for weights and biases: kaiming_uniform(a = sqrt(5)).
                let fan_in: usize = match info.role {
                    ParamRole::Weight => info.shape[1..].iter().product(),
                    _ => p.infos()[i - 1].shape[1..].iter().product(),
                };
                let bound = 1.0 / (fan_in as f32).sqrt();
                // Within the bound, and (for tensors large enough to tell) spread up to it.
                let spread = v.len() < 64 || max > 0.8 * bound;
                assert!(
                    max <= bound && spread,
                    "{}: max {max}, bound {bound}",
                    info.name
                );
            }
        }
    }
    // Other schemes: their weight bound with conv fans, biases at zero.
    if let ModelSpec::ConvNet(s) = &mut spec {
        s.init = Init::KaimingUniform;
        s.norm = Norm::None;
    }
    let net = build_network(&spec, 3).unwrap();
    let p = net.params();
    let w = p.value(p.index_of("convs.1.weight").unwrap());
    let bound = (6.0f32 / (16.0 * 9.0)).sqrt();
    let max = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        max <= bound && max > 0.8 * bound,
        "kaiming bound {bound}, max {max}"
    );
    assert!(p
        .value(p.index_of("convs.1.bias").unwrap())
        .iter()
        .all(|&b| b == 0.0));
    // Same seed, same bits; another seed, other values.
    assert_eq!(build_network(&spec, 3).unwrap().params(), p);
    assert_ne!(
        build_network(&spec, 4).unwrap().params().values(),
        p.values()
    );
}

#[test]
fn checkpoints_keep_running_statistics() {
    let spec = resnet(img(3, 8, 8), 2, [1, 1, 1, 1], Norm::Batch);
    let mut net = random_net(&spec, 60);
    let d = spec.input_dim();
    let x = Rng(61).vec(4 * d, 1.0);
    let xi = Inputs::new(&x, 4, d).unwrap();
    let mut logits = Vec::new();
    net.loss_backward(xi, &[0, 1, 2, 3], None, &mut logits)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    clef_backend::save_safetensors(net.params(), &path).unwrap();
    let mut other = build_network(&spec, 1).unwrap();
    clef_backend::load_safetensors(other.params_mut(), &path).unwrap();
    assert_eq!(other.params().values(), net.params().values());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    net.forward(xi, &mut a).unwrap();
    other.forward(xi, &mut b).unwrap();
    assert_eq!(a, b, "eval logits differ after a checkpoint round trip");
}

//! The convolutional backbones train exactly like PyTorch: the same ConvNet (flattened or
//! average-pooled) / ResNet (tensors loaded by name into `torch.nn` modules, so the names map
//! one to one), batch and SGD settings give the same losses, the same parameters and
//! batch-norm running statistics after a few steps, and the same eval-mode logits
//! (`tests/support/cnn_parity.py`).
//!
//! Needs a Python with `torch`: `$CLEF_TORCH_PYTHON`, else `python3`; without one the test is
//! skipped with the reason (and fails under CI, see `clef_testkit::require_resource`).

mod common;

use std::path::Path;
use std::process::Command;

use clef_backend::{
    build_network, Activation, ConvNetSpec, ConvPool, ImageShape, Init, Inputs, ModelSpec, Norm,
    Optimizer, OptimizerSpec, ResNetSpec,
};
use common::{read_f32, torch_python, write_f32, Rng};

struct Case {
    spec: ModelSpec,
    rows: usize,
    steps: usize,
    mask: Option<Vec<bool>>,
}

fn model_json(spec: &ModelSpec) -> serde_json::Value {
    let norm = |n: Norm| match n {
        Norm::Batch => serde_json::json!({"kind": "batch"}),
        Norm::Group { groups } => serde_json::json!({"kind": "group", "groups": groups}),
        Norm::None => serde_json::json!({"kind": "none"}),
    };
    let shape = |i: ImageShape| vec![i.channels, i.height, i.width];
    match spec {
        ModelSpec::ConvNet(s) => serde_json::json!({
            "kind": "convnet", "input": shape(s.input), "channels": s.channels,
            "hidden": s.hidden, "output": s.output, "norm": norm(s.norm),
            "activation": match s.activation {
                Activation::Relu => "relu", Activation::Tanh => "tanh", Activation::Sigmoid => "sigmoid",
            },
            "pool": s.pool.as_str(),
        }),
        ModelSpec::ResNet(s) => serde_json::json!({
            "kind": "resnet", "input": shape(s.input), "width": s.width, "blocks": s.blocks,
            "output": s.output, "norm": norm(s.norm),
        }),
        ModelSpec::Mlp(_) => unreachable!(),
    }
}

const LR: f32 = 0.05;
const MOMENTUM: f32 = 0.9;
const WEIGHT_DECAY: f32 = 5e-4;

#[test]
fn cnn_losses_updates_and_running_statistics_match_pytorch() {
    let python = match torch_python() {
        Ok(p) => p,
        Err(why) => {
            let why = format!("{why}; set CLEF_TORCH_PYTHON to a Python with torch");
            clef_testkit::require_resource(false, why);
            return;
        }
    };
    let img = |c, h, w| ImageShape {
        channels: c,
        height: h,
        width: w,
    };
    let cases = [
        Case {
            spec: ModelSpec::ConvNet(ConvNetSpec {
                input: img(1, 12, 12),
                channels: vec![4, 8],
                hidden: vec![16],
                output: 5,
                norm: Norm::Batch,
                activation: Activation::Relu,
                init: Init::TorchDefault,
                pool: Default::default(),
            }),
            rows: 6,
            steps: 3,
            mask: None,
        },
        Case {
            spec: ModelSpec::ResNet(ResNetSpec {
                input: img(3, 16, 16),
                width: 4,
                blocks: [1, 1, 1, 1],
                output: 4,
                norm: Norm::Batch,
                init: Init::TorchDefault,
            }),
            rows: 5,
            steps: 3,
            mask: None,
        },
        Case {
            spec: ModelSpec::ConvNet(ConvNetSpec {
                input: img(3, 10, 9),
                channels: vec![4, 4, 6],
                hidden: vec![],
                output: 6,
                norm: Norm::Group { groups: 2 },
                activation: Activation::Tanh,
                init: Init::TorchDefault,
                pool: Default::default(),
            }),
            rows: 4,
            steps: 3,
            mask: Some(vec![true, false, true, true, false, true]),
        },
        Case {
            // Global average pooling over an odd 3x2 map into a dense hidden layer.
            spec: ModelSpec::ConvNet(ConvNetSpec {
                input: img(2, 7, 5),
                channels: vec![4, 6, 6],
                hidden: vec![8],
                output: 4,
                norm: Norm::Batch,
                activation: Activation::Relu,
                init: Init::TorchDefault,
                pool: ConvPool::Avg,
            }),
            rows: 5,
            steps: 3,
            mask: None,
        },
    ];
    for (k, case) in cases.iter().enumerate() {
        let what = format!("case {k} ({})", case.spec.kind_name());
        let d = case.spec.input_dim();
        let mut rng = Rng(k as u64 + 11);
        let x = rng.vec(case.rows * d, 1.0);
        let allowed: Vec<usize> = (0..case.spec.output())
            .filter(|&c| case.mask.as_ref().is_none_or(|m| m[c]))
            .collect();
        let y: Vec<usize> = (0..case.rows)
            .map(|_| allowed[rng.below(allowed.len())])
            .collect();
        let mut net = build_network(&case.spec, k as u64).unwrap();
        let init = net.params().values().concat();
        let tensors: Vec<(String, Vec<usize>)> = net
            .params()
            .infos()
            .iter()
            .map(|i| (i.name.clone(), i.shape.clone()))
            .collect();

        let dir = tempfile::tempdir().unwrap();
        let meta = serde_json::json!({
            "model": model_json(&case.spec), "tensors": tensors, "rows": case.rows,
            "steps": case.steps, "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
            "mask": case.mask,
        });
        std::fs::write(dir.path().join("meta.json"), meta.to_string()).unwrap();
        write_f32(&dir.path().join("params.f32"), &init);
        write_f32(&dir.path().join("x.f32"), &x);
        let yf: Vec<f32> = y.iter().map(|&c| c as f32).collect();
        write_f32(&dir.path().join("y.f32"), &yf);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/cnn_parity.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: cnn_parity.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap())
                .unwrap();
        let torch_losses: Vec<f64> = json["losses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let torch_params = read_f32(&dir.path().join("params_out.f32"));
        let torch_eval = read_f32(&dir.path().join("logits_eval.f32"));

        let opt_spec = OptimizerSpec::Sgd {
            lr: LR,
            momentum: MOMENTUM,
            weight_decay: WEIGHT_DECAY,
            nesterov: false,
        };
        let mut opt = Optimizer::new(opt_spec, net.params());
        let mut logits = Vec::new();
        let xi = Inputs::new(&x, case.rows, d).unwrap();
        for (s, &tl) in torch_losses.iter().enumerate() {
            net.params_mut().zero_grads();
            let loss = net
                .loss_backward(xi, &y, case.mask.as_deref(), &mut logits)
                .unwrap();
            assert!(
                (f64::from(loss) - tl).abs() <= 2e-5 * (1.0 + tl.abs()),
                "{what}: loss at step {s}: clef {loss} vs PyTorch {tl}"
            );
            opt.step(net.params_mut());
        }
        let params = net.params().values().concat();
        assert_eq!(params.len(), torch_params.len(), "{what}: tensor sizes");
        let moved = torch_params
            .iter()
            .zip(&init)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(moved > 1e-3, "{what}: PyTorch did not train ({moved})");
        let infos = net.params().infos().to_vec();
        let mut offset = 0;
        for info in &infos {
            let n = info.numel();
            let (a, b) = (
                &params[offset..offset + n],
                &torch_params[offset..offset + n],
            );
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (j, (p, t)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - t).abs() <= 5e-5 * scale,
                    "{what}: {}[{j}] after {} steps: clef {p} vs PyTorch {t}",
                    info.name,
                    case.steps
                );
            }
            offset += n;
        }
        net.forward(xi, &mut logits).unwrap();
        for (j, (a, b)) in logits.iter().zip(&torch_eval).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{what}: eval logit {j}: clef {a} vs PyTorch {b}"
            );
        }
    }
}

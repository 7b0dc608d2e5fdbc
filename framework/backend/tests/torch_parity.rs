//! Both backends train exactly like PyTorch: the same MLP, weights, batch and SGD settings
//! give the same losses and the same parameters after a few steps as `torch.nn` +
//! `torch.optim.SGD` (the script `tests/support/torch_parity.py`).
//!
//! Needs a Python with `torch`: `$CLEF_TORCH_PYTHON`, else `python3`. Without one the test
//! prints that it was skipped and why (`.ci/run` installs torch, so CI always runs it).

mod common;

use std::path::Path;
use std::process::Command;

use clef_backend::{
    build_network_with, Activation, BackendKind, Inputs, MlpSpec, Optimizer, OptimizerSpec,
};
use common::{read_f32, spec, torch_python, write_f32, Rng};

struct Case {
    spec: MlpSpec,
    rows: usize,
    steps: usize,
    opt: OptimizerSpec,
    mask: Option<Vec<bool>>,
    seed: u64,
}

/// Runs `case` through PyTorch; returns its losses and final parameters (flat, clef's order).
fn torch_run(
    python: &Path,
    case: &Case,
    params: &[f32],
    x: &[f32],
    y: &[usize],
) -> (Vec<f64>, Vec<f32>) {
    let dir = tempfile::tempdir().unwrap();
    let OptimizerSpec::Sgd {
        lr,
        momentum,
        weight_decay,
        nesterov,
    } = case.opt
    else {
        panic!("SGD cases only");
    };
    let activation = match case.spec.activation {
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
        Activation::Sigmoid => "sigmoid",
    };
    let meta = serde_json::json!({
        "widths": case.spec.widths(),
        "activation": activation,
        "rows": case.rows,
        "steps": case.steps,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "nesterov": nesterov,
        "mask": case.mask,
    });
    std::fs::write(dir.path().join("meta.json"), meta.to_string()).unwrap();
    write_f32(&dir.path().join("params.f32"), params);
    write_f32(&dir.path().join("x.f32"), x);
    let yf: Vec<f32> = y.iter().map(|&c| c as f32).collect();
    write_f32(&dir.path().join("y.f32"), &yf);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/torch_parity.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "torch_parity.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap())
            .unwrap();
    let losses = json["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (losses, read_f32(&dir.path().join("params_out.f32")))
}

/// clef's side: the same steps on `kind`; returns losses and final parameters.
fn clef_run(kind: BackendKind, case: &Case, x: &[f32], y: &[usize]) -> (Vec<f64>, Vec<f32>) {
    let mut net = build_network_with(kind, &case.spec, case.seed).unwrap();
    let mut opt = Optimizer::new(case.opt.clone(), net.params());
    let mut logits = Vec::new();
    let mut losses = Vec::new();
    for _ in 0..case.steps {
        let inputs = Inputs::new(x, case.rows, case.spec.input).unwrap();
        net.params_mut().zero_grads();
        let loss = net
            .loss_backward(inputs, y, case.mask.as_deref(), &mut logits)
            .unwrap();
        losses.push(f64::from(loss));
        opt.step(net.params_mut());
    }
    (losses, net.params().values().concat())
}

#[test]
fn losses_and_sgd_updates_match_pytorch() {
    let python = match torch_python() {
        Ok(p) => p,
        Err(why) => {
            let why = format!("{why}; set CLEF_TORCH_PYTHON to a Python with torch");
            clef_testkit::require_resource(false, why);
            return;
        }
    };
    let sgd = |momentum, weight_decay, nesterov| OptimizerSpec::Sgd {
        lr: 0.05,
        momentum,
        weight_decay,
        nesterov,
    };
    let cases = [
        // The reference architecture at a data-parallel batch size (two halves of 48).
        Case {
            spec: spec(784, &[256, 256], 10, Activation::Relu),
            rows: 96,
            steps: 4,
            opt: sgd(0.9, 0.0, false),
            mask: None,
            seed: 1,
        },
        // Small batch (one block), task-IL style class mask, weight decay and Nesterov.
        Case {
            spec: spec(20, &[33, 17], 7, Activation::Tanh),
            rows: 13,
            steps: 5,
            opt: sgd(0.9, 0.01, true),
            mask: Some(vec![false, true, true, false, true, false, false]),
            seed: 2,
        },
        Case {
            spec: spec(12, &[9], 5, Activation::Sigmoid),
            rows: 70,
            steps: 3,
            opt: sgd(0.0, 0.0, false),
            mask: None,
            seed: 3,
        },
    ];
    for case in &cases {
        let mut rng = Rng(case.seed * 101);
        let x: Vec<f32> = (0..case.rows * case.spec.input)
            .map(|_| rng.uniform().abs())
            .collect();
        let allowed: Vec<usize> = (0..case.spec.output)
            .filter(|&c| case.mask.as_ref().is_none_or(|m| m[c]))
            .collect();
        let y: Vec<usize> = (0..case.rows)
            .map(|_| allowed[rng.below(allowed.len())])
            .collect();
        let init = build_network_with(BackendKind::Native, &case.spec, case.seed)
            .unwrap()
            .params()
            .values()
            .concat();
        let (torch_losses, torch_params) = torch_run(&python, case, &init, &x, &y);
        let moved = torch_params
            .iter()
            .zip(&init)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(moved > 1e-4, "PyTorch did not train ({moved})");
        for kind in BackendKind::ALL {
            let what = format!("{kind} {:?} rows {}", case.spec.widths(), case.rows);
            let (losses, params) = clef_run(kind, case, &x, &y);
            for (s, (a, b)) in losses.iter().zip(&torch_losses).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{what}: loss at step {s}: clef {a} vs PyTorch {b}"
                );
            }
            assert_eq!(params.len(), torch_params.len(), "{what}: parameter count");
            let scale = torch_params.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in params.iter().zip(&torch_params).enumerate() {
                assert!(
                    (a - b).abs() <= 2e-5 * scale.max(1.0),
                    "{what}: parameter {i} after {} steps: clef {a} vs PyTorch {b}",
                    case.steps
                );
            }
        }
    }
}

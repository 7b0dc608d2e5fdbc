//! The ABI 1.6 training services on the engine's `Ctx`, on a batch-norm ConvNet (where
//! "leave the running statistics alone" matters): `batch_grad` gives the gradient of its rows
//! and changes nothing; `train_step` is exactly one optimizer step on the masked cross-entropy
//! and refuses a non-finite loss without touching anything; `reinit` draws a fresh, seeded,
//! reproducible initialisation and resets the optimizer.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use clef_backend::{
    build_network, Activation, ConvNetSpec, ConvPool, ImageShape, Init, Inputs, ModelSpec, Network,
    Norm, Optimizer, OptimizerSpec,
};
use clef_data::scenario::Scenario;
use clef_data::spec::{ScenarioConfig, Setting};
use clef_engine::experts::Experts;
use clef_engine::strategy::{Boundary, Ctx};

const DIM: usize = 2 * 4 * 4;

fn scenario() -> Scenario {
    let data = Arc::new(clef_data::synthetic::gaussian_blobs(4, DIM, 6, 3, 1.0, 0));
    clef_data::scenario::build(
        &ScenarioConfig::class_split(2, 2),
        data,
        Setting::ClassIl,
        0,
    )
    .unwrap()
}

fn spec() -> ModelSpec {
    ModelSpec::ConvNet(ConvNetSpec {
        input: ImageShape {
            channels: 2,
            height: 4,
            width: 4,
        },
        channels: vec![3, 3],
        hidden: vec![],
        output: 4,
        norm: Norm::Batch,
        activation: Activation::Relu,
        init: Init::TorchDefault,
        pool: ConvPool::Flatten,
    })
}

fn sgd() -> OptimizerSpec {
    OptimizerSpec::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    }
}

struct Parts {
    sc: Scenario,
    net: Box<dyn Network>,
    experts: Experts,
    opt: Optimizer,
    rng: ChaCha8Rng,
}

impl Parts {
    fn new() -> Self {
        let net = build_network(&spec(), 5).unwrap();
        let opt = Optimizer::new(sgd(), net.params());
        Parts {
            sc: scenario(),
            experts: Experts::new(&spec(), 3, 2),
            net,
            opt,
            rng: ChaCha8Rng::seed_from_u64(1),
        }
    }

    fn ctx(&mut self, boundary: Option<Boundary>) -> Ctx<'_> {
        Ctx {
            net: &mut self.net,
            experts: &mut self.experts,
            optimizer: &mut self.opt,
            scenario: &self.sc,
            rng: &mut self.rng,
            task: 1,
            step: 3,
            seed: 42,
            boundary,
            reinits: 0,
        }
    }
}

fn rows(n: usize) -> (Vec<f32>, Vec<usize>) {
    let x = (0..n * DIM)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
        .collect();
    (x, (0..n).map(|r| r % 4).collect())
}

fn all_values(net: &dyn Network) -> Vec<Vec<f32>> {
    net.params().values().to_vec()
}

#[test]
fn batch_grad_gives_the_gradient_and_changes_nothing() {
    let mut p = Parts::new();
    // Leftover gradients that must survive.
    for i in 0..p.net.params().len() {
        for (k, g) in p.net.params_mut().grad_mut(i).iter_mut().enumerate() {
            *g = 0.01 * k as f32;
        }
    }
    let (grads0, values0) = (p.net.params().grads().to_vec(), all_values(&*p.net));
    let (x, t) = (rows(6).0, rows(6).1);
    let mut out = vec![0.0; p.net.params().numel()];
    let loss = p.ctx(None).batch_grad(&x, 6, &t, None, &mut out).unwrap();
    assert_eq!(
        p.net.params().grads(),
        &grads0[..],
        "gradient buffers changed"
    );
    assert_eq!(
        all_values(&*p.net),
        values0,
        "values or running statistics changed"
    );
    // The reference: a fresh copy, zeroed gradients, one training-mode backward pass.
    let mut r = build_network(&spec(), 5).unwrap();
    r.params_mut().zero_grads();
    let want = r
        .loss_backward(Inputs::new(&x, 6, DIM).unwrap(), &t, None, &mut Vec::new())
        .unwrap();
    assert_eq!(loss, want);
    let flat: Vec<f32> = r.params().grads().iter().flatten().copied().collect();
    assert_eq!(out, flat);
    assert!(flat.iter().any(|&g| g != 0.0));
    // A wrong output length is refused.
    assert!(p
        .ctx(None)
        .batch_grad(&x, 6, &t, None, &mut [0.0; 3])
        .is_err());
}

#[test]
fn train_step_is_one_optimizer_step_and_refuses_a_non_finite_loss() {
    let mut p = Parts::new();
    let (x, t) = rows(5);
    let loss = p
        .ctx(Some(Boundary::End))
        .train_step(&x, 5, &t, None)
        .unwrap();
    let mut r = build_network(&spec(), 5).unwrap();
    let mut opt = Optimizer::new(sgd(), r.params());
    r.params_mut().zero_grads();
    let want = r
        .loss_backward(Inputs::new(&x, 5, DIM).unwrap(), &t, None, &mut Vec::new())
        .unwrap();
    opt.step(r.params_mut());
    assert_eq!(loss, want);
    assert_eq!(all_values(&*p.net), all_values(&*r), "not the same step");
    // Overflowing logits (a huge head): an error, and neither the parameters nor the running
    // statistics move.
    let head = p.net.params().len() - 2;
    for (k, w) in p.net.params_mut().value_mut(head).iter_mut().enumerate() {
        *w = if k % 2 == 0 { 1e38 } else { -1e38 };
    }
    let before = all_values(&*p.net);
    let err = p
        .ctx(Some(Boundary::End))
        .train_step(&x, 5, &t, None)
        .unwrap_err();
    assert!(err.to_string().contains("no update was made"), "{err}");
    assert_eq!(all_values(&*p.net), before);
}

#[test]
fn reinit_is_fresh_seeded_and_resets_the_optimizer() {
    let draw = |calls: usize| {
        let mut p = Parts::new();
        let (x, t) = rows(4);
        p.ctx(Some(Boundary::End))
            .train_step(&x, 4, &t, None)
            .unwrap();
        {
            let mut ctx = p.ctx(Some(Boundary::End));
            for _ in 0..calls {
                ctx.reinit_network().unwrap();
            }
        }
        let momentum_zero = (0..p.net.params().len()).all(|i| {
            p.opt
                .state("momentum", i)
                .is_none_or(|m| m.iter().all(|&v| v == 0.0))
        });
        (all_values(&*p.net), momentum_zero)
    };
    let (once, reset) = draw(1);
    assert!(reset, "the optimizer state survived reinit");
    assert_eq!(draw(1).0, once, "not reproducible");
    let (twice, _) = draw(2);
    assert_ne!(twice, once, "a second reinit drew the same weights");
    let initial = all_values(&*build_network(&spec(), 5).unwrap());
    assert_ne!(
        once, initial,
        "reinit gave back the trial's own initialisation"
    );
}

//! Tests of the mock host itself: its optimizer step and `MockPlugin::train_step`.

use crate::testing::{MockHost, MockPlugin};
use crate::tests::strategy_of;
use crate::{Ctx, NoConfig, NoState, Result, Strategy};

#[test]
fn mock_step_follows_the_hosts_update_rules() {
    use crate::testing::MockOptimizer;
    // SGD with momentum, PyTorch's sequence: w = 1, g = 0.5, lr = 0.1, momentum = 0.9:
    // step 1: buf = 0.5, w = 0.95; step 2: buf = 0.95, w = 0.855.
    let mut host = MockHost::new(1, 1, 1);
    {
        let s = host.state_mut();
        s.optimizer = MockOptimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        };
        s.params[0].values = vec![1.0];
        s.params[0].grads = vec![0.5];
    }
    host.step();
    assert!((host.values()[0][0] - 0.95).abs() < 1e-6);
    host.step();
    assert!((host.values()[0][0] - 0.855).abs() < 1e-6);
    assert!((host.state().params[0].momentum.as_ref().unwrap()[0] - 0.95).abs() < 1e-6);
    // Adam: the first steps move by lr * g / |g| (bias-corrected moments).
    let mut host = MockHost::new(1, 1, 1);
    host.use_adam();
    {
        let s = host.state_mut();
        s.optimizer = MockOptimizer::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        s.params[0].values = vec![1.0];
        s.params[0].grads = vec![0.5];
    }
    host.step();
    assert!(
        (host.values()[0][0] - 0.9).abs() < 1e-6,
        "{:?}",
        host.values()
    );
    host.step();
    assert!(
        (host.values()[0][0] - 0.8).abs() < 1e-6,
        "{:?}",
        host.values()
    );
    let s = host.state();
    assert!((s.params[0].exp_avg.as_ref().unwrap()[0] - 0.095).abs() < 1e-6);
    assert_eq!(s.steps, 2);
}

/// Records the hooks of a training step and what they saw.
#[derive(Default)]
struct Recorder {
    hooks: Vec<&'static str>,
    loss: f32,
    grads: Vec<Vec<f32>>,
    before: Vec<Vec<f32>>,
    after: Vec<Vec<f32>>,
}

impl Strategy for Recorder {
    const NAME: &'static str = "recorder";
    type Config = NoConfig;
    type State = NoState;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Recorder::default())
    }
    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.hooks.push("before_batch");
        self.before = (0..ctx.param_count()?)
            .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        // One replayed row of task 1 with its own head.
        let mut mask = vec![false; 4];
        mask[2..].fill(true);
        ctx.append_rows(&[0.5, -0.5, 1.0], &[3], Some(&mask))
    }
    fn after_backward(&mut self, ctx: &mut Ctx<'_>, loss: f32) -> Result<()> {
        self.hooks.push("after_backward");
        self.loss = loss;
        self.grads = (0..ctx.param_count()?)
            .map(|i| ctx.grads_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        Ok(())
    }
    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.hooks.push("after_step");
        self.after = (0..ctx.param_count()?)
            .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

#[test]
fn train_step_runs_the_hooks_around_a_loss_and_an_optimizer_step() {
    let mut host = MockHost::new(3, 4, 2);
    host.seed_grads();
    let mut plugin = MockPlugin::create::<Recorder>("").unwrap();
    let loss = plugin.train_step(&mut host).unwrap();
    let r = strategy_of::<Recorder>(&plugin);
    assert_eq!(r.hooks, ["before_batch", "after_backward", "after_step"]);
    assert!(loss > 0.0 && loss.is_finite() && r.loss == loss);
    // The first SGD step with momentum moves by lr * g (the buffer starts as g).
    for ((b, a), g) in r
        .before
        .iter()
        .flatten()
        .zip(r.after.iter().flatten())
        .zip(r.grads.iter().flatten())
    {
        assert!((b - 0.1 * g - a).abs() < 1e-6, "{b} - 0.1 * {g} != {a}");
    }
    // Gradients were zeroed first (seed_grads is gone), and rows of task 0 put nothing on
    // units 2, 3 except through the replayed row (unit 3 its target, 2 in its head).
    let gb = &r.grads[1];
    assert!(gb[2] > 0.0 && gb[3] < 0.0, "{gb:?}");
    assert!(
        (gb.iter().sum::<f32>()).abs() < 1e-6,
        "softmax gradients sum to zero"
    );
    // The loss is the mean cross-entropy: a finite difference agrees with the gradient.
    let mut probe = MockHost::new(3, 4, 2);
    probe.state_mut().params[0].values = r.before[0].clone();
    probe.state_mut().appended = host.state().appended.clone();
    let eps = 1e-2;
    let at = |probe: &mut MockHost, dw: f32| {
        probe.state_mut().params[0].values[5] = r.before[0][5] + dw;
        probe.loss_backward(0).unwrap()
    };
    let fd = (at(&mut probe, eps) - at(&mut probe, -eps)) / (2.0 * eps);
    assert!(
        (fd - r.grads[0][5]).abs() < 1e-3,
        "{fd} vs {}",
        r.grads[0][5]
    );
}

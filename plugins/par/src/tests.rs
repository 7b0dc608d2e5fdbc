use clef_sdk::testing::{MockHost, MockPlugin};
use clef_sdk::Activation;

use super::kd::kd_loss_grad;
use super::relatedness::{decide, divergence, prototypes, relatedness, Aggregate, Decision};
use super::search::{Arch, Multinomial, Space};
use super::Par;

clef_sdk::standard_tests!(
    Par,
    config = "search_epochs = 2\nsearch_steps = 3\nsearch_batch = 4\nproto_fraction = 1.0\n\
              max_depth = 2\nmin_width = 2\nmax_width = 4\nfeatures = \"projection\"\n\
              projection_dim = 3",
    docs = "../../docs/strategies.md"
);

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn prototypes_are_class_means() {
    let feats = [0.0, 1.0, 2.0, 3.0, 10.0, 20.0];
    let p = prototypes(&feats, 2, &[4, 1, 4]);
    assert_eq!(p, vec![(1, vec![2.0, 3.0]), (4, vec![5.0, 10.5])]);
}

#[test]
fn divergence_and_relatedness_match_hand_computed_values() {
    // New task: class 0 at x = 0, 2 (prototype 1), class 1 at x = 10, 12 (prototype 11).
    let feats = [0.0f32, 2.0, 10.0, 12.0];
    let labels = [0, 0, 1, 1];
    let own = prototypes(&feats, 1, &labels);
    assert_eq!(own, vec![(0, vec![1.0]), (1, vec![11.0])]);
    // Old prototypes 5 and 20: ρ = 1 for every sample; ν = 5, 3, 5, 7.
    // D_0 = (ln 5 + ln 3) / 2, D_1 = (ln 5 + ln 7) / 2, D = ln(525) / 2.
    let old = vec![(0, vec![5.0f32]), (1, vec![20.0])];
    let d = divergence(&feats, 1, &labels, &own, &old);
    assert!(close(d, 525f64.ln() / 2.0, 1e-12), "{d}");
    // s = min(1 − e^{−2D}, D) = 1 − 1/525.
    assert!(close(relatedness(d), 1.0 - 1.0 / 525.0, 1e-12));

    // One class at x = 0, 2 (prototype 1, ρ = 1); old prototypes −1.1 and 3.1: ν = 1.1 for
    // both, D = ln 1.1 ≈ 0.0953 < 1 − e^{−2D} ≈ 0.1735, so s = D.
    let f2 = [0.0f32, 2.0];
    let own2 = prototypes(&f2, 1, &[0, 0]);
    let old2 = vec![(0, vec![-1.1f32]), (1, vec![3.1])];
    let d2 = divergence(&f2, 1, &[0, 0], &own2, &old2);
    assert!(close(d2, (1.1f32 as f64 + 0.0).ln(), 1e-6), "{d2}");
    assert_eq!(relatedness(d2), d2);

    // Samples closer to an old prototype than to their own: D_c < 0 → clipped, D = 0 →
    // s = 1 (the original code's guard: unrelated).
    let old3 = vec![(0, vec![0.0f32]), (1, vec![2.0])];
    let d3 = divergence(&f2, 1, &[0, 0], &own2, &old3);
    assert_eq!(d3, 0.0);
    assert_eq!(relatedness(d3), 1.0);
}

#[test]
fn divergence_sums_over_classes() {
    // Two identical classes far apart give twice one class's divergence.
    let one = divergence(
        &[0.0, 2.0],
        1,
        &[0, 0],
        &vec![(0, vec![1.0])],
        &vec![(0, vec![5.0])],
    );
    let two = divergence(
        &[0.0, 2.0, 100.0, 102.0],
        1,
        &[0, 0, 1, 1],
        &vec![(0, vec![1.0]), (1, vec![101.0])],
        &vec![(0, vec![5.0]), (1, vec![105.0])],
    );
    assert!(close(two, 2.0 * one, 1e-12));
}

#[test]
fn aggregates() {
    assert_eq!(Aggregate::Mean.apply(&[0.2, 0.4]), 0.30000000000000004);
    assert_eq!(Aggregate::Min.apply(&[0.2, 0.4]), 0.2);
    assert_eq!(Aggregate::Max.apply(&[0.2, 0.4]), 0.4);
}

#[test]
fn decision_rule_at_and_around_the_thresholds() {
    let d = |s: f64, size: usize| decide(Some((3, s)), 0.5, 0.75, size, 100, 0.5);
    // S ≤ α: regularisation; direct reuse below half the largest task, transfer otherwise.
    assert_eq!(d(0.5, 49), Decision::ReuseHead { expert: 3 });
    assert_eq!(d(0.5, 50), Decision::Transfer { expert: 3 });
    assert_eq!(d(0.0, 1000), Decision::Transfer { expert: 3 });
    // α < S ≤ β: new expert with the related architecture.
    assert_eq!(d(0.5 + 1e-12, 10), Decision::ReuseArch { expert: 3 });
    assert_eq!(d(0.75, 10), Decision::ReuseArch { expert: 3 });
    // S > β: search.
    assert_eq!(d(0.75 + 1e-12, 10), Decision::Search);
    assert_eq!(d(1.0, 10), Decision::Search);
    // No expert yet: search.
    assert_eq!(decide(None, 0.5, 0.75, 10, 0, 0.5), Decision::Search);
    assert_eq!(Decision::Transfer { expert: 0 }.code(), 1);
}

#[test]
fn distillation_gradient_matches_finite_differences() {
    let (rows, c, t) = (3, 4, 2.0);
    let student: Vec<f32> = (0..rows * c)
        .map(|i| ((i * 7 % 5) as f32 - 2.0) * 0.7)
        .collect();
    let teacher: Vec<f32> = (0..rows * c)
        .map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.5)
        .collect();
    let (_, g) = kd_loss_grad(&student, &teacher, rows, c, t);
    let h = 1e-2f32;
    for i in 0..rows * c {
        let mut p = student.clone();
        p[i] += h;
        let mut m = student.clone();
        m[i] -= h;
        let fd = (kd_loss_grad(&p, &teacher, rows, c, t).0
            - kd_loss_grad(&m, &teacher, rows, c, t).0)
            / (2.0 * h as f64);
        assert!(
            (fd - g[i] as f64).abs() < 1e-4,
            "logit {i}: fd {fd} vs {}",
            g[i]
        );
    }
    // Student = teacher: the gradient is (almost) zero (only the ε smoothing remains).
    let (_, g0) = kd_loss_grad(&teacher, &teacher, rows, c, t);
    assert!(g0.iter().all(|v| v.abs() < 1e-5));
}

#[test]
fn multinomial_update_matches_hand_computation() {
    let mut m = Multinomial::uniform(&[3]);
    m.update(&[0], 0.8, 0.5);
    m.update(&[1], 0.9, 0.5);
    // Neither round has an option both sampled less and more accurate: p stays uniform.
    assert!(m.p[0].iter().all(|&p| close(p, 1.0 / 3.0, 1e-12)));
    m.update(&[0], 0.7, 0.5);
    // h_e = [2, 1, 0], h_a = [0.7, 0.9, 0]: v⁺ − v⁻ = [−1, +1, 0] → softmax([−0.5, 0.5, 0]).
    let e = [(-0.5f64).exp(), 0.5f64.exp(), 1.0];
    let s: f64 = e.iter().sum();
    for (p, e) in m.p[0].iter().zip(e) {
        assert!(close(*p, e / s, 1e-12));
    }
    assert_eq!(m.best(), vec![1]);
    assert_eq!(m.sample(&[0.0]), vec![0]);
    assert_eq!(m.sample(&[0.999]), vec![2]);
}

#[test]
fn parameter_accounting_is_exact() {
    let a = Arch::mlp(vec![64, 64], Activation::Relu);
    // 784·64 + 64 + 64·64 + 64 = 50240 + 4160 = 54400; a 2-class head: 2·65 = 130.
    assert_eq!(a.body_params(784), 54_400);
    assert_eq!(a.head_params(784, 2), 130);
    let lin = Arch::mlp(vec![], Activation::Tanh);
    assert_eq!(lin.body_params(10), 0);
    assert_eq!(lin.head_params(10, 3), 33);
}

/// The default hparams table with `extra` lines (`key = value`) replacing defaults.
fn toml(extra: &str) -> String {
    let extra = format!(
        "search_epochs = 3\nsearch_steps = 2\nsearch_batch = 4\nproto_fraction = 1.0\n{extra}"
    );
    let keys: Vec<&str> = extra
        .lines()
        .filter_map(|l| l.split(" = ").next())
        .collect();
    let mut text: String = clef_sdk::default_config_toml::<Par>()
        .lines()
        .filter(|l| !keys.iter().any(|k| l.starts_with(&format!("{k} ="))))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&extra);
    text
}

#[test]
fn first_task_searches_and_reports() {
    let mut host = MockHost::new(4, 4, 2);
    let mut p =
        MockPlugin::create::<Par>(&toml("max_depth = 2\nmin_width = 2\nmax_width = 4")).unwrap();
    p.on_model_built(&mut host).unwrap();
    p.on_task_start(&mut host).unwrap();
    assert_eq!(host.reported(0, "decision"), Some(3.0));
    let e = host.reported(0, "expert").unwrap() as usize;
    assert!(e >= 1);
    // The task is routed to the chosen expert, whose architecture is in the search space.
    assert_eq!(host.state().routes[0], Some(e));
    let (hidden, act, _) = host.state().experts[e].clone();
    assert!(hidden.len() <= 2 && hidden.iter().all(|&w| w == 2 || w == 4));
    assert_eq!(host.reported(0, "arch.depth"), Some(hidden.len() as f64));
    assert_eq!(
        host.reported(0, "arch.activation"),
        Some(f64::from(act as u8))
    );
    p.on_task_end(&mut host).unwrap();
    // Parameters: the expert's body plus a 2-unit head, by hand.
    let mut prev = 4;
    let mut body = 0;
    for &w in &hidden {
        body += prev * w + w;
        prev = w;
    }
    assert_eq!(
        host.reported(0, "params.total"),
        Some((body + 2 * (prev + 1)) as f64)
    );
}

#[test]
fn new_expert_policy_uses_the_base_architecture_every_task() {
    let mut host = MockHost::new(4, 4, 2);
    let mut p = MockPlugin::create::<Par>(&toml("policy = \"new-expert\"")).unwrap();
    p.on_model_built(&mut host).unwrap();
    for t in 0..2 {
        host.state_mut().task = t;
        p.on_task_start(&mut host).unwrap();
        assert_eq!(host.reported(t, "decision"), Some(4.0));
        p.on_task_end(&mut host).unwrap();
    }
    // Two linear experts (the mock model has no hidden layer), each with one 2-unit head.
    assert_eq!(host.state().experts.len(), 3);
    assert_eq!(host.reported(1, "params.total"), Some(2.0 * 2.0 * 5.0));
}

/// Task 0: two classes at centres 0 and 10·1 with the four points ±e1, ±e2 around each
/// (ρ = 1). Task 1: the same points shifted by 0.5·e3 (own prototypes shifted, ρ = 1; the
/// nearest old prototype is at ν = √1.25). D = 2 · ln √1.25 = ln 1.25 ≈ 0.223, s = D < α.
fn related_pair(host: &mut MockHost) {
    let s = host.state_mut();
    let offsets = [
        [1.0f32, 0.0, 0.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
    ];
    for t in 0..2 {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for r in 0..8 {
            let c = r % 2;
            let centre = 10.0 * c as f32;
            for (i, o) in offsets[r / 2].iter().enumerate() {
                let shift = if t == 1 && i == 2 { 0.5 } else { 0.0 };
                x.push(centre + o + shift);
            }
            y.push(s.tasks[t].units[c]);
        }
        s.tasks[t].train_x = x;
        s.tasks[t].train_y = y;
    }
}

#[test]
fn related_task_reuses_the_expert() {
    let mut host = MockHost::new(4, 4, 2);
    related_pair(&mut host);
    let mut p = MockPlugin::create::<Par>(&toml("alpha = 0.5\nbeta = 0.75")).unwrap();
    p.on_model_built(&mut host).unwrap();
    p.on_task_start(&mut host).unwrap();
    p.on_task_end(&mut host).unwrap();
    host.state_mut().task = 1;
    p.on_task_start(&mut host).unwrap();
    let s = host.reported(1, "relatedness.task0").unwrap();
    assert!(close(s, 1.25f64.ln(), 1e-6), "relatedness {s}");
    // Same-size task: transfer (fine-tune with distillation) on task 0's expert.
    assert_eq!(host.reported(1, "decision"), Some(1.0));
    assert_eq!(host.reported(1, "expert"), host.reported(0, "expert"));
    p.before_batch(&mut host).unwrap();
    p.after_backward(&mut host, 1.0).unwrap();
    p.on_task_end(&mut host).unwrap();
}

#[test]
fn thresholds_move_the_decision() {
    // The same pair with α below s: a new expert with the related architecture.
    let mut host = MockHost::new(4, 4, 2);
    related_pair(&mut host);
    let mut p = MockPlugin::create::<Par>(&toml("alpha = 0.2\nbeta = 0.75")).unwrap();
    p.on_model_built(&mut host).unwrap();
    p.on_task_start(&mut host).unwrap();
    p.on_task_end(&mut host).unwrap();
    host.state_mut().task = 1;
    p.on_task_start(&mut host).unwrap();
    assert_eq!(host.reported(1, "decision"), Some(2.0));
    assert_ne!(host.reported(1, "expert"), host.reported(0, "expert"));
    assert_eq!(
        host.reported(1, "arch.depth"),
        host.reported(0, "arch.depth")
    );
    assert_eq!(
        host.reported(1, "arch.width"),
        host.reported(0, "arch.width")
    );
}

#[test]
fn bad_hparams_name_plugin_and_key() {
    let e = MockPlugin::create::<Par>(&toml("alpha = 0.8\nbeta = 0.6"))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("par") && msg.contains("alpha") && msg.contains("beta"),
        "{msg}"
    );
    let e = MockPlugin::create::<Par>(&toml("min_width = 8\nmax_width = 4"))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("min_width") && msg.contains("max_width") && msg.contains('8'),
        "{msg}"
    );
    // Equal bounds are fine: a single width.
    assert!(MockPlugin::create::<Par>(&toml("min_width = 4\nmax_width = 4")).is_ok());
}

#[test]
fn the_state_holds_the_expert_records_and_round_trips() {
    // The experts live in the host's pool (checkpointed by the host); the plugin's state holds
    // its records of them, the routes, prototypes and the projection.
    let mut host = MockHost::new(4, 4, 2);
    let cfg = toml("features = \"projection\"\nprojection_dim = 3");
    let mut p = MockPlugin::create::<Par>(&cfg).unwrap();
    assert!(p.descriptor().save_state.is_some());
    assert!(p.descriptor().load_state.is_some());
    p.on_model_built(&mut host).unwrap();
    let fresh = p.save_state(&mut host).unwrap();
    p.on_task_start(&mut host).unwrap();
    p.on_task_end(&mut host).unwrap();
    assert!(host.state().experts.len() > 1, "task 0 added an expert");
    let saved = p.save_state(&mut host).unwrap();
    assert_ne!(saved, fresh, "task 0 left nothing in the state");
    let mut q = MockPlugin::create::<Par>(&cfg).unwrap();
    q.load_state(&mut host, &saved).unwrap();
    assert_eq!(q.save_state(&mut host).unwrap(), saved);
}

#[test]
fn the_conv_space_searches_the_convolutions_and_keeps_the_dense_part() {
    let space = Space {
        depths: vec![1, 2, 3],
        widths: vec![8, 16],
        activations: vec![Activation::Tanh],
        conv: Some(vec![32]),
    };
    assert_eq!(space.sizes(), [3, 2, 1]);
    let a = space.arch([2, 1, 0]);
    assert_eq!(a.channels, vec![16, 16, 16]);
    assert_eq!(a.hidden, vec![32]);
    assert!(a.is_conv());
    // An MLP space gives MLP architectures.
    let mlp = Space {
        conv: None,
        ..space.clone()
    };
    let b = mlp.arch([0, 0, 0]);
    assert!(!b.is_conv());
    assert_eq!(b.hidden, vec![8]);
    // Both come back from the checkpoint encoding exactly.
    let bytes = clef_sdk::state::encode(&(space.clone(), a.clone())).unwrap();
    let (s2, a2): (Space, Arch) = clef_sdk::state::decode(&bytes).unwrap();
    assert_eq!((s2, a2), (space, a));
}

#[test]
fn min_channels_above_max_channels_is_refused() {
    let e = MockPlugin::create::<Par>(&toml("min_channels = 64\nmax_channels = 8"))
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("min_channels") && msg.contains("max_channels"),
        "{msg}"
    );
}

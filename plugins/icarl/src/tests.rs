//! Tests of the `icarl` plugin: hand-computed herding, reduction, class means, NCM scores and
//! the distillation loss, through the SDK's mock host (whose `features` is the identity on
//! the inputs and whose model is linear).

use super::*;
use clef_sdk::abi::{CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL};
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

use crate::ncm::NO_MEAN_SCORE;

clef_sdk::standard_tests!(
    Icarl,
    config = "memory_size = 4\nreplay_batch_size = 0\nclassifier = \"ncm\"",
    docs = "../../docs/strategies.md"
);

/// A class-IL mock host with 2-D inputs, 4 outputs and two tasks (units {0, 1} and {2, 3})
/// whose training splits are the hand-made rows of the herding test.
fn herding_host() -> MockHost {
    let mut host = MockHost::new(2, 4, 2);
    let s = host.state_mut();
    s.setting = CLEF_SETTING_CLASS_IL;
    // Task 0. Class 0: normalised [1,0], [0,1], [0.6,0.8]; μ = (0.5333, 0.6); herding picks
    // row 2 (‖μ − φ‖² = 0.0444 against 0.5778 and 0.4444), then row 0 (mean with it
    // (0.8, 0.4): 0.1111, against (0.3, 0.9): 0.1444), then row 1. Class 1: normalised
    // [-1,0], [-1,0], [0,-1]; μ = (−2/3, −1/3): row 3 (0.2222, tie with row 4 goes to the
    // lower row), then row 5 (mean (−0.5, −0.5): 0.0556 against row 4's (−1, 0): 0.2222).
    s.tasks[0].train_x = vec![
        1.0, 0.0, 0.0, 1.0, 0.6, 0.8, -1.0, 0.0, -2.0, 0.0, 0.0, -1.0,
    ];
    s.tasks[0].train_y = vec![0, 0, 0, 1, 1, 1];
    // Task 1. Class 2: normalised [1,0], [0,1], [0,1]; μ = (1/3, 2/3): row 1 ([0, 2], the
    // first of the two nearest). Class 3: one row.
    s.tasks[1].train_x = vec![1.0, 0.0, 0.0, 2.0, 0.0, 3.0, 2.0, -1.0];
    s.tasks[1].train_y = vec![2, 2, 2, 3];
    host
}

fn plugin(config: &str) -> MockPlugin {
    MockPlugin::create::<Icarl>(config).unwrap()
}

/// `on_task_start` and `on_task_end` of task `task` (no training).
fn boundary(plugin: &mut MockPlugin, host: &mut MockHost, task: usize) {
    host.state_mut().task = task;
    plugin.on_task_start(host).unwrap();
    plugin.on_task_end(host).unwrap();
}

fn memory_rows(state: &Icarl) -> Vec<(Vec<f32>, usize, usize)> {
    let m = state.memory.as_ref().expect("a memory after a task end");
    (0..m.len())
        .map(|i| (m.x(i).to_vec(), m.target(i), m.task(i)))
        .collect()
}

#[test]
fn herding_picks_the_exemplars_and_older_classes_are_reduced_to_their_first_m() {
    let mut host = herding_host();
    let mut p = plugin("memory_size = 4");
    p.on_model_built(&mut host).unwrap();
    boundary(&mut p, &mut host, 0);
    // m = 4 / 2 classes = 2, in herding order.
    let s = kit::saved::<Icarl>(&mut p, &mut host);
    assert_eq!(
        memory_rows(&s),
        vec![
            (vec![0.6, 0.8], 0, 0),
            (vec![1.0, 0.0], 0, 0),
            (vec![-1.0, 0.0], 1, 0),
            (vec![0.0, -1.0], 1, 0),
        ]
    );
    assert_eq!(host.reported(0, "exemplars_per_class"), Some(2.0));
    // m = 4 / 4 classes = 1: classes 0 and 1 keep their first exemplar; class 2 gets the
    // stored input of its herding pick ([0, 2], not normalised), class 3 its only row.
    boundary(&mut p, &mut host, 1);
    let s = kit::saved::<Icarl>(&mut p, &mut host);
    assert_eq!(
        memory_rows(&s),
        vec![
            (vec![0.6, 0.8], 0, 0),
            (vec![-1.0, 0.0], 1, 0),
            (vec![0.0, 2.0], 2, 1),
            (vec![2.0, -1.0], 3, 1),
        ]
    );
    assert_eq!(host.reported(1, "exemplars"), Some(4.0));
    // A memory smaller than the classes seen holds nothing of the classes it cannot fit.
    let mut host = herding_host();
    let mut p = plugin("memory_size = 3");
    boundary(&mut p, &mut host, 0);
    boundary(&mut p, &mut host, 1);
    assert!(memory_rows(&kit::saved::<Icarl>(&mut p, &mut host)).is_empty());
}

#[test]
fn class_means_and_ncm_scores_match_hand_values() {
    let mut host = herding_host();
    let mut p = plugin("memory_size = 4");
    boundary(&mut p, &mut host, 0);
    // Class 0: exemplars [0.6, 0.8] and [1, 0]: mean (0.8, 0.4), renormalised.
    let n = (0.8f64 * 0.8 + 0.4 * 0.4).sqrt();
    let s = kit::saved::<Icarl>(&mut p, &mut host);
    let close = |a: &[f32], b: &[f64]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&a, &b)| (f64::from(a) - b).abs() < 1e-6)
    };
    assert!(close(&s.means[0], &[0.8 / n, 0.4 / n]), "{:?}", s.means[0]);
    // Class 1: [-1, 0] and [0, -1]: (−0.5, −0.5) renormalised.
    let h = 0.5f64.sqrt();
    assert!(close(&s.means[1], &[-h, -h]), "{:?}", s.means[1]);
    assert!(s.means[2].is_empty() && s.means[3].is_empty());

    // x = [3, 4] → φ = [0.6, 0.8]; units 2 and 3 have no exemplar yet.
    p.before_eval(&mut host, None).unwrap();
    let scores = p
        .predict(&mut host, None, &[3.0, 4.0, 0.0, -5.0], 2)
        .unwrap();
    let d = |a: [f64; 2], b: [f64; 2]| -((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let want = [
        d([0.6, 0.8], [0.8 / n, 0.4 / n]),
        d([0.6, 0.8], [-h, -h]),
        d([0.0, -1.0], [0.8 / n, 0.4 / n]),
        d([0.0, -1.0], [-h, -h]),
    ];
    for (r, w) in [(0, &want[..2]), (1, &want[2..])] {
        assert!(close(&scores[r * 4..r * 4 + 2], w), "{scores:?}");
        assert_eq!(&scores[r * 4 + 2..r * 4 + 4], &[NO_MEAN_SCORE; 2]);
    }
    p.after_eval(&mut host).unwrap();

    // After task 1 (m = 1) the means are the single exemplars, normalised.
    boundary(&mut p, &mut host, 1);
    let s = kit::saved::<Icarl>(&mut p, &mut host);
    let r5 = 5.0f64.sqrt();
    assert!(close(&s.means[0], &[0.6, 0.8]));
    assert!(close(&s.means[2], &[0.0, 1.0]));
    assert!(close(&s.means[3], &[2.0 / r5, -1.0 / r5]));
    let scores = p.predict(&mut host, None, &[0.0, 7.0], 1).unwrap();
    assert!(close(
        &scores,
        &[
            d([0.0, 1.0], [0.6, 0.8]),
            d([0.0, 1.0], [-1.0, 0.0]),
            0.0,
            d([0.0, 1.0], [2.0 / r5, -1.0 / r5]),
        ]
    ));
}

#[test]
fn the_head_classifier_and_an_empty_memory_score_with_the_network_logits() {
    let mut host = herding_host();
    let x = [0.5f32, -1.5];
    let linear = |host: &MockHost| -> Vec<f32> {
        let v = host.values();
        (0..4)
            .map(|o| v[0][2 * o] * x[0] + v[0][2 * o + 1] * x[1] + v[1][o])
            .collect()
    };
    let mut ncm = plugin("classifier = \"ncm\"");
    // No task has ended: no means yet.
    assert_eq!(ncm.predict(&mut host, None, &x, 1).unwrap(), linear(&host));
    let mut head = plugin("classifier = \"head\"");
    boundary(&mut head, &mut host, 0);
    assert_eq!(head.predict(&mut host, None, &x, 1).unwrap(), linear(&host));
    boundary(&mut ncm, &mut host, 0);
    assert_ne!(ncm.predict(&mut host, None, &x, 1).unwrap(), linear(&host));
}

/// The mock's linear logits `W x + b` of `params` in f64.
fn logits64(params: &[Vec<f64>], x: &[f32], k: usize) -> Vec<f64> {
    let d = x.len();
    (0..k)
        .map(|o| {
            (0..d)
                .map(|i| params[0][o * d + i] * f64::from(x[i]))
                .sum::<f64>()
                + params[1][o]
        })
        .collect()
}

#[test]
fn the_loss_distils_the_old_networks_sigmoids_on_old_units_and_learns_the_new_ones() {
    // By hand, one row, units 0 and 1 old (old sigmoids 0.25 and 0.5), unit 2 new with label
    // 2, unit 3 unseen: targets q = (0.25, 0.5, 1); BCE(z, q) = max(z, 0) − qz + ln(1 + e^−|z|).
    let z = [0.0f32, 1.0, -1.0, 5.0];
    let l1 = (1.0 + (-1.0f64).exp()).ln();
    let want = (2f64.ln() + (0.5 + l1) + (1.0 + l1)) / 3.0;
    let s1 = 1.0 / (1.0 + (-1.0f64).exp());
    let want_grad = [0.25 / 3.0, (s1 - 0.5) / 3.0, (1.0 - s1 - 1.0) / 3.0, 0.0];
    let mut cot = [0.0f32; 4];
    let loss = DistillBce {
        k: 4,
        seen: &[true, true, true, false],
        new: &[false, false, true, false],
        old_probs: &[0.25, 0.5, 0.9, 0.9],
    }
    .apply(&z, &[2], &mut cot)
    .unwrap();
    assert!((loss - want).abs() < 1e-9, "{loss} against {want}");
    for (g, w) in cot.iter().zip(want_grad) {
        assert!(
            (f64::from(*g) - w).abs() < 1e-7,
            "{cot:?} against {want_grad:?}"
        );
    }
    // A label outside the seen units is an error, not a silent zero.
    let err = DistillBce {
        k: 4,
        seen: &[true, true, true, false],
        new: &[false, false, true, false],
        old_probs: &[0.0; 4],
    }
    .apply(&z, &[3], &mut [0.0; 4])
    .unwrap_err();
    assert!(err.to_string().contains("label 3"), "{err}");
}

#[test]
fn the_loss_hook_matches_an_f64_reference_and_finite_differences() {
    // Class-IL, task 1 of the herding host: the batch is two rows of task 1 plus two
    // exemplars; the old network is the parameters at task 1's start, then perturbed.
    let mut host = herding_host();
    let mut p = plugin("memory_size = 4\nreplay_batch_size = 2");
    boundary(&mut p, &mut host, 0);
    host.state_mut().task = 1;
    p.on_task_start(&mut host).unwrap();
    let old = kit::theta(&host);
    host.perturb(0.05);
    {
        let s = host.state_mut();
        s.batch_x = vec![0.0, 2.0, 2.0, -1.0];
        s.batch_targets = vec![2, 3];
        s.batch_current_rows = 2;
        s.appended.clear();
    }
    let theta = kit::theta(&host);
    let before_values = host.values();
    p.before_batch(&mut host).unwrap();
    assert_eq!(
        host.values(),
        before_values,
        "parameters not restored bit for bit"
    );
    let appended = host.state().appended[0].clone();
    assert_eq!(appended.targets.len(), 2);
    let mut x = vec![0.0f32, 2.0, 2.0, -1.0];
    x.extend_from_slice(&appended.x);
    let mut y = vec![2usize, 3];
    y.extend_from_slice(&appended.targets);
    let (seen, new) = ([true; 4], [false, false, true, true]);
    // The reference: mean over rows × 4 seen units of the BCE with targets σ(old logits) on
    // units 0, 1 and one-hot labels on 2, 3.
    let reference = |params: &[Vec<f64>]| -> f64 {
        let mut total = 0.0;
        for r in 0..y.len() {
            let row = &x[r * 2..r * 2 + 2];
            let zn = logits64(params, row, 4);
            let zo = logits64(&old, row, 4);
            for u in 0..4 {
                let q = if new[u] {
                    f64::from(u8::from(u == y[r]))
                } else {
                    1.0 / (1.0 + (-zo[u]).exp())
                };
                let z = zn[u];
                total += z.max(0.0) - q * z + (-z.abs()).exp().ln_1p();
            }
        }
        total / (y.len() * seen.len()) as f64
    };
    let zero: Vec<Vec<f32>> = host.grads().iter().map(|g| vec![0.0; g.len()]).collect();
    let loss = p.loss(&mut host, 0).unwrap();
    assert!(
        (f64::from(loss) - reference(&theta)).abs() < 1e-5,
        "{loss} against {}",
        reference(&theta)
    );
    let checked = kit::assert_grad_matches_fd(&theta, &zero, &host.grads(), reference, 1e-4, 1e-3);
    assert_eq!(checked, 4 * 2 + 4);
}

#[test]
fn the_union_share_visits_every_exemplar_once_per_epoch() {
    // 4 exemplars and 4 training samples in task 1 of the herding host: batches of 2 current
    // rows get 2 · 4 / 4 = 2 exemplars each, and two batches (one epoch) visit each exemplar
    // once.
    let mut host = herding_host();
    let mut p = plugin("memory_size = 4");
    boundary(&mut p, &mut host, 0);
    host.state_mut().task = 1;
    p.on_task_start(&mut host).unwrap();
    let memory = memory_rows(&kit::saved::<Icarl>(&mut p, &mut host));
    let mut visited = Vec::new();
    for b in 0..4 {
        let s = host.state_mut();
        s.batch_x = vec![0.0, 2.0, 2.0, -1.0];
        s.batch_targets = vec![2, 3];
        s.batch_current_rows = 2;
        s.appended.clear();
        p.train_step(&mut host).unwrap();
        let a = host.state().appended[0].clone();
        assert_eq!(a.targets.len(), 2, "batch {b}");
        assert_eq!(a.masks, Some([true; 4].repeat(2)));
        visited.extend(a.x.chunks(2).zip(&a.targets).map(|(x, &t)| (x.to_vec(), t)));
    }
    for epoch in visited.chunks(4) {
        let mut got: Vec<String> = epoch.iter().map(|r| format!("{r:?}")).collect();
        let mut want: Vec<String> = memory
            .iter()
            .map(|(x, t, _)| format!("{:?}", (x.clone(), *t)))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
    // One current row per batch: 1 · 4 / 4 = 1 exemplar per batch; three rows: 3 per batch.
    for (rows, each) in [(1usize, 1usize), (3, 3)] {
        let s = host.state_mut();
        s.batch_x = [0.0, 2.0].repeat(rows);
        s.batch_targets = vec![2; rows];
        s.batch_current_rows = rows;
        s.appended.clear();
        p.before_batch(&mut host).unwrap();
        assert_eq!(host.state().appended[0].targets.len(), each);
    }
}

#[test]
fn nothing_is_replayed_or_distilled_in_the_first_task() {
    let mut host = herding_host();
    let mut p = plugin("memory_size = 4");
    p.on_task_start(&mut host).unwrap();
    p.train_step(&mut host).unwrap();
    assert!(host.state().appended.is_empty());
    let s = kit::saved::<Icarl>(&mut p, &mut host);
    assert!(s.old.is_empty() && s.memory.is_none());
}

#[test]
fn domain_il_is_refused_with_a_reason() {
    let mut host = herding_host();
    host.state_mut().setting = CLEF_SETTING_DOMAIN_IL;
    let err = plugin("").on_task_start(&mut host).unwrap_err();
    assert!(err.message.contains("class-IL or task-IL"), "{err}");
}

#[test]
fn a_restored_instance_predicts_and_trains_like_the_original() {
    let mut host = herding_host();
    let mut p = plugin("memory_size = 4");
    boundary(&mut p, &mut host, 0);
    let saved = p.save_state(&mut host).unwrap();
    let mut q = plugin("memory_size = 4");
    q.load_state(&mut host, &saved).unwrap();
    let x = [0.3f32, -0.7, 1.0, 1.0];
    assert_eq!(
        p.predict(&mut host, None, &x, 2).unwrap(),
        q.predict(&mut host, None, &x, 2).unwrap()
    );
    assert_eq!(q.save_state(&mut host).unwrap(), saved);
}

#[test]
fn the_union_share_carries_its_remainder_across_batches() {
    // 4 exemplars, 6 training samples in task 1, batches of 2: 2 · 4 / 6 = 1⅓ exemplars per
    // batch, so the counts are ⌊8/6⌋ = 1 (remainder 2), ⌊10/6⌋ = 1 (remainder 4), ⌊12/6⌋ = 2:
    // 4 exemplars over the epoch's 3 batches, as the union of 6 + 4 samples would give.
    let mut host = herding_host();
    let mut p = plugin("memory_size = 4");
    boundary(&mut p, &mut host, 0);
    {
        let s = host.state_mut();
        s.task = 1;
        s.tasks[1].train_x.extend([5.0, 5.0, 6.0, 6.0]);
        s.tasks[1].train_y.extend([2, 3]);
    }
    p.on_task_start(&mut host).unwrap();
    let mut counts = Vec::new();
    for _ in 0..6 {
        let s = host.state_mut();
        s.batch_x = vec![0.0, 2.0, 2.0, -1.0];
        s.batch_targets = vec![2, 3];
        s.batch_current_rows = 2;
        s.appended.clear();
        p.train_step(&mut host).unwrap();
        counts.push(host.state().appended.first().map_or(0, |a| a.targets.len()));
    }
    assert_eq!(counts, [1, 1, 2, 1, 1, 2]);
}

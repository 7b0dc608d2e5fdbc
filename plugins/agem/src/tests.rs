//! Tests of the `agem` plugin: the projection on hand-computed vectors, and the whole hook on
//! the SDK's mock host (a linear softmax model `z = W x + b`, whose cross-entropy gradient the
//! tests compute by hand).

use clef_sdk::abi::CLEF_ROLE_BUFFER;
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

use super::*;

clef_sdk::standard_tests!(
    Agem,
    config = "memory_size = 4\nsample_size = 3",
    docs = "../../docs/strategies.md"
);

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

#[test]
fn a_conflicting_gradient_is_projected_as_computed_by_hand() {
    // g = (1, 2 | -3), g_ref = (1, 0 | 1): g·g_ref = -2, g_ref·g_ref = 2, c = -1:
    // g' = g + g_ref = (2, 2 | -2), and g'·g_ref = 0.
    let (mut a, mut b) = (vec![1.0f32, 2.0], vec![-3.0f32]);
    let g_ref = [1.0f32, 0.0, 1.0];
    let d = project(&mut [&mut a, &mut b], &g_ref, &[true, true]).unwrap();
    assert_eq!(d, Some(-2.0));
    assert_eq!(
        (a.as_slice(), b.as_slice()),
        ([2.0, 2.0].as_slice(), [-2.0].as_slice())
    );
    // A second case with a non-unit scale: g = (0, -4), g_ref = (3, -2)... positive; flip it.
    // g = (0, 4), g_ref = (3, -2): dot = -8, |g_ref|² = 13, g' = (24/13, 4 - 16/13).
    let mut g = vec![0.0f32, 4.0];
    project(&mut [&mut g], &[3.0, -2.0], &[true]).unwrap();
    assert!((g[0] - 24.0 / 13.0).abs() < 1e-6 && (g[1] - 36.0 / 13.0).abs() < 1e-6);
    let after = dot(&[f64::from(g[0]), f64::from(g[1])], &[3.0, -2.0]);
    assert!(after.abs() < 1e-5, "g'·g_ref = {after}");
}

#[test]
fn an_agreeing_gradient_is_left_alone() {
    let (mut a, mut b) = (vec![1.0f32, 2.0], vec![3.0f32]);
    let d = project(&mut [&mut a, &mut b], &[1.0, 0.0, 1.0], &[true, true]).unwrap();
    assert_eq!(d, Some(4.0));
    assert_eq!((a, b), (vec![1.0, 2.0], vec![3.0]));
    // A zero reference gradient: nothing to project on.
    let mut g = vec![-1.0f32];
    assert_eq!(project(&mut [&mut g], &[0.0], &[true]).unwrap(), None);
    assert_eq!(g, vec![-1.0]);
}

#[test]
fn untracked_tensors_are_neither_in_the_dot_product_nor_changed() {
    // Tracked: (1 | ·), g_ref (−1 | 100): without the buffer the dot is −1 (with it, +99).
    let (mut a, mut buf) = (vec![1.0f32], vec![1.0f32]);
    let d = project(&mut [&mut a, &mut buf], &[-1.0, 100.0], &[true, false]).unwrap();
    assert_eq!(d, Some(-1.0));
    assert_eq!((a, buf), (vec![0.0], vec![1.0]));
    assert!(project(&mut [&mut [1.0f32]], &[1.0, 2.0], &[true]).is_err());
}

/// The mean masked cross-entropy gradient of the linear mock over rows `(x, y, task)` with each
/// row's own task head, by hand in f64: `[dW (k×d), db (k)]`.
fn hand_ref_grad(host: &MockHost, rows: &[(Vec<f32>, usize, usize)]) -> Vec<f64> {
    let s = host.state();
    let (d, k) = (s.input_dim, s.num_outputs);
    let mut g = vec![0.0f64; k * d + k];
    for (x, y, task) in rows {
        let units = &s.tasks[*task].units;
        let z: Vec<f64> = units
            .iter()
            .map(|&o| {
                (0..d)
                    .map(|i| f64::from(s.params[0].values[o * d + i]) * f64::from(x[i]))
                    .sum::<f64>()
                    + f64::from(s.params[1].values[o])
            })
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (j, &o) in units.iter().enumerate() {
            let c = e[j] / sum - if o == *y { 1.0 } else { 0.0 };
            for i in 0..d {
                g[o * d + i] += c * f64::from(x[i]) / rows.len() as f64;
            }
            g[k * d + o] += c / rows.len() as f64;
        }
    }
    g
}

/// A plugin whose memory holds task 0's samples, with the host on task 1.
fn after_task0(config: &str, host: &mut MockHost) -> MockPlugin {
    let mut plugin = MockPlugin::create::<Agem>(config).unwrap();
    plugin.on_task_start(host).unwrap();
    plugin.before_batch(host).unwrap();
    host.zero_grads();
    plugin.after_backward(host, 0.0).unwrap();
    assert!(
        host.grads().iter().flatten().all(|&g| g == 0.0),
        "no constraint in task 0"
    );
    plugin.on_task_end(host).unwrap();
    host.state_mut().task = 1;
    plugin.on_task_start(host).unwrap();
    plugin.before_batch(host).unwrap();
    plugin
}

fn memory_rows(plugin: &mut MockPlugin, host: &mut MockHost) -> Vec<(Vec<f32>, usize, usize)> {
    let s = kit::saved::<Agem>(plugin, host);
    let m = s.memory.expect("a memory after task 0");
    (0..m.len())
        .map(|i| (m.x(i).to_vec(), m.target(i), m.task(i)))
        .collect()
}

#[test]
fn the_memory_holds_its_share_of_each_ended_task() {
    // 2 tasks, memory 5: 2 slots per task, drawn from task 0's 8 training samples.
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = after_task0("memory_size = 5", &mut host);
    let rows = memory_rows(&mut plugin, &mut host);
    assert_eq!(rows.len(), 2);
    let t0 = host.state().tasks[0].clone();
    for (x, y, task) in &rows {
        assert_eq!(*task, 0);
        let r = (0..8)
            .find(|&r| t0.train_x[r * 3..(r + 1) * 3] == x[..])
            .expect("a stored row is one of task 0's training samples");
        assert_eq!(*y, t0.train_y[r]);
    }
    assert_ne!(rows[0].0, rows[1].0, "two distinct samples");
}

#[test]
fn a_conflicting_gradient_is_projected_against_the_memory_gradient() {
    // memory 8 over 2 tasks = 4 rows of task 0; sample_size 8 takes all of them, so the
    // reference gradient is their mean cross-entropy gradient on task 0's head.
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = after_task0("memory_size = 8\nsample_size = 8", &mut host);
    let rows = memory_rows(&mut plugin, &mut host);
    assert_eq!(rows.len(), 4);
    host.perturb(0.5);
    let r = hand_ref_grad(&host, &rows);
    assert!(dot(&r, &r) > 1e-6, "a non-vacuous reference gradient");
    // g = −g_ref + e_0 (a conflicting gradient).
    let mut g: Vec<f64> = r.iter().map(|v| -v).collect();
    g[0] += 1.0;
    {
        let s = host.state_mut();
        let (d, k) = (s.input_dim, s.num_outputs);
        s.params[0].grads = g[..k * d].iter().map(|&v| v as f32).collect();
        s.params[1].grads = g[k * d..].iter().map(|&v| v as f32).collect();
    }
    let g32: Vec<f64> = host
        .grads()
        .concat()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let got: Vec<f64> = host
        .grads()
        .concat()
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let c = dot(&g32, &r) / dot(&r, &r);
    assert!(c < -0.5, "the case conflicts: c = {c}");
    for (j, ((&got, &g), &r)) in got.iter().zip(&g32).zip(&r).enumerate() {
        let want = g - c * r;
        assert!(
            (got - want).abs() < 1e-5,
            "entry {j}: got {got}, want {want}"
        );
    }
    assert!(dot(&got, &r) >= -1e-5, "g'·g_ref = {}", dot(&got, &r));
}

#[test]
fn an_agreeing_gradient_and_buffers_are_left_untouched_by_the_hook() {
    let mut host = MockHost::new(3, 4, 2);
    let mut buffer = host.state().params[1].clone();
    buffer.name = std::ffi::CString::new("norms.0.running_mean").unwrap();
    buffer.role = CLEF_ROLE_BUFFER;
    host.state_mut().params.push(buffer);
    let mut plugin = after_task0("memory_size = 8\nsample_size = 8", &mut host);
    let rows = memory_rows(&mut plugin, &mut host);
    host.perturb(0.5);
    let r = hand_ref_grad(&host, &rows);
    let (d, k) = (3, 4);
    // Agreeing: g = g_ref + small noise; the buffer's gradient is set (as if junk) and must stay.
    host.state_mut().params[0].grads = r[..k * d].iter().map(|&v| (1.5 * v) as f32).collect();
    host.state_mut().params[1].grads = r[k * d..].iter().map(|&v| (1.5 * v) as f32).collect();
    host.state_mut().params[2].grads = vec![7.0, -7.0, 7.0, -7.0];
    let before = host.grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    assert_eq!(host.grads(), before);
    // Conflicting: the weights change, the buffer's gradient still does not.
    let conflicting: Vec<f32> = r[..k * d].iter().map(|&v| (-v) as f32).collect();
    host.state_mut().params[0].grads = conflicting.clone();
    host.state_mut().params[1].grads = vec![0.0; k];
    plugin.after_backward(&mut host, 0.0).unwrap();
    let after = host.grads();
    assert_ne!(after[0], conflicting);
    assert_ne!(after[1], vec![0.0; k]);
    assert_eq!(after[2], vec![7.0, -7.0, 7.0, -7.0]);
    let s = kit::saved::<Agem>(&mut plugin, &mut host);
    assert_eq!((s.steps, s.projected), (2, 1));
}

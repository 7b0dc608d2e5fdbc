//! Tests: the SDK kit's (schema, bad values refused, state round trip, determinism, the docs'
//! table), Λ against an independent computation (symmetric, PSD,
//! `(K_zz + jI) Λ (K_zz + jI) = B_u + bu_jitter·I`), the regulariser's gradient against finite
//! differences of an f64 penalty, the dual update and predictive moments against an exact
//! Bayesian refit, and the inducing-input cache after a resume.

use clef_sdk::abi::CLEF_SETTING_CLASS_IL;
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};
use faer::{Mat, Side};

use super::gp::{gaussian_dual, mat, OutputSummary};
use super::*;

fn toml(tau: f64, m: usize, no_cov: bool) -> String {
    format!(
        "tau = {tau:?}\nprior_precision = 0.01\ninducing_points = {m}\nno_covariance = {no_cov}\n\
         jitter = 1e-6\nbu_jitter = 0.5\ndual_batch_size = 7\n"
    )
}

/// A class-IL mock: `d` inputs, 4 outputs, 2 tasks of 2 classes, 30 training samples each.
fn host(d: usize) -> MockHost {
    let mut h = MockHost::new(d, 4, 2);
    let s = h.state_mut();
    s.setting = CLEF_SETTING_CLASS_IL;
    for (t, task) in s.tasks.iter_mut().enumerate() {
        let n = 30;
        task.train_x = (0..n * d)
            .map(|i| (((i * 7919 + t * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        task.train_y = (0..n).map(|r| task.units[r % task.units.len()]).collect();
    }
    h
}

clef_sdk::standard_tests!(
    Sfr,
    config = "tau = 2.0\nprior_precision = 0.01\ninducing_points = 5\nbu_jitter = 0.01\n\
              dual_batch_size = 3",
    docs = "../../docs/strategies.md"
);

/// The task summaries as the plugin's checkpoint holds them.
fn state_of(plugin: &mut MockPlugin, h: &mut MockHost) -> Vec<TaskSummary> {
    kit::saved::<Sfr>(plugin, h).tasks
}

/// Linear logits `W x + b` of the mock model in f64.
fn logits(h: &MockHost, x: &[f32], w_delta: Option<(usize, f64)>) -> Vec<f64> {
    let s = h.state();
    let (d, k) = (s.input_dim, s.num_outputs);
    let mut w: Vec<f64> = s.params[0].values.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = s.params[1].values.iter().map(|&v| f64::from(v)).collect();
    if let Some((i, dv)) = w_delta {
        w[i] += dv;
    }
    let rows = x.len() / d;
    let mut out = vec![0.0; rows * k];
    for r in 0..rows {
        for c in 0..k {
            out[r * k + c] = b[c]
                + (0..d)
                    .map(|j| w[c * d + j] * f64::from(x[r * d + j]))
                    .sum::<f64>();
        }
    }
    out
}

/// The penalty in f64, written independently of `penalty_and_cotangent`.
fn penalty(tasks: &[TaskSummary], h: &MockHost, tau: f64, w_delta: Option<(usize, f64)>) -> f64 {
    let k = h.state().num_outputs;
    let mut total = 0.0;
    for s in tasks {
        let f = logits(h, &s.z, w_delta);
        let m = f.len() / k;
        for c in 0..k {
            for i in 0..m {
                for j in 0..m {
                    let l = match &s.lambda[c] {
                        Some(l) => l[i * m + j],
                        None => f64::from(u8::from(i == j)),
                    };
                    let di = f[i * k + c] - f64::from(s.f_old[i * k + c]);
                    let dj = f[j * k + c] - f64::from(s.f_old[j * k + c]);
                    total += 0.5 * tau / m as f64 * di * l * dj;
                }
            }
        }
    }
    total
}

#[test]
fn lambda_is_symmetric_psd_and_solves_the_projection() {
    let d = 6;
    let mut h = host(d);
    let mut p = MockPlugin::create::<Sfr>(&toml(1.0, 5, false)).unwrap();
    p.on_task_start(&mut h).unwrap();
    p.on_task_end(&mut h).unwrap();
    let tasks = state_of(&mut p, &mut h);
    assert_eq!(tasks.len(), 1);
    let s = &tasks[0];
    let m = s.m();
    assert_eq!(m, 5);
    // Units 0 and 1 (task 0's classes) have a GP Λ; units 2 and 3 the identity.
    assert!(s.lambda[0].is_some() && s.lambda[1].is_some());
    assert!(s.lambda[2].is_none() && s.lambda[3].is_none());
    let task = &h.state().tasks[0];
    let n = task.train_y.len();
    let scale = 1.0 / (0.01 * n as f64);
    assert!((s.scale - scale).abs() < 1e-15 * scale);
    let kern = |a: &[f32], b: &[f32]| {
        scale
            * (1.0
                + a.iter()
                    .zip(b)
                    .map(|(x, y)| f64::from(*x) * f64::from(*y))
                    .sum::<f64>())
    };
    let f_data = logits(&h, &task.train_x, None);
    for c in 0..2 {
        let l = s.lambda[c].as_ref().unwrap();
        let gp = s.gp[c].as_ref().unwrap();
        // Symmetric and PSD.
        let lm = mat(l, m, m);
        let max = l.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for i in 0..m {
            for j in 0..m {
                assert_eq!(lm[(i, j)], lm[(j, i)]);
            }
        }
        let eig = lm.self_adjoint_eigenvalues(Side::Lower).unwrap();
        assert!(
            eig[0] >= -1e-9 * max,
            "min eigenvalue {} (max |Λ| {max})",
            eig[0]
        );
        // Independent B_u: Σ_i k(Z, x_i) β_i k(x_i, Z) with β = p(1-p) of the 2-class softmax.
        let zr = |i: usize| &s.z[i * d..(i + 1) * d];
        let mut b = vec![0.0; m * m];
        for r in 0..n {
            let x = &task.train_x[r * d..(r + 1) * d];
            let (f0, f1) = (f_data[r * 4], f_data[r * 4 + 1]);
            let p = if c == 0 {
                1.0 / (1.0 + (f1 - f0).exp())
            } else {
                1.0 / (1.0 + (f0 - f1).exp())
            };
            let beta = (p * (1.0 - p)).max(1e-7);
            for i in 0..m {
                for j in 0..m {
                    b[i * m + j] += kern(zr(i), x) * beta * kern(x, zr(j));
                }
            }
        }
        for (got, want) in gp.bu.iter().zip(&b) {
            assert!(
                (got - want).abs() < 1e-6 * want.abs().max(1e-3),
                "B_u {got} vs {want}"
            );
        }
        // (K_zz + jI) Λ (K_zz + jI) = B_u + bu_jitter·I (bu_jitter = 0.5 in `toml`).
        assert_eq!(gp.bu_jitter, 0.5);
        for i in 0..m {
            b[i * m + i] += 0.5;
        }
        let kj = Mat::from_fn(m, m, |i, j| {
            kern(zr(i), zr(j)) + if i == j { gp.jitter } else { 0.0 }
        });
        let back = &kj * &lm * &kj;
        let bmax = b.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for i in 0..m {
            for j in 0..m {
                assert!(
                    (back[(i, j)] - b[i * m + j]).abs() < 1e-6 * bmax,
                    "K Λ K = {} vs B = {}",
                    back[(i, j)],
                    b[i * m + j]
                );
            }
        }
    }
}

fn gradient_matches_finite_differences(no_cov: bool) {
    let d = 5;
    let tau = 0.7;
    let mut h = host(d);
    // bu_jitter = 0: with duplicated inducing points `bu_jitter·K_zz⁻²` makes Λ so stiff that
    // f32 finite differences lose their accuracy; the gradient code does not depend on Λ's
    // origin.
    let cfg = toml(tau, 4, no_cov).replace("bu_jitter = 0.5", "bu_jitter = 0.0");
    let mut p = MockPlugin::create::<Sfr>(&cfg).unwrap();
    p.on_task_start(&mut h).unwrap();
    // No penalty during the first task.
    p.after_backward(&mut h, 0.0).unwrap();
    assert!(h
        .state()
        .params
        .iter()
        .all(|q| q.grads.iter().all(|&g| g == 0.0)));
    p.on_task_end(&mut h).unwrap();
    let tasks = state_of(&mut p, &mut h);
    assert_eq!(tasks[0].lambda.iter().all(Option::is_none), no_cov);
    // Task 1: move the weights so that the penalty is not at its minimum.
    h.state_mut().task = 1;
    for (i, w) in h.state_mut().params[0].values.iter_mut().enumerate() {
        *w += 0.05 * ((i % 7) as f32 - 3.0);
    }
    p.on_task_start(&mut h).unwrap();
    p.after_backward(&mut h, 0.0).unwrap();
    let g = h.state().params[0].grads.clone();
    assert!(g.iter().any(|&v| v != 0.0));
    let eps = 1e-4;
    let gmax = g.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    for (i, &gi) in g.iter().enumerate() {
        let fd = (penalty(&tasks, &h, tau, Some((i, eps)))
            - penalty(&tasks, &h, tau, Some((i, -eps))))
            / (2.0 * eps);
        assert!(
            (f64::from(gi) - fd).abs() < 1e-3 * f64::from(gmax) + 1e-6,
            "no_cov={no_cov} weight {i}: gradient {gi} vs finite difference {fd}"
        );
    }
    // The plugin's own penalty agrees with the independent one.
    let f: Vec<f32> = logits(&h, &tasks[0].z, None)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let (value, _) = penalty_and_cotangent(&tasks, &f, 4, tau).unwrap();
    let indep = penalty(&tasks, &h, tau, None);
    assert!(
        (value - indep).abs() < 1e-4 * indep.abs().max(1e-9),
        "{value} vs {indep}"
    );
}

#[test]
fn regulariser_gradient_matches_finite_differences() {
    gradient_matches_finite_differences(false);
}

#[test]
fn no_covariance_gradient_matches_finite_differences() {
    gradient_matches_finite_differences(true);
}

/// Features `[x, 1]` of a 2-d regression problem.
fn phi(x: &[f64; 2]) -> [f64; 3] {
    [x[0], x[1], 1.0]
}

fn lin_kernel(a: &[[f64; 2]], b: &[[f64; 2]], scale: f64) -> Vec<f64> {
    let mut k = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let (p, q) = (phi(x), phi(y));
            k.push(scale * p.iter().zip(&q).map(|(u, v)| u * v).sum::<f64>());
        }
    }
    k
}

#[test]
fn dual_update_matches_a_full_refit_on_linear_regression() {
    // Noise-free targets of one linear function. D1 has x₁ = 0, so it says nothing about the x₁
    // coefficient (the prior keeps it near 0); D2, in another region, varies x₁.
    let truth = |x: &[f64; 2]| 1.0 + 2.0 * x[0] - 1.5 * x[1];
    let (delta, noise) = (0.5, 0.1);
    let d1: Vec<[f64; 2]> = (0..20).map(|i| [i as f64 / 10.0 - 1.0, 0.0]).collect();
    let d2: Vec<[f64; 2]> = (0..15)
        .map(|i| [2.0 + i as f64 / 8.0, -1.0 - ((i * 3) % 5) as f64 / 5.0])
        .collect();
    let y1: Vec<f64> = d1.iter().map(truth).collect();
    let y2: Vec<f64> = d2.iter().map(truth).collect();
    let scale = 1.0 / (delta * d1.len() as f64);
    // Three inducing points spanning the 3-d feature space.
    let z = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
    let m = z.len();
    let mut gp = OutputSummary::new(&lin_kernel(&z, &z, scale), m, 0.0).unwrap();
    let add = |gp: &mut OutputSummary, xs: &[[f64; 2]], ys: &[f64]| {
        // For a Gaussian likelihood the dual parameters do not depend on f.
        let (b, yt): (Vec<f64>, Vec<f64>) =
            ys.iter().map(|&y| gaussian_dual(0.3, y, noise)).unzip();
        gp.accumulate(&lin_kernel(&z, xs, scale), xs.len(), &b, &yt)
            .unwrap();
    };
    add(&mut gp, &d1, &y1);
    let test: Vec<[f64; 2]> = d2.iter().step_by(3).copied().collect();
    let y_test: Vec<f64> = test.iter().map(truth).collect();
    let kxz = lin_kernel(&test, &z, scale);
    let before = gp.posterior().unwrap().mean(&kxz, test.len()).unwrap();
    add(&mut gp, &d2, &y2);
    let post = gp.posterior().unwrap();
    let after = post.mean(&kxz, test.len()).unwrap();
    let kxx: Vec<f64> = test
        .iter()
        .map(|x| lin_kernel(&[*x], &[*x], scale)[0])
        .collect();
    let var = post.variance(&kxz, &kxx).unwrap();

    // The refit: MAP of Σ (y − wᵀφ)² / (2σ²) + (δ N₁ / 2) ‖w‖² over D1 ∪ D2 (normal equations),
    // with posterior covariance A⁻¹, A = ΦᵀΦ/σ² + δ N₁ I.
    let all: Vec<([f64; 2], f64)> = d1
        .iter()
        .copied()
        .zip(y1.iter().copied())
        .chain(d2.iter().copied().zip(y2.iter().copied()))
        .collect();
    let mut a = Mat::<f64>::from_fn(
        3,
        3,
        |i, j| if i == j { delta * d1.len() as f64 } else { 0.0 },
    );
    let mut rhs = Mat::<f64>::zeros(3, 1);
    for (x, y) in &all {
        let f = phi(x);
        for i in 0..3 {
            for j in 0..3 {
                a[(i, j)] += f[i] * f[j] / noise;
            }
            rhs[(i, 0)] += f[i] * y / noise;
        }
    }
    let llt = a.llt(Side::Lower).unwrap();
    use faer::linalg::solvers::Solve;
    let w = llt.solve(rhs.as_ref());
    for (t, x) in test.iter().enumerate() {
        let f = phi(x);
        let refit: f64 = (0..3).map(|i| f[i] * w[(i, 0)]).sum();
        assert!(
            (after[t] - refit).abs() < 1e-8 * refit.abs().max(1.0),
            "dual update {} vs refit {refit}",
            after[t]
        );
        assert!(
            (after[t] - y_test[t]).abs() < 0.5 * (before[t] - y_test[t]).abs(),
            "the mean did not move toward the new data: before {} after {} target {}",
            before[t],
            after[t],
            y_test[t]
        );
        let fv = Mat::from_fn(3, 1, |i, _| f[i]);
        let s = llt.solve(fv.as_ref());
        let exact_var: f64 = (0..3).map(|i| f[i] * s[(i, 0)]).sum();
        assert!(
            (var[t] - exact_var).abs() < 1e-8 * exact_var.max(1e-12),
            "variance {} vs {exact_var}",
            var[t]
        );
        assert!(var[t] > 0.0);
    }
}

#[test]
fn the_last_task_is_not_summarised() {
    let mut h = host(3);
    let mut p = MockPlugin::create::<Sfr>(&toml(1.0, 3, false)).unwrap();
    h.state_mut().task = 1;
    p.on_task_start(&mut h).unwrap();
    p.on_task_end(&mut h).unwrap();
    assert!(state_of(&mut p, &mut h).is_empty());
}

/// What the probe strategy measured inside `on_task_end` (a live context).
#[derive(Debug, Default)]
struct Probe {
    /// Summary before and after the dual update.
    before: Option<TaskSummary>,
    after: Option<TaskSummary>,
    /// Predictive means/variances of unit 0 and 1 at the new points, before and after.
    pred_before: Vec<(Vec<f64>, Vec<f64>)>,
    pred_after: Vec<(Vec<f64>, Vec<f64>)>,
}

static PROBE: std::sync::Mutex<Option<Probe>> = std::sync::Mutex::new(None);

/// New labelled points for the dual update (classes 0 and 1 of task 0), `d` features.
fn new_points(d: usize) -> (Vec<f32>, Vec<usize>) {
    let rows = 12;
    let x = (0..rows * d)
        .map(|i| (((i * 4493 + 17) % 997) as f32 / 498.5) - 1.0)
        .collect();
    (x, (0..rows).map(|r| r % 2).collect())
}

/// A strategy that, at the end of task 0, builds the SFR summary through the live context,
/// predicts, applies a dual update with [`new_points`] and predicts again.
struct ProbeStrategy(Sfr);

impl Strategy for ProbeStrategy {
    const NAME: &'static str = "sfr-probe";
    const DESCRIPTION: &'static str = "test probe";
    type Config = Config;
    type State = NotCheckpointed;
    fn new(config: Config) -> Result<Self> {
        Ok(Self(Sfr::new(config)?))
    }
    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        let mut s = self.0.summarise(ctx, task)?;
        let d = task.input_dim;
        let (x, y) = new_points(d);
        let rows = y.len();
        let mut probe = Probe {
            before: Some(s.clone()),
            ..Probe::default()
        };
        for u in 0..2 {
            probe.pred_before.push(s.predict(ctx, &x, rows, u)?);
        }
        s.dual_update(ctx, &x, rows, &y, &[0, 1])?;
        for u in 0..2 {
            probe.pred_after.push(s.predict(ctx, &x, rows, u)?);
        }
        // A unit without a GP summary is an error, not a silent prior.
        ensure!(s.predict(ctx, &x, rows, 3).is_err(), "unit 3 has no GP");
        probe.after = Some(s);
        *PROBE.lock().map_err(|_| clef_sdk::Error::msg("poisoned"))? = Some(probe);
        Ok(())
    }
}

#[test]
fn summary_predict_and_dual_update_on_the_live_model() {
    let d = 5;
    let mut h = host(d);
    let mut p = MockPlugin::create::<ProbeStrategy>(&toml(1.0, 6, false)).unwrap();
    p.on_task_start(&mut h).unwrap();
    p.on_task_end(&mut h).unwrap();
    let probe = PROBE.lock().unwrap().take().unwrap();
    let (before, after) = (probe.before.unwrap(), probe.after.unwrap());
    let (x, y) = new_points(d);
    let rows = y.len();
    let m = before.m();
    let scale = before.scale;
    // The mock model is linear, so the NTK of every unit is scale · (xᵀx' + 1).
    let kern = |a: &[f32], b: &[f32]| {
        scale
            * (1.0
                + a.iter()
                    .zip(b)
                    .map(|(p, q)| f64::from(*p) * f64::from(*q))
                    .sum::<f64>())
    };
    let zr = |i: usize| &before.z[i * d..(i + 1) * d];
    let xr = |r: usize| &x[r * d..(r + 1) * d];
    let f_new = logits(&h, &x, None);
    let k = h.state().num_outputs;
    for u in 0..2 {
        let (gb, ga) = (
            before.gp[u].as_ref().unwrap(),
            after.gp[u].as_ref().unwrap(),
        );
        // Dual update, written out: B_u += Σ k(Z,x) β k(x,Z), ỹ_u += Σ k(Z,x) ỹ with the
        // two-class softmax duals at the current weights.
        let mut bu = gb.bu.clone();
        let mut yu = gb.yu.clone();
        for r in 0..rows {
            let (f0, f1) = (f_new[r * k], f_new[r * k + 1]);
            let f_u = if u == 0 { f0 } else { f1 };
            let p = 1.0 / (1.0 + (if u == 0 { f1 - f0 } else { f0 - f1 }).exp());
            let beta = (p * (1.0 - p)).max(1e-7);
            let yt = f64::from(u8::from(y[r] == u)) - p + beta * f_u;
            for i in 0..m {
                yu[i] += kern(zr(i), xr(r)) * yt;
                for j in 0..m {
                    bu[i * m + j] += kern(zr(i), xr(r)) * beta * kern(xr(r), zr(j));
                }
            }
        }
        let bmax = bu.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (g, w) in ga.bu.iter().zip(&bu) {
            assert!((g - w).abs() < 1e-6 * bmax, "B_u {g} vs {w}");
        }
        let ymax = yu.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (g, w) in ga.yu.iter().zip(&yu) {
            assert!((g - w).abs() < 1e-6 * ymax, "ỹ_u {g} vs {w}");
        }
        // Λ was recomputed from the updated B_u.
        assert_eq!(after.lambda[u].as_ref().unwrap(), &ga.lambda().unwrap().0);
        assert_ne!(after.lambda[u], before.lambda[u]);
        // predict = the GP posterior of the summary at k(x, Z) and k(x, x) of the live kernel.
        let kxz: Vec<f64> = (0..rows)
            .flat_map(|r| (0..m).map(move |i| (r, i)))
            .map(|(r, i)| kern(xr(r), zr(i)))
            .collect();
        let kxx: Vec<f64> = (0..rows).map(|r| kern(xr(r), xr(r))).collect();
        for (gp, (mean, var)) in [(gb, &probe.pred_before[u]), (ga, &probe.pred_after[u])] {
            let post = gp.posterior().unwrap();
            let want_mean = post.mean(&kxz, rows).unwrap();
            let want_var = post.variance(&kxz, &kxx).unwrap();
            for r in 0..rows {
                assert!((mean[r] - want_mean[r]).abs() < 1e-6 * want_mean[r].abs().max(1e-3));
                assert!((var[r] - want_var[r]).abs() < 1e-6 * want_var[r].abs().max(1e-9));
                assert!(var[r] >= -1e-12, "variance {}", var[r]);
            }
        }
    }
    // The update moves the predictive means toward the new labels: the margin
    // μ_label − μ_other at the new points grows on average, and the variance there shrinks.
    let margin = |pred: &[(Vec<f64>, Vec<f64>)]| -> f64 {
        (0..rows)
            .map(|r| {
                let (a, b) = (pred[0].0[r], pred[1].0[r]);
                if y[r] == 0 {
                    a - b
                } else {
                    b - a
                }
            })
            .sum::<f64>()
            / rows as f64
    };
    let (mb, ma) = (margin(&probe.pred_before), margin(&probe.pred_after));
    assert!(ma > mb, "margin before {mb}, after {ma}");
    let var_sum = |pred: &[(Vec<f64>, Vec<f64>)]| pred[0].1.iter().sum::<f64>();
    assert!(var_sum(&probe.pred_after) < var_sum(&probe.pred_before));
}

/// The reported curvature is the largest eigenvalue of the penalty's Hessian in parameter
/// space: on the linear mock, `∂f_c(z)/∂(W_c, b_c) = [z, 1]`, so the Hessian block of unit `c`
/// is `τ/M Σ_ij Λ_ij [z_i, 1][z_j, 1]ᵀ`, built here independently and diagonalised. This is
/// the number that separates stable from diverging SGD (`lr · curvature < 2(1 + μ)`): the
/// collapse of `configs/gtep-fmnist-to-mnist.toml` (`docs/strategies.md`, `sfr`) was τ = 0.1
/// and τ = 1 past that bound.
#[test]
fn curvature_is_the_largest_hessian_eigenvalue_of_the_penalty() {
    // M < d + 1: Q = Z Zᵀ + 1 has full rank (no null direction where the jitters dominate Λ).
    let d = 8;
    let tau = 3.0;
    let mut h = host(d);
    let mut p = MockPlugin::create::<Sfr>(&toml(tau, 5, false)).unwrap();
    p.on_task_start(&mut h).unwrap();
    p.on_task_end(&mut h).unwrap();
    let s = &state_of(&mut p, &mut h)[0];
    let m = s.m();
    let mut want: f64 = 0.0;
    for c in 0..2 {
        let l = s.lambda[c].as_ref().unwrap();
        let jz = |i: usize, a: usize| {
            if a < d {
                f64::from(s.z[i * d + a])
            } else {
                1.0
            }
        };
        let hess = Mat::from_fn(d + 1, d + 1, |a, b| {
            let mut v = 0.0;
            for i in 0..m {
                for j in 0..m {
                    v += l[i * m + j] * jz(i, a) * jz(j, b);
                }
            }
            tau / m as f64 * v
        });
        let eig = hess.self_adjoint_eigenvalues(Side::Lower).unwrap();
        want = want.max(*eig.last().unwrap());
    }
    assert!(want > 0.0);
    assert!(
        (s.curvature - want).abs() < 1e-6 * want,
        "curvature {} vs the Hessian's largest eigenvalue {want}",
        s.curvature
    );
    // Reported for the task.
    assert_eq!(h.reported(0, "sfr.curvature"), Some(s.curvature));
}

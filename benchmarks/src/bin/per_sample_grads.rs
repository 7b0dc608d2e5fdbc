//! Per-sample gradient powers `Σ_i |J(x_i)ᵀ c_i|^p` (EWC's empirical Fisher with p = 2, MAS's
//! importance with p = 1) on the backend, side by side in one process: the loop a plugin runs
//! today (one `vjp` of one row, then read the gradients and add their powers, per row) against
//! `Network::sample_grad_powers` (the MLP's factorised form: one backward pass and one GEMM per
//! layer; the CNN's per-row evaluation-mode passes), on
//!
//! - the MLP 784-400-400-10 (ReLU), 1000 rows;
//! - the ConvNet conv3x3 8-8-maxpool-16-16-maxpool (ReLU, no norm, so the per-row `vjp`, in
//!   training mode, computes the same gradients as the evaluation mode), linear head, 1x28x28,
//!   200 rows.
//!
//! Inputs and cotangents are seeded uniform values in [-1, 1) (the cost does not depend on
//! them). Rounds alternate the two loops; the median (and fastest) of `--reps` rounds is
//! printed, with the largest relative difference between the two results for p = 1 and 2.
//!
//! `cargo run --release -p clef-benchmarks --bin per_sample_grads [-- --reps 5]`

use std::time::Instant;

use clap::Parser;
use clef_backend::{
    build_network, Activation, ConvNetSpec, ConvPool, ImageShape, Init, Inputs, MlpSpec, ModelSpec,
    Network, Norm,
};
use clef_benchmarks::{fastest, median};

#[derive(Parser)]
struct Args {
    /// Timed rounds per loop (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Rows of the MLP case.
    #[arg(long, default_value_t = 1000)]
    mlp_rows: usize,
    /// Rows of the ConvNet case.
    #[arg(long, default_value_t = 200)]
    cnn_rows: usize,
}

/// Seeded uniform values in [-1, 1) (splitmix64).
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The plugin's loop: one `vjp` per row, its gradients' powers summed in f64.
fn per_row_loop(
    net: &mut dyn Network,
    x: &[f32],
    rows: usize,
    cot: &[f32],
    p: u32,
) -> anyhow::Result<Vec<f64>> {
    let (d, k) = (x.len() / rows, cot.len() / rows);
    let mut sums = vec![0.0f64; net.params().numel()];
    for r in 0..rows {
        net.params_mut().zero_grads();
        net.vjp(
            Inputs::new(&x[r * d..(r + 1) * d], 1, d)?,
            &cot[r * k..(r + 1) * k],
        )?;
        let mut at = 0;
        for g in net.params().grads() {
            for (s, &g) in sums[at..at + g.len()].iter_mut().zip(g) {
                let g = f64::from(g);
                *s += if p == 1 { g.abs() } else { g * g };
            }
            at += g.len();
        }
    }
    Ok(sums)
}

/// `sample_grad_powers` alone (gradients zeroed first), flattened.
fn one_call(
    net: &mut dyn Network,
    x: &[f32],
    rows: usize,
    cot: &[f32],
    p: u32,
) -> anyhow::Result<Vec<f64>> {
    net.params_mut().zero_grads();
    net.sample_grad_powers(Inputs::new(x, rows, x.len() / rows)?, cot, p)?;
    Ok(net
        .params()
        .grads()
        .iter()
        .flatten()
        .map(|&g| f64::from(g))
        .collect())
}

/// The largest `|a - b| / max(|b|, 1e-3 · max|b|)` over the elements.
fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())) * 1e-3;
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs() / b.abs().max(scale).max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

fn case(name: &str, spec: ModelSpec, rows: usize, reps: usize) -> anyhow::Result<()> {
    let mut net = build_network(&spec, 0)?;
    let (d, k) = (spec.input_dim(), spec.output());
    let x = uniform(rows * d, 1);
    let cot = uniform(rows * k, 2);
    let mut diffs = Vec::new();
    for p in [1, 2] {
        let a = one_call(net.as_mut(), &x, rows, &cot, p)?;
        let b = per_row_loop(net.as_mut(), &x, rows, &cot, p)?;
        diffs.push(max_rel_diff(&a, &b));
    }
    let (mut looped, mut call) = (Vec::new(), Vec::new());
    for round in 0..=reps {
        for which in [round % 2, 1 - round % 2] {
            let start = Instant::now();
            let out = if which == 0 {
                per_row_loop(net.as_mut(), &x, rows, &cot, 2)?
            } else {
                one_call(net.as_mut(), &x, rows, &cot, 2)?
            };
            let s = start.elapsed().as_secs_f64();
            std::hint::black_box(out);
            if round > 0 {
                if which == 0 { &mut looped } else { &mut call }.push(s);
            }
        }
    }
    println!(
        "| {name} | {} | {rows} | {:.1} ({:.1}) | {:.1} ({:.1}) | **{:.1}×** | {:.1e} / {:.1e} |",
        spec.num_params(),
        median(looped.clone()) * 1e3,
        fastest(&looped) * 1e3,
        median(call.clone()) * 1e3,
        fastest(&call) * 1e3,
        median(looped) / median(call),
        diffs[0],
        diffs[1],
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.reps > 0, "--reps must be > 0");
    anyhow::ensure!(
        args.mlp_rows > 0 && args.cnn_rows > 0,
        "--mlp-rows and --cnn-rows must be > 0"
    );
    let mlp = ModelSpec::Mlp(MlpSpec {
        input: 784,
        hidden: vec![400, 400],
        output: 10,
        activation: Activation::Relu,
        init: Init::TorchDefault,
    });
    let cnn = ModelSpec::ConvNet(ConvNetSpec {
        input: ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        },
        channels: vec![8, 8, 16, 16],
        hidden: vec![],
        output: 10,
        norm: Norm::None,
        activation: Activation::Relu,
        init: Init::TorchDefault,
        pool: ConvPool::Flatten,
    });
    println!(
        "per-sample gradient powers (p = 2 timed), median (fastest) of {} rounds, rayon threads: {}",
        args.reps,
        rayon::current_num_threads()
    );
    println!();
    println!("| model | parameters | rows | per-row vjp loop ms | sample_grad_powers ms | speed-up | max rel. diff p=1 / p=2 |");
    println!("|---|---|---|---|---|---|---|");
    clef_backend::pool::install(|| -> anyhow::Result<()> {
        case("MLP 784-400-400-10", mlp, args.mlp_rows, args.reps)?;
        case("ConvNet 8-8-16-16", cnn, args.cnn_rows, args.reps)
    })
}

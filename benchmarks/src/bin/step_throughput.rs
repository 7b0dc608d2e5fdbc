//! Training-step throughput of the dfdx and native backends and of a PyTorch CPU loop, side by
//! side, with the machine's SGEMM ceiling measured by the same GEMM crate in the same run.
//!
//! ```text
//! cargo run -p clef-benchmarks --release --bin step_throughput -- [--quick] [--batches 32,128]
//!     [--backends dfdx,native] [--models mlp,convnet,resnet18r] [--python PATH | --no-torch]
//! ```
//!
//! PyTorch: `benchmarks/torch_step.py` is started once with `--python` (default `python3`, or
//! `$CLEF_TORCH_PYTHON`) and driven over a pipe, so that its repetitions alternate with clef's.
//! If that interpreter cannot import `torch`, the PyTorch rows are skipped with the reason.
//!
//! One step is what a PyTorch training loop does: `zero_grad`, forward + (unmasked) softmax
//! cross-entropy + backward (`loss_backward`), and an SGD-with-momentum update, on the MLP
//! 784-256-256-10 (ReLU) and, with `--models`, on the ConvNet (conv3x3 32-32-pool-64-64-pool,
//! ReLU, no norm, linear head; 1x28x28) and the reduced ResNet-18 (width 20, batch norm;
//! 3x32x32), native backend only (dfdx builds MLPs only). Each configuration is warmed up, then timed in repetitions of a few
//! steps, alternating between the backends; the median repetition is reported (and the fastest
//! one, "min", the best estimate of the uncontended speed on a shared machine).
//!
//! The "% of SGEMM" column relates the step's GEMM work (forward, weight gradients, and input
//! gradients of every layer but the first; for the CNNs three times the forward multiply-adds)
//! to the multithreaded large-SGEMM rate measured below.
//! The final `hash` line fingerprints the native backend's outputs for one fixed step, so runs
//! under different `RAYON_NUM_THREADS` can be compared for bit-identity.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Parser;

use clef_backend::{
    build_network_with, Activation, BackendKind, ConvNetSpec, ImageShape, Init, Inputs, MlpSpec,
    ModelSpec, Network, Norm, Optimizer, OptimizerSpec, ResNetSpec,
};

/// splitmix64, for inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn mnist_mlp() -> MlpSpec {
    MlpSpec {
        input: 784,
        hidden: vec![256, 256],
        output: 10,
        activation: Activation::Relu,
        init: Init::TorchDefault,
    }
}

/// The benchmarked models: (name as `torch_step.py` knows it, spec).
fn model(name: &str) -> anyhow::Result<ModelSpec> {
    Ok(match name {
        "mlp" => mnist_mlp().into(),
        "convnet" => ModelSpec::ConvNet(ConvNetSpec {
            input: ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            channels: vec![32, 32, 64, 64],
            hidden: vec![],
            output: 10,
            norm: Norm::None,
            activation: Activation::Relu,
            init: Init::TorchDefault,
            pool: Default::default(),
        }),
        "resnet18r" => ModelSpec::ResNet(ResNetSpec {
            input: ImageShape {
                channels: 3,
                height: 32,
                width: 32,
            },
            width: 20,
            blocks: [2, 2, 2, 2],
            output: 10,
            norm: Norm::Batch,
            init: Init::TorchDefault,
        }),
        other => bail!("unknown model {other:?} (expected mlp, convnet or resnet18r)"),
    })
}

/// Floating-point operations of one training step at `batch` rows: the MLP's GEMMs exactly,
/// three times the forward multiply-adds for the others.
fn model_flops(spec: &ModelSpec, batch: usize) -> f64 {
    match spec.as_mlp() {
        Some(m) => step_flops(m, batch),
        None => 2.0 * 3.0 * (spec.forward_macs() * batch) as f64,
    }
}

/// Floating-point operations of one training step's GEMMs at `batch` rows.
fn step_flops(spec: &MlpSpec, batch: usize) -> f64 {
    let widths = spec.widths();
    let mut macs = 0usize;
    for (l, w) in widths.windows(2).enumerate() {
        let layer = w[0] * w[1] * batch;
        macs += 2 * layer; // forward + weight gradient
        if l > 0 {
            macs += layer; // input gradient (not needed for the first layer)
        }
    }
    2.0 * macs as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Timing {
    median_s: f64,
    min_s: f64,
}

impl Timing {
    /// Median and minimum of seconds-per-step samples.
    fn of(times: &mut [f64]) -> Self {
        let min_s = times.iter().copied().fold(f64::INFINITY, f64::min);
        Timing {
            median_s: median(times),
            min_s,
        }
    }
}

/// One backend's network, optimizer and batch, ready to take training steps.
struct Runner {
    net: Box<dyn Network>,
    opt: Optimizer,
    x: Vec<f32>,
    targets: Vec<usize>,
    logits: Vec<f32>,
    batch: usize,
    times: Vec<f64>,
}

impl Runner {
    fn new(kind: BackendKind, spec: &ModelSpec, batch: usize) -> Self {
        let mut rng = Rng(batch as u64);
        let x: Vec<f32> = (0..batch * spec.input_dim()).map(|_| rng.unit()).collect();
        let targets: Vec<usize> = (0..batch)
            .map(|_| (rng.next_u64() % spec.output() as u64) as usize)
            .collect();
        let net = build_network_with(kind, spec, 0).expect("valid spec");
        let opt = Optimizer::new(
            OptimizerSpec::Sgd {
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: false,
            },
            net.params(),
        );
        Runner {
            net,
            opt,
            x,
            targets,
            logits: Vec::new(),
            batch,
            times: Vec::new(),
        }
    }

    /// One training step: zero_grad, forward + loss + backward, SGD update.
    fn step(&mut self) {
        let inputs = Inputs::new(&self.x, self.batch, self.net.spec().input_dim()).expect("shape");
        self.net.params_mut().zero_grads();
        let loss = self
            .net
            .loss_backward(inputs, &self.targets, None, &mut self.logits)
            .expect("step");
        self.opt.step(self.net.params_mut());
        black_box(loss);
    }

    /// Times `steps` steps and records the mean time per step.
    fn rep(&mut self, steps: usize) {
        let t0 = Instant::now();
        for _ in 0..steps {
            self.step();
        }
        self.times.push(t0.elapsed().as_secs_f64() / steps as f64);
    }

    fn timing(&mut self) -> Timing {
        Timing::of(&mut self.times)
    }
}

/// The PyTorch reference loop, a `torch_step.py` child process (see the module docs).
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What the script announced (version, threads).
    banner: String,
}

impl Torch {
    /// Starts `python script threads`; fails (with the reason) if torch cannot be imported.
    fn start(python: &Path, script: &Path, threads: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(python)
            .arg(script)
            .arg(threads.to_string())
            .env("OMP_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut banner = String::new();
        stdout.read_line(&mut banner)?;
        if banner.trim().is_empty() {
            let out = child.wait_with_output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("no output");
            bail!("{} {}: {last}", python.display(), script.display());
        }
        Ok(Torch {
            child,
            stdin,
            stdout,
            banner: banner.trim().to_string(),
        })
    }

    /// Runs `steps` steps at `batch` rows (after `warmup` untimed ones) and returns the
    /// seconds per step measured inside Python.
    fn rep(
        &mut self,
        model: &str,
        batch: usize,
        steps: usize,
        warmup: usize,
    ) -> anyhow::Result<f64> {
        writeln!(
            self.stdin,
            "{{\"batch\": {batch}, \"steps\": {steps}, \"warmup\": {warmup}, \"model\": \"{model}\"}}"
        )?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let value = line
            .split(':')
            .nth(1)
            .map(|v| v.trim().trim_end_matches('}').trim())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("unexpected reply from torch_step.py: {line:?}"))?;
        Ok(value)
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Times the training step of every backend in `kinds` (and of PyTorch, if given) at `batch`
/// rows. Repetitions alternate between them so that a busy period on a shared machine hits all
/// alike. Returns clef's timings in `kinds` order, then PyTorch's.
fn time_steps(
    kinds: &[BackendKind],
    (name, spec): (&str, &ModelSpec),
    batch: usize,
    reps: usize,
    mut torch: Option<&mut Torch>,
) -> anyhow::Result<(Vec<Timing>, Option<Timing>)> {
    let mut runners: Vec<Runner> = kinds.iter().map(|&k| Runner::new(k, spec, batch)).collect();
    // Short repetitions (a few ms on a fast backend), so that some of them fall into quiet
    // periods of a shared machine; one step for the CNNs (tenths of a second).
    let (steps, warmup) = match spec.as_mlp() {
        Some(_) => ((640 / batch).clamp(1, 20), 5),
        None => (1, 2),
    };
    for r in &mut runners {
        for _ in 0..steps * warmup {
            r.step();
        }
    }
    if let Some(t) = torch.as_deref_mut() {
        t.rep(name, batch, steps, steps * warmup)?;
    }
    let mut torch_times = Vec::new();
    for _ in 0..reps {
        for r in &mut runners {
            r.rep(steps);
        }
        if let Some(t) = torch.as_deref_mut() {
            torch_times.push(t.rep(name, batch, steps, 0)?);
        }
    }
    let torch_timing = (!torch_times.is_empty()).then(|| Timing::of(&mut torch_times));
    Ok((
        runners.iter_mut().map(Runner::timing).collect(),
        torch_timing,
    ))
}

/// GFLOP/s of a square `n x n x n` SGEMM with the `gemm` crate, best of `reps`.
fn sgemm_gflops(n: usize, parallelism: gemm::Parallelism, reps: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 17) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut c = vec![0.0f32; n * n];
    let mut run = || {
        // SAFETY: all three matrices are contiguous row-major n x n slices.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            );
        }
        black_box(&c);
    };
    run();
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t0 = Instant::now();
        run();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// FNV-1a over the bits of everything one native step produces.
fn native_fingerprint(spec: &ModelSpec, batch: usize) -> u64 {
    let mut rng = Rng(42);
    let (d, k) = (spec.input_dim(), spec.output());
    let x: Vec<f32> = (0..batch * d).map(|_| rng.unit()).collect();
    let targets: Vec<usize> = (0..batch).map(|r| r % k).collect();
    let cot: Vec<f32> = (0..batch * k).map(|_| rng.unit() - 0.5).collect();
    let mut net = build_network_with(BackendKind::Native, spec, 7).expect("valid spec");
    let inputs = Inputs::new(&x, batch, d).expect("shape");
    let (mut logits, mut feats) = (Vec::new(), Vec::new());
    let loss = net
        .loss_backward(inputs, &targets, None, &mut logits)
        .expect("loss");
    net.vjp(inputs, &cot).expect("vjp");
    net.features(inputs, &mut feats).expect("features");
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    let mut eat = |v: &[f32]| {
        for f in v {
            for byte in f.to_bits().to_le_bytes() {
                h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3);
            }
        }
    };
    eat(&[loss]);
    eat(&logits);
    eat(&feats);
    for g in net.params().grads() {
        eat(g);
    }
    h
}

#[derive(Parser)]
#[command(about = "Training-step throughput: clef's backends vs PyTorch vs the SGEMM ceiling")]
struct Args {
    /// Fewer repetitions and a smaller SGEMM (a smoke run, not a measurement).
    #[arg(long)]
    quick: bool,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 128, 512])]
    batches: Vec<usize>,
    /// clef backends, comma-separated (dfdx, native).
    #[arg(long, value_delimiter = ',', default_values_t = BackendKind::ALL.to_vec())]
    backends: Vec<BackendKind>,
    /// Python interpreter with `torch` (default: $CLEF_TORCH_PYTHON, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Do not run the PyTorch loop.
    #[arg(long)]
    no_torch: bool,
    /// Models, comma-separated: mlp, convnet (1x28x28), resnet18r (width 20, 3x32x32).
    #[arg(long, value_delimiter = ',', default_values_t = ["mlp".to_string()])]
    models: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let models = args
        .models
        .iter()
        .map(|m| model(m).map(|s| (m.clone(), s)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool_threads = rayon::current_num_threads();
    println!("SGD momentum step; {threads} hardware threads, rayon pool of {pool_threads}");

    let n = if args.quick { 1024 } else { 2048 };
    let single = sgemm_gflops(n, gemm::Parallelism::None, 5);
    let multi = sgemm_gflops(n, gemm::Parallelism::Rayon(0), 5);
    println!(
        "SGEMM ceiling (gemm crate, {n}^3): {single:.1} GFLOP/s single-threaded, {multi:.1} GFLOP/s on the rayon pool"
    );

    let mut torch = if args.no_torch {
        println!("PyTorch: not run (--no-torch)");
        None
    } else {
        let python = args
            .python
            .clone()
            .or_else(|| std::env::var_os("CLEF_TORCH_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("python3"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("torch_step.py");
        match Torch::start(&python, &script, pool_threads) {
            Ok(t) => {
                println!("PyTorch: {} ({})", t.banner, python.display());
                Some(t)
            }
            Err(e) => {
                println!("PyTorch: skipped ({e:#})");
                None
            }
        }
    };
    for (name, spec) in &models {
        let (reps, kinds) = match spec.as_mlp() {
            Some(m) => {
                println!("\nMLP {:?} ({:?})", m.widths(), m.activation);
                (if args.quick { 10 } else { 60 }, args.backends.clone())
            }
            None => {
                println!(
                    "\n{name}: {} parameters, {:.1} MFLOP forward per sample (native only)",
                    spec.num_params(),
                    2.0 * spec.forward_macs() as f64 / 1e6
                );
                (if args.quick { 3 } else { 12 }, vec![BackendKind::Native])
            }
        };
        run_model(
            &kinds,
            (name, spec),
            &args.batches,
            reps,
            multi,
            torch.as_mut(),
        )?;
    }
    println!(
        "\n\"vs torch\" = PyTorch's median time per step / this loop's (above 1: faster than PyTorch)."
    );
    for (name, spec) in &models {
        let batch = if spec.as_mlp().is_some() { 128 } else { 32 };
        println!(
            "hash {:016x} ({name}, native, batch {batch}: loss, logits, features, grads after loss_backward + vjp)",
            native_fingerprint(spec, batch)
        );
    }
    Ok(())
}

/// Times and prints one model at every batch size.
fn run_model(
    kinds: &[BackendKind],
    (name, spec): (&str, &ModelSpec),
    batches: &[usize],
    reps: usize,
    multi: f64,
    mut torch: Option<&mut Torch>,
) -> anyhow::Result<()> {
    println!(
        "{:>6} {:>8} {:>10} {:>10} {:>12} {:>9} {:>10} {:>10}",
        "batch", "loop", "ms/step", "(min)", "samples/s", "GFLOP/s", "% SGEMM", "vs torch"
    );
    for &batch in batches {
        let flops = model_flops(spec, batch);
        // On a pool thread, as the trainer runs (see clef_backend::pool).
        let (timings, torch_timing) = clef_backend::pool::install(|| {
            time_steps(kinds, (name, spec), batch, reps, torch.as_deref_mut())
        })?;
        let torch_s = torch_timing.as_ref().map(|t| t.median_s);
        let rows = kinds
            .iter()
            .map(|k| k.name())
            .zip(&timings)
            .chain(torch_timing.as_ref().map(|t| ("pytorch", t)));
        for (name, t) in rows {
            let gflops = flops / t.median_s / 1e9;
            let vs_torch = torch_s.map_or(String::new(), |s| format!("{:.2}x", s / t.median_s));
            println!(
                "{batch:>6} {name:>8} {:>10.3} {:>10.3} {:>12.0} {:>9.1} {:>9.1}% {:>10}",
                t.median_s * 1e3,
                t.min_s * 1e3,
                batch as f64 / t.median_s,
                gflops,
                100.0 * gflops / multi,
                vs_torch
            );
        }
    }
    Ok(())
}

//! What a device-resident backend would copy per training step if the host kept today's
//! contract (parameters and gradients as host buffers): the bytes of a model's parameters and
//! gradients, and the time this machine takes to copy them once each way between two host
//! buffers (the host side of a transfer; a PCIe transfer adds its own time, see
//! `docs/architecture.md`, "Beyond one CPU").
//!
//! `cargo run --release -p clef-benchmarks --bin param_copy [-- --reps 200]`

use std::time::Instant;

use clap::Parser;
use clef_backend::{ImageShape, Init, ModelSpec, Norm, ParamRole, ParamStore, ResNetSpec};

#[derive(Parser)]
struct Args {
    /// Copies timed (the median is reported).
    #[arg(long, default_value_t = 200)]
    reps: usize,
    /// ResNet-18 width (20 = reduced, 64 = standard).
    #[arg(long, default_value_t = 20)]
    width: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = ModelSpec::ResNet(ResNetSpec {
        input: ImageShape {
            channels: 3,
            height: 32,
            width: 32,
        },
        width: args.width,
        blocks: [2, 2, 2, 2],
        output: 10,
        norm: Norm::Batch,
        init: Init::TorchDefault,
    });
    spec.validate()?;
    let store = ParamStore::init(&spec, 0);
    let trainable: usize = store
        .infos()
        .iter()
        .filter(|i| i.role != ParamRole::Buffer)
        .map(|i| i.numel())
        .sum();
    let buffers: usize = store
        .infos()
        .iter()
        .filter(|i| i.role == ParamRole::Buffer)
        .map(|i| i.numel())
        .sum();
    // Per step: parameters out (host -> device) and gradients back (device -> host).
    let floats = 2 * trainable;
    let mut src: Vec<f32> = store.values().iter().flatten().copied().collect();
    src.resize(floats, 0.5);
    let mut dst = vec![0f32; floats];
    let mut times = Vec::with_capacity(args.reps);
    for r in 0..args.reps {
        src[r % floats] += 1.0;
        let t = Instant::now();
        dst.copy_from_slice(&src);
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mb = (floats * 4) as f64 / 1e6;
    println!(
        "resnet18 width {}: {} trainable parameters, {} buffer values",
        args.width, trainable, buffers
    );
    println!(
        "per step (parameters + gradients): {mb:.2} MB; host copy median {:.3} ms ({:.1} GB/s) over {} reps",
        median * 1e3,
        mb / 1e3 / median,
        args.reps
    );
    Ok(())
}

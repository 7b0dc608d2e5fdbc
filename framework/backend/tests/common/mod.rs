//! Test-data helpers shared by the backend conformance tests.
#![allow(dead_code)] // each test binary uses a subset

use clef_backend::{Activation, Init, MlpSpec};

/// splitmix64: a tiny deterministic generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn spec(input: usize, hidden: &[usize], output: usize, activation: Activation) -> MlpSpec {
    MlpSpec {
        input,
        hidden: hidden.to_vec(),
        output,
        activation,
        init: Init::KaimingUniform,
    }
}

pub const ACTIVATIONS: [Activation; 3] = [Activation::Relu, Activation::Tanh, Activation::Sigmoid];
pub mod cnn_ref;

/// The interpreter with `torch` for the parity tests (`$CLEF_TORCH_PYTHON`, else `python3`), or
/// why the test cannot run.
pub fn torch_python() -> Result<std::path::PathBuf, String> {
    use std::path::PathBuf;
    let python = std::env::var_os("CLEF_TORCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = std::process::Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("import failed").to_string();
        return Err(format!("{} cannot import torch ({last})", python.display()));
    }
    Ok(python)
}

/// Writes `v` as little-endian f32 bytes (the parity scripts' input format).
pub fn write_f32(path: &std::path::Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Reads little-endian f32 bytes (the parity scripts' output format).
pub fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A network of `spec` with every tensor randomised (so that biases, norm scales and running
/// statistics matter): weights get `weight_noise · u` added to their initial value (`u`
/// uniform in [-1, 1)), norm scales are `1 + 0.3u`, biases and running means `0.2u`, running
/// variances `0.5 + 0.4|u|`.
pub fn random_net(
    spec: &clef_backend::ModelSpec,
    seed: u64,
    weight_noise: f32,
) -> Box<dyn clef_backend::Network> {
    use clef_backend::ParamRole;
    let mut net = clef_backend::build_network(spec, seed).expect("valid spec");
    let mut rng = Rng(seed * 7 + 1);
    let infos = net.params().infos().to_vec();
    for (i, info) in infos.iter().enumerate() {
        let v = net.params_mut().value_mut(i);
        let one_d = info.shape.len() == 1;
        for x in v.iter_mut() {
            let u = rng.uniform();
            *x = match (info.role, info.name.ends_with("running_var")) {
                (ParamRole::Buffer, true) => 0.5 + 0.4 * u.abs(),
                (ParamRole::Buffer, false) => 0.2 * u,
                (ParamRole::Weight, _) if one_d => 1.0 + 0.3 * u,
                (ParamRole::Bias, _) => 0.2 * u,
                (ParamRole::Weight, _) => *x + weight_noise * u,
            };
        }
    }
    net
}

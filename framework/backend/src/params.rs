//! Named, host-owned f32 parameter and gradient buffers.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::native::conv::InitKind;
use crate::spec::{Init, MlpSpec, ModelSpec};

/// What a parameter tensor is. Conv weights are role `Weight` with shape `[out, in, kh, kw]`
/// (PyTorch's layout); norm scales and shifts are `Weight` / `Bias` with shape `[c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// A dense layer's weight matrix, shape `[out, in]`, row-major.
    Weight,
    /// A dense layer's bias vector, shape `[out]`.
    Bias,
    /// Non-trainable state (batch norm's `running_mean` / `running_var`, shape `[c]`): saved
    /// in checkpoints, zero gradient, never updated by an [`crate::Optimizer`].
    Buffer,
}

/// Name, shape and role of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Stable name, e.g. `layers.0.weight`.
    pub name: String,
    /// Shape; weights are `[out, in]`, biases `[out]`.
    pub shape: Vec<usize>,
    /// Weight or bias.
    pub role: ParamRole,
    /// Index of the dense layer (0 = first).
    pub layer: usize,
}

impl ParamInfo {
    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Parameter values and their gradients, one contiguous buffer per tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamStore {
    infos: Vec<ParamInfo>,
    values: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

impl ParamStore {
    /// Zero-valued buffers for the given tensors.
    pub fn zeros(infos: Vec<ParamInfo>) -> Self {
        let values: Vec<Vec<f32>> = infos.iter().map(|i| vec![0.0; i.numel()]).collect();
        let grads = values.clone();
        ParamStore {
            infos,
            values,
            grads,
        }
    }

    /// The tensors of `spec`, initialised from `seed`: [`ParamStore::init_mlp`] for the MLP
    /// (the same bits), and for a convolutional backbone its tensors in graph order, drawn from
    /// one ChaCha8 stream seeded by `seed`: conv and dense weights with `spec`'s `init` scheme
    /// (fans of a conv: `in * kh * kw` and `out * kh * kw`; [`Init::TorchDefault`] is PyTorch's
    /// `kaiming_uniform(a = sqrt(5))`, U(±1/sqrt(fan_in)), and draws biases from the same
    /// bound, other schemes start biases at zero); norm weights 1, norm biases 0, running means
    /// 0, running variances 1. An invalid spec (see [`ModelSpec::validate`]) gives an empty
    /// store.
    pub fn init(spec: &ModelSpec, seed: u64) -> Self {
        let (init, graph) = match spec {
            ModelSpec::Mlp(m) => return Self::init_mlp(m, seed),
            ModelSpec::ConvNet(s) => (s.init, spec.graph()),
            ModelSpec::ResNet(s) => (s.init, spec.graph()),
        };
        let Some(Ok(graph)) = graph else {
            return ParamStore::zeros(Vec::new());
        };
        let mut store = ParamStore::zeros(graph.infos);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (kind, value) in graph.inits.iter().zip(store.values.iter_mut()) {
            match *kind {
                InitKind::Ones => value.fill(1.0),
                InitKind::Zeros => {}
                InitKind::Bias { fan_in } => {
                    if init == Init::TorchDefault {
                        fill_uniform(value, 1.0 / (fan_in as f64).sqrt(), &mut rng);
                    }
                }
                InitKind::Weight { fan_in, fan_out } => {
                    fill_weight(value, init, fan_in as f64, fan_out as f64, &mut rng)
                }
            }
        }
        store
    }

    /// The MLP's tensors in order `layers.0.weight, layers.0.bias, layers.1.weight, ...`,
    /// initialised with `spec.init` from a ChaCha8 stream seeded by `seed`; biases are zero
    /// except under [`Init::TorchDefault`], which draws them like PyTorch's `nn.Linear`.
    pub fn init_mlp(spec: &MlpSpec, seed: u64) -> Self {
        let widths = spec.widths();
        let mut infos = Vec::new();
        for (l, w) in widths.windows(2).enumerate() {
            infos.push(ParamInfo {
                name: format!("layers.{l}.weight"),
                shape: vec![w[1], w[0]],
                role: ParamRole::Weight,
                layer: l,
            });
            infos.push(ParamInfo {
                name: format!("layers.{l}.bias"),
                shape: vec![w[1]],
                role: ParamRole::Bias,
                layer: l,
            });
        }
        let mut store = ParamStore::zeros(infos);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let widths_in: Vec<usize> = widths[..widths.len() - 1].to_vec();
        for (info, value) in store.infos.iter().zip(store.values.iter_mut()) {
            if info.role == ParamRole::Bias {
                // PyTorch's nn.Linear also draws its bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in));
                // every other scheme starts biases at zero.
                if spec.init == Init::TorchDefault {
                    let fan_in = widths_in[info.layer] as f64;
                    fill_uniform(value, 1.0 / fan_in.sqrt(), &mut rng);
                }
                continue;
            }
            let (fan_out, fan_in) = (info.shape[0] as f64, info.shape[1] as f64);
            fill_weight(value, spec.init, fan_in, fan_out, &mut rng);
        }
        store
    }

    /// Descriptions of every tensor, in storage order.
    pub fn infos(&self) -> &[ParamInfo] {
        &self.infos
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.infos.len()
    }

    /// True if there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.infos.iter().map(ParamInfo::numel).sum()
    }

    /// Index of the tensor called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.infos.iter().position(|i| i.name == name)
    }

    /// Values of tensor `i`.
    pub fn value(&self, i: usize) -> &[f32] {
        &self.values[i]
    }

    /// Mutable values of tensor `i`.
    pub fn value_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.values[i]
    }

    /// Gradient of tensor `i`.
    pub fn grad(&self, i: usize) -> &[f32] {
        &self.grads[i]
    }

    /// Mutable gradient of tensor `i`.
    pub fn grad_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.grads[i]
    }

    /// All value buffers.
    pub fn values(&self) -> &[Vec<f32>] {
        &self.values
    }

    /// All gradient buffers.
    pub fn grads(&self) -> &[Vec<f32>] {
        &self.grads
    }

    /// All values (read-only) and all gradients (writable) at once, for backends that read
    /// the one while writing the other. Crate-private: callers must not resize the buffers.
    pub(crate) fn values_and_grads_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>]) {
        (&self.values, &mut self.grads)
    }

    /// Value and gradient of tensor `i`, the value mutable (for optimizers).
    pub fn value_and_grad_mut(&mut self, i: usize) -> (&mut [f32], &[f32]) {
        (&mut self.values[i], &self.grads[i])
    }

    /// All value buffers, mutable (backends writing running statistics). Crate-private:
    /// callers must not resize the buffers (a buffer moved out must be put back).
    pub(crate) fn values_all_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.values
    }

    /// Value (read-only) and gradient (mutable) of tensor `i` (for gradient terms).
    pub fn value_and_grad_for_update(&mut self, i: usize) -> (&[f32], &mut [f32]) {
        (&self.values[i], &mut self.grads[i])
    }

    /// Sets every gradient to zero.
    pub fn zero_grads(&mut self) {
        for g in &mut self.grads {
            g.fill(0.0);
        }
    }

    /// Copies all values from `other`, which must have the same tensors.
    pub fn copy_values_from(&mut self, other: &ParamStore) {
        assert_eq!(
            self.infos, other.infos,
            "copy_values_from: different tensors"
        );
        for (dst, src) in self.values.iter_mut().zip(&other.values) {
            dst.copy_from_slice(src);
        }
    }

    /// True if every value and gradient is finite.
    pub fn all_finite(&self) -> bool {
        self.values
            .iter()
            .chain(&self.grads)
            .all(|b| b.iter().all(|x| x.is_finite()))
    }
}

/// Draws a weight tensor with scheme `init`.
fn fill_weight(value: &mut [f32], init: Init, fan_in: f64, fan_out: f64, rng: &mut impl Rng) {
    match init {
        Init::KaimingUniform => fill_uniform(value, (6.0 / fan_in).sqrt(), rng),
        Init::XavierUniform => fill_uniform(value, (6.0 / (fan_in + fan_out)).sqrt(), rng),
        Init::TorchDefault => fill_uniform(value, 1.0 / fan_in.sqrt(), rng),
        Init::KaimingNormal => fill_normal(value, (2.0 / fan_in).sqrt(), rng),
        Init::XavierNormal => fill_normal(value, (2.0 / (fan_in + fan_out)).sqrt(), rng),
    }
}

fn fill_uniform(buf: &mut [f32], bound: f64, rng: &mut impl Rng) {
    let d = Uniform::new_inclusive(-bound, bound);
    for x in buf {
        *x = d.sample(rng) as f32;
    }
}

fn fill_normal(buf: &mut [f32], std: f64, rng: &mut impl Rng) {
    // std > 0 because widths are validated positive.
    let d = Normal::new(0.0, std).unwrap_or_else(|_| Normal::new(0.0, 1.0).expect("unit normal"));
    for x in buf {
        *x = d.sample(rng) as f32;
    }
}

//! clef's model backend.
//!
//! Everything the rest of clef knows about a neural network goes through the [`Network`] trait:
//! named f32 parameter buffers ([`ParamStore`]), their gradients, forward, features, a
//! cross-entropy backward pass and a vector-Jacobian product. Parameters and gradients live in
//! host-owned `Vec<f32>` buffers so that strategies (and, through the plugin ABI, plugins) can read
//! and edit them in place; the optimizers in [`optim`] update those buffers.
//!
//! The dfdx 0.13 implementation lives in [`dfdx_mlp`]; no other crate names a dfdx type.

pub mod checkpoint;
pub mod dfdx_mlp;
pub mod error;
pub mod kind;
pub mod native;
pub mod network;
pub mod ntk;
pub mod optim;
pub mod params;
pub mod pool;
pub mod spec;

pub use checkpoint::{load_safetensors, save_safetensors};
pub use dfdx_mlp::DfdxMlp;
pub use error::BackendError;
pub use kind::BackendKind;
pub use native::NativeMlp;
pub use network::{Inputs, Network};
pub use optim::{Optimizer, OptimizerSpec};
pub use params::{ParamInfo, ParamRole, ParamStore};
pub use spec::{Activation, Init, MlpSpec};

/// Builds the default backend's ([`BackendKind::default`]) network for `spec`, initialised from
/// `seed`.
///
/// Initialisation happens on the host ([`ParamStore::init_mlp`]), so every backend starts from the
/// same bits for the same seed.
pub fn build_network(spec: &MlpSpec, seed: u64) -> Result<Box<dyn Network>, BackendError> {
    build_network_with(BackendKind::default(), spec, seed)
}

/// Builds backend `kind`'s network for `spec`, initialised from `seed` (see [`build_network`]).
pub fn build_network_with(
    kind: BackendKind,
    spec: &MlpSpec,
    seed: u64,
) -> Result<Box<dyn Network>, BackendError> {
    Ok(match kind {
        BackendKind::Dfdx => Box::new(DfdxMlp::new(spec.clone(), seed)?),
        BackendKind::Native => Box::new(NativeMlp::new(spec.clone(), seed)?),
    })
}

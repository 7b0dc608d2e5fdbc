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
pub mod sample_grads;
pub mod spec;

pub use checkpoint::{load_safetensors, save_safetensors};
pub use dfdx_mlp::DfdxMlp;
pub use error::BackendError;
pub use kind::BackendKind;
pub use native::{NativeCnn, NativeMlp};
pub use network::{Inputs, Network};
pub use optim::{Optimizer, OptimizerSpec};
pub use params::{ParamInfo, ParamRole, ParamStore};
pub use spec::{
    Activation, ConvNetSpec, ConvPool, ImageShape, Init, MlpSpec, ModelSpec, Norm, ResNetSpec,
};

/// Builds the default backend's ([`BackendKind::default`]) network for `spec` (a
/// [`ModelSpec`], or an [`MlpSpec`]), initialised from `seed`.
///
/// Initialisation happens on the host ([`ParamStore::init`]), so every backend starts from the
/// same bits for the same seed.
pub fn build_network<S: Clone + Into<ModelSpec>>(
    spec: &S,
    seed: u64,
) -> Result<Box<dyn Network>, BackendError> {
    build_network_with(BackendKind::default(), spec, seed)
}

/// Builds backend `kind`'s network for `spec`, initialised from `seed` (see [`build_network`]).
/// The dfdx backend builds MLPs only (its convolutions need a nightly compiler); the native
/// backend builds every [`ModelSpec`].
pub fn build_network_with<S: Clone + Into<ModelSpec>>(
    kind: BackendKind,
    spec: &S,
    seed: u64,
) -> Result<Box<dyn Network>, BackendError> {
    let spec: ModelSpec = spec.clone().into();
    Ok(match (kind, spec) {
        (BackendKind::Dfdx, ModelSpec::Mlp(m)) => Box::new(DfdxMlp::new(m, seed)?),
        (BackendKind::Native, ModelSpec::Mlp(m)) => Box::new(NativeMlp::new(m, seed)?),
        (BackendKind::Dfdx, other) => {
            return Err(BackendError::Spec(format!(
                "the dfdx backend builds MLPs only, not a {} (use the native backend)",
                other.kind_name()
            )))
        }
        (BackendKind::Native, other) => Box::new(NativeCnn::new(other, seed)?),
    })
}

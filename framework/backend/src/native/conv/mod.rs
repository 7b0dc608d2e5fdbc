//! Convolutional backbones (ConvNet, CIFAR ResNet) on the `gemm` crate: [`NativeCnn`].
//!
//! The backbone is compiled once into a list of operations ([`graph`]); activations are stored
//! channels-last (`[h, w, c]` per sample) so that a convolution over a run of samples is one
//! GEMM of im2col patches (`[pixels, kh * kw * cin]`) against the weight repacked from
//! PyTorch's `[out, in, kh, kw]` layout. Every operation cuts the batch into the same two lanes
//! ([`lanes`]); see there why the results do not depend on the thread count.

mod conv2d;
mod graph;
mod lanes;
mod net;
mod norm;
mod ntk;
mod sample_grads;
mod simple;
#[cfg(test)]
mod tests;

pub(crate) use graph::{Graph, InitKind, Op};
pub use net::NativeCnn;

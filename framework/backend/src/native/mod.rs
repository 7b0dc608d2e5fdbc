//! A hand-fused dense-MLP implementation of [`Network`] on top of the `gemm` crate.
//!
//! [`NativeMlp`] computes exactly what [`crate::DfdxMlp`] computes (same parameter layout, same
//! loss, same masking rules, same errors) without a tape or device tensors:
//!
//! - **forward**: per layer one GEMM `Z = H · Wᵀ` reading the host weights in place (`W` is
//!   `[out, in]` row-major, so `Wᵀ` is just a strided view), followed by one fused pass that adds
//!   the bias and applies the activation (for batches smaller than the layer the GEMM computes
//!   `Zᵀ = W · Hᵀ` instead, which spares it a copy of `W`, and the fused pass transposes);
//! - **loss**: a numerically stable (max-shifted) masked log-softmax per row that writes
//!   `dL/dlogits = (softmax - onehot) / rows` directly;
//! - **backward**: per layer `dW += dZᵀ · H` accumulated by the GEMM straight into the host
//!   gradient buffer, the bias gradient as a column sum, and `dH = dZ · W` followed by one fused
//!   pass multiplying by the activation derivative (computed from the stored post-activation
//!   values). The gradient with respect to the network input is never computed.
//!
//! All activation-sized buffers live in the struct and are reused; they only grow when a larger
//! batch arrives. Parameter values and gradients are read and written in place in the
//! [`ParamStore`], so there is no copy of the parameters either.
//!
//! Parallelism and determinism: work is cut into two tasks run with `rayon::join` on the
//! current rayon pool, each task calling a single-threaded GEMM. A training batch of at least
//! `DATA_PARALLEL_MIN_ROWS` rows is cut into two halves that go through the whole network
//! (forward, loss, backward) side by side, each in its own scratch buffers and cache: the first
//! half adds its gradients into the store, the second writes them into side buffers that are then
//! added elementwise (one join for the passes, one for the sum, instead of one per layer).
//! Smaller batches, and forward-only calls, stay in one block and split each large GEMM instead:
//! the backward pass of a hidden layer runs its two independent, equally large products (`dW`
//! and `dH`) side by side, and every other large GEMM (with the fused pass that follows it) is
//! split into two halves along the rows of its *output* (batch rows or output units). How the
//! work is cut depends only on the shapes, never on the number of threads, so the results are
//! bit-identical across runs and across pool sizes (with a one-thread pool the two tasks simply
//! run in turn). Two tasks match the 2-core target machines; cutting the work ourselves beat the
//! GEMM crate's own threading at these sizes. Callers that take many steps should run on a pool
//! thread ([`crate::pool::install`]) so that each join is a cheap work-stealing push.

pub(crate) mod conv;
mod fused;
mod gemm;
mod layers;
mod loss;
mod mlp;
#[cfg(test)]
mod tests;

pub use conv::NativeCnn;
pub use mlp::NativeMlp;

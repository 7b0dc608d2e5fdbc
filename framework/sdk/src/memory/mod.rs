//! Rehearsal memories: the sample stores and insertion policies of the replay family (ER,
//! ER-ACE, A-GEM, DER/DER++, iCaRL, GDumb), written once.
//!
//! * [`SampleStore`]: rows of `dim` inputs, a target, a task id and an optional fixed-width
//!   f32 *payload* (e.g. the network's logits, DER), in flat vectors; uniform sampling without
//!   replacement ([`SampleStore::sample`]), per-task and per-class counts, and the iCaRL
//!   exemplar-set reduction ([`SampleStore::keep_first_per_class`]).
//! * [`Reservoir`]: a store of fixed capacity filled by reservoir sampling (Vitter's
//!   Algorithm R, [`reservoir_slot`]): every sample of the stream is held with the same
//!   probability `capacity / seen`.
//! * [`ClassBalanced`]: a store of fixed capacity filled by GDumb's greedy class-balanced
//!   sampler (Prabhu et al. 2020, Algorithm 1).
//! * [`herding`]: iCaRL's exemplar selection (Rebuffi et al. 2017, Algorithm 4) on feature
//!   vectors, returning the picks in priority order.
//!
//! Every policy that draws takes the random source as a closure `below(n)` returning a
//! uniform integer in `0..n` (e.g. `|n| ctx.rng_below(n)`, or a [`SplitMix64`]'s `below`), so
//! a memory is deterministic given the host's seed, and the memories are `serde` types with
//! consistency checks on load: a strategy with `type State = SerdeState` checkpoints them as
//! fields (inputs and payloads as raw float bytes).
//!
//! ```
//! use clef_sdk::memory::{Reservoir, Row};
//! use clef_sdk::rng::SplitMix64;
//!
//! let mut rng = SplitMix64::new(7);
//! // 2 samples of 3 inputs, with 4 logits stored beside each (DER).
//! let mut memory = Reservoir::new(2, 3, 4);
//! for i in 0..5 {
//!     let x = [i as f32; 3];
//!     let logits = [0.5; 4];
//!     memory.offer(Row::new(&x, i % 2, 0).with_payload(&logits), |n| rng.below(n)).unwrap();
//! }
//! assert_eq!((memory.len(), memory.seen()), (2, 5));
//! let picks = memory.store().sample(2, |n| rng.below(n));
//! let batch = memory.store().gather(&picks);
//! assert_eq!((batch.x.len(), batch.payload.len(), batch.targets.len()), (6, 8, 2));
//! ```
//!
//! [`SplitMix64`]: crate::rng::SplitMix64

mod balanced;
mod herding;
mod reservoir;
mod store;

pub use balanced::ClassBalanced;
pub use herding::{herding, l2_normalize};
pub use reservoir::{reservoir_slot, Reservoir, Slot};
pub use store::{Gathered, Row, SampleStore};

#[cfg(test)]
mod tests;

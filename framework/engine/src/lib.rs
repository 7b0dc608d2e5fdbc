//! clef's training engine: one trial's training loop ([`trainer`]) over a task stream of
//! `clef-data`, the strategy hooks it calls and the built-in strategies ([`strategy`]), the
//! expert pool ([`experts`]), trial checkpoints ([`checkpoint`]), loss-of-plasticity diagnostics
//! ([`plasticity`]), and the config tables it runs from ([`spec`]).
//!
//! The engine knows strategies only through the [`strategy::Strategy`] trait: plugins reach it
//! through `clef-host`, experiments through `clef-experiment`.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod experts;
pub mod measurements;
pub mod memory;
pub mod plasticity;
pub mod spec;
pub mod strategy;
pub mod trainer;

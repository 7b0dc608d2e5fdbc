//! clef's results and their analysis: a trial's record ([`results::TrialRecord`]) and the
//! per-trial store ([`store`]), what a protocol chose ([`Selection`]), the metrics of an
//! accuracy matrix ([`metrics`]), statistics over seeds ([`stats`]), and the views derived from
//! the store ([`views`]: `results.jsonl`, `selections.json`, `summary.md`, `report/*.csv`, and
//! the plots of [`plots`]).
//!
//! Everything here reads stored records: `clef report DIR` rebuilds every view from the store
//! alone, without the engine running anything.

#![warn(missing_docs)]

pub mod metrics;
pub mod plots;
pub mod results;
mod selection;
pub mod stats;
pub mod store;
pub mod views;

pub use selection::Selection;
pub use views::{
    compare, hparams_text, markdown, read_selections, with_joint_metrics, write_views, Comparison,
    ProtocolRow, RankAgreement, SELECTIONS_FILE,
};

//! clef's experiments: a config file ([`config`]) becomes protocols' trials ([`protocol`]:
//! trial ids, tuning, selection, evaluation; [`protocol::search`] for the candidates), which
//! [`sweep`] runs (sharded, in parallel, each trial stored as it ends) and [`runner`] drives from
//! data loading to the views of `clef-report`.
//!
//! Data flow: [`config`] → [`runner::prepare`] (strategies from `clef-host`, data and scenarios
//! from `clef-data`, candidates, leakage checks) → [`protocol::Plan`] → [`sweep::execute`]
//! (trials on `clef-engine`'s trainer) → `clef-report`'s store and views.

#![warn(missing_docs)]

pub mod config;
pub mod protocol;
pub mod runner;
pub mod sweep;

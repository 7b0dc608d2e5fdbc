//! clef's engine: data, scenarios, the training loop, strategies, metrics, configs and results.
//!
//! Data flow: [`config`] → [`runner`] loads and fingerprints the data and asks [`protocol`]
//! for the trials of each phase → [`sweep`] runs them (sharded, in parallel) → [`scenario`]
//! streams tasks built from [`data`] → [`trainer`] trains with the [`strategy`] hooks and fills
//! the accuracy matrix → [`metrics`] → [`store`] (one file per trial) → [`report`] derives
//! `results.jsonl`, `summary.md`, CSV tables and plots, with [`stats`] over seeds.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod experts;
pub mod memory;
pub mod metrics;
pub mod plasticity;
pub mod plots;
pub mod plugin;
pub mod protocol;
pub mod report;
pub mod results;
pub mod runner;
pub mod scenario;
pub mod seed;
pub mod stats;
pub mod store;
pub mod strategy;
pub mod sweep;
pub mod trainer;

//! clef's engine: data, scenarios, the training loop, strategies, metrics, configs and results.
//!
//! Data flow: [`config`] → [`runner`] plans trials (strategy × setting × seed) → [`scenario`]
//! streams tasks built from [`data`] → [`trainer`] trains with the [`strategy`] hooks and fills
//! the accuracy matrix → [`metrics`] → [`results`] (`results.jsonl`, `summary.md`).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod experts;
pub mod metrics;
pub mod plasticity;
pub mod plots;
pub mod plugin;
pub mod results;
pub mod runner;
pub mod scenario;
pub mod seed;
pub mod strategy;
pub mod trainer;

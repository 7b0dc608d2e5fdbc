//! Checking a `[[strategy]]` section's `hparams` against a plugin's schema: the rules are the
//! engine's ([`clef_engine::strategy::hparams`]), shared with the built-ins and the search.

pub use clef_engine::strategy::hparams::{check_value, did_you_mean, resolve, to_config_toml};

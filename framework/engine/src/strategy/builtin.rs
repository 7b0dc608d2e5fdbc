//! Strategies built into the core: `finetune` (no-op reference) and `joint` (upper bound).

use super::{DataMode, Strategy};

/// Plain sequential training: every hook is a no-op. The lower-bound reference.
#[derive(Debug, Default)]
pub struct Finetune;

impl Strategy for Finetune {
    fn name(&self) -> &str {
        "finetune"
    }
}

/// Joint training on the union of every task seen so far, from a fresh initialisation at each
/// task: row `k` of its accuracy matrix is the joint reference used for intransigence.
#[derive(Debug, Default)]
pub struct Joint;

impl Strategy for Joint {
    fn name(&self) -> &str {
        "joint"
    }

    fn data_mode(&self) -> DataMode {
        DataMode::Cumulative
    }
}

/// Names of the built-in strategies.
pub fn builtin_names() -> &'static [&'static str] {
    &["finetune", "joint"]
}

/// The built-in strategy called `name`, if any.
pub fn builtin(name: &str) -> Option<Box<dyn Strategy>> {
    match name {
        "finetune" => Some(Box::new(Finetune)),
        "joint" => Some(Box::new(Joint)),
        _ => None,
    }
}

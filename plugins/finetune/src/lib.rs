//! `finetune`: the no-op reference strategy as a plugin.
//!
//! Plain fine-tuning trains each task with the task's loss alone; it has no mechanism against
//! forgetting and is the lower reference every continual-learning strategy is compared with.
//! Every hook is the SDK's default no-op, so this plugin also shows the smallest complete
//! plugin: a `Strategy` impl and one `export_plugin!`.

use clef_sdk::prelude::*;

/// Plain fine-tuning: no hyperparameters, no hooks, nothing to checkpoint.
#[derive(Debug, Default)]
pub struct Finetune;

impl Strategy for Finetune {
    const NAME: &'static str = "finetune";
    const DESCRIPTION: &'static str =
        "plain fine-tuning: each task trains on its own loss only (lower reference)";
    // Works on any parameter tensors (buffers get no gradient the optimizer would use).
    const CONV_BACKBONES: bool = true;
    type Config = NoConfig;
    type State = NoState;

    fn new(_config: NoConfig) -> Result<Self> {
        Ok(Finetune)
    }
}

clef_sdk::export_plugin!(Finetune);

#[cfg(test)]
mod tests {
    use super::*;
    use clef_sdk::testing::{describe, MockHost, MockPlugin};

    clef_sdk::standard_tests!(Finetune);

    #[test]
    fn descriptor() {
        // SAFETY: the descriptor the export macro built.
        let info = unsafe { describe(clef_plugin_entry_v1()) };
        assert_eq!(info.abi_major, clef_sdk::abi::CLEF_ABI_MAJOR);
        assert_eq!(info.name, "finetune");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.hparams.is_empty());
    }

    #[test]
    fn every_hook_is_a_no_op() {
        let mut host = MockHost::new(3, 4, 2);
        let before: Vec<(Vec<f32>, Vec<f32>)> = host
            .state()
            .params
            .iter()
            .map(|p| (p.values.clone(), p.grads.clone()))
            .collect();
        // SAFETY: the descriptor the export macro built (static).
        let mut plugin =
            unsafe { MockPlugin::from_descriptor(clef_plugin_entry_v1(), "") }.expect("create");
        plugin.on_model_built(&mut host).unwrap();
        plugin.on_task_start(&mut host).unwrap();
        plugin.before_batch(&mut host).unwrap();
        plugin.after_backward(&mut host, 1.0).unwrap();
        plugin.after_step(&mut host).unwrap();
        plugin.on_task_end(&mut host).unwrap();
        plugin.before_eval(&mut host, Some(0)).unwrap();
        plugin.after_eval(&mut host).unwrap();
        let saved = plugin.save_state(&mut host).unwrap();
        plugin.load_state(&mut host, &saved).unwrap();
        let after: Vec<(Vec<f32>, Vec<f32>)> = host
            .state()
            .params
            .iter()
            .map(|p| (p.values.clone(), p.grads.clone()))
            .collect();
        assert_eq!(before, after);
        assert!(host.state().appended.is_empty());
    }
}

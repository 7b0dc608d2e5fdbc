//! An in-process mock host for unit-testing plugins through their C entry points (feature
//! `testing`).
//!
//! [`MockHost`] is a model of the `clef-services` service layer, the same layer the real host
//! uses: every argument check, every "allowed in" rule (no training context in
//! `save_state`/`load_state`, the batch services only in `before_batch`, `task_samples` only
//! for tasks up to the current one and only from the training split, the expert services only
//! in task-IL, ...), every error message and status code is the real host's by construction.
//! `framework/host/tests/service_conformance/` runs the same calls against both.
//!
//! Its model is a single linear layer, `logits = W x + b` with `W = params[0]`
//! (`[num_outputs, input_dim]`) and `b = params[1]`, so `forward`, `features` (the identity:
//! `feature_dim == input_dim`), `vjp` and `ntk_gram` give exact, checkable answers (the real
//! host with an MLP without hidden layer gives the same numbers). Tests may replace
//! [`MockState::params`] by any tensors (e.g. a deeper model's shapes): the views then work
//! on them, `features` stays the identity, and `forward`, `vjp`, `ntk_gram` and the loss of
//! [`MockPlugin::train_step`] answer `CLEF_UNSUPPORTED`.
//!
//! Expert pools are bookkeeping over the one linear model ([`MockState::experts`]): `expert_add`
//! records the architecture, `expert_select` routes the current task (and resets the optimizer
//! state, as the real host does), `expert_freeze` marks it, and `expert_params` counts exactly
//! as the real host (body plus `n_units * (feature_dim + 1)` per routed task; expert 0 is the
//! linear model, whose body is empty; before the pool is used, the model's parameter count).
//! `head_forward` is `forward` and `head_vjp` adds nothing (the linear model has no body).
//!
//! [`MockHost::step`] applies one optimizer step (SGD, or Adam after [`MockHost::use_adam`],
//! with the update rules of the real host's optimizer), and [`MockPlugin::train_step`] runs a
//! whole training step through the plugin's hooks, so `after_step` logic can be unit-tested.
//!
//! [`MockPlugin`] creates an instance from a descriptor and calls its hooks against a
//! `MockHost`, turning non-zero statuses into [`HookError`]s with the plugin's `last_error`.
//!
//! ```
//! use clef_sdk::testing::{MockHost, MockPlugin};
//! use clef_sdk::{Ctx, NoConfig, Result, Strategy};
//!
//! struct Decay;
//! impl Strategy for Decay {
//!     const NAME: &'static str = "decay";
//!     type Config = NoConfig;
//!     type State = clef_sdk::NoState;
//!     fn new(_: NoConfig) -> Result<Self> {
//!         Ok(Decay)
//!     }
//!     fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
//!         let (w, g) = ctx.values_and_grads(0)?;
//!         g.iter_mut().zip(w).for_each(|(g, w)| *g += 0.5 * w);
//!         Ok(())
//!     }
//! }
//!
//! let mut host = MockHost::new(3, 4, 2);
//! let mut plugin = MockPlugin::create::<Decay>("").unwrap();
//! plugin.after_backward(&mut host, 1.0).unwrap();
//! let state = host.state();
//! assert_eq!(state.params[0].grads[1], 0.5 * state.params[0].values[1]);
//! ```

mod descriptor;
mod host;
mod model;
mod plugin;
mod state;
mod step;
#[cfg(test)]
mod tests;

pub use descriptor::{describe, descriptor_of, HParamInfo, PluginInfo};
pub use host::{host_table, valid_report_key, MockHost};
pub use model::global_logs;
pub use plugin::{HookError, MockPlugin};
pub use state::{AppendedRows, MockOptimizer, MockParam, MockState, MockTask, Phase};

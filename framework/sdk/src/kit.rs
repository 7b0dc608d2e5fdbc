//! The plugin test kit (feature `testing`): the checks every strategy plugin needs, as
//! functions, and [`standard_tests!`](crate::standard_tests) to add them all to a plugin's
//! tests in one line.
//!
//! ```ignore
//! #[cfg(test)]
//! mod tests {
//!     clef_sdk::standard_tests!(crate::L2, config = "lambda = 2.0", docs = "../../docs/strategies.md");
//! }
//! ```
//!
//! Every check drives the plugin through its C entry points on a
//! [`MockHost`] with the [`script`]: two task-IL tasks of three
//! batches each, with evaluation after every task.

use std::path::Path;

use crate::testing::{MockHost, MockPlugin};
use crate::{HParamKind, HParams, Strategy};

/// Input width, outputs and tasks of the kit's mock host.
const SHAPE: (usize, usize, usize) = (6, 4, 2);
/// Batches per task in the kit's script.
const STEPS: usize = 3;

/// What a plugin did to the mock host: parameters, gradients, reports, appended rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Parameter values after the script.
    pub values: Vec<Vec<f32>>,
    /// Gradients after the last `after_backward`.
    pub grads: Vec<Vec<f32>>,
    /// Reported values `(task, key, value)`.
    pub reports: Vec<(usize, String, f64)>,
    /// Rows appended by `before_batch`: inputs and targets, per call.
    pub appended: Vec<(Vec<f32>, Vec<usize>)>,
}

/// A fresh mock host of the kit's shape.
pub fn host() -> MockHost {
    let (d, o, t) = SHAPE;
    MockHost::new(d, o, t)
}

/// Runs task `task` of the kit's script: the batch is the task's first 4 training rows;
/// `on_task_start`, then [`MockPlugin::train_step`] per batch (`before_batch` → the batch's
/// loss gradient → `after_backward` → the optimizer step → `after_step`); `on_task_end`; then
/// `before_eval`/`after_eval` for every task so far.
pub fn run_task(plugin: &mut MockPlugin, host: &mut MockHost, task: usize) {
    let ctx = |what: &str, e: crate::testing::HookError| -> ! {
        panic!("task {task}: {what} failed on the mock host: {e}")
    };
    {
        let s = host.state_mut();
        s.task = task;
        let dim = s.input_dim;
        s.batch_x = s.tasks[task].train_x[..4 * dim].to_vec();
        s.batch_targets = s.tasks[task].train_y[..4].to_vec();
        s.batch_current_rows = 4;
    }
    plugin
        .on_task_start(host)
        .unwrap_or_else(|e| ctx("on_task_start", e));
    for _ in 0..STEPS {
        plugin
            .train_step(host)
            .unwrap_or_else(|e| ctx("a training step", e));
    }
    plugin
        .on_task_end(host)
        .unwrap_or_else(|e| ctx("on_task_end", e));
    for j in 0..=task {
        plugin
            .before_eval(host, Some(j))
            .unwrap_or_else(|e| ctx("before_eval", e));
        plugin
            .after_eval(host)
            .unwrap_or_else(|e| ctx("after_eval", e));
    }
}

/// The whole script: `on_model_built`, then every task of the kit's host.
pub fn script(plugin: &mut MockPlugin, host: &mut MockHost) -> Trace {
    plugin
        .on_model_built(host)
        .unwrap_or_else(|e| panic!("on_model_built failed on the mock host: {e}"));
    for task in 0..SHAPE.2 {
        run_task(plugin, host, task);
    }
    trace(host)
}

/// What the host holds now.
pub fn trace(host: &MockHost) -> Trace {
    let s = host.state();
    Trace {
        values: host.values(),
        grads: host.grads(),
        reports: s.reports.clone(),
        appended: s
            .appended
            .iter()
            .map(|a| (a.x.clone(), a.targets.clone()))
            .collect(),
    }
}

/// The strategy as its last checkpoint would restore it: `save_state` through the C entry
/// point, then the envelope opened and the payload decoded (strategies with
/// `type State = SerdeState`). Lets a test inspect private fields without unsafe code.
pub fn saved<S>(plugin: &mut MockPlugin, host: &mut MockHost) -> S
where
    S: Strategy + serde::de::DeserializeOwned,
{
    let blob = plugin
        .save_state(host)
        .unwrap_or_else(|e| panic!("save_state of `{}`: {e}", S::NAME));
    let payload =
        crate::state::open(S::NAME, S::STATE_VERSION, &blob).unwrap_or_else(|e| panic!("{e:#}"));
    crate::state::decode(payload).unwrap_or_else(|e| panic!("decoding `{}`: {e:#}", S::NAME))
}

/// The host's parameters in f64 (the point at which a penalty is checked).
pub fn theta(host: &MockHost) -> Vec<Vec<f64>> {
    host.values()
        .iter()
        .map(|t| t.iter().map(|&v| f64::from(v)).collect())
        .collect()
}

/// Checks a gradient a plugin added against central finite differences of `loss` (an
/// independent f64 implementation of what the plugin claims to minimise) at `theta`:
/// `after - before` (the host's gradients around the hook) must match
/// `(loss(θ + h e_ij) − loss(θ − h e_ij)) / 2h` for every entry, within `rtol` relative to
/// `max(|fd|, 1e-2)`. Also fails if the added gradient is zero everywhere (a vacuous check).
/// Returns the number of entries checked.
pub fn assert_grad_matches_fd(
    theta: &[Vec<f64>],
    before: &[Vec<f32>],
    after: &[Vec<f32>],
    loss: impl Fn(&[Vec<f64>]) -> f64,
    h: f64,
    rtol: f64,
) -> usize {
    let mut checked = 0;
    let mut largest = 0.0f64;
    let mut point = theta.to_vec();
    for i in 0..theta.len() {
        for j in 0..theta[i].len() {
            let added = f64::from(after[i][j]) - f64::from(before[i][j]);
            point[i][j] = theta[i][j] + h;
            let plus = loss(&point);
            point[i][j] = theta[i][j] - h;
            let minus = loss(&point);
            point[i][j] = theta[i][j];
            let fd = (plus - minus) / (2.0 * h);
            assert!(
                (added - fd).abs() <= rtol * fd.abs().max(1e-2),
                "parameter {i}[{j}]: the plugin added {added}, finite differences give {fd}"
            );
            largest = largest.max(added.abs());
            checked += 1;
        }
    }
    assert!(
        largest > 1e-6,
        "the added gradient is zero: the check is vacuous"
    );
    checked
}

fn create<S: Strategy>(config: &str) -> MockPlugin {
    MockPlugin::create::<S>(config)
        .unwrap_or_else(|e| panic!("`{}` refused the config {config:?}: {e}", S::NAME))
}

/// The name and schema are valid and the defaults build the config.
pub fn schema_is_valid<S: Strategy>() {
    if let Err(e) = crate::validate::<S>() {
        panic!("{e:#}");
    }
}

/// An instance builds from `config` and, unless `config_required` (a strategy with a
/// hyperparameter that has no usable default, such as `dst`'s `task_steps`), from the
/// defaults (an empty `hparams` table).
pub fn defaults_build<S: Strategy>(config: &str, config_required: bool) {
    if !config_required {
        create::<S>("");
    }
    create::<S>(config);
}

/// Values outside the schema are refused before `new`, each with a message naming the
/// hyperparameter: below the minimum, above the maximum, not finite, the wrong type, an
/// unknown choice, and an unknown key.
pub fn out_of_range_values_are_refused<S: Strategy>() {
    let mut cases: Vec<(String, String)> =
        vec![("no_such_hparam".into(), "no_such_hparam = 1".into())];
    for h in S::Config::schema() {
        let n = h.name();
        let mut bad = |v: String| cases.push((n.to_owned(), format!("{n} = {v}")));
        match h.kind() {
            HParamKind::Float { min, max, .. } => {
                if min.is_finite() {
                    bad(format!("{:?}", min - min.abs().max(1.0)));
                }
                if max.is_finite() {
                    bad(format!("{:?}", max + max.abs().max(1.0)));
                }
                bad("nan".into());
                bad("\"text\"".into());
            }
            HParamKind::Int { min, max, .. } => {
                if *min > i64::MIN {
                    bad((min - 1).to_string());
                }
                if *max < i64::MAX {
                    bad((max + 1).to_string());
                }
                bad("1.5".into());
            }
            HParamKind::Bool { .. } => bad("\"yes\"".into()),
            HParamKind::Choice { .. } => bad("\"no-such-choice\"".into()),
        }
    }
    for (name, config) in cases {
        match MockPlugin::create::<S>(&config) {
            Ok(_) => panic!("`{}` accepted the invalid config {config:?}", S::NAME),
            Err(e) => assert!(
                e.message.contains(&name),
                "the error for {config:?} does not name `{name}`: {}",
                e.message
            ),
        }
    }
}

/// State round trip: an instance restored from the state saved after task 0 (on a fresh
/// instance whose `on_model_built` saw the initial model, as on a resumed trial) saves the
/// same bytes and continues exactly like the original. A strategy declaring
/// `NotCheckpointed` exports neither hook.
pub fn state_round_trips<S: Strategy>(config: &str) {
    let mut original = create::<S>(config);
    let desc = original.descriptor();
    if desc.save_state.is_none() {
        assert!(
            desc.load_state.is_none(),
            "`{}` exports load_state without save_state",
            S::NAME
        );
        return;
    }
    let mut host_a = host();
    original
        .on_model_built(&mut host_a)
        .expect("on_model_built");
    run_task(&mut original, &mut host_a, 0);
    let saved = original
        .save_state(&mut host_a)
        .unwrap_or_else(|e| panic!("save_state after task 0: {e}"));

    // The resumed trial: a host that reached the same point, and a fresh instance.
    let mut host_b = host();
    let mut twin = create::<S>(config);
    twin.on_model_built(&mut host_b).expect("on_model_built");
    run_task(&mut twin, &mut host_b, 0);
    drop(twin);
    let mut restored = create::<S>(config);
    restored
        .on_model_built(&mut host())
        .expect("on_model_built");
    restored
        .load_state(&mut host_b, &saved)
        .unwrap_or_else(|e| panic!("load_state of the saved state: {e}"));
    let again = restored
        .save_state(&mut host_b)
        .unwrap_or_else(|e| panic!("save_state after load_state: {e}"));
    assert!(
        again == saved,
        "`{}`: save(load(state)) differs from state",
        S::NAME
    );

    for task in 1..SHAPE.2 {
        run_task(&mut original, &mut host_a, task);
        run_task(&mut restored, &mut host_b, task);
    }
    assert_eq!(
        trace(&host_a),
        trace(&host_b),
        "`{}`: the restored instance does not continue like the original",
        S::NAME
    );

    // A corrupted or foreign state is refused, not loaded as garbage.
    let mut corrupt = saved.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x5A;
    if saved.len() > 8 {
        let mut fresh = create::<S>(config);
        assert!(
            fresh.load_state(&mut host(), &corrupt).is_err(),
            "`{}` loaded a corrupted state",
            S::NAME
        );
        assert!(
            fresh.load_state(&mut host(), b"not a state").is_err(),
            "`{}` loaded a foreign blob",
            S::NAME
        );
    }
}

/// The kit's script gives the same trace twice from fresh instances and hosts.
pub fn short_run_is_deterministic<S: Strategy>(config: &str) {
    let first = script(&mut create::<S>(config), &mut host());
    let second = script(&mut create::<S>(config), &mut host());
    assert_eq!(first, second, "`{}`: two identical runs differ", S::NAME);
}

/// The Markdown file at `docs` (relative to the plugin crate's directory) shows the schema's
/// table ([`crate::markdown_table`]) between `<!-- hparams:NAME -->` and
/// `<!-- /hparams:NAME -->`; on a mismatch the panic message holds the table to paste.
pub fn docs_table_matches<S: Strategy>(manifest_dir: &str, docs: &str) {
    let path = Path::new(manifest_dir).join(docs);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let expected = crate::markdown_table(&S::Config::schema());
    let (open, close) = (
        format!("<!-- hparams:{} -->", S::NAME),
        format!("<!-- /hparams:{} -->", S::NAME),
    );
    let block = text
        .find(&open)
        .and_then(|i| {
            let rest = &text[i + open.len()..];
            rest.find(&close).map(|j| rest[..j].trim())
        })
        .unwrap_or_else(|| {
            panic!(
                "{} has no block `{open}` ... `{close}`; add it with this table:\n\n{open}\n{expected}{close}\n",
                path.display()
            )
        });
    assert!(
        block == expected.trim(),
        "the hyperparameter table of `{}` in {} differs from its schema; replace the block with:\n\n{open}\n{expected}{close}\n",
        S::NAME,
        path.display()
    );
}

/// The last of its arguments (the default config, or the one given).
#[doc(hidden)]
#[macro_export]
macro_rules! __kit_pick {
    ($default:expr) => {
        $default
    };
    ($default:expr, $given:expr) => {
        $given
    };
}

/// Adds the kit's tests for a strategy to the enclosing test module: the schema is valid,
/// the defaults (and `config`) build, out-of-range values are refused, the state round-trips,
/// a short run on the mock is deterministic, and (with `docs = "path"`, relative to the
/// crate's directory) the docs' hyperparameter table matches the schema. With
/// `config_required = true` an empty config is not expected to build (a hyperparameter without
/// a usable default); the other checks use `config`.
///
/// ```ignore
/// clef_sdk::standard_tests!(crate::L2);
/// clef_sdk::standard_tests!(crate::L2, config = "lambda = 2.0", docs = "../../docs/strategies.md");
/// ```
#[macro_export]
macro_rules! standard_tests {
    ($s:ty $(, config = $config:expr)? $(, docs = $docs:expr)? $(, config_required = $req:literal)? $(,)?) => {
        fn __kit_config() -> &'static str {
            $crate::__kit_pick!("" $(, $config)?)
        }

        #[test]
        fn kit_schema_is_valid() {
            $crate::kit::schema_is_valid::<$s>();
        }

        #[test]
        fn kit_defaults_build() {
            $crate::kit::defaults_build::<$s>(__kit_config(), $crate::__kit_pick!(false $(, $req)?));
        }

        #[test]
        fn kit_out_of_range_values_are_refused() {
            $crate::kit::out_of_range_values_are_refused::<$s>();
        }

        #[test]
        fn kit_state_round_trips() {
            $crate::kit::state_round_trips::<$s>(__kit_config());
        }

        #[test]
        fn kit_short_run_is_deterministic() {
            $crate::kit::short_run_is_deterministic::<$s>(__kit_config());
        }

        $(
            #[test]
            fn kit_docs_table_matches_the_schema() {
                $crate::kit::docs_table_matches::<$s>(::core::env!("CARGO_MANIFEST_DIR"), $docs);
            }
        )?
    };
}

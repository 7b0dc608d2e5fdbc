//! Tests of the generated C entry points against the mock host.

use crate::testing::{MockHost, MockPlugin};
use crate::{
    ensure, Context, Ctx, CustomState, Error, HostStatus, NoConfig, NoState, Result, Split,
    Strategy, TaskInfo,
};

mod entry;
mod hooks;
mod kit;
mod schema;
mod services;

// ---- a strategy that exercises every service ----------------------------------------------

#[derive(Debug, crate::HParams)]
struct ProbeConfig {
    /// a rate
    #[hparam(default = 0.1, range = 0.0..=10.0, log)]
    lr: f64,
    /// a count
    #[hparam(default = 5, range = 1..)]
    steps: i64,
    /// a flag
    #[hparam(default = true)]
    verbose: bool,
    /// what to do
    #[hparam(default = "ok", choices = ["ok", "error", "panic"])]
    mode: String,
}

/// Records what it sees; fails or panics on request (`mode`).
struct Probe {
    config: ProbeConfig,
    seen: Vec<String>,
    counter: u32,
}

impl Strategy for Probe {
    const NAME: &'static str = "probe";
    const DESCRIPTION: &'static str = "exercises the SDK";
    type Config = ProbeConfig;
    type State = CustomState;

    fn new(config: ProbeConfig) -> Result<Self> {
        ensure!(config.lr != 7.0, "lr 7 is unlucky");
        if config.steps == 13 {
            panic!("steps 13 panics in new");
        }
        Ok(Self {
            config,
            seen: Vec::new(),
            counter: 0,
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        for p in ctx.params()? {
            self.seen
                .push(format!("{} {:?} {:?} {}", p.name, p.shape, p.role, p.layer));
        }
        Ok(())
    }

    fn on_task_start(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        tracing::info!(task = task.task, units = ?task.units, "task starts");
        self.seen
            .push(format!("start {} {:?}", task.task, task.units));
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, loss: f32) -> Result<()> {
        match self.config.mode.as_str() {
            "error" => {
                return Err(Error::msg("inner cause").context("after_backward failed"));
            }
            "panic" => panic!("probe panics with loss {loss}"),
            _ => {}
        }
        // Writable gradient: g += lr * w.
        let lr = self.config.lr as f32;
        let (w, g) = ctx.values_and_grads(0)?;
        for (g, w) in g.iter_mut().zip(w) {
            *g += lr * w;
        }
        ctx.grads(1)?[0] = loss;
        ctx.values(1)?[1] = 42.0;
        if let Some(m) = ctx.optimizer_state("momentum", 0)? {
            m[0] = 3.0;
        }
        ensure!(ctx.optimizer_state("exp_avg", 0)?.is_none());
        Ok(())
    }

    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        // Gradients are writable in every hook, as in the real host.
        ctx.grads(0)?;
        let g = ctx.grads_ref(0)?.to_vec();
        let v = ctx.values_ref(0)?;
        ensure!(g.len() == v.len());
        // The batch is only available in before_batch.
        let err = ctx.batch().unwrap_err();
        ensure!(err.host_status() == Some(HostStatus::NotAllowed));
        Err(err).context("after_step wraps")
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let batch = ctx.batch()?;
        let (rows, cols, first) = (batch.rows, batch.cols, batch.row(0).to_vec());
        let targets = batch.targets.clone();
        self.seen.push(format!("batch {rows}x{cols} {targets:?}"));
        let mut mask = vec![false; ctx.task_info()?.num_outputs];
        mask[targets[0]] = true;
        ctx.append_rows(&first, &targets[..1], Some(&mask))?;
        ctx.append_rows(&first, &targets[..1], None)?;
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        let (x, y) = ctx.task_samples(task.task, Split::Train, 1, 2)?;
        let logits = ctx.forward(&x, 2)?;
        let features = ctx.features(&x, 2)?;
        let gram = ctx.ntk_gram(&x, 2, &x[..features.len() / 2], 1, 0)?;
        let mask = ctx.task_mask(task.task)?;
        self.seen.push(format!(
            "end y={y:?} logits={} features={} gram={} mask={mask:?}",
            logits.len(),
            features.len(),
            gram.len()
        ));
        // A future task is refused.
        let err = ctx
            .task_samples(task.task + 1, Split::Test, 0, 1)
            .unwrap_err();
        self.seen.push(err.to_string());
        Ok(())
    }

    fn before_eval(&mut self, ctx: &mut Ctx<'_>, task: Option<usize>) -> Result<()> {
        self.seen
            .push(format!("eval {task:?} rng {}", ctx.rng_below(10) < 10));
        Ok(())
    }

    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        let mut out = self.counter.to_le_bytes().to_vec();
        out.extend(self.seen.join("\n").bytes());
        Ok(out)
    }

    fn load_state(&mut self, _ctx: &mut Ctx<'_>, state: &[u8]) -> Result<()> {
        ensure!(state.len() >= 4, "state too short: {} bytes", state.len());
        self.counter = u32::from_le_bytes(state[..4].try_into()?);
        self.seen = String::from_utf8(state[4..].to_vec())?
            .split('\n')
            .map(str::to_owned)
            .collect();
        self.counter += 1;
        Ok(())
    }
}

const PROBE_OK: &str = "lr = 0.5\nsteps = 3\nverbose = false\nmode = \"ok\"\n";

fn probe(mode: &str) -> MockPlugin {
    let config = PROBE_OK.replace("\"ok\"", &format!("{mode:?}"));
    MockPlugin::create::<Probe>(&config).expect("create")
}

/// The strategy behind a plugin instance (tests only: reaches into the SDK's instance box).
pub(crate) fn strategy_of<S: Strategy>(plugin: &MockPlugin) -> &S {
    // SAFETY: the instance was created for `S` (callers pass the matching type) and is live.
    unsafe { crate::export::strategy_ref::<S>(plugin.instance()) }
}

/// A test body that runs inside a hook.
type Body = fn(&mut Ctx<'_>) -> Result<()>;

/// Runs `f` inside `after_backward` of a throwaway strategy.
fn with_ctx(host: &mut MockHost, f: Body) -> Result<(), String> {
    struct Run;
    thread_local! {
        static F: std::cell::Cell<Option<Body>> = const { std::cell::Cell::new(None) };
    }
    impl Strategy for Run {
        const NAME: &'static str = "run";
        type Config = NoConfig;
        type State = NoState;
        fn new(_: NoConfig) -> Result<Self> {
            Ok(Run)
        }
        fn after_backward(&mut self, ctx: &mut Ctx<'_>, _: f32) -> Result<()> {
            F.with(|f| f.get().unwrap())(ctx)
        }
    }
    F.with(|c| c.set(Some(f)));
    let mut plugin = MockPlugin::create::<Run>("").unwrap();
    plugin
        .after_backward(host, 0.0)
        .map_err(|e| e.message.clone())
}

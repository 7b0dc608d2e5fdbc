//! The test kit (`standard_tests!`): a small stateful strategy in the new style runs the kit's
//! tests, and two broken variants the kit must catch.

use crate::prelude::*;

#[derive(HParams)]
pub struct DecayConfig {
    /// Pull towards the weights at the last task end.
    #[hparam(default = 0.5, range = 0.0..=10.0, log, needs_past_tasks)]
    pub rate: f64,
    /// Count steps.
    #[hparam(default = 3, range = 1..=100)]
    pub every: usize,
    /// A choice.
    #[hparam(default = "per-task")]
    pub mode: Mode,
}

#[derive(HParamChoice, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Mode {
    PerTask,
    #[choice(name = "all")]
    Shared,
}

#[derive(Serialize, Deserialize)]
pub struct Decay {
    rate: f32,
    every: u64,
    mode: Mode,
    steps: u64,
    anchor: Option<crate::anchor::Anchor>,
    #[serde(with = "crate::state::bits")]
    seen: Vec<bool>,
}

impl Strategy for Decay {
    const NAME: &'static str = "kit-decay";
    type Config = DecayConfig;
    type State = SerdeState;

    fn new(c: DecayConfig) -> Result<Self> {
        Ok(Self {
            rate: c.rate as f32,
            every: c.every as u64,
            mode: c.mode,
            steps: 0,
            anchor: None,
            seen: Vec::new(),
        })
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        self.steps += 1;
        self.seen.push(self.steps.is_multiple_of(self.every));
        let scale = match self.mode {
            Mode::PerTask => self.steps as f32,
            Mode::Shared => 1.0,
        };
        if let Some(a) = &self.anchor {
            a.pull(ctx, self.rate * scale)?;
        }
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        self.anchor = Some(crate::anchor::Anchor::capture(ctx)?);
        ctx.report("steps", self.steps as f64)
    }
}

crate::standard_tests!(Decay, config = "rate = 2.0\nmode = \"all\"");

/// Forgets its anchor in checkpoints (`#[serde(skip)]`): the kit's round trip must fail.
#[derive(Serialize, Deserialize)]
pub struct Forgetful {
    rate: f32,
    #[serde(skip)]
    anchor: Option<Vec<Vec<f32>>>,
}

impl Strategy for Forgetful {
    const NAME: &'static str = "kit-forgetful";
    type Config = DecayConfig;
    type State = SerdeState;

    fn new(c: DecayConfig) -> Result<Self> {
        Ok(Self {
            rate: c.rate as f32,
            anchor: None,
        })
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        match &self.anchor {
            Some(a) => crate::anchor::add_pull(ctx, a, self.rate, "the anchor"),
            None => Ok(()),
        }
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        self.anchor = Some(crate::anchor::capture(ctx)?);
        Ok(())
    }
}

/// Draws from a process-global counter: not deterministic; the kit must notice.
pub struct Moody;

static MOOD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

impl Strategy for Moody {
    const NAME: &'static str = "kit-moody";
    type Config = NoConfig;
    type State = NotCheckpointed;

    fn new(_: NoConfig) -> Result<Self> {
        Ok(Self)
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        let m = MOOD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as f32;
        ctx.grads(0)?[0] += m;
        Ok(())
    }
}

fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(f).expect_err("the kit should have failed");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn the_kit_catches_a_state_that_does_not_round_trip() {
    let msg = panics(|| crate::kit::state_round_trips::<Forgetful>(""));
    assert!(msg.contains("does not continue like the original"), "{msg}");
}

#[test]
fn the_kit_catches_a_nondeterministic_run() {
    let msg = panics(|| crate::kit::short_run_is_deterministic::<Moody>(""));
    assert!(msg.contains("two identical runs differ"), "{msg}");
    // Not checkpointed: no state hooks exported, so the host turns checkpoints off.
    let desc = crate::testing::descriptor_of::<Moody>();
    assert!(desc.save_state.is_none() && desc.load_state.is_none());
    crate::kit::state_round_trips::<Moody>("");
}

#[test]
fn the_docs_table_check_names_the_table_to_paste() {
    let dir = std::env::temp_dir().join(format!("clef-kit-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let table = crate::markdown_table(&<DecayConfig as HParams>::schema());
    std::fs::write(
        dir.join("ok.md"),
        format!("# x\n<!-- hparams:kit-decay -->\n{table}<!-- /hparams:kit-decay -->\n"),
    )
    .unwrap();
    crate::kit::docs_table_matches::<Decay>(dir.to_str().unwrap(), "ok.md");
    std::fs::write(
        dir.join("stale.md"),
        format!(
            "<!-- hparams:kit-decay -->\n{}<!-- /hparams:kit-decay -->\n",
            table.replace("0.5", "0.25")
        ),
    )
    .unwrap();
    let d = dir.clone();
    let msg =
        panics(move || crate::kit::docs_table_matches::<Decay>(d.to_str().unwrap(), "stale.md"));
    assert!(
        msg.contains("differs from its schema") && msg.contains(&table),
        "{msg}"
    );
    assert!(
        table.contains("| `rate` | float | 0.5 | [0, 10], log scale |"),
        "{table}"
    );
    assert!(
        table.contains("| `mode` | choice | `per-task` | `per-task` \\| `all` |"),
        "{table}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_needs_past_tasks_flag_reaches_the_descriptor() {
    let desc = crate::testing::descriptor_of::<Decay>();
    // SAFETY: SDK-built descriptor.
    let info = unsafe { crate::testing::describe(desc) };
    assert_eq!(
        info.hparams[0].flags,
        crate::abi::CLEF_HPARAM_LOG_SCALE | crate::abi::CLEF_HPARAM_NEEDS_PAST_TASKS
    );
    assert_eq!(info.hparams[1].flags, 0);
    assert_eq!(info.hparams[2].choices, ["per-task", "all"]);
}

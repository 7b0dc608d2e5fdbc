//! Logging, RNG, task: `log`, `rng_u64`, `task_info`.

use std::ffi::CString;
use std::ptr;

use clef_abi::{
    ClefTaskInfo, CLEF_LOG_DEBUG, CLEF_LOG_ERROR, CLEF_LOG_INFO, CLEF_LOG_TRACE, CLEF_LOG_WARN,
    CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL,
};

use super::{check, count, Ctx, Dims};
use crate::error::{Error, Result};

/// The evaluation setting of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Task-incremental: the task id is known; logits are masked to the task's units.
    TaskIl,
    /// Class-incremental: argmax over every unit seen so far.
    ClassIl,
    /// Domain-incremental: one shared head.
    DomainIl,
    /// A setting this SDK does not know (a newer host).
    Other(i32),
}

impl Setting {
    fn from_raw(raw: i32) -> Self {
        match raw {
            CLEF_SETTING_TASK_IL => Self::TaskIl,
            CLEF_SETTING_CLASS_IL => Self::ClassIl,
            CLEF_SETTING_DOMAIN_IL => Self::DomainIl,
            other => Self::Other(other),
        }
    }
}

/// The current task and the shape of the problem (an owned copy of the host's
/// `ClefTaskInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Evaluation setting.
    pub setting: Setting,
    /// 0-based index of the current task.
    pub task: usize,
    /// Number of tasks in the stream.
    pub num_tasks: usize,
    /// Training samples of the current task.
    pub train_samples: usize,
    /// Test samples of the current task.
    pub test_samples: usize,
    /// Features per sample.
    pub input_dim: usize,
    /// Logits of the network.
    pub num_outputs: usize,
    /// Width of the penultimate representation (what [`Ctx::features`] returns per row).
    pub feature_dim: usize,
    /// Output units of this task's head.
    pub units: Vec<usize>,
    /// Threads the plugin may use for its own parallel work (0 = no hint).
    pub num_threads: usize,
    /// The trial seed (draw randomness from [`Ctx::rng_u64`] instead).
    pub seed: u64,
}

impl TaskInfo {
    /// Copies a host task info.
    ///
    /// # Safety
    /// `raw.units` must point to `raw.n_units` readable `i64`s (or be null with `n_units == 0`).
    pub(crate) unsafe fn from_raw(raw: &ClefTaskInfo) -> Result<Self> {
        let n_units = count("task_info", "n_units", raw.n_units)?;
        let units = if n_units == 0 {
            Vec::new()
        } else {
            if raw.units.is_null() {
                return Err(Error::msg(
                    "host task info: `units` is null but `n_units` is positive",
                ));
            }
            // SAFETY: the host guarantees `units` holds `n_units` values for the call (caller).
            let units = unsafe { std::slice::from_raw_parts(raw.units, n_units) };
            units
                .iter()
                .map(|&u| count("task_info", "units", u))
                .collect::<Result<_>>()?
        };
        Ok(Self {
            setting: Setting::from_raw(raw.setting),
            task: count("task_info", "task", raw.task)?,
            num_tasks: count("task_info", "num_tasks", raw.num_tasks)?,
            train_samples: count("task_info", "train_samples", raw.train_samples)?,
            test_samples: count("task_info", "test_samples", raw.test_samples)?,
            input_dim: count("task_info", "input_dim", raw.input_dim)?,
            num_outputs: count("task_info", "num_outputs", raw.num_outputs)?,
            feature_dim: count("task_info", "feature_dim", raw.feature_dim)?,
            units,
            num_threads: raw.num_threads as usize,
            seed: raw.seed,
        })
    }
}

/// Log level of [`Ctx::log`] (prefer the `tracing` macros, which the SDK forwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors.
    Error,
    /// Warnings.
    Warn,
    /// Information.
    Info,
    /// Debugging detail.
    Debug,
    /// Very verbose detail.
    Trace,
}

impl LogLevel {
    pub(crate) fn code(self) -> i32 {
        match self {
            Self::Error => CLEF_LOG_ERROR,
            Self::Warn => CLEF_LOG_WARN,
            Self::Info => CLEF_LOG_INFO,
            Self::Debug => CLEF_LOG_DEBUG,
            Self::Trace => CLEF_LOG_TRACE,
        }
    }
}

impl Ctx<'_> {
    /// Sends one line to the host's log with this hook's context. Prefer `tracing::info!`
    /// and friends, which the SDK forwards with the plugin's name as prefix.
    pub fn log(&self, level: LogLevel, message: &str) {
        let msg = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: the host table is valid during the hook and `raw` is its context (Ctx::new);
        // `msg` is NUL-terminated and outlives the call.
        unsafe { (self.host.log)(self.raw, level.code(), msg.as_ptr()) }
    }

    /// The next value of the instance's seeded random stream (reproducible per trial seed).
    ///
    /// The service has no status: where the host refuses it (`save_state`/`load_state`, which
    /// run without a training context) the value is 0. Draw randomness in training hooks.
    pub fn rng_u64(&mut self) -> u64 {
        // SAFETY: see `Ctx::new`: valid table and context, on the hook's thread.
        unsafe { (self.host.rng_u64)(self.raw) }
    }

    /// A uniform `f64` in `[0, 1)` (53 random bits from [`rng_u64`](Ctx::rng_u64)).
    pub fn rng_f64(&mut self) -> f64 {
        (self.rng_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n`, without modulo bias.
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn rng_below(&mut self, n: usize) -> usize {
        assert!(n > 0, "rng_below(0): empty range");
        let n = n as u64;
        // Lemire's multiply-shift with rejection: the low word below `2^64 mod n` is biased.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.rng_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// The current task and the problem's shape.
    pub fn task_info(&mut self) -> Result<TaskInfo> {
        let raw = self.raw_task_info()?;
        // SAFETY: the host filled `raw`; its `units` stay valid during the hook.
        let info = unsafe { TaskInfo::from_raw(&raw) }?;
        self.dims = Some(Dims {
            input_dim: info.input_dim,
            num_outputs: info.num_outputs,
            feature_dim: info.feature_dim,
        });
        Ok(info)
    }

    fn raw_task_info(&mut self) -> Result<ClefTaskInfo> {
        let mut raw = ClefTaskInfo {
            struct_size: std::mem::size_of::<ClefTaskInfo>() as u32,
            setting: 0,
            task: 0,
            num_tasks: 0,
            train_samples: 0,
            test_samples: 0,
            input_dim: 0,
            num_outputs: 0,
            feature_dim: 0,
            units: ptr::null(),
            n_units: 0,
            num_threads: 0,
            seed: 0,
        };
        // SAFETY: valid table and context (Ctx::new); `raw` is a live, writable ClefTaskInfo.
        check("task_info", unsafe {
            (self.host.task_info)(self.raw, &mut raw)
        })?;
        Ok(raw)
    }

    /// The problem dimensions, fetched once per hook (and again after the model changed).
    pub(super) fn dims(&mut self) -> Result<Dims> {
        if let Some(dims) = self.dims {
            return Ok(dims);
        }
        let raw = self.raw_task_info()?;
        let dims = Dims {
            input_dim: count("task_info", "input_dim", raw.input_dim)?,
            num_outputs: count("task_info", "num_outputs", raw.num_outputs)?,
            feature_dim: count("task_info", "feature_dim", raw.feature_dim)?,
        };
        self.dims = Some(dims);
        Ok(dims)
    }
}

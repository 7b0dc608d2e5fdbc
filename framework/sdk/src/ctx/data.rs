//! Data: the training batch (`batch_get`, `batch_append`), stored samples of past tasks
//! (`task_samples`) and task heads (`task_mask`, and [`Ctx::training_units`] over them).

use std::ptr;

use clef_abi::{ClefBatch, CLEF_SPLIT_TEST, CLEF_SPLIT_TRAIN};

use super::{check, count, to_i64, Ctx, Setting};
use crate::error::{Error, Result};

/// Which part of a task's data [`Ctx::task_samples`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

/// The training batch as `before_batch` sees it (before any rows are appended). Borrows the
/// [`Ctx`], so it must be dropped before [`Ctx::append_rows`].
#[derive(Debug, Clone)]
pub struct BatchView<'c> {
    /// `rows * cols` inputs, row-major (host memory).
    pub x: &'c [f32],
    /// Target output unit of each row.
    pub targets: Vec<usize>,
    /// Rows in the batch.
    pub rows: usize,
    /// Features per row.
    pub cols: usize,
    /// Rows from the current task's stream (the first `current_rows`).
    pub current_rows: usize,
}

impl BatchView<'_> {
    /// The inputs of row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.x[r * self.cols..(r + 1) * self.cols]
    }

    /// The inputs (`current_rows * cols`) and targets of the current task's rows, or an error
    /// if the host's batch is shorter than it says.
    pub fn current(&self) -> Result<(&[f32], &[usize])> {
        let x = self
            .x
            .get(..self.current_rows * self.cols)
            .ok_or_else(|| Error::msg("the batch has fewer inputs than current_rows * cols"))?;
        let y = self
            .targets
            .get(..self.current_rows)
            .ok_or_else(|| Error::msg("the batch has fewer targets than current_rows"))?;
        Ok((x, y))
    }
}

impl Ctx<'_> {
    /// The current training batch (only in `before_batch`).
    pub fn batch(&mut self) -> Result<BatchView<'_>> {
        let mut raw = ClefBatch {
            x: ptr::null(),
            targets: ptr::null(),
            rows: 0,
            cols: 0,
            current_rows: 0,
        };
        // SAFETY: valid table and context (Ctx::new); `raw` is a live, writable ClefBatch.
        check("batch_get", unsafe {
            (self.host.batch_get)(self.raw, &mut raw)
        })?;
        let rows = count("batch_get", "rows", raw.rows)?;
        let cols = count("batch_get", "cols", raw.cols)?;
        let current_rows = count("batch_get", "current_rows", raw.current_rows)?;
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::msg("host service `batch_get` returned an oversized batch"))?;
        if (n > 0 && raw.x.is_null()) || (rows > 0 && raw.targets.is_null()) {
            return Err(Error::msg(
                "host service `batch_get` returned a null buffer",
            ));
        }
        let x: &[f32] = if n == 0 {
            &[]
        } else {
            // SAFETY: the host's batch holds `rows * cols` inputs valid during the hook; the
            // view borrows `self` mutably, so no service (e.g. `batch_append`, which may move
            // the batch) can be called while it lives.
            unsafe { std::slice::from_raw_parts(raw.x, n) }
        };
        let targets: &[i64] = if rows == 0 {
            &[]
        } else {
            // SAFETY: as above, `rows` targets.
            unsafe { std::slice::from_raw_parts(raw.targets, rows) }
        };
        let targets = targets
            .iter()
            .map(|&t| count("batch_get", "targets", t))
            .collect::<Result<_>>()?;
        Ok(BatchView {
            x,
            targets,
            rows,
            cols,
            current_rows,
        })
    }

    /// Appends rows to the current batch (only in `before_batch`): `x` holds
    /// `targets.len() * input_dim` inputs. `masks` is `None` (the rows use the current task's
    /// training mask) or `targets.len() * num_outputs` flags (`true` = the unit is in the
    /// row's softmax), e.g. a replayed row's own task-IL head.
    pub fn append_rows(
        &mut self,
        x: &[f32],
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> Result<()> {
        let rows = targets.len();
        let dims = self.check_rows("batch_append", "x", x.len(), rows)?;
        let (targets, masks) = labels("batch_append", targets, masks, dims.num_outputs)?;
        let masks_ptr = masks.as_ref().map_or(ptr::null(), |m| m.as_ptr());
        // SAFETY: valid table and context (Ctx::new); the buffers are live with the lengths the
        // service documents (checked above); `masks_ptr` is null or `rows * num_outputs` bytes.
        check("batch_append", unsafe {
            (self.host.batch_append)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                targets.as_ptr(),
                masks_ptr,
            )
        })
    }

    /// Copies samples `start..start + rows` of task `task`'s `split` (after the task's input
    /// transform): `(rows * input_dim inputs, rows targets)`. Only tasks up to the current one.
    pub fn task_samples(
        &mut self,
        task: usize,
        split: Split,
        start: usize,
        rows: usize,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let dims = self.dims()?;
        let mut x = vec![0.0f32; rows * dims.input_dim];
        let mut targets = vec![0i64; rows];
        let split = match split {
            Split::Train => CLEF_SPLIT_TRAIN,
            Split::Test => CLEF_SPLIT_TEST,
        };
        // SAFETY: valid table and context (Ctx::new); `x` holds `rows * input_dim` and
        // `targets` `rows` values, as the service documents.
        check("task_samples", unsafe {
            (self.host.task_samples)(
                self.raw,
                to_i64(task),
                split,
                to_i64(start),
                to_i64(rows),
                x.as_mut_ptr(),
                targets.as_mut_ptr(),
            )
        })?;
        let targets = targets
            .into_iter()
            .map(|t| count("task_samples", "targets", t))
            .collect::<Result<_>>()?;
        Ok((x, targets))
    }

    /// The class mask of task `task`'s head: `num_outputs` flags, `true` = unit in the head.
    pub fn task_mask(&mut self, task: usize) -> Result<Vec<bool>> {
        let dims = self.dims()?;
        let mut out = vec![0u8; dims.num_outputs];
        // SAFETY: valid table and context (Ctx::new); `out` holds `num_outputs` bytes.
        check("task_mask", unsafe {
            (self.host.task_mask)(self.raw, to_i64(task), out.as_mut_ptr(), to_i64(out.len()))
        })?;
        Ok(out.into_iter().map(|b| b != 0).collect())
    }

    /// The output units of task `task`'s training softmax as the trainer uses them: task-IL
    /// the task's units; class-IL the units of tasks `0..=task`; domain-IL every output (in
    /// ascending order, without duplicates). E.g. the classes a Fisher or a function-space
    /// regulariser of task `task` sums over.
    pub fn training_units(&mut self, task: usize) -> Result<Vec<usize>> {
        let info = self.task_info()?;
        let k = info.num_outputs;
        let mask = match info.setting {
            Setting::TaskIl => self.task_mask(task)?,
            Setting::ClassIl => {
                let mut union = vec![false; k];
                for j in 0..=task {
                    for (u, m) in union.iter_mut().zip(self.task_mask(j)?) {
                        *u |= m;
                    }
                }
                union
            }
            Setting::DomainIl => vec![true; k],
            Setting::Other(code) => {
                return Err(Error::msg(format!(
                    "training_units: unknown evaluation setting (code {code})"
                )))
            }
        };
        Ok(mask
            .iter()
            .enumerate()
            .filter_map(|(u, &m)| m.then_some(u))
            .collect())
    }
}

/// Targets as the ABI's `i64`s and row masks (`rows * num_outputs` flags, checked) as bytes:
/// the labelled rows `batch_append`, `batch_grad` and `train_step` take.
pub(super) fn labels(
    service: &str,
    targets: &[usize],
    masks: Option<&[bool]>,
    num_outputs: usize,
) -> Result<(Vec<i64>, Option<Vec<u8>>)> {
    let rows = targets.len();
    let t = targets.iter().map(|&t| to_i64(t)).collect();
    let m = match masks {
        None => None,
        Some(m) => {
            if m.len() != rows * num_outputs {
                return Err(Error::msg(format!(
                    "`{service}`: masks has {} flags, expected rows ({rows}) * num_outputs \
                     ({num_outputs})",
                    m.len()
                )));
            }
            Some(m.iter().map(|&b| u8::from(b)).collect())
        }
    };
    Ok((t, m))
}

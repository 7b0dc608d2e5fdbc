//! Training arithmetic on rows the plugin chooses (ABI 1.6): the gradient of a second batch
//! (`batch_grad`), per-sample gradient powers (`sample_grads`), and at task boundaries a fresh
//! network (`reinit`) and optimizer steps on the plugin's own rows (`train_step`). On a host
//! older than 1.6 each returns [`HostStatus::Unsupported`](crate::HostStatus).

use std::ptr;

use clef_abi::{CLEF_HOST_SIZE_V1_6, CLEF_UNSUPPORTED};

use super::data::labels;
use super::{check, to_i64, Ctx};
use crate::error::{Error, Result};

impl Ctx<'_> {
    /// Whether the host offers the ABI 1.6 training services ([`Ctx::batch_grad`],
    /// [`Ctx::sample_grads`], [`Ctx::reinit`], [`Ctx::train_step`]).
    pub fn can_train_rows(&self) -> bool {
        self.host.struct_size as usize >= CLEF_HOST_SIZE_V1_6
    }

    fn require_1_6(&self, service: &str) -> Result<()> {
        if self.can_train_rows() {
            Ok(())
        } else {
            Err(Error::host(service, CLEF_UNSUPPORTED))
        }
    }

    /// The total number of scalars over every tensor (`param_info` order, buffers included):
    /// the length of [`Ctx::batch_grad`]'s flat gradient.
    pub fn total_numel(&mut self) -> Result<usize> {
        let mut n = 0;
        for i in 0..self.param_count()? {
            n += self.param_info(i)?.numel;
        }
        Ok(n)
    }

    /// The gradient of the mean masked softmax cross-entropy of `targets.len()` rows `x`
    /// (`masks`: `None` = the current task's training mask, else `rows * num_outputs` flags)
    /// as one flat vector over every tensor in `param_info` order (buffers' parts zero), and
    /// the loss. Training mode without touching batch-norm statistics; the gradient buffers,
    /// parameters and optimizer state stay as they were (A-GEM's reference gradient).
    pub fn batch_grad(
        &mut self,
        x: &[f32],
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> Result<(Vec<f32>, f32)> {
        self.require_1_6("batch_grad")?;
        let rows = targets.len();
        let dims = self.check_rows("batch_grad", "x", x.len(), rows)?;
        let (t, m) = labels("batch_grad", targets, masks, dims.num_outputs)?;
        let mut out = vec![0.0f32; self.total_numel()?];
        let mut loss = 0.0f32;
        // SAFETY: the table covers 1.6 (checked); valid context; the buffers are live with the
        // lengths the service documents (checked above); `loss` is writable.
        check("batch_grad", unsafe {
            (self.host.batch_grad)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                t.as_ptr(),
                m.as_ref().map_or(ptr::null(), |m| m.as_ptr()),
                out.as_mut_ptr(),
                to_i64(out.len()),
                &mut loss,
            )
        })?;
        Ok((out, loss))
    }

    /// Adds `sum_i |J(x_i)^T c_i|^power` into the parameter gradients (element-wise; `c_i` row
    /// `i` of `cotangent`, `rows * num_outputs`; `power` 1 or 2): the sum over samples of
    /// per-sample gradient magnitudes in one call (MAS: `c_i = 2 f(x_i)`, power 1; the
    /// empirical Fisher: `c_i` = the cross-entropy's gradient, power 2). Evaluation mode. It
    /// adds, like [`Ctx::vjp`]: zero the gradients first to read it alone.
    pub fn sample_grads(
        &mut self,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
        power: u32,
    ) -> Result<()> {
        self.require_1_6("sample_grads")?;
        let dims = self.check_rows("sample_grads", "x", x.len(), rows)?;
        if cotangent.len() != rows * dims.num_outputs {
            return Err(Error::msg(format!(
                "`sample_grads`: cotangent has {} values, expected rows ({rows}) * num_outputs \
                 ({})",
                cotangent.len(),
                dims.num_outputs
            )));
        }
        let power = i32::try_from(power).unwrap_or(i32::MAX);
        // SAFETY: the table covers 1.6 (checked); valid context; both buffers are live with the
        // lengths passed.
        check("sample_grads", unsafe {
            (self.host.sample_grads)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                cotangent.as_ptr(),
                to_i64(cotangent.len()),
                power,
            )
        })
    }

    /// Re-initialises the network (a fresh seeded draw of the configured initialisation) and
    /// resets the optimizer. Only in `on_task_start` / `on_task_end`, without the expert pool.
    pub fn reinit(&mut self) -> Result<()> {
        self.require_1_6("reinit")?;
        // SAFETY: the table covers 1.6 (checked); valid context.
        check("reinit", unsafe { (self.host.reinit)(self.raw) })
    }

    /// One optimizer step of the trial's optimizer on the mean masked cross-entropy of the
    /// rows (`targets.len()` of them, masks as [`Ctx::batch_grad`]), with no hook called;
    /// returns the loss. Only in `on_task_start` / `on_task_end` (e.g. GDumb training on its
    /// memory). A non-finite loss fails and changes nothing.
    pub fn train_step(
        &mut self,
        x: &[f32],
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> Result<f32> {
        self.require_1_6("train_step")?;
        let rows = targets.len();
        let dims = self.check_rows("train_step", "x", x.len(), rows)?;
        let (t, m) = labels("train_step", targets, masks, dims.num_outputs)?;
        let mut loss = 0.0f32;
        // SAFETY: the table covers 1.6 (checked); valid context; the buffers are live with the
        // lengths the service documents (checked above); `loss` is writable.
        check("train_step", unsafe {
            (self.host.train_step)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                t.as_ptr(),
                m.as_ref().map_or(ptr::null(), |m| m.as_ptr()),
                &mut loss,
            )
        })?;
        Ok(loss)
    }
}

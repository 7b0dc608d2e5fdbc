//! The expert pool and per-task heads: `expert_add`, `expert_select`, (ABI 1.2)
//! `expert_freeze`, `expert_params`, `head_forward`, `head_vjp`, and (ABI 1.5)
//! `expert_add_conv`.

use clef_abi::{CLEF_HOST_SIZE_V1_2, CLEF_HOST_SIZE_V1_5, CLEF_UNSUPPORTED};

use super::{check, count, to_i64, Ctx};
use crate::error::{Error, Result};

/// Activation of an expert network added with [`Ctx::expert_add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
}

impl Ctx<'_> {
    /// Adds an expert network with the given hidden widths and activation to the trial's pool;
    /// returns its id (the configured network is expert 0). Task-IL only. Fails with
    /// [`HostStatus::Unsupported`](crate::HostStatus) on a host without an expert pool.
    pub fn expert_add(&mut self, hidden: &[usize], activation: Activation) -> Result<usize> {
        let hidden: Vec<i64> = hidden.iter().map(|&h| to_i64(h)).collect();
        let activation = match activation {
            Activation::Relu => clef_abi::CLEF_ACTIVATION_RELU,
            Activation::Tanh => clef_abi::CLEF_ACTIVATION_TANH,
            Activation::Sigmoid => clef_abi::CLEF_ACTIVATION_SIGMOID,
        };
        let mut id = 0i64;
        // SAFETY: valid table and context (Ctx::new); `hidden` is live with the length passed
        // and `id` is writable.
        check("expert_add", unsafe {
            (self.host.expert_add)(
                self.raw,
                hidden.as_ptr(),
                to_i64(hidden.len()),
                activation,
                &mut id,
            )
        })?;
        // The model changed: the problem dimensions may have too.
        self.dims = None;
        count("expert_add", "id", id)
    }

    /// Whether the host offers [`expert_add_conv`](Ctx::expert_add_conv) (ABI 1.5).
    pub fn can_add_conv_experts(&self) -> bool {
        self.host.struct_size as usize >= CLEF_HOST_SIZE_V1_5
    }

    /// Adds an expert with a convolutional body to the trial's pool and returns its id: one 3x3
    /// convolution per `channels` entry (at least one; a 2x2 max-pool after every second),
    /// `hidden` dense widths, then the output layer, with the trial's image shape, norm,
    /// activation and initialisation (ABI 1.5). Task-IL only; refused with
    /// [`HostStatus::NotAllowed`](crate::HostStatus) when the trial's network is not
    /// convolutional, `Unsupported` on a host older than 1.5.
    pub fn expert_add_conv(&mut self, channels: &[usize], hidden: &[usize]) -> Result<usize> {
        if !self.can_add_conv_experts() {
            return Err(Error::host("expert_add_conv", CLEF_UNSUPPORTED));
        }
        let channels: Vec<i64> = channels.iter().map(|&c| to_i64(c)).collect();
        let hidden: Vec<i64> = hidden.iter().map(|&h| to_i64(h)).collect();
        let mut id = 0i64;
        // SAFETY: the table's `struct_size` covers the 1.5 service (checked); valid context;
        // `channels` and `hidden` are live with the lengths passed and `id` is writable.
        check("expert_add_conv", unsafe {
            (self.host.expert_add_conv)(
                self.raw,
                channels.as_ptr(),
                to_i64(channels.len()),
                hidden.as_ptr(),
                to_i64(hidden.len()),
                &mut id,
            )
        })?;
        self.dims = None;
        count("expert_add_conv", "id", id)
    }

    /// Routes the current task to expert `id` with a head of its own (fresh the first time):
    /// training, views, forward/features/vjp and the task's evaluation use that expert, and
    /// later tasks start on it. Resets the expert's optimizer state; invalidates views.
    pub fn expert_select(&mut self, id: usize) -> Result<()> {
        // SAFETY: valid table and context (Ctx::new).
        check("expert_select", unsafe {
            (self.host.expert_select)(self.raw, to_i64(id))
        })?;
        self.dims = None;
        Ok(())
    }

    /// Whether the host offers the ABI 1.2 expert services ([`expert_freeze`](Ctx::expert_freeze),
    /// [`expert_params`](Ctx::expert_params), [`head_forward`](Ctx::head_forward),
    /// [`head_vjp`](Ctx::head_vjp)).
    pub fn can_use_experts(&self) -> bool {
        self.host.struct_size as usize >= CLEF_HOST_SIZE_V1_2
    }

    fn require_experts(&self, service: &'static str) -> Result<()> {
        if self.can_use_experts() {
            Ok(())
        } else {
            Err(Error::host(service, CLEF_UNSUPPORTED))
        }
    }

    /// Freezes (or unfreezes) expert `id`'s body: every layer but the output layer stays
    /// bitwise unchanged while frozen; per-task heads still train (ABI 1.2).
    pub fn expert_freeze(&mut self, id: usize, frozen: bool) -> Result<()> {
        self.require_experts("expert_freeze")?;
        // SAFETY: the table's `struct_size` covers the 1.2 services (checked); valid context.
        check("expert_freeze", unsafe {
            (self.host.expert_freeze)(self.raw, to_i64(id), i32::from(frozen))
        })
    }

    /// Scalar parameters of expert `id` (body plus one head per routed task), or of the whole
    /// pool with `None` (ABI 1.2).
    pub fn expert_params(&mut self, id: Option<usize>) -> Result<usize> {
        self.require_experts("expert_params")?;
        let mut n = 0i64;
        // SAFETY: 1.2 table (checked); valid context; `n` is writable.
        check("expert_params", unsafe {
            (self.host.expert_params)(self.raw, id.map_or(-1, to_i64), &mut n)
        })?;
        count("expert_params", "count", n)
    }

    /// Logits of the selected expert through task `task`'s head (a task routed to the selected
    /// expert), `rows * num_outputs` values; no gradients (ABI 1.2).
    pub fn head_forward(&mut self, task: usize, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.require_experts("head_forward")?;
        let dims = self.check_rows("head_forward", "x", x.len(), rows)?;
        let mut out = vec![0.0f32; rows * dims.num_outputs];
        // SAFETY: 1.2 table (checked); valid context; live buffers of the lengths passed.
        check("head_forward", unsafe {
            (self.host.head_forward)(
                self.raw,
                to_i64(task),
                x.as_ptr(),
                to_i64(rows),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })?;
        Ok(out)
    }

    /// Adds `J(x)^T * cotangent` through task `task`'s (fixed) head into the selected expert's
    /// body gradients; the output layer's gradients are unchanged (ABI 1.2).
    pub fn head_vjp(
        &mut self,
        task: usize,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
    ) -> Result<()> {
        self.require_experts("head_vjp")?;
        let dims = self.check_rows("head_vjp", "x", x.len(), rows)?;
        if cotangent.len() != rows * dims.num_outputs {
            return Err(Error::msg(format!(
                "`head_vjp`: cotangent has {} values, expected rows ({rows}) * num_outputs ({})",
                cotangent.len(),
                dims.num_outputs
            )));
        }
        // SAFETY: 1.2 table (checked); valid context; live buffers of the lengths passed.
        check("head_vjp", unsafe {
            (self.host.head_vjp)(
                self.raw,
                to_i64(task),
                x.as_ptr(),
                to_i64(rows),
                cotangent.as_ptr(),
                to_i64(cotangent.len()),
            )
        })
    }
}

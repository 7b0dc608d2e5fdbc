//! Parameters, gradients and optimizer state: `param_count`, `param_info`, `param_values`,
//! `param_grads`, `optimizer_state`.

use std::ffi::{CStr, CString};
use std::ptr;

use clef_abi::{
    ClefCtx, ClefHost, ClefParamInfo, ClefTensor, CLEF_ROLE_BIAS, CLEF_ROLE_BUFFER,
    CLEF_ROLE_WEIGHT, CLEF_UNSUPPORTED,
};

use super::{check, count, to_i64, Ctx};
use crate::error::{Error, Result};

/// What a parameter tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight: a dense layer's matrix `[out, in]` (row-major), a convolution's kernel
    /// `[out, in, kh, kw]` or a norm layer's scale `[channels]` (ABI 1.4: the shape says which).
    Weight,
    /// A bias `[out]` (or a norm layer's shift `[channels]`).
    Bias,
    /// Non-trainable state (batch norm running statistics, ABI 1.4): zero gradient, never
    /// updated by the optimizer; regularisers and masks should skip it.
    Buffer,
    /// A role this SDK does not know (a newer host).
    Other(i32),
}

/// Name, shape and role of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Stable name, e.g. `layers.0.weight`.
    pub name: String,
    /// Sizes of the dimensions (1 to 4 of them).
    pub shape: Vec<usize>,
    /// Weight or bias.
    pub role: Role,
    /// Index of the layer the tensor belongs to.
    pub layer: usize,
    /// Number of scalars (the product of `shape`).
    pub numel: usize,
}

const EMPTY_TENSOR: ClefTensor = ClefTensor {
    data: ptr::null_mut(),
    numel: 0,
    ndim: 0,
    writable: 0,
    shape: [0; 4],
};

impl Ctx<'_> {
    /// Number of parameter tensors. Fails where the host refuses it (e.g. in
    /// `save_state`/`load_state`, which run without a training context).
    pub fn param_count(&self) -> Result<usize> {
        // SAFETY: valid table and context (Ctx::new).
        let n = unsafe { (self.host.param_count)(self.raw) };
        if n >= 0 {
            return count("param_count", "count", n);
        }
        // A negative count is a status code (the service's contract).
        let status = i32::try_from(n).unwrap_or(clef_abi::CLEF_ERROR);
        Err(Error::host("param_count", status))
    }

    /// Name, shape and role of parameter tensor `index`.
    pub fn param_info(&self, index: usize) -> Result<ParamInfo> {
        let mut raw = ClefParamInfo {
            name: ptr::null(),
            ndim: 0,
            role: 0,
            shape: [0; 4],
            numel: 0,
            layer: 0,
        };
        // SAFETY: valid table and context (Ctx::new); `raw` is a live, writable ClefParamInfo.
        check("param_info", unsafe {
            (self.host.param_info)(self.raw, to_i64(index), &mut raw)
        })?;
        if raw.name.is_null() {
            return Err(Error::msg(format!(
                "host service `param_info` returned a null name for parameter {index}"
            )));
        }
        // SAFETY: the host returned a non-null, NUL-terminated name valid during the hook.
        let name = unsafe { CStr::from_ptr(raw.name) }
            .to_string_lossy()
            .into_owned();
        let ndim = usize::try_from(raw.ndim)
            .ok()
            .filter(|n| (1..=4).contains(n))
            .ok_or_else(|| {
                Error::msg(format!(
                    "host service `param_info` returned ndim {} for `{name}`",
                    raw.ndim
                ))
            })?;
        let shape = raw.shape[..ndim]
            .iter()
            .map(|&s| count("param_info", "shape", s))
            .collect::<Result<Vec<_>>>()?;
        let role = match raw.role {
            CLEF_ROLE_WEIGHT => Role::Weight,
            CLEF_ROLE_BIAS => Role::Bias,
            CLEF_ROLE_BUFFER => Role::Buffer,
            other => Role::Other(other),
        };
        Ok(ParamInfo {
            name,
            shape,
            role,
            layer: count("param_info", "layer", raw.layer)?,
            numel: count("param_info", "numel", raw.numel)?,
        })
    }

    /// Every parameter tensor's info, in index order.
    pub fn params(&self) -> Result<Vec<ParamInfo>> {
        (0..self.param_count()?)
            .map(|i| self.param_info(i))
            .collect()
    }

    /// Fetches a tensor view from a service.
    fn view(
        &self,
        service: &str,
        call: impl FnOnce(&ClefHost, *mut ClefCtx, &mut ClefTensor) -> i32,
    ) -> Result<ClefTensor> {
        let mut tensor = EMPTY_TENSOR;
        check(service, call(self.host, self.raw, &mut tensor))?;
        Self::check_tensor(service, tensor)
    }

    /// Rejects malformed views (negative size, null data).
    fn check_tensor(service: &str, tensor: ClefTensor) -> Result<ClefTensor> {
        if tensor.numel < 0 || (tensor.numel > 0 && tensor.data.is_null()) {
            return Err(Error::msg(format!(
                "host service `{service}` returned an invalid view (numel {}, data {:?})",
                tensor.numel, tensor.data
            )));
        }
        Ok(tensor)
    }

    /// A writable view as `&mut [f32]`.
    ///
    /// # Safety
    /// `tensor` must come from [`Ctx::view`] during this hook, and the returned slice must be
    /// tied to a mutable borrow of `self`, which prevents any other view or service call while
    /// it lives.
    unsafe fn slice_mut<'s>(service: &str, tensor: ClefTensor) -> Result<&'s mut [f32]> {
        if tensor.writable == 0 {
            return Err(Error::msg(format!(
                "host service `{service}` returned a read-only view here (use the `_ref` \
                 variant to read it)"
            )));
        }
        if tensor.numel == 0 {
            return Ok(&mut []);
        }
        // SAFETY: the host guarantees `data` points to `numel` f32s valid, and not aliased by
        // any other mutable view, until the hook returns; the caller ties the slice to a
        // mutable borrow of the Ctx.
        Ok(unsafe { std::slice::from_raw_parts_mut(tensor.data, tensor.numel as usize) })
    }

    /// A read-only view as `&[f32]` (a shared slice, never a `&mut`, so several read-only
    /// views of one tensor may coexist).
    ///
    /// # Safety
    /// `tensor` must come from [`Ctx::view`] during this hook, and the returned slice must be
    /// tied to a shared borrow of `self`, which prevents any mutable view while it lives.
    unsafe fn slice_ref<'s>(tensor: ClefTensor) -> &'s [f32] {
        if tensor.numel == 0 {
            return &[];
        }
        // SAFETY: the host guarantees `data` points to `numel` f32s valid until the hook
        // returns; no mutable view can coexist with the shared borrow of the Ctx the caller
        // ties this slice to.
        unsafe { std::slice::from_raw_parts(tensor.data.cast_const(), tensor.numel as usize) }
    }

    /// The values of parameter tensor `index`, writable (edits take effect at the next
    /// forward pass).
    pub fn values(&mut self, index: usize) -> Result<&mut [f32]> {
        let t = self.view("param_values", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_values)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice borrows `self` mutably (see `slice_mut`).
        unsafe { Self::slice_mut("param_values", t) }
    }

    /// The values of parameter tensor `index`, read-only.
    pub fn values_ref(&self, index: usize) -> Result<&[f32]> {
        let t = self.view("param_values", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_values)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice is shared and borrows `self`, so no mutable view (which needs
        // `&mut self`) can coexist with it (see `slice_ref`).
        Ok(unsafe { Self::slice_ref(t) })
    }

    /// The gradient of parameter tensor `index` (d loss / d param of the current batch),
    /// writable in `after_backward`: add terms or mask it there.
    pub fn grads(&mut self, index: usize) -> Result<&mut [f32]> {
        let t = self.view("param_grads", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_grads)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice borrows `self` mutably (see `slice_mut`).
        unsafe { Self::slice_mut("param_grads", t) }
    }

    /// The gradient of parameter tensor `index`, read-only (e.g. in `after_step`, where the
    /// host may hand out read-only gradient views).
    pub fn grads_ref(&self, index: usize) -> Result<&[f32]> {
        let t = self.view("param_grads", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_grads)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice is shared and borrows `self`, so no mutable view (which needs
        // `&mut self`) can coexist with it (see `slice_ref`).
        Ok(unsafe { Self::slice_ref(t) })
    }

    /// The values (read-only) and the gradient (writable) of parameter tensor `index` at
    /// once, e.g. to add `lambda * (w - w0)` to the gradient.
    pub fn values_and_grads(&mut self, index: usize) -> Result<(&[f32], &mut [f32])> {
        let values = self.view("param_values", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_values)(c, to_i64(index), out) }
        })?;
        let grads = self.view("param_grads", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_grads)(c, to_i64(index), out) }
        })?;
        // SAFETY: values and gradients are distinct host buffers (the host guarantees that no
        // two mutable views alias); both slices borrow `self` mutably for their lifetime, and
        // the values are only read (a shared slice).
        let values = unsafe { Self::slice_ref(values) };
        // SAFETY: as above.
        let grads = unsafe { Self::slice_mut("param_grads", grads) }?;
        Ok((values, grads))
    }

    /// Optimizer state `slot` of parameter tensor `index` (`"momentum"` for SGD,
    /// `"exp_avg"` / `"exp_avg_sq"` for Adam), writable; `None` if the optimizer has no such
    /// slot.
    pub fn optimizer_state(&mut self, slot: &str, index: usize) -> Result<Option<&mut [f32]>> {
        let slot_c = CString::new(slot)
            .map_err(|_| Error::msg(format!("optimizer slot {slot:?} contains a NUL byte")))?;
        let mut tensor = EMPTY_TENSOR;
        // SAFETY: valid table and context (Ctx::new); `slot_c` is NUL-terminated and outlives
        // the call; `tensor` is a live ClefTensor.
        let status = unsafe {
            (self.host.optimizer_state)(self.raw, slot_c.as_ptr(), to_i64(index), &mut tensor)
        };
        if status == CLEF_UNSUPPORTED {
            return Ok(None);
        }
        check("optimizer_state", status)?;
        let t = Self::check_tensor("optimizer_state", tensor)?;
        // SAFETY: the slice borrows `self` mutably (see `slice_mut`).
        unsafe { Self::slice_mut("optimizer_state", t) }.map(Some)
    }
}

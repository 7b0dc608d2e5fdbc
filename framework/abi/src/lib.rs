//! The clef strategy-plugin ABI, version 1.
//!
//! Only `#[repr(C)]` types and constants, no dependencies: this crate *is* the contract between
//! the `clef` host and strategy plugins built as shared libraries. `include/clef_plugin.h` is the
//! same contract for C (a test checks that every size, offset and constant agrees).
//!
//! # Handshake
//! A plugin exports one symbol, [`CLEF_ENTRY_SYMBOL`] (`clef_plugin_entry_v1`), of type
//! [`ClefEntryFn`]. It returns a pointer to a static [`ClefPluginDescriptor`] whose first three
//! fields are `{abi_major, abi_minor, struct_size}`. The host reads those first and refuses the
//! plugin unless `abi_major == CLEF_ABI_MAJOR` and `struct_size` covers every field of the
//! plugin's declared minor version ([`CLEF_DESCRIPTOR_SIZE_V1_0`] up to 1.2,
//! [`CLEF_DESCRIPTOR_SIZE_V1_3`] for 1.3, [`CLEF_DESCRIPTOR_SIZE_V1_4`] for 1.4 and 1.5,
//! [`CLEF_DESCRIPTOR_SIZE_V1_6`] from 1.6). Fields are append-only: a new minor version only adds fields
//! at the end of a struct, so an older plugin (smaller `struct_size`) still loads and a newer
//! host treats the missing trailing hooks as absent.
//!
//! # Ownership
//! Whoever allocates frees. Strings and tables in the descriptor are owned by the plugin and
//! live as long as the library (which the host never unloads). Tensor views, batch views and
//! task infos handed to the plugin are owned by the host and valid only during the call that
//! produced them. Buffers passed to host services (`forward` output, `task_samples` output ...)
//! are allocated by the plugin with the size the service documents.
//!
//! # Host services
//! Every function pointer of [`ClefHost`] is non-null: a host that lacks a service installs a
//! stub returning [`CLEF_UNSUPPORTED`]. A view (tensor, batch) stays valid until the hook that
//! obtained it returns, and fetching one view never moves another (parameter values and
//! gradients may be held at the same time); only `expert_add`/`expert_add_conv`/`expert_select`
//! invalidate views.
//! Services need the ctx of a training hook (`on_model_built` ... `after_eval`): during
//! `create` only `log(null, ..)` works, and in `save_state`/`load_state` every service but
//! `log` returns [`CLEF_NOT_ALLOWED`]. `include/clef_plugin.h` states, next to every service,
//! its buffer lengths, ownership and the hooks it may be called from.
//!
//! # Gradients
//! The trainer zeroes every gradient buffer once per step, after `before_batch` returns and
//! before the batch's backward pass; the optimizer step right after `after_backward` uses
//! whatever the buffers then hold. So gradients are meaningful only in `after_backward` (the
//! batch's gradient; terms added there, directly or with `vjp`, are trained on) and, read
//! only, in `after_step` (what the step used). In every other hook they are scratch: `vjp`
//! *adds* into them and the host does not zero them for you (zero them first to read a
//! `vjp` result alone), and whatever is left there is discarded by the next step's zeroing.
//!
//! # Threading
//! One instance is used by one thread at a time (the trial's training thread); hooks of one
//! instance are never called concurrently. Different instances of the same plugin may run on
//! different threads at the same time (parallel trials), so plugin-global state must be
//! thread-safe. Host services may be called only during a hook, on the thread that called it,
//! with the `ctx` that hook received; the one exception is `log` with a null `ctx`, which any
//! thread may call at any time (e.g. from a plugin's worker threads).
//!
//! # Errors
//! Every function returns a status ([`CLEF_OK`] = 0, negative = error). After a plugin error the
//! host reads the message with `last_error(instance)` (`instance` may be null after a failed
//! `create`; the message is then thread-local). A plugin must never unwind across the boundary:
//! Rust plugins catch panics (the SDK does) and return [`CLEF_PANIC`].

#![no_std]
#![allow(non_camel_case_types)]

use core::ffi::{c_char, c_void};

/// ABI major version: a plugin with another major is refused.
pub const CLEF_ABI_MAJOR: u16 = 1;
/// ABI minor version: fields added at the end of structs. 1.1 appended `report` to
/// [`ClefHost`]; 1.2 appended the expert-pool services (`expert_freeze`, `expert_params`,
/// `head_forward`, `head_vjp`); 1.3 appended `create_typed` to [`ClefPluginDescriptor`]
/// (hyperparameters as typed values, [`ClefHparamValue`]); 1.4 appended `backbones` to the
/// descriptor (convolutional backbones); 1.5 appended `expert_add_conv` to [`ClefHost`]; 1.6
/// appended the hooks `loss` and `predict` to the descriptor ([`ClefLossInput`]) and the
/// services `batch_grad`, `sample_grads`, `reinit` and `train_step` to [`ClefHost`].
pub const CLEF_ABI_MINOR: u16 = 6;
/// Name of the exported entry symbol (NUL-terminated).
pub const CLEF_ENTRY_SYMBOL: &[u8] = b"clef_plugin_entry_v1\0";

/// The entry point: returns the plugin's static descriptor (never null for a valid plugin).
pub type ClefEntryFn = unsafe extern "C" fn() -> *const ClefPluginDescriptor;

// ---- status codes -------------------------------------------------------------------------

/// Success.
pub const CLEF_OK: i32 = 0;
/// The plugin reports an error; the message is in `last_error`.
pub const CLEF_ERROR: i32 = -1;
/// The plugin panicked (caught before the boundary); the message is in `last_error`.
pub const CLEF_PANIC: i32 = -2;
/// A host service got a bad argument (index, size, null pointer).
pub const CLEF_INVALID_ARGUMENT: i32 = -3;
/// A host service is not available with this host or backend.
pub const CLEF_UNSUPPORTED: i32 = -4;
/// A host service may not be called in the current hook (e.g. `batch_append` outside
/// `before_batch`, `task_samples` for a future task).
pub const CLEF_NOT_ALLOWED: i32 = -5;

// ---- log levels ---------------------------------------------------------------------------

/// Error log level.
pub const CLEF_LOG_ERROR: i32 = 1;
/// Warning log level.
pub const CLEF_LOG_WARN: i32 = 2;
/// Info log level.
pub const CLEF_LOG_INFO: i32 = 3;
/// Debug log level.
pub const CLEF_LOG_DEBUG: i32 = 4;
/// Trace log level.
pub const CLEF_LOG_TRACE: i32 = 5;

// ---- hyperparameter schema ----------------------------------------------------------------

/// A real-valued hyperparameter (`default_value`, `min`, `max` as given).
pub const CLEF_HPARAM_FLOAT: u32 = 0;
/// An integer hyperparameter (values are whole numbers stored in f64).
pub const CLEF_HPARAM_INT: u32 = 1;
/// A boolean hyperparameter (`default_value` 0 or 1).
pub const CLEF_HPARAM_BOOL: u32 = 2;
/// One of `choices` (`default_value` is the index of the default choice).
pub const CLEF_HPARAM_CHOICE: u32 = 3;

/// Flag: search this hyperparameter on a log scale (e.g. regularisation strengths).
pub const CLEF_HPARAM_LOG_SCALE: u32 = 1;
/// Flag: the parameter only acts once a task has ended, e.g. a penalty towards past tasks:
/// first-task tuning needs `tune_tasks >= 2` (the host refuses to search it with
/// `tune_tasks = 1`).
pub const CLEF_HPARAM_NEEDS_PAST_TASKS: u32 = 2;

/// One hyperparameter of a plugin's schema. The host validates the strategy's config section
/// against the schema (unknown key, wrong type, out of range) before calling `create`, fills in
/// defaults, and builds search spaces from it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClefHparam {
    /// Key in the config's `hparams` table (NUL-terminated, plugin-owned).
    pub name: *const c_char,
    /// One of the `CLEF_HPARAM_*` kinds.
    pub kind: u32,
    /// Bit set of `CLEF_HPARAM_LOG_SCALE`, `CLEF_HPARAM_NEEDS_PAST_TASKS`.
    pub flags: u32,
    /// Default (float, int, bool as 0/1, or choice index).
    pub default_value: f64,
    /// Inclusive lower bound for float/int (`-inf` = none).
    pub min: f64,
    /// Inclusive upper bound for float/int (`+inf` = none).
    pub max: f64,
    /// For `CLEF_HPARAM_CHOICE`: `n_choices` NUL-terminated strings; otherwise null.
    pub choices: *const *const c_char,
    /// Number of choices.
    pub n_choices: usize,
    /// One-line description (NUL-terminated).
    pub doc: *const c_char,
}

/// One hyperparameter value as `create_typed` receives it (ABI 1.3): `n_hparams` of them, in
/// the order of the schema (`values[i]` is the value of `hparams[i]`), every one validated
/// against its entry and defaults filled in. Host-owned, valid only during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClefHparamValue {
    /// `CLEF_HPARAM_FLOAT`: the value; `_INT`: the whole number (exact up to 2^53); `_BOOL`:
    /// 0 or 1; `_CHOICE`: the index of the chosen string in the entry's `choices`.
    pub number: f64,
    /// `CLEF_HPARAM_CHOICE`: the chosen string (NUL-terminated, equal to `choices[number]`);
    /// null for every other kind.
    pub text: *const c_char,
}

// ---- settings, roles ----------------------------------------------------------------------

/// Task-incremental: the task id is known; logits are masked to the task's units.
pub const CLEF_SETTING_TASK_IL: i32 = 0;
/// Class-incremental: argmax over every unit seen so far.
pub const CLEF_SETTING_CLASS_IL: i32 = 1;
/// Domain-incremental: one shared head.
pub const CLEF_SETTING_DOMAIN_IL: i32 = 2;

/// A weight: a dense layer's matrix `[out, in]` (row-major); from 1.4 also a convolution's kernel
/// `[out, in, kh, kw]` or a norm layer's scale `[channels]` (the shape says which).
pub const CLEF_ROLE_WEIGHT: i32 = 0;
/// A bias `[out]` (from 1.4 also a norm layer's shift `[channels]`).
pub const CLEF_ROLE_BIAS: i32 = 1;
/// (1.4) Non-trainable state of the network, e.g. batch norm's `running_mean`/`running_var`
/// `[channels]`: zero gradient, never touched by the optimizer, saved in checkpoints. Regularisers
/// and sparse masks should leave it alone.
pub const CLEF_ROLE_BUFFER: i32 = 2;

/// (1.4) The strategy handles MLPs (`ClefPluginDescriptor::backbones`; every plugin does).
pub const CLEF_BACKBONE_MLP: u32 = 1;
/// (1.4) The strategy handles convolutional backbones (`convnet`, `resnet18`): weights of any
/// rank (conv kernels `[out, in, kh, kw]`, norm scales `[channels]`) and `CLEF_ROLE_BUFFER`
/// tensors, which it must leave alone.
pub const CLEF_BACKBONE_CONV: u32 = 2;

/// ReLU hidden activation (`expert_add`).
pub const CLEF_ACTIVATION_RELU: i32 = 0;
/// Tanh hidden activation (`expert_add`).
pub const CLEF_ACTIVATION_TANH: i32 = 1;
/// Sigmoid hidden activation (`expert_add`).
pub const CLEF_ACTIVATION_SIGMOID: i32 = 2;

/// Training split of a task.
pub const CLEF_SPLIT_TRAIN: i32 = 0;
/// Test split of a task.
pub const CLEF_SPLIT_TEST: i32 = 1;

/// Opaque per-call host context. Plugins only pass the pointer back to host services.
#[repr(C)]
pub struct ClefCtx {
    _private: [u8; 0],
}

/// The current task and the shape of the problem. Handed to hooks (host-owned, valid during the
/// call; read only the fields that `struct_size` covers) or filled by `task_info` (caller-owned;
/// the caller sets `struct_size` to what it allocated). Out-structs without a `struct_size`
/// (`ClefParamInfo`, `ClefTensor`, `ClefBatch`) never grow: new data comes through new services.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClefTaskInfo {
    /// Size of the struct: set by whoever allocated it (see the type's documentation).
    pub struct_size: u32,
    /// One of `CLEF_SETTING_*`.
    pub setting: i32,
    /// 0-based index of the current task.
    pub task: i64,
    /// Number of tasks in the stream.
    pub num_tasks: i64,
    /// Training samples of the current task.
    pub train_samples: i64,
    /// Test samples of the current task.
    pub test_samples: i64,
    /// Features per sample.
    pub input_dim: i64,
    /// Logits of the network.
    pub num_outputs: i64,
    /// Width of the penultimate representation (`features` output per row).
    pub feature_dim: i64,
    /// Output units used by this task's labels (its task-IL head); `n_units` entries.
    pub units: *const i64,
    /// Number of entries of `units`.
    pub n_units: i64,
    /// Threads the plugin may use for its own parallel work (0 = no hint).
    pub num_threads: u32,
    /// The trial seed (plugins should draw randomness from `rng_u64` instead).
    pub seed: u64,
}

/// Name, shape and role of one parameter tensor. Host-owned strings remain valid until the
/// model changes (the next `on_model_built`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClefParamInfo {
    /// Stable name, e.g. `layers.0.weight` (NUL-terminated).
    pub name: *const c_char,
    /// Number of dimensions (1..=4).
    pub ndim: i32,
    /// One of `CLEF_ROLE_*`.
    pub role: i32,
    /// Sizes of the first `ndim` dimensions; the rest are 1.
    pub shape: [i64; 4],
    /// Number of scalars.
    pub numel: i64,
    /// Index of the layer the tensor belongs to.
    pub layer: i64,
}

/// A borrowed, contiguous, row-major f32 view (DLPack-like field order). Valid only during the
/// call that produced it; the host guarantees that no two mutable views alias.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClefTensor {
    /// First element.
    pub data: *mut f32,
    /// Number of scalars.
    pub numel: i64,
    /// Number of dimensions (1..=4).
    pub ndim: i32,
    /// Non-zero if the plugin may write through `data`.
    pub writable: i32,
    /// Sizes of the first `ndim` dimensions; the rest are 1.
    pub shape: [i64; 4],
}

/// The training batch, as `before_batch` sees it (before any rows are appended).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClefBatch {
    /// `rows * cols` inputs, row-major.
    pub x: *const f32,
    /// Target output unit of each row.
    pub targets: *const i64,
    /// Rows in the batch.
    pub rows: i64,
    /// Features per row.
    pub cols: i64,
    /// Rows from the current task's stream (the first `current_rows`).
    pub current_rows: i64,
}

/// (1.6) What the `loss` hook receives: the whole training batch (the task's rows and the rows
/// the strategy appended) with its training-mode logits. Host-owned, valid during the call;
/// read only the fields `struct_size` covers (later versions append fields).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ClefLossInput {
    /// `size_of::<ClefLossInput>()` as the host knows it.
    pub struct_size: u32,
    /// Reserved: zero.
    pub reserved: u32,
    /// Rows of the batch.
    pub rows: i64,
    /// Logits per row.
    pub num_outputs: i64,
    /// Features per row.
    pub input_dim: i64,
    /// Rows from the current task's stream (the first `current_rows`); the others were appended
    /// by the strategy in `before_batch`, in the order it appended them.
    pub current_rows: i64,
    /// `rows * input_dim` inputs, row-major (after augmentation).
    pub x: *const f32,
    /// `rows * num_outputs` logits, training mode (batch norm with the batch's statistics).
    pub logits: *const f32,
    /// The target unit of each row (`rows`).
    pub targets: *const i64,
    /// `rows * num_outputs` bytes: non-zero where the unit is in the row's training softmax (the
    /// mask the default cross-entropy would use).
    pub masks: *const u8,
}

/// Receives bytes from `save_state`: `writer` is the host's opaque sink.
pub type ClefWriteFn =
    unsafe extern "C" fn(writer: *mut c_void, data: *const u8, len: usize) -> i32;

/// Services the host offers to plugins. Passed to `create`; valid for the life of the instance.
/// Every function takes the `ctx` of the running hook (only `log` accepts a null `ctx`). No
/// pointer is null: unavailable services return `CLEF_UNSUPPORTED`.
#[repr(C)]
pub struct ClefHost {
    /// Host ABI major.
    pub abi_major: u16,
    /// Host ABI minor.
    pub abi_minor: u16,
    /// `size_of::<ClefHost>()` as the host knows it.
    pub struct_size: u32,

    /// Emits a log line (a `CLEF_LOG_*` level) through the host's logger; `ctx` may be null.
    pub log: unsafe extern "C" fn(ctx: *mut ClefCtx, level: i32, msg: *const c_char),
    /// Next value of the instance's seeded random stream (reproducible per trial seed).
    pub rng_u64: unsafe extern "C" fn(ctx: *mut ClefCtx) -> u64,
    /// Fills `out` with the current task (units valid during the hook). The caller sets
    /// `out->struct_size` to the size of the struct it allocated; the host refuses a struct
    /// smaller than its own version's (`CLEF_INVALID_ARGUMENT`) and never writes past it.
    pub task_info: unsafe extern "C" fn(ctx: *mut ClefCtx, out: *mut ClefTaskInfo) -> i32,

    /// Number of parameter tensors.
    pub param_count: unsafe extern "C" fn(ctx: *mut ClefCtx) -> i64,
    /// Describes parameter tensor `index`.
    pub param_info:
        unsafe extern "C" fn(ctx: *mut ClefCtx, index: i64, out: *mut ClefParamInfo) -> i32,
    /// View of the values of tensor `index` (writable; edits take effect at the next forward).
    pub param_values:
        unsafe extern "C" fn(ctx: *mut ClefCtx, index: i64, out: *mut ClefTensor) -> i32,
    /// View of the gradient of tensor `index`: meaningful (and writable) in `after_backward`,
    /// where it holds d loss / d param of the current batch; add terms or mask it there.
    pub param_grads:
        unsafe extern "C" fn(ctx: *mut ClefCtx, index: i64, out: *mut ClefTensor) -> i32,
    /// View of optimizer state `slot` (`momentum` for SGD; `exp_avg`, `exp_avg_sq` for Adam) of
    /// tensor `index`; `CLEF_UNSUPPORTED` if the optimizer has no such slot.
    pub optimizer_state: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        slot: *const c_char,
        index: i64,
        out: *mut ClefTensor,
    ) -> i32,

    /// Logits of `rows` inputs (`rows * input_dim` floats) into `out`
    /// (`out_len == rows * num_outputs`). No gradients are touched.
    pub forward: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        x: *const f32,
        rows: i64,
        out: *mut f32,
        out_len: i64,
    ) -> i32,
    /// Penultimate activations (`out_len == rows * feature_dim`).
    pub features: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        x: *const f32,
        rows: i64,
        out: *mut f32,
        out_len: i64,
    ) -> i32,
    /// Adds `J(x)^T * cotangent` into the parameter gradients (`cotangent_len == rows *
    /// num_outputs`): the gradient of any loss on the logits at plugin-chosen inputs.
    pub vjp: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        x: *const f32,
        rows: i64,
        cotangent: *const f32,
        cotangent_len: i64,
    ) -> i32,
    /// Neural-tangent-kernel Gram for output unit `output` between `a` (`rows_a` inputs) and `b`
    /// (`rows_b` inputs): `out[i * rows_b + j] = <d f_output(a_i)/d params, d f_output(b_j)/d
    /// params>` in f64 (`out_len == rows_a * rows_b`). `CLEF_UNSUPPORTED` if the backend cannot.
    pub ntk_gram: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        a: *const f32,
        rows_a: i64,
        b: *const f32,
        rows_b: i64,
        output: i64,
        out: *mut f64,
        out_len: i64,
    ) -> i32,

    /// The current batch (only in `before_batch`).
    pub batch_get: unsafe extern "C" fn(ctx: *mut ClefCtx, out: *mut ClefBatch) -> i32,
    /// Appends `rows` rows (`rows * input_dim` inputs, `rows` targets) to the current batch (only
    /// in `before_batch`). `masks` is null (the rows use the current task's training mask) or
    /// `rows * num_outputs` bytes (non-zero = the unit is in the row's softmax), e.g. a replayed
    /// row's own task-IL head.
    pub batch_append: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        x: *const f32,
        rows: i64,
        targets: *const i64,
        masks: *const u8,
    ) -> i32,
    /// Copies samples `start..start + rows` of task `task`'s `split` (`CLEF_SPLIT_*`), after the
    /// task's input transform, into `x_out` (`rows * input_dim`) and `targets_out` (`rows`).
    /// Only tasks up to the current one and only `CLEF_SPLIT_TRAIN` (`CLEF_NOT_ALLOWED`
    /// otherwise): no peeking ahead, and test data stays reserved for evaluation.
    pub task_samples: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        task: i64,
        split: i32,
        start: i64,
        rows: i64,
        x_out: *mut f32,
        targets_out: *mut i64,
    ) -> i32,
    /// Class mask of task `task`'s head: writes `num_outputs` bytes (1 = unit in the head).
    pub task_mask:
        unsafe extern "C" fn(ctx: *mut ClefCtx, task: i64, out: *mut u8, len: i64) -> i32,

    /// Adds an expert network to the trial's pool with the given hidden widths (`n_hidden`
    /// entries, each > 0) and activation (`CLEF_ACTIVATION_*`) and writes its id (the
    /// configured network is expert 0; new ids count up from 1). The expert has the task's
    /// input and output sizes and the configured initialisation. Task-IL only
    /// (`CLEF_NOT_ALLOWED` otherwise); `CLEF_UNSUPPORTED` on a host without an expert pool.
    pub expert_add: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        hidden: *const i64,
        n_hidden: i64,
        activation: i32,
        out_id: *mut i64,
    ) -> i32,
    /// Routes the current task to expert `id` with a head of its own (a freshly initialised
    /// output layer the first time the task goes to that expert): training, the parameter,
    /// gradient and optimizer views, `forward`/`features`/`vjp` and the task's evaluation use
    /// that expert from now on, and later tasks start on it until another `expert_select`.
    /// Selecting resets the expert's optimizer state. Invalidates views. Task-IL only.
    pub expert_select: unsafe extern "C" fn(ctx: *mut ClefCtx, id: i64) -> i32,

    /// A named extension table (e.g. a future `clef.xyz.v1`), or null if the host lacks it.
    pub get_extension:
        unsafe extern "C" fn(ctx: *mut ClefCtx, name: *const c_char) -> *const c_void,

    // ---- ABI 1.1 ----
    /// Records a number in the trial's results under the current task (ABI 1.1): `key` is a
    /// NUL-terminated name of 1 to 128 printable ASCII characters without spaces (e.g.
    /// `density.total`), `value` must be finite. Reporting a key again in the same task
    /// replaces the value. Allowed in every hook with a training context (not in
    /// `save_state`/`load_state`). Only present when the host's `struct_size` covers it
    /// (`>= CLEF_HOST_SIZE_V1_1`); a 1.0 host's table ends before it.
    pub report: unsafe extern "C" fn(ctx: *mut ClefCtx, key: *const c_char, value: f64) -> i32,

    // ---- ABI 1.2 (present when `struct_size >= CLEF_HOST_SIZE_V1_2`) ----
    /// Freezes (`frozen != 0`) or unfreezes expert `id`'s body (every layer but the output
    /// layer): while frozen, optimizer steps and plugin edits between steps leave its body
    /// bitwise unchanged (it is restored after every step); the per-task heads still train.
    pub expert_freeze: unsafe extern "C" fn(ctx: *mut ClefCtx, id: i64, frozen: i32) -> i32,
    /// Writes the number of scalar parameters of expert `id` into `out`: its body plus one head
    /// (`n_units * (feature_dim + 1)`) per task routed to it; `id == -1` gives the pool total
    /// (every expert with a routed task), which is also the trial's `num_params`.
    pub expert_params: unsafe extern "C" fn(ctx: *mut ClefCtx, id: i64, out: *mut i64) -> i32,
    /// Logits of the selected expert with task `task`'s head (`task` must be routed to the
    /// selected expert) on `rows` inputs; `out_len == rows * num_outputs`. No gradients.
    pub head_forward: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        task: i64,
        x: *const f32,
        rows: i64,
        out: *mut f32,
        out_len: i64,
    ) -> i32,
    /// Adds `J(x)^T * cotangent` through task `task`'s head into the selected expert's **body**
    /// gradients (the head is held fixed: the output layer's gradients are unchanged), e.g.
    /// distillation that protects old heads. `cotangent_len == rows * num_outputs`.
    pub head_vjp: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        task: i64,
        x: *const f32,
        rows: i64,
        cotangent: *const f32,
        cotangent_len: i64,
    ) -> i32,

    // ---- ABI 1.5 (present when `struct_size >= CLEF_HOST_SIZE_V1_5`) ----
    /// Adds an expert with a convolutional body to the trial's pool and writes its id: a
    /// ConvNet of `n_channels` 3x3 convolutions (padding 1) of `channels[i]` output channels
    /// (each > 0, `n_channels >= 1`; a 2x2 max-pool after every second one), then `n_hidden`
    /// dense layers of `hidden[i]` widths (each > 0; `hidden` may be null when `n_hidden` is 0)
    /// and the output layer, with the trial's input image shape, output size, norm, activation
    /// and initialisation. Both arrays are caller-owned and read during the call only. Task-IL
    /// only; `CLEF_NOT_ALLOWED` when the trial's network is not convolutional (an MLP trial has
    /// no image shape).
    pub expert_add_conv: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        channels: *const i64,
        n_channels: i64,
        hidden: *const i64,
        n_hidden: i64,
        out_id: *mut i64,
    ) -> i32,

    // ---- ABI 1.6 (present when `struct_size >= CLEF_HOST_SIZE_V1_6`) ----
    /// The gradient of the mean masked softmax cross-entropy of `rows` plugin-chosen rows (a
    /// second batch, e.g. A-GEM's memory batch), written flat into `out`: every tensor in
    /// `param_info` order, `out_len` = the sum of their `numel` (buffers included, their part
    /// zero). `targets` (`rows`), `masks` null (the current task's training mask) or `rows *
    /// num_outputs` bytes, as `batch_append`. Training mode (batch statistics) without updating
    /// batch norm's running statistics; the gradient buffers, parameters and optimizer state
    /// are left exactly as they were. Writes the loss into `loss_out` (may be null).
    pub batch_grad: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        x: *const f32,
        rows: i64,
        targets: *const i64,
        masks: *const u8,
        out: *mut f32,
        out_len: i64,
        loss_out: *mut f32,
    ) -> i32,
    /// Per-sample gradient powers: adds `sum_i |J(x_i)^T c_i|^power` into the gradient buffers
    /// (element-wise over every trainable tensor), `c_i` row `i` of `cotangent`
    /// (`cotangent_len == rows * num_outputs`), `power` 1 or 2: MAS's importance
    /// (`c_i = 2 f(x_i)`, power 1) or the empirical Fisher (`c_i` = the cross-entropy's
    /// gradient, power 2) in one call. Evaluation mode (batch norm's running statistics); adds
    /// like `vjp` (zero the gradients first to read it alone).
    pub sample_grads: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        x: *const f32,
        rows: i64,
        cotangent: *const f32,
        cotangent_len: i64,
        power: i32,
    ) -> i32,
    /// Re-initialises the network (a fresh seeded draw of the configured initialisation,
    /// batch-norm statistics reset) and resets the optimizer state. Only in `on_task_start` and
    /// `on_task_end`, and not while the expert pool is in use (`CLEF_NOT_ALLOWED`). Invalidates
    /// nothing (tensors keep their buffers); does not call `on_model_built`.
    pub reinit: unsafe extern "C" fn(ctx: *mut ClefCtx) -> i32,
    /// One optimizer step of the trial's optimizer on the mean masked softmax cross-entropy of
    /// `rows` plugin-chosen rows (training mode; batch norm's running statistics updated), with
    /// no hook called: training on a plugin's own data, e.g. GDumb's memory. `targets`, `masks`
    /// as `batch_grad`. Gradients are zeroed first. Writes the loss into `loss_out` (may be
    /// null). Only in `on_task_start` and `on_task_end` (`CLEF_NOT_ALLOWED` elsewhere); a
    /// non-finite loss is `CLEF_ERROR` and leaves the parameters unchanged.
    pub train_step: unsafe extern "C" fn(
        ctx: *mut ClefCtx,
        x: *const f32,
        rows: i64,
        targets: *const i64,
        masks: *const u8,
        loss_out: *mut f32,
    ) -> i32,
}

/// A plugin's static description and entry points. Starts with `{abi_major, abi_minor,
/// struct_size}`; fields are append-only. Every hook is nullable (null = no-op) and returns a
/// status code. `inst` is what `create` produced.
#[repr(C)]
pub struct ClefPluginDescriptor {
    /// Must equal the host's `CLEF_ABI_MAJOR`.
    pub abi_major: u16,
    /// The minor version the plugin was built against.
    pub abi_minor: u16,
    /// `size_of::<ClefPluginDescriptor>()` as the plugin knows it.
    pub struct_size: u32,

    /// Strategy name used in configs (NUL-terminated, `[a-z0-9_-]+`).
    pub name: *const c_char,
    /// Plugin version (e.g. `0.1.0`).
    pub version: *const c_char,
    /// One-line description.
    pub description: *const c_char,
    /// Hyperparameter schema (`n_hparams` entries).
    pub hparams: *const ClefHparam,
    /// Number of hyperparameters.
    pub n_hparams: usize,

    /// Creates an instance from the validated `hparams` table (a NUL-terminated TOML document
    /// with every key of the schema present, host-owned, valid during the call) and writes it
    /// to `*out`. On failure returns non-zero and leaves a message for `last_error(null)`.
    /// Only `log` (with a null ctx) may be called during `create`. Required up to ABI 1.2 (the
    /// host refuses a descriptor without `create` or `create_typed`); a 1.3 plugin may set
    /// `create_typed` instead (then hosts older than 1.3 refuse it) or both.
    pub create: Option<
        unsafe extern "C" fn(
            host: *const ClefHost,
            config_toml: *const c_char,
            out: *mut *mut c_void,
        ) -> i32,
    >,
    /// Destroys an instance.
    pub destroy: Option<unsafe extern "C" fn(inst: *mut c_void)>,
    /// The last error message of `inst` (or of the calling thread if `inst` is null); plugin-
    /// owned, valid until the next call into the plugin on this thread. May return null.
    pub last_error: Option<unsafe extern "C" fn(inst: *mut c_void) -> *const c_char>,

    /// After the network is built or re-initialised: read shapes, store initial weights.
    pub on_model_built: Option<unsafe extern "C" fn(inst: *mut c_void, ctx: *mut ClefCtx) -> i32>,
    /// Before the first batch of a task.
    pub on_task_start: Option<
        unsafe extern "C" fn(
            inst: *mut c_void,
            ctx: *mut ClefCtx,
            task: *const ClefTaskInfo,
        ) -> i32,
    >,
    /// Before the forward pass of each batch; may append rows (`batch_append`).
    pub before_batch: Option<unsafe extern "C" fn(inst: *mut c_void, ctx: *mut ClefCtx) -> i32>,
    /// After backward, before the optimizer step: add gradient terms, mask gradients, `vjp`.
    pub after_backward:
        Option<unsafe extern "C" fn(inst: *mut c_void, ctx: *mut ClefCtx, loss: f32) -> i32>,
    /// After the optimizer step: masks, projections, pruning and regrowth.
    pub after_step: Option<unsafe extern "C" fn(inst: *mut c_void, ctx: *mut ClefCtx) -> i32>,
    /// After the last batch of a task, before it is evaluated.
    pub on_task_end: Option<
        unsafe extern "C" fn(
            inst: *mut c_void,
            ctx: *mut ClefCtx,
            task: *const ClefTaskInfo,
        ) -> i32,
    >,
    /// Before evaluating a task: `task` is its id in task-IL, -1 when the setting hides it.
    pub before_eval:
        Option<unsafe extern "C" fn(inst: *mut c_void, ctx: *mut ClefCtx, task: i64) -> i32>,
    /// After evaluating a task: undo what `before_eval` changed.
    pub after_eval: Option<unsafe extern "C" fn(inst: *mut c_void, ctx: *mut ClefCtx) -> i32>,
    /// Writes the instance's private state through `write(writer, bytes, len)` (any number of
    /// calls) for a checkpoint.
    pub save_state: Option<
        unsafe extern "C" fn(
            inst: *mut c_void,
            ctx: *mut ClefCtx,
            write: ClefWriteFn,
            writer: *mut c_void,
        ) -> i32,
    >,
    /// Restores state written by `save_state` (host-owned bytes, valid during the call).
    pub load_state: Option<
        unsafe extern "C" fn(
            inst: *mut c_void,
            ctx: *mut ClefCtx,
            data: *const u8,
            len: usize,
        ) -> i32,
    >,

    // ---- ABI 1.3 (present when `struct_size >= CLEF_DESCRIPTOR_SIZE_V1_3`) ----
    /// Creates an instance like `create`, with the hyperparameters also as typed values:
    /// `values` holds `n_values` (= `n_hparams`) entries in schema order, host-owned and valid
    /// only during the call (copy what you keep; `values` is null when `n_values` is 0).
    /// `config_toml` is the same document `create` gets. When the descriptor covers this field
    /// and it is non-null the host calls it **instead of** `create`, which may then be null
    /// (set it too to also load in hosts older than 1.3). Failure as for `create`.
    pub create_typed: Option<
        unsafe extern "C" fn(
            host: *const ClefHost,
            config_toml: *const c_char,
            values: *const ClefHparamValue,
            n_values: usize,
            out: *mut *mut c_void,
        ) -> i32,
    >,

    // ---- ABI 1.4 (present when `struct_size >= CLEF_DESCRIPTOR_SIZE_V1_4`) ----
    /// The backbone families the strategy handles, `CLEF_BACKBONE_*` bits. 0 (or a descriptor
    /// ending before this field) means MLPs only: the host refuses, before anything runs, a
    /// config that pairs the plugin with a convolutional backbone.
    pub backbones: u32,
    /// Reserved: zero.
    pub reserved: u32,

    // ---- ABI 1.6 (present when `struct_size >= CLEF_DESCRIPTOR_SIZE_V1_6`) ----
    /// Replaces the training loss (null: the masked softmax cross-entropy). Called once per
    /// step after the forward pass of the whole batch (`input`), before its backward pass: the
    /// plugin writes `d loss / d logits` into `cotangent` (`rows * num_outputs` floats, host-
    /// owned, zeroed) and the loss into `loss_out`; the host back-propagates the cotangent
    /// through the same forward pass. Services as in `after_backward` (no batch services).
    pub loss: Option<
        unsafe extern "C" fn(
            inst: *mut c_void,
            ctx: *mut ClefCtx,
            input: *const ClefLossInput,
            cotangent: *mut f32,
            loss_out: *mut f32,
        ) -> i32,
    >,
    /// Replaces the network's logits at evaluation (null: the network's `forward`): writes one
    /// score per output unit for `rows` test inputs `x` (`rows * input_dim`) into `out`
    /// (`out_len == rows * num_outputs`); the host predicts the highest-scoring unit of the
    /// evaluation mask, as with logits. `task` is the evaluated task's id in task-IL, -1 when
    /// the setting hides it. Called between `before_eval` and `after_eval`, once per
    /// evaluation chunk, for the accuracy matrix (not for the untrained network's accuracies
    /// nor the diagnostics' probe). Services as in `after_eval` (`features`, `forward`, ...).
    pub predict: Option<
        unsafe extern "C" fn(
            inst: *mut c_void,
            ctx: *mut ClefCtx,
            task: i64,
            x: *const f32,
            rows: i64,
            out: *mut f32,
            out_len: i64,
        ) -> i32,
    >,
}

// SAFETY: the descriptor and schema are immutable static data owned by the plugin library,
// which is never unloaded; sharing pointers to them between threads is sound.
unsafe impl Sync for ClefPluginDescriptor {}
// SAFETY: as above, hyperparameter entries are immutable static data.
unsafe impl Sync for ClefHparam {}
// SAFETY: the host's service table holds only function pointers and integers.
unsafe impl Sync for ClefHost {}

/// Size of the descriptor of ABI 1.0 to 1.2 (every field up to and including `load_state`):
/// the smallest descriptor the host accepts.
pub const CLEF_DESCRIPTOR_SIZE_V1_0: usize =
    core::mem::offset_of!(ClefPluginDescriptor, create_typed);

/// Size of the descriptor of ABI 1.3 (up to and including `create_typed`): what a plugin
/// declaring ABI 1.3 must provide.
pub const CLEF_DESCRIPTOR_SIZE_V1_3: usize = core::mem::offset_of!(ClefPluginDescriptor, backbones);

/// Size of the descriptor of ABI 1.4 and 1.5 (up to and including `reserved`): what a plugin
/// declaring ABI 1.4 or 1.5 must provide.
pub const CLEF_DESCRIPTOR_SIZE_V1_4: usize = core::mem::offset_of!(ClefPluginDescriptor, loss);

/// Size of the descriptor of ABI 1.6 (up to and including `predict`): what a plugin declaring
/// ABI 1.6 must provide.
pub const CLEF_DESCRIPTOR_SIZE_V1_6: usize = core::mem::size_of::<ClefPluginDescriptor>();

/// Size of the host service table of ABI 1.0 (every service up to and including
/// `get_extension`): the smallest table a plugin must accept.
pub const CLEF_HOST_SIZE_V1_0: usize = core::mem::offset_of!(ClefHost, report);

/// Size of the host service table of ABI 1.1 (up to and including `report`).
pub const CLEF_HOST_SIZE_V1_1: usize = core::mem::offset_of!(ClefHost, expert_freeze);

/// Size of the host service table of ABI 1.2 (up to and including `head_vjp`).
pub const CLEF_HOST_SIZE_V1_2: usize = core::mem::offset_of!(ClefHost, expert_add_conv);

/// Size of the host service table of ABI 1.5 (up to and including `expert_add_conv`).
pub const CLEF_HOST_SIZE_V1_5: usize = core::mem::offset_of!(ClefHost, batch_grad);

/// Size of the host service table of ABI 1.6 (up to and including `train_step`).
pub const CLEF_HOST_SIZE_V1_6: usize = core::mem::size_of::<ClefHost>();

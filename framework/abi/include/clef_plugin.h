/*
 * clef_plugin.h: the clef strategy-plugin C ABI, version 1.6.
 *
 * Everything a C plugin needs is in this file. It is the same contract as the Rust crate
 * `clef-abi` (framework/abi/src/lib.rs); a test checks that every size, field offset and
 * constant here agrees with it.
 *
 * HANDSHAKE. Export `clef_plugin_entry_v1` returning a pointer to a static
 * clef_plugin_descriptor whose first fields are {abi_major, abi_minor, struct_size}. The host
 * refuses a plugin whose abi_major differs from CLEF_ABI_MAJOR, or whose struct_size is smaller
 * than its declared minor version needs (CLEF_DESCRIPTOR_SIZE_V1_0 up to 1.2,
 * CLEF_DESCRIPTOR_SIZE_V1_3 for 1.3, CLEF_DESCRIPTOR_SIZE_V1_4 for 1.4 and 1.5,
 * CLEF_DESCRIPTOR_SIZE_V1_6 from 1.6). Fields are append-only: a host reads only the fields
 * struct_size covers and treats the rest as NULL. Set
 *     .abi_major = CLEF_ABI_MAJOR, .abi_minor = CLEF_ABI_MINOR,
 *     .struct_size = sizeof(clef_plugin_descriptor)
 *
 * LIFECYCLE of one instance (one trial):
 *     create_typed (or create)                  -- no ctx: only log(NULL, ...) may be called
 *     on_model_built                            -- after the network is built
 *     for each task:
 *         on_task_start
 *         for each batch: before_batch, [host zeroes gradients, forward, loss (1.6, if
 *                         set), backward], after_backward, [optimizer step], after_step
 *         on_task_end
 *         for each evaluated task: before_eval, [evaluation: predict (1.6) if set],
 *                                  after_eval
 *         save_state                            -- after every task but the last: checkpoint
 *     destroy
 * On resume from a checkpoint: create, on_model_built (initial weights), load_state, then the
 * host restores the parameters and runs the remaining tasks.
 * Hooks run on the trial's thread with a ctx valid for that one call.
 *
 * OWNERSHIP: whoever allocates frees. Descriptor strings and tables are plugin-owned and must
 * live as long as the library (the host never unloads it). Everything the host hands to the
 * plugin (views, batches, task infos, typed values, TOML text, state bytes) is host-owned,
 * read-only unless stated, and valid only until the call that produced it returns: copy what
 * you keep. Buffers the plugin passes to a host service (x, cotangent, out ...) are
 * plugin-allocated with exactly the length the service states, and the host keeps no pointer
 * to them after the service returns.
 *
 * HOST SERVICES: no pointer in clef_host is NULL (a missing service is a stub returning
 * CLEF_UNSUPPORTED). Every service takes the ctx of the running hook. A service called with a
 * NULL ctx returns CLEF_INVALID_ARGUMENT (log accepts NULL). "Hooks" below means the training
 * hooks on_model_built, on_task_start, before_batch, after_backward, after_step, on_task_end,
 * before_eval and after_eval; in save_state / load_state every service but log returns
 * CLEF_NOT_ALLOWED, and create has no ctx at all (a refused rng_u64 returns 0, a refused
 * param_count the negative status, get_extension NULL). A view stays valid until the hook that
 * obtained it returns; fetching one view never moves another (a tensor's values and gradient
 * may be held together); only expert_add / expert_add_conv / expert_select invalidate views.
 * The detail of a refused call is appended to the plugin's error message if the hook then
 * fails.
 *
 * SHAPES: inputs are row-major f32, `rows * input_dim` values (input_dim, num_outputs and
 * feature_dim come from task_info and are fixed for the trial). Logits and cotangents are
 * `rows * num_outputs` values, row r at [r * num_outputs, (r + 1) * num_outputs). Parameter
 * tensors are named layers.{l}.weight ([out, in], row-major) and layers.{l}.bias ([out]).
 *
 * GRADIENTS: the trainer zeroes every gradient buffer once per step, after before_batch returns
 * and before the batch's backward pass; the optimizer step right after after_backward uses
 * whatever the buffers hold then. So gradients are meaningful in after_backward (they hold
 * d loss / d param of the batch; what you add there, directly or with vjp, is trained on) and,
 * read only, in after_step (what the step used). In every other hook they are scratch: they
 * hold leftovers, vjp ADDS into them and the host does not zero them for you (zero them
 * yourself before a vjp whose result you want to read alone), and whatever you leave there is
 * discarded by the next step's zeroing. Gradients written in before_batch are lost.
 *
 * THREADING: the hooks of one instance are never called concurrently; different instances (of
 * parallel trials) may run on different threads at once, so global state must be thread-safe.
 * Host services may be called only during a hook, on its thread, with the ctx it received --
 * except log(NULL, ...), which any thread may call at any time.
 *
 * ERRORS: every function returns a status (CLEF_OK = 0, negative = error). After a failing
 * hook the host reads last_error(inst); after a failing create it calls last_error(NULL), so
 * keep that message per thread (or at least per create). A hook's failure fails its trial only.
 * Never unwind or longjmp across the boundary.
 */
#ifndef CLEF_PLUGIN_H
#define CLEF_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLEF_ABI_MAJOR 1
#define CLEF_ABI_MINOR 6
#define CLEF_ENTRY_SYMBOL "clef_plugin_entry_v1"

/* status codes */
#define CLEF_OK 0
#define CLEF_ERROR (-1)            /* plugin error, message in last_error */
#define CLEF_PANIC (-2)            /* plugin panicked (caught), message in last_error */
#define CLEF_INVALID_ARGUMENT (-3) /* bad index, size or null pointer given to a host service */
#define CLEF_UNSUPPORTED (-4)      /* service not available with this host or backend */
#define CLEF_NOT_ALLOWED (-5)      /* service not allowed in the current hook */

/* log levels */
#define CLEF_LOG_ERROR 1
#define CLEF_LOG_WARN 2
#define CLEF_LOG_INFO 3
#define CLEF_LOG_DEBUG 4
#define CLEF_LOG_TRACE 5

/* hyperparameter kinds and flags */
#define CLEF_HPARAM_FLOAT 0u
#define CLEF_HPARAM_INT 1u
#define CLEF_HPARAM_BOOL 2u
#define CLEF_HPARAM_CHOICE 3u
#define CLEF_HPARAM_LOG_SCALE 1u
/* the parameter only acts once a task has ended, e.g. a penalty towards past tasks:
   first-task tuning needs tune_tasks >= 2 */
#define CLEF_HPARAM_NEEDS_PAST_TASKS 2u

/* settings, parameter roles, splits, activations (expert_add) */
#define CLEF_SETTING_TASK_IL 0
#define CLEF_SETTING_CLASS_IL 1
#define CLEF_SETTING_DOMAIN_IL 2
#define CLEF_ROLE_WEIGHT 0
#define CLEF_ROLE_BIAS 1
#define CLEF_ROLE_BUFFER 2 /* 1.4: non-trainable state (batch norm running statistics) */
#define CLEF_SPLIT_TRAIN 0
#define CLEF_SPLIT_TEST 1
/* ABI 1.4: clef_plugin_descriptor.backbones bits. CONV: convnet and resnet18 (weights of any rank:
 * conv kernels [out, in, kh, kw], norm scales [channels]; CLEF_ROLE_BUFFER tensors left alone). */
#define CLEF_BACKBONE_MLP 1u
#define CLEF_BACKBONE_CONV 2u
#define CLEF_ACTIVATION_RELU 0
#define CLEF_ACTIVATION_TANH 1
#define CLEF_ACTIVATION_SIGMOID 2

/* One hyperparameter of the plugin's schema (plugin-owned static data). Before create the host
 * checks each config value against its entry (unknown key, wrong type, out of [min, max]) and
 * fills in defaults, so a plugin never re-checks them. */
typedef struct clef_hparam {
    const char *name;           /* key in the config's hparams table, [A-Za-z0-9_-]+ */
    uint32_t kind;              /* CLEF_HPARAM_* */
    uint32_t flags;             /* CLEF_HPARAM_LOG_SCALE | CLEF_HPARAM_NEEDS_PAST_TASKS */
    double default_value;       /* float, int (whole), bool (0/1) or choice index */
    double min;                 /* inclusive lower bound of float/int (-INFINITY = none) */
    double max;                 /* inclusive upper bound of float/int (+INFINITY = none) */
    const char *const *choices; /* CLEF_HPARAM_CHOICE: n_choices distinct strings, else NULL */
    size_t n_choices;
    const char *doc;            /* one-line description */
} clef_hparam;

/* ABI 1.3: one hyperparameter value as create_typed receives it (host-owned, valid during the
 * call). values[i] belongs to hparams[i] of the descriptor. */
typedef struct clef_hparam_value {
    double number;    /* FLOAT: the value; INT: the whole number (exact up to 2^53);
                       * BOOL: 0 or 1; CHOICE: the index into the entry's choices */
    const char *text; /* CHOICE: the chosen string (equal to choices[index]); else NULL */
} clef_hparam_value;

/* Opaque per-call host context: pass it back to host services, never keep it. */
typedef struct clef_ctx clef_ctx;

/* The current task and the problem's shape. Handed to on_task_start / on_task_end (host-owned,
 * valid during the call; read only fields that struct_size covers) or filled by task_info
 * (caller-owned: set struct_size = sizeof(clef_task_info) before the call; the host never
 * writes past it). Out-structs without struct_size (param_info, tensor, batch) never grow. */
typedef struct clef_task_info {
    uint32_t struct_size;   /* set by whoever allocated the struct */
    int32_t setting;        /* CLEF_SETTING_* */
    int64_t task;           /* 0-based index of the current task */
    int64_t num_tasks;
    int64_t train_samples;  /* training samples of the current task */
    int64_t test_samples;
    int64_t input_dim;      /* floats per input row */
    int64_t num_outputs;    /* logits per row */
    int64_t feature_dim;    /* width of the penultimate representation (features per row) */
    const int64_t *units;   /* n_units output units of this task's head; host-owned, valid
                             * until the hook returns */
    int64_t n_units;
    uint32_t num_threads;   /* threads the plugin may use (0 = no hint) */
    uint64_t seed;          /* the trial seed (draw randomness from rng_u64 instead) */
} clef_task_info;

/* Name, shape and role of one parameter tensor. */
typedef struct clef_param_info {
    const char *name;       /* e.g. "layers.0.weight"; host-owned, valid until the next
                             * on_model_built */
    int32_t ndim;           /* 1..4 */
    int32_t role;           /* CLEF_ROLE_* */
    int64_t shape[4];       /* first ndim entries used, the rest are 1 */
    int64_t numel;          /* number of floats */
    int64_t layer;          /* index of the dense layer the tensor belongs to */
} clef_param_info;

/* A borrowed, contiguous, row-major f32 view of numel floats (host-owned, valid until the hook
 * returns or expert_add / expert_select is called). No two writable views alias. */
typedef struct clef_tensor {
    float *data;
    int64_t numel;
    int32_t ndim;
    int32_t writable;       /* non-zero: the plugin may write through data */
    int64_t shape[4];
} clef_tensor;

/* The training batch as before_batch sees it (host-owned, valid until before_batch returns;
 * rows appended with batch_append are not in it). */
typedef struct clef_batch {
    const float *x;         /* rows * cols inputs, row-major */
    const int64_t *targets; /* rows target output units */
    int64_t rows;
    int64_t cols;           /* = input_dim */
    int64_t current_rows;   /* the first current_rows rows come from the current task */
} clef_batch;

/* ABI 1.6: what the loss hook receives (host-owned, valid during the call; read only the
 * fields struct_size covers): the whole training batch, appended rows included, with its
 * training-mode logits. */
typedef struct clef_loss_input {
    uint32_t struct_size;   /* sizeof(clef_loss_input) as the host knows it */
    uint32_t reserved;      /* zero */
    int64_t rows;
    int64_t num_outputs;
    int64_t input_dim;
    int64_t current_rows;   /* the first current_rows rows come from the current task; the
                             * others are the rows the strategy appended, in order */
    const float *x;         /* rows * input_dim inputs (after augmentation) */
    const float *logits;    /* rows * num_outputs, training mode (batch statistics) */
    const int64_t *targets; /* rows target units */
    const uint8_t *masks;   /* rows * num_outputs: non-zero = unit in the row's softmax */
} clef_loss_input;

/* The host's sink for save_state: copies len bytes from data (plugin-owned, read during the
 * call only) to the checkpoint. Returns CLEF_OK, or an error to pass on. */
typedef int32_t (*clef_write_fn)(void *writer, const uint8_t *data, size_t len);

/* Services the host offers; passed to create, host-owned, valid for the life of the instance.
 * Check struct_size before using a service added after ABI 1.0 (see the comments). */
typedef struct clef_host {
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t struct_size;   /* sizeof(clef_host) as the host knows it */

    /* A line in the host's log at a CLEF_LOG_* level; msg is NUL-terminated, read during the
     * call. ctx may be NULL: then allowed anywhere, from any thread (create, save_state,
     * worker threads). */
    void (*log)(clef_ctx *ctx, int32_t level, const char *msg);
    /* The next value of the instance's seeded random stream (reproducible per trial seed).
     * Hooks only; returns 0 when refused. */
    uint64_t (*rng_u64)(clef_ctx *ctx);
    /* Fills *out with the current task (out->units valid until the hook returns). Set
     * out->struct_size = sizeof(clef_task_info) first: a smaller value is refused
     * (CLEF_INVALID_ARGUMENT). Hooks. */
    int32_t (*task_info)(clef_ctx *ctx, clef_task_info *out);

    /* Number of parameter tensors (of the selected expert), or a negative status. Hooks. */
    int64_t (*param_count)(clef_ctx *ctx);
    /* Describes tensor index (0 <= index < param_count) into *out. Hooks. */
    int32_t (*param_info)(clef_ctx *ctx, int64_t index, clef_param_info *out);
    /* Writable view of tensor index's values (numel floats, shape of param_info); edits take
     * effect at the next forward. Hooks. */
    int32_t (*param_values)(clef_ctx *ctx, int64_t index, clef_tensor *out);
    /* Writable view of tensor index's gradient (same layout as its values). Holds the batch's
     * d loss / d param in after_backward; scratch in other hooks (see GRADIENTS). Hooks. */
    int32_t (*param_grads)(clef_ctx *ctx, int64_t index, clef_tensor *out);
    /* Writable view of optimizer state slot ("momentum" for SGD; "exp_avg", "exp_avg_sq" for
     * Adam; slot NUL-terminated) of tensor index, same layout as its values;
     * CLEF_UNSUPPORTED if the optimizer has no such slot. Hooks. */
    int32_t (*optimizer_state)(clef_ctx *ctx, const char *slot, int64_t index, clef_tensor *out);

    /* Logits of rows inputs: reads x[rows * input_dim], writes out[rows * num_outputs]
     * (out_len must equal rows * num_outputs, else CLEF_INVALID_ARGUMENT). No gradient is
     * touched. Uses the current parameter values. Hooks. */
    int32_t (*forward)(clef_ctx *ctx, const float *x, int64_t rows, float *out, int64_t out_len);
    /* Penultimate activations: reads x[rows * input_dim], writes out[rows * feature_dim]
     * (out_len == rows * feature_dim). No gradient is touched. Hooks. */
    int32_t (*features)(clef_ctx *ctx, const float *x, int64_t rows, float *out, int64_t out_len);
    /* ADDS J(x)^T * cotangent into the parameter gradients, J = d logits / d params at the
     * inputs x[rows * input_dim]; cotangent[rows * num_outputs] (cotangent_len == rows *
     * num_outputs) is d loss / d logits of any loss of yours. Hooks: in after_backward it adds
     * to the batch gradient (trained on); elsewhere the gradients are scratch (see GRADIENTS). */
    int32_t (*vjp)(clef_ctx *ctx, const float *x, int64_t rows, const float *cotangent,
                   int64_t cotangent_len);
    /* Neural-tangent-kernel Gram of output unit `output` (0 <= output < num_outputs) between
     * a[rows_a * input_dim] and b[rows_b * input_dim]:
     * out[i * rows_b + j] = <d f_output(a_i)/d params, d f_output(b_j)/d params> as double,
     * out_len == rows_a * rows_b. Touches no gradient. CLEF_UNSUPPORTED if the backend
     * cannot. Hooks. */
    int32_t (*ntk_gram)(clef_ctx *ctx, const float *a, int64_t rows_a, const float *b,
                        int64_t rows_b, int64_t output, double *out, int64_t out_len);

    /* The current batch into *out (views valid until before_batch returns). before_batch
     * only (CLEF_NOT_ALLOWED elsewhere). */
    int32_t (*batch_get)(clef_ctx *ctx, clef_batch *out);
    /* Appends rows rows to the batch: x[rows * input_dim], targets[rows] (each an output
     * unit), masks NULL (the rows use the current task's training mask, which must contain
     * each target) or masks[rows * num_outputs] bytes (non-zero = the unit is in that row's
     * softmax; must contain the row's target), e.g. a replayed row's own task-IL head. The
     * host copies everything before returning; the rows join the batch after before_batch
     * returns (batch_get does not show them). before_batch only. */
    int32_t (*batch_append)(clef_ctx *ctx, const float *x, int64_t rows, const int64_t *targets,
                            const uint8_t *masks);
    /* Copies samples start .. start + rows - 1 of task `task`'s split, after that task's input
     * transform, into x_out[rows * input_dim] and targets_out[rows]. Only the training split
     * (CLEF_SPLIT_TRAIN) of tasks 0 .. current (CLEF_NOT_ALLOWED for CLEF_SPLIT_TEST and for
     * future tasks: test data is reserved for evaluation); start + rows must not exceed the
     * split's size (train_samples of task_info for the current task). Hooks. */
    int32_t (*task_samples)(clef_ctx *ctx, int64_t task, int32_t split, int64_t start,
                            int64_t rows, float *x_out, int64_t *targets_out);
    /* The output units of task `task`'s head (any task, future ones included): writes
     * out[len] bytes, 1 = unit in the head, 0 = not; len must equal num_outputs (domain-IL:
     * all ones). Hooks. */
    int32_t (*task_mask)(clef_ctx *ctx, int64_t task, uint8_t *out, int64_t len);

    /* Adds an expert network to the trial's pool: hidden[n_hidden] widths (each > 0),
     * activation CLEF_ACTIVATION_*, the task's input/output sizes and the configured
     * initialisation; writes its id to *out_id (expert 0 is the configured network; new ids
     * count up from 1). Hooks, task-IL only (CLEF_NOT_ALLOWED otherwise). */
    int32_t (*expert_add)(clef_ctx *ctx, const int64_t *hidden, int64_t n_hidden,
                          int32_t activation, int64_t *out_id);
    /* Routes the current task to expert id with a head of its own (fresh the first time):
     * training, parameter / gradient / optimizer views, forward / features / vjp and the
     * task's evaluation use that expert from now on, and later tasks start on it. Resets its
     * optimizer state. Invalidates every view. Hooks, task-IL only. */
    int32_t (*expert_select)(clef_ctx *ctx, int64_t id);

    /* A named extension table (NUL-terminated name), or NULL if the host lacks it (this host
     * has none). */
    const void *(*get_extension)(clef_ctx *ctx, const char *name);

    /* ABI 1.1: present only if struct_size >= offsetof(clef_host, report) + sizeof(void *).
     * Records value (finite) under key (NUL-terminated, 1..128 printable ASCII characters, no
     * spaces) in the trial's results for the current task (strategy_metrics[task][key]); the
     * same key again in a task replaces it. Hooks (CLEF_NOT_ALLOWED in save/load_state). */
    int32_t (*report)(clef_ctx *ctx, const char *key, double value);

    /* ABI 1.2: present only if struct_size >= offsetof(clef_host, head_vjp) + sizeof(void *).
     * The expert pool, task-IL only except expert_params. */
    /* Freezes (frozen != 0) or unfreezes expert id's body (every layer but the output layer):
     * while frozen it is restored bit for bit after every optimizer step; heads still train. */
    int32_t (*expert_freeze)(clef_ctx *ctx, int64_t id, int32_t frozen);
    /* Writes to *out the scalar parameters of expert id (body plus n_units * (feature_dim + 1)
     * per task routed to it); id -1 = the pool total, the trial's num_params. Hooks, any
     * setting. */
    int32_t (*expert_params)(clef_ctx *ctx, int64_t id, int64_t *out);
    /* forward through task `task`'s head (task routed to the selected expert, else
     * CLEF_INVALID_ARGUMENT): x[rows * input_dim] -> out[rows * num_outputs], out_len ==
     * rows * num_outputs. No gradient is touched. */
    int32_t (*head_forward)(clef_ctx *ctx, int64_t task, const float *x, int64_t rows,
                            float *out, int64_t out_len);
    /* vjp through task `task`'s fixed head: ADDS into the selected expert's BODY gradients
     * only (the output layer's gradients are left as they were); cotangent[rows *
     * num_outputs], cotangent_len == rows * num_outputs. */
    int32_t (*head_vjp)(clef_ctx *ctx, int64_t task, const float *x, int64_t rows,
                        const float *cotangent, int64_t cotangent_len);

    /* ABI 1.5: present only if struct_size >= offsetof(clef_host, expert_add_conv) +
     * sizeof(void *). Adds an expert with a convolutional body: channels[n_channels] 3x3
     * convolutions (each > 0, n_channels >= 1; a 2x2 max-pool after every second one), then
     * hidden[n_hidden] dense widths (each > 0; hidden may be NULL when n_hidden is 0) and the
     * output layer, with the trial's input image shape, output size, norm, activation and
     * initialisation; writes its id to *out_id. Arrays caller-owned, read during the call.
     * Hooks, task-IL only; CLEF_NOT_ALLOWED when the trial's network is not convolutional. */
    int32_t (*expert_add_conv)(clef_ctx *ctx, const int64_t *channels, int64_t n_channels,
                               const int64_t *hidden, int64_t n_hidden, int64_t *out_id);

    /* ABI 1.6: present only if struct_size >= CLEF_HOST_SIZE_V1_6.
     * batch_grad: the gradient of the mean masked softmax cross-entropy of x[rows *
     * input_dim] with targets[rows] and masks (NULL = the current task's training mask, else
     * rows * num_outputs bytes) written FLAT into out[out_len]: every tensor in param_info
     * order, out_len == the sum of their numel (buffers included, written as zero). Training
     * mode without updating batch-norm statistics; gradients, parameters and optimizer state
     * are left as they were. *loss_out (may be NULL) = the loss. Hooks. */
    int32_t (*batch_grad)(clef_ctx *ctx, const float *x, int64_t rows, const int64_t *targets,
                          const uint8_t *masks, float *out, int64_t out_len, float *loss_out);
    /* sample_grads: ADDS sum_i |J(x_i)^T c_i|^power into the gradient buffers, element-wise,
     * c_i = row i of cotangent[rows * num_outputs], power 1 or 2 (MAS importance, empirical
     * Fisher). Evaluation mode (batch-norm running statistics). Hooks. */
    int32_t (*sample_grads)(clef_ctx *ctx, const float *x, int64_t rows, const float *cotangent,
                            int64_t cotangent_len, int32_t power);
    /* reinit: a fresh seeded initialisation of the network and a reset optimizer. Only in
     * on_task_start / on_task_end and without the expert pool (CLEF_NOT_ALLOWED otherwise). */
    int32_t (*reinit)(clef_ctx *ctx);
    /* train_step: one optimizer step on the mean masked cross-entropy of the given rows
     * (targets and masks as batch_grad), no hook called; *loss_out (may be NULL) = the loss.
     * Only in on_task_start / on_task_end. A non-finite loss is CLEF_ERROR, no update. */
    int32_t (*train_step)(clef_ctx *ctx, const float *x, int64_t rows, const int64_t *targets,
                          const uint8_t *masks, float *loss_out);
} clef_host;

/* The plugin's static description and entry points (plugin-owned, static). Every hook is
 * nullable (NULL = no-op); create or create_typed must be set; inst is what it wrote to *out. */
typedef struct clef_plugin_descriptor {
    uint16_t abi_major;      /* CLEF_ABI_MAJOR */
    uint16_t abi_minor;      /* CLEF_ABI_MINOR */
    uint32_t struct_size;    /* sizeof(clef_plugin_descriptor) */

    const char *name;        /* strategy name used in configs, [a-z0-9_-]+ */
    const char *version;     /* e.g. "0.1.0", stored in results */
    const char *description; /* one line, shown by `clef plugins` */
    const clef_hparam *hparams; /* n_hparams entries (NULL if 0) */
    size_t n_hparams;

    /* Creates an instance from the validated hparams table: config_toml is a NUL-terminated
     * TOML document with every key of the schema (host-owned, valid during the call). Writes
     * the instance to *out. No ctx: only log(NULL, ...) may be called; keep host for the
     * hooks. On failure return non-zero and leave a message for last_error(NULL). A 1.3 host
     * calls create_typed instead when it is set; then create may be NULL (but hosts older than
     * 1.3 refuse a plugin without create). */
    int32_t (*create)(const clef_host *host, const char *config_toml, void **out);
    /* Frees an instance (called once, never concurrently with its hooks). */
    void (*destroy)(void *inst);
    /* The message of the last failure of inst, or of the calling thread when inst is NULL
     * (after a failed create). Plugin-owned, valid until the next call into the plugin on this
     * thread; may be NULL, but then the error says only "no message". */
    const char *(*last_error)(void *inst);

    /* After the network is built (and on resume, before load_state): read shapes, store
     * initial weights. */
    int32_t (*on_model_built)(void *inst, clef_ctx *ctx);
    /* Before a task's first batch; task is host-owned, valid during the call. */
    int32_t (*on_task_start)(void *inst, clef_ctx *ctx, const clef_task_info *task);
    /* Before each batch's forward pass: batch_get / batch_append (replay). */
    int32_t (*before_batch)(void *inst, clef_ctx *ctx);
    /* After backward, before the optimizer step; loss is the batch's mean loss. Add gradient
     * terms, mask gradients, vjp. */
    int32_t (*after_backward)(void *inst, clef_ctx *ctx, float loss);
    /* After the optimizer step: masks, projections, pruning. */
    int32_t (*after_step)(void *inst, clef_ctx *ctx);
    /* After a task's last batch, before its evaluation: Fisher, anchors, stored samples. */
    int32_t (*on_task_end)(void *inst, clef_ctx *ctx, const clef_task_info *task);
    /* Before evaluating task `task` (-1 when the setting hides the id) / after it: select and
     * restore a mask or expert. */
    int32_t (*before_eval)(void *inst, clef_ctx *ctx, int64_t task);
    int32_t (*after_eval)(void *inst, clef_ctx *ctx);
    /* Writes the instance's state for a checkpoint with write(writer, bytes, len), any number
     * of calls (writer is host-owned, valid during the call). Only log is allowed here. NULL
     * means the plugin cannot save its state: the host then turns checkpoints off for the
     * trial (with a warning) instead of resuming it without its state. A stateless plugin
     * exports one that writes nothing. */
    int32_t (*save_state)(void *inst, clef_ctx *ctx, clef_write_fn write, void *writer);
    /* Restores what save_state wrote: data[len], host-owned, valid during the call (len 0 =
     * keep the fresh state). Called after on_model_built; only log is allowed here. */
    int32_t (*load_state)(void *inst, clef_ctx *ctx, const uint8_t *data, size_t len);

    /* ABI 1.3 (read only when struct_size >= CLEF_DESCRIPTOR_SIZE_V1_3). create with the
     * hyperparameters also as typed values: values[n_values] (n_values == n_hparams) in schema
     * order, host-owned, valid during the call (NULL when n_values is 0); config_toml as for
     * create. When set, the host calls it instead of create, which may then be NULL (set it
     * too, parsing config_toml, only to also load in hosts older than 1.3). Same rules and
     * errors as create. */
    int32_t (*create_typed)(const clef_host *host, const char *config_toml,
                            const clef_hparam_value *values, size_t n_values, void **out);

    /* ABI 1.4 (read only when struct_size >= CLEF_DESCRIPTOR_SIZE_V1_4). The backbone families
     * the strategy handles: CLEF_BACKBONE_* bits; 0 (or an older descriptor) = MLPs only, and
     * the host refuses a config pairing the plugin with a convolutional backbone. */
    uint32_t backbones;
    uint32_t reserved; /* zero */

    /* ABI 1.6 (read only when struct_size >= CLEF_DESCRIPTOR_SIZE_V1_6).
     * loss: replaces the training loss (NULL = masked softmax cross-entropy). Called once per
     * step after the forward pass of the whole batch, before backward: write d loss / d logits
     * into cotangent[rows * num_outputs] (host-owned, zeroed) and the loss into *loss_out;
     * the host back-propagates it. Services as in after_backward. */
    int32_t (*loss)(void *inst, clef_ctx *ctx, const clef_loss_input *input, float *cotangent,
                    float *loss_out);
    /* predict: replaces the logits at evaluation (NULL = the network's forward): one score per
     * output unit for x[rows * input_dim] into out[out_len == rows * num_outputs]; the host
     * predicts the best unit of the evaluation mask. task = the evaluated task in task-IL, -1
     * otherwise. Between before_eval and after_eval, per evaluation chunk, for the accuracy
     * matrix only. Services as in after_eval. */
    int32_t (*predict)(void *inst, clef_ctx *ctx, int64_t task, const float *x, int64_t rows,
                       float *out, int64_t out_len);
} clef_plugin_descriptor;

/* Descriptor sizes of each version: 1.0 to 1.2 end after load_state, 1.3 after
 * create_typed, 1.4 and 1.5 after reserved, 1.6 after predict. */
#define CLEF_DESCRIPTOR_SIZE_V1_0 offsetof(clef_plugin_descriptor, create_typed)
#define CLEF_DESCRIPTOR_SIZE_V1_3 offsetof(clef_plugin_descriptor, backbones)
#define CLEF_DESCRIPTOR_SIZE_V1_4 offsetof(clef_plugin_descriptor, loss)
#define CLEF_DESCRIPTOR_SIZE_V1_6 sizeof(clef_plugin_descriptor)
/* Host table sizes: 1.6 ends after train_step. */
#define CLEF_HOST_SIZE_V1_6 sizeof(clef_host)

/* The one symbol a plugin exports. */
typedef const clef_plugin_descriptor *(*clef_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* CLEF_PLUGIN_H */

/*
 * clef_plugin.h: the clef strategy-plugin C ABI, version 1.2.
 *
 * The same contract as the Rust crate `clef-abi` (framework/abi/src/lib.rs); a test checks
 * that every size, field offset and constant here agrees with it.
 *
 * Handshake: export `clef_plugin_entry_v1` returning a pointer to a static
 * clef_plugin_descriptor whose first fields are {abi_major, abi_minor, struct_size}. The host
 * refuses a plugin whose abi_major differs from CLEF_ABI_MAJOR. Fields are append-only.
 *
 * Ownership: whoever allocates frees. Descriptor strings and tables are plugin-owned and live
 * as long as the library (never unloaded). Views handed to the plugin (tensors, batches, task
 * infos) are host-owned and valid only during the call. Output buffers passed to host services
 * are plugin-allocated with the documented size.
 *
 * Host services: no pointer in clef_host is NULL (a missing service is a stub returning
 * CLEF_UNSUPPORTED). A view stays valid until the hook that obtained it returns; fetching one
 * view never moves another; only expert_add/expert_select invalidate views.
 *
 * Threading: the hooks of one instance are never called concurrently; different instances may
 * run on different threads at once. Host services may be called only during a hook, on its
 * thread, with the ctx it received -- except log(NULL, ...), which any thread may call.
 *
 * Errors: every function returns a status (0 = ok, negative = error). After an error the host
 * reads last_error(instance) (instance may be NULL after a failed create: thread-local message).
 */
#ifndef CLEF_PLUGIN_H
#define CLEF_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CLEF_ABI_MAJOR 1
#define CLEF_ABI_MINOR 2
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

/* settings, parameter roles, splits */
#define CLEF_SETTING_TASK_IL 0
#define CLEF_SETTING_CLASS_IL 1
#define CLEF_SETTING_DOMAIN_IL 2
#define CLEF_ROLE_WEIGHT 0
#define CLEF_ROLE_BIAS 1
#define CLEF_SPLIT_TRAIN 0
#define CLEF_SPLIT_TEST 1

/* One hyperparameter of the plugin's schema. */
typedef struct clef_hparam {
    const char *name;           /* key in the config's hparams table */
    uint32_t kind;              /* CLEF_HPARAM_* */
    uint32_t flags;             /* CLEF_HPARAM_LOG_SCALE | CLEF_HPARAM_NEEDS_PAST_TASKS */
    double default_value;       /* float, int, bool (0/1) or choice index */
    double min;                 /* inclusive lower bound (-inf = none) */
    double max;                 /* inclusive upper bound (+inf = none) */
    const char *const *choices; /* CLEF_HPARAM_CHOICE: n_choices strings, else NULL */
    size_t n_choices;
    const char *doc;            /* one-line description */
} clef_hparam;

/* Opaque per-call host context. */
typedef struct clef_ctx clef_ctx;

/* The current task and the problem's shape. Handed to hooks (host-owned, valid during the call;
 * read only fields that struct_size covers) or filled by task_info (caller-owned: set
 * struct_size = sizeof(clef_task_info) before the call; the host never writes past it).
 * Out-structs without struct_size (param_info, tensor, batch) never grow. */
typedef struct clef_task_info {
    uint32_t struct_size;   /* set by whoever allocated the struct */
    int32_t setting;        /* CLEF_SETTING_* */
    int64_t task;           /* 0-based index of the current task */
    int64_t num_tasks;
    int64_t train_samples;
    int64_t test_samples;
    int64_t input_dim;
    int64_t num_outputs;
    int64_t feature_dim;    /* width of the penultimate representation */
    const int64_t *units;   /* output units of this task's head */
    int64_t n_units;
    uint32_t num_threads;   /* threads the plugin may use (0 = no hint) */
    uint64_t seed;          /* the trial seed */
} clef_task_info;

/* Name, shape and role of one parameter tensor. */
typedef struct clef_param_info {
    const char *name;       /* e.g. "layers.0.weight"; valid until the next on_model_built */
    int32_t ndim;
    int32_t role;           /* CLEF_ROLE_* */
    int64_t shape[4];       /* first ndim entries used, the rest are 1 */
    int64_t numel;
    int64_t layer;
} clef_param_info;

/* A borrowed, contiguous, row-major f32 view, valid during the call. */
typedef struct clef_tensor {
    float *data;
    int64_t numel;
    int32_t ndim;
    int32_t writable;       /* non-zero: the plugin may write through data */
    int64_t shape[4];
} clef_tensor;

/* The training batch as before_batch sees it. */
typedef struct clef_batch {
    const float *x;         /* rows * cols inputs */
    const int64_t *targets; /* rows target units */
    int64_t rows;
    int64_t cols;
    int64_t current_rows;   /* rows from the current task's stream */
} clef_batch;

typedef int32_t (*clef_write_fn)(void *writer, const uint8_t *data, size_t len);

/* Services the host offers; passed to create and valid for the life of the instance. */
typedef struct clef_host {
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t struct_size;

    void (*log)(clef_ctx *ctx, int32_t level, const char *msg); /* ctx may be NULL */
    uint64_t (*rng_u64)(clef_ctx *ctx);
    int32_t (*task_info)(clef_ctx *ctx, clef_task_info *out);

    int64_t (*param_count)(clef_ctx *ctx);
    int32_t (*param_info)(clef_ctx *ctx, int64_t index, clef_param_info *out);
    int32_t (*param_values)(clef_ctx *ctx, int64_t index, clef_tensor *out);
    int32_t (*param_grads)(clef_ctx *ctx, int64_t index, clef_tensor *out);
    int32_t (*optimizer_state)(clef_ctx *ctx, const char *slot, int64_t index, clef_tensor *out);

    int32_t (*forward)(clef_ctx *ctx, const float *x, int64_t rows, float *out, int64_t out_len);
    int32_t (*features)(clef_ctx *ctx, const float *x, int64_t rows, float *out, int64_t out_len);
    int32_t (*vjp)(clef_ctx *ctx, const float *x, int64_t rows, const float *cotangent,
                   int64_t cotangent_len);
    int32_t (*ntk_gram)(clef_ctx *ctx, const float *a, int64_t rows_a, const float *b,
                        int64_t rows_b, int64_t output, double *out, int64_t out_len);

    int32_t (*batch_get)(clef_ctx *ctx, clef_batch *out);
    int32_t (*batch_append)(clef_ctx *ctx, const float *x, int64_t rows, const int64_t *targets,
                            const uint8_t *masks);
    int32_t (*task_samples)(clef_ctx *ctx, int64_t task, int32_t split, int64_t start,
                            int64_t rows, float *x_out, int64_t *targets_out);
    int32_t (*task_mask)(clef_ctx *ctx, int64_t task, uint8_t *out, int64_t len);

    int32_t (*expert_add)(clef_ctx *ctx, const int64_t *hidden, int64_t n_hidden,
                          int32_t activation, int64_t *out_id);
    int32_t (*expert_select)(clef_ctx *ctx, int64_t id);

    const void *(*get_extension)(clef_ctx *ctx, const char *name);

    /* ABI 1.1: present only if struct_size >= offsetof(clef_host, report) + sizeof(void *).
     * Records `value` (finite) under `key` (1..128 printable ASCII characters, no spaces) in
     * the trial's results for the current task; the same key again in a task replaces it. */
    int32_t (*report)(clef_ctx *ctx, const char *key, double value);

    /* ABI 1.2: present only if struct_size >= offsetof(clef_host, head_vjp) + sizeof(void *).
     * The expert pool: freeze an expert's body, parameter counts (id -1 = pool total), and the
     * selected expert's forward / body-only vjp through another routed task's head. */
    int32_t (*expert_freeze)(clef_ctx *ctx, int64_t id, int32_t frozen);
    int32_t (*expert_params)(clef_ctx *ctx, int64_t id, int64_t *out);
    int32_t (*head_forward)(clef_ctx *ctx, int64_t task, const float *x, int64_t rows,
                            float *out, int64_t out_len);
    int32_t (*head_vjp)(clef_ctx *ctx, int64_t task, const float *x, int64_t rows,
                        const float *cotangent, int64_t cotangent_len);
} clef_host;

/* The plugin's static description and entry points. Hooks are nullable (NULL = no-op). */
typedef struct clef_plugin_descriptor {
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t struct_size;

    const char *name;        /* strategy name used in configs */
    const char *version;
    const char *description;
    const clef_hparam *hparams;
    size_t n_hparams;

    int32_t (*create)(const clef_host *host, const char *config_toml, void **out);
    void (*destroy)(void *inst);
    const char *(*last_error)(void *inst);

    int32_t (*on_model_built)(void *inst, clef_ctx *ctx);
    int32_t (*on_task_start)(void *inst, clef_ctx *ctx, const clef_task_info *task);
    int32_t (*before_batch)(void *inst, clef_ctx *ctx);
    int32_t (*after_backward)(void *inst, clef_ctx *ctx, float loss);
    int32_t (*after_step)(void *inst, clef_ctx *ctx);
    int32_t (*on_task_end)(void *inst, clef_ctx *ctx, const clef_task_info *task);
    int32_t (*before_eval)(void *inst, clef_ctx *ctx, int64_t task); /* -1: task id hidden */
    int32_t (*after_eval)(void *inst, clef_ctx *ctx);
    int32_t (*save_state)(void *inst, clef_ctx *ctx, clef_write_fn write, void *writer);
    int32_t (*load_state)(void *inst, clef_ctx *ctx, const uint8_t *data, size_t len);
} clef_plugin_descriptor;

/* The one symbol a plugin exports. */
typedef const clef_plugin_descriptor *(*clef_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* CLEF_PLUGIN_H */

//! `include/clef_plugin.h` must describe exactly the Rust types: this test compiles a C program
//! against the header (with the system C compiler), prints every struct size, field offset and
//! constant, and compares them with the Rust side.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use clef_abi::*;

/// (C expression, Rust value) pairs for every struct size, field offset and constant.
fn expected() -> Vec<(String, i128)> {
    let mut v: Vec<(String, i128)> = Vec::new();
    macro_rules! layout {
        ($rs:ty, $c:literal, [$($f:ident),* $(,)?]) => {
            v.push((format!("sizeof({})", $c), size_of::<$rs>() as i128));
            $( v.push((format!("offsetof({}, {})", $c, stringify!($f)), offset_of!($rs, $f) as i128)); )*
        };
    }
    layout!(
        ClefHparam,
        "clef_hparam",
        [
            name,
            kind,
            flags,
            default_value,
            min,
            max,
            choices,
            n_choices,
            doc
        ]
    );
    layout!(
        ClefTaskInfo,
        "clef_task_info",
        [
            struct_size,
            setting,
            task,
            num_tasks,
            train_samples,
            test_samples,
            input_dim,
            num_outputs,
            feature_dim,
            units,
            n_units,
            num_threads,
            seed
        ]
    );
    layout!(
        ClefParamInfo,
        "clef_param_info",
        [name, ndim, role, shape, numel, layer]
    );
    layout!(
        ClefTensor,
        "clef_tensor",
        [data, numel, ndim, writable, shape]
    );
    layout!(
        ClefBatch,
        "clef_batch",
        [x, targets, rows, cols, current_rows]
    );
    layout!(
        ClefHost,
        "clef_host",
        [
            abi_major,
            abi_minor,
            struct_size,
            log,
            rng_u64,
            task_info,
            param_count,
            param_info,
            param_values,
            param_grads,
            optimizer_state,
            forward,
            features,
            vjp,
            ntk_gram,
            batch_get,
            batch_append,
            task_samples,
            task_mask,
            expert_add,
            expert_select,
            get_extension,
            report,
            expert_freeze,
            expert_params,
            head_forward,
            head_vjp,
            expert_add_conv,
            batch_grad,
            sample_grads,
            reinit,
            train_step
        ]
    );
    layout!(
        ClefPluginDescriptor,
        "clef_plugin_descriptor",
        [
            abi_major,
            abi_minor,
            struct_size,
            name,
            version,
            description,
            hparams,
            n_hparams,
            create,
            destroy,
            last_error,
            on_model_built,
            on_task_start,
            before_batch,
            after_backward,
            after_step,
            on_task_end,
            before_eval,
            after_eval,
            save_state,
            load_state,
            create_typed,
            backbones,
            reserved,
            loss,
            predict
        ]
    );
    layout!(
        ClefLossInput,
        "clef_loss_input",
        [
            struct_size,
            reserved,
            rows,
            num_outputs,
            input_dim,
            current_rows,
            x,
            logits,
            targets,
            masks
        ]
    );
    layout!(ClefHparamValue, "clef_hparam_value", [number, text]);
    macro_rules! consts {
        ($($c:ident),* $(,)?) => { $( v.push((stringify!($c).to_string(), $c as i128)); )* };
    }
    consts!(
        CLEF_ABI_MAJOR,
        CLEF_ABI_MINOR,
        CLEF_OK,
        CLEF_ERROR,
        CLEF_PANIC,
        CLEF_INVALID_ARGUMENT,
        CLEF_UNSUPPORTED,
        CLEF_NOT_ALLOWED,
        CLEF_LOG_ERROR,
        CLEF_LOG_WARN,
        CLEF_LOG_INFO,
        CLEF_LOG_DEBUG,
        CLEF_LOG_TRACE,
        CLEF_HPARAM_FLOAT,
        CLEF_HPARAM_INT,
        CLEF_HPARAM_BOOL,
        CLEF_HPARAM_CHOICE,
        CLEF_HPARAM_LOG_SCALE,
        CLEF_HPARAM_NEEDS_PAST_TASKS,
        CLEF_SETTING_TASK_IL,
        CLEF_SETTING_CLASS_IL,
        CLEF_SETTING_DOMAIN_IL,
        CLEF_ROLE_WEIGHT,
        CLEF_ROLE_BIAS,
        CLEF_ROLE_BUFFER,
        CLEF_SPLIT_TRAIN,
        CLEF_SPLIT_TEST,
        CLEF_ACTIVATION_RELU,
        CLEF_ACTIVATION_TANH,
        CLEF_ACTIVATION_SIGMOID,
        CLEF_BACKBONE_MLP,
        CLEF_BACKBONE_CONV,
        CLEF_DESCRIPTOR_SIZE_V1_0,
        CLEF_DESCRIPTOR_SIZE_V1_3,
        CLEF_DESCRIPTOR_SIZE_V1_4,
        CLEF_DESCRIPTOR_SIZE_V1_6,
        CLEF_HOST_SIZE_V1_6
    );
    v
}

#[test]
fn c_header_matches_rust_layout_and_constants() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let found = Command::new(&cc).arg("--version").output().is_ok();
    if !clef_testkit::require_resource(found, format!("no C compiler `{cc}` found (install gcc)")) {
        return;
    }
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = std::env::temp_dir().join(format!("clef-abi-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exp = expected();
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"clef_plugin.h\"\nint main(void) {\n",
    );
    for (expr, _) in &exp {
        c.push_str(&format!(
            "    printf(\"%s=%lld\\n\", \"{expr}\", (long long)({expr}));\n"
        ));
    }
    c.push_str("    printf(\"entry=%s\\n\", CLEF_ENTRY_SYMBOL);\n    return 0;\n}\n");
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success(), "the header does not compile as C11");
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let got: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let mut mismatches = Vec::new();
    for (expr, want) in &exp {
        let have: i128 = got[expr.as_str()].parse().unwrap();
        if have != *want {
            mismatches.push(format!("{expr}: C {have}, Rust {want}"));
        }
    }
    let entry = std::str::from_utf8(&CLEF_ENTRY_SYMBOL[..CLEF_ENTRY_SYMBOL.len() - 1]).unwrap();
    assert_eq!(got["entry"], entry);
    assert!(
        mismatches.is_empty(),
        "header and Rust disagree:\n{}",
        mismatches.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! The real host's services over a trainer context: parameters, experts and heads, model
//! passes, task data, batches, reports, and the contexts without training.

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use clef_backend::{build_network, Activation, Init, MlpSpec, Network, Optimizer, OptimizerSpec};

use std::ffi::{CStr, CString};

use clef_abi::{
    ClefBatch, ClefParamInfo, ClefTensor, CLEF_INVALID_ARGUMENT, CLEF_NOT_ALLOWED, CLEF_OK,
    CLEF_SPLIT_TEST, CLEF_SPLIT_TRAIN, CLEF_UNSUPPORTED,
};
use clef_services::MAX_REPORT_KEY;

use super::*;
use clef_data::scenario::Scenario;
use clef_data::spec::ScenarioConfig;

const DIM: usize = 5;

fn scenario(setting: Setting) -> Scenario {
    let data = Arc::new(clef_data::synthetic::gaussian_blobs(4, DIM, 6, 3, 1.0, 0));
    let cfg = ScenarioConfig::class_split(2, 2);
    clef_data::scenario::build(&cfg, data, setting, 0).unwrap()
}

struct World {
    sc: Scenario,
    net: Box<dyn Network>,
    experts: clef_engine::experts::Experts,
    opt: Optimizer,
    rng: ChaCha8Rng,
}

fn world(setting: Setting) -> World {
    let sc = scenario(setting);
    let spec = MlpSpec {
        input: DIM,
        hidden: vec![3],
        output: sc.num_outputs,
        activation: Activation::Relu,
        init: Init::KaimingUniform,
    };
    let net = build_network(&spec, 1).unwrap();
    let opt = sgd(&*net);
    World {
        experts: clef_engine::experts::Experts::new(&spec, 3, sc.tasks.len()),
        sc,
        net,
        opt,
        rng: ChaCha8Rng::seed_from_u64(7),
    }
}

/// SGD with momentum 0.9 over `net`'s parameters.
fn sgd(net: &dyn Network) -> Optimizer {
    Optimizer::new(
        OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        },
        net.params(),
    )
}

fn with_ctx<R>(w: &mut World, task: usize, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
    let mut ctx = Ctx {
        net: &mut w.net,
        experts: &mut w.experts,
        optimizer: &mut w.opt,
        scenario: &w.sc,
        rng: &mut w.rng,
        task,
        step: 0,
        seed: 42,
        boundary: None,
        reinits: 0,
    };
    f(&mut ctx)
}

const EMPTY_TENSOR: ClefTensor = ClefTensor {
    data: std::ptr::null_mut(),
    numel: 0,
    ndim: 0,
    writable: 0,
    shape: [0; 4],
};

#[test]
fn task_info_and_parameters() {
    let mut w = world(Setting::TaskIl);
    with_ctx(&mut w, 1, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        // SAFETY (whole test): `raw` is a live HostCtx over a live Ctx, and every out
        // pointer is a live local.
        unsafe {
            let mut info = std::mem::zeroed::<ClefTaskInfo>();
            // A caller that does not state its struct size is refused ...
            assert_eq!((HOST.task_info)(raw, &mut info), CLEF_INVALID_ARGUMENT);
            // ... one that does gets the task.
            info.struct_size = std::mem::size_of::<ClefTaskInfo>() as u32;
            assert_eq!((HOST.task_info)(raw, &mut info), CLEF_OK);
            assert_eq!(
                (info.task, info.num_tasks, info.input_dim),
                (1, 2, DIM as i64)
            );
            assert_eq!((info.num_outputs, info.feature_dim, info.seed), (4, 3, 42));
            assert_eq!(info.setting, CLEF_SETTING_TASK_IL);
            let units = std::slice::from_raw_parts(info.units, info.n_units as usize);
            assert_eq!(units.len(), 2);

            assert_eq!((HOST.param_count)(raw), 4);
            let mut pi = std::mem::zeroed::<ClefParamInfo>();
            assert_eq!((HOST.param_info)(raw, 0, &mut pi), CLEF_OK);
            assert_eq!(CStr::from_ptr(pi.name).to_str().unwrap(), "layers.0.weight");
            assert_eq!(
                (pi.ndim, pi.role, pi.shape, pi.numel),
                (2, CLEF_ROLE_WEIGHT, [3, 5, 1, 1], 15)
            );
            assert_eq!((HOST.param_info)(raw, 4, &mut pi), CLEF_INVALID_ARGUMENT);
            assert!(h.take_service_error().unwrap().contains("out of range"));

            let mut g = EMPTY_TENSOR;
            assert_eq!((HOST.param_grads)(raw, 1, &mut g), CLEF_OK);
            assert_eq!((g.numel, g.writable), (3, 1));
            *g.data.add(2) = 5.0;
            let mut v = EMPTY_TENSOR;
            assert_eq!((HOST.param_values)(raw, 0, &mut v), CLEF_OK);
            assert_eq!(v.numel, 15);

            let mut m = EMPTY_TENSOR;
            assert_eq!(
                (HOST.optimizer_state)(raw, c"momentum".as_ptr(), 0, &mut m),
                CLEF_OK
            );
            assert_eq!(m.numel, 15);
            assert_eq!(
                (HOST.optimizer_state)(raw, c"exp_avg".as_ptr(), 0, &mut m),
                CLEF_UNSUPPORTED
            );
            let a = (HOST.rng_u64)(raw);
            assert_ne!(a, (HOST.rng_u64)(raw));
        }
    });
    assert_eq!(w.net.params().grad(1)[2], 5.0);
}

/// The expert services through the C table (task-IL, 2 tasks x 2 classes, DIM inputs):
/// add and select route the task, counts are exact, `head_forward` of the loaded head is
/// `forward`, another task's head gives other logits and is put back bit for bit, and
/// `head_vjp` adds into the body's gradients only.
#[test]
fn expert_services_route_count_and_keep_heads_fixed() {
    let mut w = world(Setting::TaskIl);
    let x: Vec<f32> = (0..2 * DIM).map(|i| i as f32 * 0.1 - 0.3).collect();
    let outs = w.sc.num_outputs;
    let hidden = [4i64];
    with_ctx(&mut w, 0, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        let mut id = -1i64;
        let mut n = 0i64;
        // SAFETY: live ctx; buffers of the documented sizes.
        unsafe {
            assert_eq!(
                (HOST.expert_add)(raw, hidden.as_ptr(), 1, 0, &mut id),
                CLEF_OK
            );
            assert_eq!(id, 1);
            assert_eq!(
                (HOST.expert_add)(raw, [0i64].as_ptr(), 1, 0, &mut id),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!(
                (HOST.expert_add)(raw, hidden.as_ptr(), 1, 7, &mut id),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!((HOST.expert_select)(raw, 9), CLEF_INVALID_ARGUMENT);
            assert_eq!((HOST.expert_select)(raw, 1), CLEF_OK);
            assert_eq!((HOST.param_count)(raw), 4);
            // Body 5·4 + 4 = 24, one 2-unit head 2·(4 + 1) = 10.
            assert_eq!((HOST.expert_params)(raw, 1, &mut n), CLEF_OK);
            assert_eq!(n, 34);
            assert_eq!((HOST.expert_params)(raw, -1, &mut n), CLEF_OK);
            assert_eq!(n, 34);
            let mut a = vec![0.0f32; 2 * outs];
            let mut b = vec![0.0f32; 2 * outs];
            assert_eq!(
                (HOST.forward)(raw, x.as_ptr(), 2, a.as_mut_ptr(), a.len() as i64),
                CLEF_OK
            );
            assert_eq!(
                (HOST.head_forward)(raw, 0, x.as_ptr(), 2, b.as_mut_ptr(), b.len() as i64),
                CLEF_OK
            );
            assert_eq!(a, b);
            // Task 1 is not routed yet.
            assert_eq!(
                (HOST.head_forward)(raw, 1, x.as_ptr(), 2, b.as_mut_ptr(), b.len() as i64),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!((HOST.expert_freeze)(raw, 1, 1), CLEF_OK);
        }
    });
    with_ctx(&mut w, 1, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        let mut n = 0i64;
        // SAFETY: live ctx; buffers of the documented sizes.
        unsafe {
            assert_eq!((HOST.expert_select)(raw, 1), CLEF_OK);
            assert_eq!((HOST.expert_params)(raw, -1, &mut n), CLEF_OK);
            assert_eq!(n, 44);
        }
        let c = h.core();
        let before: Vec<Vec<f32>> = c.net.params().values().to_vec();
        c.net.params_mut().zero_grads();
        let mut a = vec![0.0f32; 2 * outs];
        let mut b = vec![0.0f32; 2 * outs];
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                (HOST.forward)(raw, x.as_ptr(), 2, a.as_mut_ptr(), a.len() as i64),
                CLEF_OK
            );
            assert_eq!(
                (HOST.head_forward)(raw, 0, x.as_ptr(), 2, b.as_mut_ptr(), b.len() as i64),
                CLEF_OK
            );
            assert_ne!(a, b, "task 0's head differs from task 1's fresh head");
            let cot = vec![1.0f32; 2 * outs];
            assert_eq!(
                (HOST.head_vjp)(raw, 0, x.as_ptr(), 2, cot.as_ptr(), cot.len() as i64),
                CLEF_OK
            );
        }
        let c = h.core();
        assert_eq!(
            c.net.params().values(),
            &before[..],
            "values put back bit for bit"
        );
        let g = c.net.params().grads();
        assert!(g[0].iter().any(|&v| v != 0.0), "body gradients");
        assert!(
            g[2].iter().chain(&g[3]).all(|&v| v == 0.0),
            "no output-layer gradients"
        );
    });
}

#[test]
fn forward_features_and_vjp_check_sizes() {
    let mut w = world(Setting::ClassIl);
    let x: Vec<f32> = (0..2 * DIM).map(|i| i as f32 * 0.1).collect();
    let mut expected = Vec::new();
    w.net
        .forward(Inputs::new(&x, 2, DIM).unwrap(), &mut expected)
        .unwrap();
    with_ctx(&mut w, 0, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        let mut out = vec![0.0f32; 8];
        // SAFETY: live ctx; buffers of the documented sizes (or deliberately wrong sizes,
        // which the host checks before touching them).
        unsafe {
            assert_eq!(
                (HOST.forward)(raw, x.as_ptr(), 2, out.as_mut_ptr(), 8),
                CLEF_OK
            );
            assert_eq!(out, expected);
            assert_eq!(
                (HOST.forward)(raw, x.as_ptr(), 2, out.as_mut_ptr(), 7),
                CLEF_INVALID_ARGUMENT
            );
            assert!(h.take_service_error().unwrap().contains("out_len is 7"));
            assert_eq!(
                (HOST.features)(raw, x.as_ptr(), 2, out.as_mut_ptr(), 6),
                CLEF_OK
            );
            let cot = [1.0f32; 8];
            assert_eq!(
                (HOST.vjp)(raw, x.as_ptr(), 2, cot.as_ptr(), 6),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!((HOST.vjp)(raw, x.as_ptr(), 2, cot.as_ptr(), 8), CLEF_OK);
            assert_eq!(
                (HOST.forward)(raw, std::ptr::null(), 2, out.as_mut_ptr(), 8),
                CLEF_INVALID_ARGUMENT
            );
            let mut gram = [0.0f64; 4];
            assert_eq!(
                (HOST.ntk_gram)(raw, x.as_ptr(), 2, x.as_ptr(), 2, 0, gram.as_mut_ptr(), 4),
                CLEF_OK
            );
            assert!(gram[0] > 0.0 && (gram[1] - gram[2]).abs() <= 1e-9 * gram[1].abs());
            assert_eq!(
                (HOST.ntk_gram)(raw, x.as_ptr(), 2, x.as_ptr(), 2, 0, gram.as_mut_ptr(), 3),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!(
                (HOST.ntk_gram)(raw, x.as_ptr(), 2, x.as_ptr(), 2, 99, gram.as_mut_ptr(), 4),
                CLEF_INVALID_ARGUMENT
            );
            // Expert pools are task-IL only (this world is not).
            let mut id = 0i64;
            assert_eq!(
                (HOST.expert_add)(raw, std::ptr::null(), 0, 0, &mut id),
                CLEF_NOT_ALLOWED
            );
            assert_eq!((HOST.expert_select)(raw, 0), CLEF_NOT_ALLOWED);
            assert!((HOST.get_extension)(raw, c"clef.x.v1".as_ptr()).is_null());
        }
    });
    assert!(w.net.params().grads().iter().flatten().any(|&g| g != 0.0));
}

#[test]
fn task_data_is_only_for_tasks_seen_so_far() {
    let mut w = world(Setting::TaskIl);
    let units1 = w.sc.tasks[0].units.clone();
    with_ctx(&mut w, 0, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        let mut x = vec![0.0f32; 2 * DIM];
        let mut y = vec![0i64; 2];
        let mut mask = vec![0u8; 4];
        // SAFETY: live ctx; buffers of the documented sizes.
        unsafe {
            assert_eq!(
                (HOST.task_samples)(
                    raw,
                    0,
                    CLEF_SPLIT_TRAIN,
                    1,
                    2,
                    x.as_mut_ptr(),
                    y.as_mut_ptr()
                ),
                CLEF_OK
            );
            assert!(y.iter().all(|&t| units1.contains(&(t as usize))));
            assert!(x.iter().any(|&v| v != 0.0));
            assert_eq!(
                (HOST.task_samples)(
                    raw,
                    1,
                    CLEF_SPLIT_TRAIN,
                    0,
                    2,
                    x.as_mut_ptr(),
                    y.as_mut_ptr()
                ),
                CLEF_NOT_ALLOWED
            );
            assert_eq!(
                (HOST.task_samples)(
                    raw,
                    0,
                    CLEF_SPLIT_TEST,
                    0,
                    2,
                    x.as_mut_ptr(),
                    y.as_mut_ptr()
                ),
                CLEF_NOT_ALLOWED,
                "test samples are for evaluation only"
            );
            assert_eq!(
                (HOST.task_samples)(raw, 0, 9, 0, 2, x.as_mut_ptr(), y.as_mut_ptr()),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!((HOST.task_mask)(raw, 0, mask.as_mut_ptr(), 4), CLEF_OK);
            assert_eq!(mask.iter().filter(|&&b| b == 1).count(), 2);
            assert_eq!((HOST.task_mask)(raw, 1, mask.as_mut_ptr(), 4), CLEF_OK);
            assert_eq!(mask.iter().filter(|&&b| b == 1).count(), 2);
            assert_eq!(
                (HOST.task_mask)(raw, 0, mask.as_mut_ptr(), 3),
                CLEF_INVALID_ARGUMENT
            );
            let mut b = std::mem::zeroed::<ClefBatch>();
            assert_eq!((HOST.batch_get)(raw, &mut b), CLEF_NOT_ALLOWED);
            assert_eq!(
                (HOST.batch_append)(raw, x.as_ptr(), 1, y.as_ptr(), std::ptr::null()),
                CLEF_NOT_ALLOWED
            );
            assert!(h
                .take_service_error()
                .unwrap()
                .contains("only available in before_batch"));
        }
    });
}

#[test]
fn batch_append_checks_masks_and_keeps_the_view_valid() {
    let mut w = world(Setting::TaskIl);
    let t0 = w.sc.tasks[0].units.clone();
    let t1 = w.sc.tasks[1].units.clone();
    let mut batch = Batch {
        x: vec![0.5; 2 * DIM],
        targets: vec![t1[0], t1[1]],
        mask: w.sc.train_mask(1),
        row_masks: None,
        current_rows: 2,
    };
    let x = [1.0f32; DIM];
    with_ctx(&mut w, 1, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), Some(&mut batch));
        let raw = h.as_raw();
        // SAFETY: live ctx and batch; buffers of the documented sizes.
        unsafe {
            let mut view = std::mem::zeroed::<ClefBatch>();
            assert_eq!((HOST.batch_get)(raw, &mut view), CLEF_OK);
            assert_eq!(
                (view.rows, view.cols, view.current_rows),
                (2, DIM as i64, 2)
            );
            // A row of task 0 without a mask: its target is outside task 1's head.
            let target = [t0[0] as i64];
            assert_eq!(
                (HOST.batch_append)(raw, x.as_ptr(), 1, target.as_ptr(), std::ptr::null()),
                CLEF_INVALID_ARGUMENT
            );
            // With its own head it is accepted.
            let mut m = [0u8; 4];
            for &u in &t0 {
                m[u] = 1;
            }
            assert_eq!(
                (HOST.batch_append)(raw, x.as_ptr(), 1, target.as_ptr(), m.as_ptr()),
                CLEF_OK
            );
            let same = [t1[1] as i64];
            assert_eq!(
                (HOST.batch_append)(raw, x.as_ptr(), 1, same.as_ptr(), std::ptr::null()),
                CLEF_OK
            );
            // The view still shows the original rows (appends are merged after the hook).
            let mut again = std::mem::zeroed::<ClefBatch>();
            assert_eq!((HOST.batch_get)(raw, &mut again), CLEF_OK);
            assert_eq!((again.rows, again.x), (2, view.x));
        }
        for (x, t, m) in h.take_appended() {
            batch.append_rows(&x, &t, m.as_deref(), 4);
        }
    });
    assert_eq!(batch.rows(), 4);
    let row_masks = batch.row_masks.as_ref().unwrap();
    assert_eq!(row_masks.len(), 16);
    assert!(batch.row_mask(2, 4).unwrap()[t0[0]]);
    assert_eq!(batch.row_mask(3, 4), batch.mask.as_deref());
    assert_eq!(batch.row_mask(0, 4), batch.mask.as_deref());
}

#[test]
fn report_checks_key_and_value_and_keeps_the_values() {
    let mut w = world(Setting::TaskIl);
    with_ctx(&mut w, 1, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        let long = CString::new("k".repeat(MAX_REPORT_KEY + 1)).unwrap();
        // SAFETY: a live HostCtx over a live Ctx; NUL-terminated keys.
        unsafe {
            assert_eq!((HOST.report)(raw, c"density.total".as_ptr(), 0.25), CLEF_OK);
            assert_eq!((HOST.report)(raw, c"free".as_ptr(), 7.0), CLEF_OK);
            assert_eq!(
                (HOST.report)(raw, c"a b".as_ptr(), 1.0),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!((HOST.report)(raw, c"".as_ptr(), 1.0), CLEF_INVALID_ARGUMENT);
            assert_eq!(
                (HOST.report)(raw, long.as_ptr(), 1.0),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!(
                (HOST.report)(raw, std::ptr::null(), 1.0),
                CLEF_INVALID_ARGUMENT
            );
            assert_eq!(
                (HOST.report)(raw, c"x".as_ptr(), f64::NAN),
                CLEF_INVALID_ARGUMENT
            );
            assert!(h.take_service_error().unwrap().contains("must be finite"));
        }
        assert_eq!(
            h.take_reports(),
            vec![
                ("density.total".to_string(), 0.25),
                ("free".to_string(), 7.0)
            ]
        );
    });
    let mut h = HostCtx::new("t", None, None);
    // SAFETY: a live HostCtx without a training context.
    let code = unsafe { (HOST.report)(h.as_raw(), c"x".as_ptr(), 1.0) };
    assert_eq!(code, CLEF_NOT_ALLOWED);
}

#[test]
fn contexts_without_training_refuse_services() {
    let mut h = HostCtx::new("t", None, None);
    let raw = h.as_raw();
    // SAFETY: a live HostCtx; null ctx is allowed and must be refused.
    unsafe {
        assert_eq!((HOST.param_count)(raw), CLEF_NOT_ALLOWED as i64);
        assert_eq!(
            (HOST.param_count)(std::ptr::null_mut()),
            CLEF_INVALID_ARGUMENT as i64
        );
        (HOST.log)(std::ptr::null_mut(), CLEF_LOG_INFO, c"hello".as_ptr());
        (HOST.log)(raw, 99, std::ptr::null());
    }
    assert!(h
        .take_service_error()
        .unwrap()
        .contains("save_state/load_state"));
}

/// A task-IL world of two 2-class tasks of 1x4x4 blobs on a ConvNet conv3x3 2-2 with batch
/// norm and a linear head (PyTorch initialisation), SGD, its expert pool over the same spec.
fn bn_convnet_world() -> World {
    let data = Arc::new(clef_data::synthetic::gaussian_blobs(4, 16, 6, 3, 1.0, 0));
    let sc =
        clef_data::scenario::build(&ScenarioConfig::class_split(2, 2), data, Setting::TaskIl, 0)
            .unwrap();
    let spec = clef_backend::ModelSpec::ConvNet(clef_backend::ConvNetSpec {
        input: clef_backend::ImageShape {
            channels: 1,
            height: 4,
            width: 4,
        },
        channels: vec![2, 2],
        hidden: Vec::new(),
        output: sc.num_outputs,
        norm: clef_backend::Norm::Batch,
        activation: Activation::Relu,
        init: Init::TorchDefault,
        pool: Default::default(),
    });
    let net = build_network(&spec, 1).unwrap();
    let opt = sgd(&*net);
    World {
        experts: clef_engine::experts::Experts::new(&spec, 3, sc.tasks.len()),
        sc,
        net,
        opt,
        rng: ChaCha8Rng::seed_from_u64(7),
    }
}

/// A ConvNet with batch norm over the host: `param_info` reports the running statistics as
/// buffers (role, shape, names), and `optimizer_state` refuses them by name.
#[test]
fn batch_norm_buffers_are_reported_and_have_no_optimizer_state() {
    let mut w = bn_convnet_world();
    let buffer = w
        .net
        .params()
        .infos()
        .iter()
        .position(|i| i.name == "norms.0.running_mean")
        .expect("a running mean");
    with_ctx(&mut w, 0, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        // SAFETY (whole test): `raw` is a live HostCtx over a live Ctx, and every out
        // pointer is a live local.
        unsafe {
            let mut pi = std::mem::zeroed::<ClefParamInfo>();
            assert_eq!((HOST.param_info)(raw, buffer as i64, &mut pi), CLEF_OK);
            assert_eq!(
                CStr::from_ptr(pi.name).to_str().unwrap(),
                "norms.0.running_mean"
            );
            assert_eq!((pi.role, pi.ndim, pi.numel), (CLEF_ROLE_BUFFER, 1, 2));
            assert_eq!((HOST.param_info)(raw, 0, &mut pi), CLEF_OK);
            assert_eq!(
                (pi.role, pi.ndim, pi.shape),
                (CLEF_ROLE_WEIGHT, 4, [2, 1, 3, 3])
            );
            let mut m = EMPTY_TENSOR;
            assert_eq!(
                (HOST.optimizer_state)(raw, c"momentum".as_ptr(), 0, &mut m),
                CLEF_OK
            );
            assert_eq!(
                (HOST.optimizer_state)(raw, c"momentum".as_ptr(), buffer as i64, &mut m),
                CLEF_UNSUPPORTED
            );
            let e = h.take_service_error().unwrap();
            assert!(
                e.contains("norms.0.running_mean") && e.contains("buffer"),
                "{e}"
            );
        }
    });
}

#[test]
fn conv_experts_have_the_trials_image_shape_norm_and_a_counted_body() {
    let mut w = bn_convnet_world();
    let outs = w.sc.num_outputs;
    let x: Vec<f32> = (0..2 * 16).map(|i| i as f32 * 0.05 - 0.7).collect();
    with_ctx(&mut w, 0, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        let (mut id, mut n) = (-1i64, 0i64);
        // SAFETY (whole test): live ctx; buffers of the documented sizes.
        unsafe {
            assert_eq!(
                (HOST.expert_add_conv)(raw, [3i64].as_ptr(), 1, [5i64].as_ptr(), 1, &mut id),
                CLEF_OK
            );
            assert_eq!(id, 1);
            assert_eq!((HOST.expert_select)(raw, 1), CLEF_OK);
            // conv (no bias before a norm), norm weight/bias/running_mean/running_var, the
            // dense layer and the head.
            assert_eq!((HOST.param_count)(raw), 9);
            let mut pi = std::mem::zeroed::<ClefParamInfo>();
            assert_eq!((HOST.param_info)(raw, 0, &mut pi), CLEF_OK);
            assert_eq!((pi.ndim, pi.shape), (4, [3, 1, 3, 3]));
            assert_eq!((HOST.param_info)(raw, 5, &mut pi), CLEF_OK);
            // One conv, no pooling: 3·4·4 = 48 features into the dense layer of 5.
            assert_eq!((pi.ndim, &pi.shape[..2]), (2, &[5, 48][..]));
            // Body: conv 3·9 = 27, norm 3 + 3, dense 48·5 + 5 = 245 (buffers do not count);
            // task 0's 2-unit head 2·(5 + 1) = 12.
            assert_eq!((HOST.expert_params)(raw, 1, &mut n), CLEF_OK);
            assert_eq!(n, 27 + 6 + 245 + 12);
            let mut a = vec![0.0f32; 2 * outs];
            let mut b = vec![0.0f32; 2 * outs];
            assert_eq!(
                (HOST.forward)(raw, x.as_ptr(), 2, a.as_mut_ptr(), a.len() as i64),
                CLEF_OK
            );
            assert_eq!(
                (HOST.head_forward)(raw, 0, x.as_ptr(), 2, b.as_mut_ptr(), b.len() as i64),
                CLEF_OK
            );
            assert_eq!(a, b);
            assert!(a.iter().all(|v| v.is_finite()) && a.iter().any(|&v| v != 0.0));
            // An MLP expert on the same trial reads the flattened image.
            assert_eq!(
                (HOST.expert_add)(raw, [4i64].as_ptr(), 1, 0, &mut id),
                CLEF_OK
            );
            assert_eq!(id, 2);
            assert_eq!((HOST.expert_params)(raw, 2, &mut n), CLEF_OK);
            assert_eq!(n, 16 * 4 + 4);
            // Too many poolings for a 4x4 image: the spec check's message comes back.
            assert_eq!(
                (HOST.expert_add_conv)(raw, [2i64; 6].as_ptr(), 6, std::ptr::null(), 0, &mut id),
                clef_abi::CLEF_ERROR
            );
            let e = h.take_service_error().unwrap();
            assert!(e.contains("expert_add_conv"), "{e}");
        }
    });
}

#[test]
fn conv_experts_are_refused_on_an_mlp_trial() {
    let mut w = world(Setting::TaskIl);
    with_ctx(&mut w, 0, |ctx| {
        let mut h = HostCtx::new("t", Some(ctx), None);
        let raw = h.as_raw();
        let mut id = -1i64;
        // SAFETY: live ctx and out value.
        let code = unsafe {
            (HOST.expert_add_conv)(raw, [3i64].as_ptr(), 1, std::ptr::null(), 0, &mut id)
        };
        assert_eq!(code, CLEF_NOT_ALLOWED);
        assert_eq!(id, -1);
        let e = h.take_service_error().unwrap();
        assert!(e.contains("convolutional backbone"), "{e}");
    });
}

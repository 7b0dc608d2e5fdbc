//! The layer's own rules on a toy model (the real host and the mock are compared with each
//! other in `framework/host/tests/service_conformance/`).

use std::ffi::c_char;

use clef_abi::{
    ClefHost, ClefTensor, CLEF_ERROR, CLEF_INVALID_ARGUMENT, CLEF_NOT_ALLOWED, CLEF_OK,
    CLEF_ROLE_WEIGHT, CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL,
    CLEF_UNSUPPORTED,
};

use super::*;

/// One 2-value parameter, one task with units [0, 1]; `forward` panics.
struct Toy {
    access: Access,
    values: Vec<f32>,
    logs: Vec<String>,
    refused: Vec<&'static str>,
}

impl ServiceModel for Toy {
    fn access(&self) -> Access {
        self.access
    }
    fn log(&mut self, _level: i32, message: &str) {
        self.logs.push(message.to_owned());
    }
    fn log_without_ctx(_level: i32, _message: &str) {}
    fn refused(&mut self, service: &'static str, _error: &ServiceError) {
        self.refused.push(service);
    }
    fn facts(&self) -> Facts {
        Facts {
            setting: CLEF_SETTING_TASK_IL,
            task: 0,
            num_tasks: 1,
            input_dim: 1,
            num_outputs: 2,
            feature_dim: 1,
            num_threads: 1,
            seed: 3,
        }
    }
    fn task_facts(&self, _task: usize) -> TaskFacts<'_> {
        TaskFacts {
            units: &[0, 1],
            train_samples: 2,
            test_samples: 0,
        }
    }
    fn rng_u64(&mut self) -> u64 {
        7
    }
    fn param_count(&self) -> usize {
        1
    }
    fn param_info(&self, _index: usize) -> ParamFacts<'_> {
        ParamFacts {
            name: "w",
            shape: &[2],
            role: CLEF_ROLE_WEIGHT,
            layer: 0,
            numel: 2,
        }
    }
    fn param_values(&mut self, _index: usize) -> View {
        self.values.view()
    }
    fn param_grads(&mut self, _index: usize) -> View {
        self.values.view()
    }
    fn optimizer_slots(&self) -> Vec<&'static str> {
        vec!["momentum"]
    }
    fn optimizer_state(&mut self, _slot: &str, _index: usize) -> Option<View> {
        None
    }
    fn forward(&mut self, _x: &[f32], _rows: usize, _out: &mut Vec<f32>) -> ServiceResult {
        panic!("a host bug")
    }
    fn features(&mut self, _x: &[f32], _rows: usize, out: &mut Vec<f32>) -> ServiceResult {
        // One value too many: the layer checks what the model produced.
        out.clear();
        out.extend([1.0, 2.0]);
        Ok(())
    }
    fn vjp(&mut self, _x: &[f32], _rows: usize, _cotangent: &[f32]) -> ServiceResult {
        Ok(())
    }
    fn ntk_gram(
        &mut self,
        _a: &[f32],
        _rows_a: usize,
        _b: &[f32],
        _rows_b: usize,
        _output: usize,
        _out: &mut [f64],
    ) -> ServiceResult {
        Err(ServiceError::unsupported("no NTK here"))
    }
    fn batch(&self) -> Option<BatchRef<'_>> {
        None
    }
    fn append_rows(&mut self, _rows: Rows) {}
    fn task_samples(
        &mut self,
        _task: usize,
        _start: usize,
        _rows: usize,
        _x: &mut Vec<f32>,
        _targets: &mut Vec<usize>,
    ) -> ServiceResult {
        Ok(())
    }
    fn report(&mut self, _key: String, _value: f64) {}
}

fn toy(access: Access) -> HostCall<Toy> {
    HostCall::new(Toy {
        access,
        values: vec![1.0, 2.0],
        logs: Vec::new(),
        refused: Vec::new(),
    })
}

fn table_of() -> &'static ClefHost {
    host_table::<Toy>()
}

#[test]
fn a_null_context_is_refused_and_a_panic_is_an_error() {
    let h = table_of();
    let mut call = toy(Access::Training);
    let raw = call.as_raw();
    let x = [1.0f32];
    let mut out = [0.0f32; 2];
    // SAFETY: a live context of the toy's table; buffers of the documented sizes.
    unsafe {
        assert_eq!(
            (h.param_count)(std::ptr::null_mut()),
            i64::from(CLEF_INVALID_ARGUMENT)
        );
        assert_eq!(
            (h.forward)(raw, x.as_ptr(), 1, out.as_mut_ptr(), 2),
            CLEF_ERROR
        );
    }
    assert_eq!(
        call.take_service_error().as_deref(),
        Some("forward: the host panicked (a clef bug)")
    );
    // SAFETY: as above.
    let s = unsafe { (h.features)(raw, x.as_ptr(), 1, out.as_mut_ptr(), 1) };
    assert_eq!(s, CLEF_ERROR);
    assert_eq!(
        call.take_service_error().as_deref(),
        Some("features: the backend produced 2 values, expected 1")
    );
    assert_eq!(call.model().refused, ["forward", "features"]);
}

#[test]
fn without_training_context_only_log_is_served() {
    let h = table_of();
    let mut call = toy(Access::NoTraining);
    let raw = call.as_raw();
    let mut t = ClefTensor {
        data: std::ptr::null_mut(),
        numel: 0,
        ndim: 0,
        writable: 0,
        shape: [0; 4],
    };
    // SAFETY: a live context; a live out-struct; NUL-terminated strings.
    unsafe {
        (h.log)(raw, 3, c"kept".as_ptr());
        (h.log)(raw, 3, std::ptr::null::<c_char>());
        assert_eq!((h.param_values)(raw, 0, &mut t), CLEF_NOT_ALLOWED);
        assert_eq!((h.rng_u64)(raw), 0);
        assert_eq!((h.report)(raw, c"k".as_ptr(), 1.0), CLEF_NOT_ALLOWED);
    }
    assert_eq!(call.model().logs, ["kept"]);
    assert_eq!(
        call.take_service_error().as_deref(),
        Some("report: not available in save_state/load_state (no training context)")
    );
    assert!(call.task_info().is_err());
}

#[test]
fn views_ntk_and_batch_rules() {
    let h = table_of();
    let mut call = toy(Access::Training);
    let raw = call.as_raw();
    let mut t = ClefTensor {
        data: std::ptr::null_mut(),
        numel: 0,
        ndim: 0,
        writable: 0,
        shape: [0; 4],
    };
    let mut gram = [0.0f64; 1];
    let x = [1.0f32];
    // SAFETY: a live context; live out-structs and buffers.
    unsafe {
        assert_eq!((h.param_values)(raw, 0, &mut t), CLEF_OK);
        assert_eq!(
            (t.numel, t.ndim, t.shape, t.writable),
            (2, 1, [2, 1, 1, 1], 1)
        );
        assert_eq!(*t.data.add(1), 2.0);
        assert_eq!((h.param_values)(raw, 1, &mut t), CLEF_INVALID_ARGUMENT);
        assert_eq!(
            (h.optimizer_state)(raw, c"exp_avg".as_ptr(), 0, &mut t),
            CLEF_UNSUPPORTED
        );
        assert_eq!(
            call.take_service_error().as_deref(),
            Some("optimizer_state: the optimizer has no state slot \"exp_avg\" (it has: momentum)")
        );
        // `take_service_error` borrowed `call` mutably, which ends the old pointer's validity.
        let raw = call.as_raw();
        assert_eq!(
            (h.ntk_gram)(raw, x.as_ptr(), 1, x.as_ptr(), 1, 0, gram.as_mut_ptr(), 1),
            CLEF_UNSUPPORTED
        );
        let mut b = std::mem::zeroed::<clef_abi::ClefBatch>();
        assert_eq!((h.batch_get)(raw, &mut b), CLEF_NOT_ALLOWED);
    }
    // A host that says `before_batch` but has no batch is a host bug, not a plugin error.
    call.model_mut().access = Access::BeforeBatch;
    let raw = call.as_raw();
    // SAFETY: as above.
    let s = unsafe { (h.batch_get)(raw, &mut std::mem::zeroed()) };
    assert_eq!(s, CLEF_ERROR);
}

#[test]
fn training_units_report_keys_and_activation_codes() {
    let units: [&[usize]; 3] = [&[0, 1], &[2, 3], &[1, 4]];
    let of = |j: usize| units[j];
    assert_eq!(
        training_units(CLEF_SETTING_TASK_IL, 1, 5, of),
        Some(vec![2, 3])
    );
    assert_eq!(
        training_units(CLEF_SETTING_CLASS_IL, 2, 5, of),
        Some(vec![0, 1, 2, 3, 4])
    );
    assert_eq!(
        training_units(CLEF_SETTING_CLASS_IL, 0, 5, of),
        Some(vec![0, 1])
    );
    assert_eq!(
        training_units(CLEF_SETTING_DOMAIN_IL, 0, 3, of),
        Some(vec![0, 1, 2])
    );
    assert_eq!(training_units(9, 0, 3, of), None);
    assert!(valid_report_key(b"density.layers.0.weight"));
    assert!(!valid_report_key(b""));
    assert!(!valid_report_key(b"a b"));
    assert!(!valid_report_key(&[b'a'; MAX_REPORT_KEY + 1]));
    for code in 0..3 {
        assert_eq!(
            Activation::from_code(code).map(Activation::code),
            Some(code)
        );
    }
    assert_eq!(Activation::from_code(3), None);
}

/// The table states this ABI version and its own size.
#[test]
fn the_table_states_its_version_and_size() {
    assert_eq!(
        (table_of().abi_major, table_of().abi_minor),
        (clef_abi::CLEF_ABI_MAJOR, clef_abi::CLEF_ABI_MINOR)
    );
    assert_eq!(
        table_of().struct_size as usize,
        std::mem::size_of::<ClefHost>()
    );
}

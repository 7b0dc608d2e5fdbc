//! Descriptors: the one `export_plugin!` would export, and a descriptor read back into Rust
//! values.

use std::any::TypeId;
use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::sync::Mutex;

use clef_abi::ClefPluginDescriptor;

use crate::export::{entry, DescriptorCell};
use crate::Strategy;

/// The descriptor `export_plugin!(S)` would export, built through the same code (with
/// version `S::VERSION` or `"0.0.0"`). Lets one test binary drive several strategies.
pub fn descriptor_of<S: Strategy>() -> &'static ClefPluginDescriptor {
    static CELLS: Mutex<Option<HashMap<TypeId, &'static DescriptorCell>>> = Mutex::new(None);
    let cell = {
        let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
        *cells
            .get_or_insert_with(HashMap::new)
            .entry(TypeId::of::<S>())
            .or_insert_with(|| Box::leak(Box::new(DescriptorCell::new())))
    };
    let desc = entry::<S>(cell, "0.0.0");
    assert!(
        !desc.is_null(),
        "building the descriptor of `{}` panicked",
        S::NAME
    );
    // SAFETY: `entry` returns a pointer into a leaked, never-freed cell.
    unsafe { &*desc }
}

/// A hyperparameter as read back from a descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct HParamInfo {
    /// Key.
    pub name: String,
    /// `CLEF_HPARAM_*` kind.
    pub kind: u32,
    /// `CLEF_HPARAM_LOG_SCALE` ...
    pub flags: u32,
    /// Default (float, int, bool 0/1, or choice index).
    pub default_value: f64,
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
    /// Choices (for `CLEF_HPARAM_CHOICE`).
    pub choices: Vec<String>,
    /// Description.
    pub doc: String,
}

/// A descriptor read back into Rust values.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// ABI major.
    pub abi_major: u16,
    /// ABI minor.
    pub abi_minor: u16,
    /// Descriptor size.
    pub struct_size: u32,
    /// Strategy name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Schema.
    pub hparams: Vec<HParamInfo>,
}

/// # Safety
/// `p` must be null or a NUL-terminated string.
pub(super) unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Reads a descriptor's strings and schema.
///
/// # Safety
/// `desc` must point to a valid descriptor (as a plugin's entry point returns).
pub unsafe fn describe(desc: *const ClefPluginDescriptor) -> PluginInfo {
    // SAFETY: valid descriptor (caller).
    let d = unsafe { &*desc };
    let raw: &[clef_abi::ClefHparam] = if d.n_hparams == 0 || d.hparams.is_null() {
        &[]
    } else {
        // SAFETY: `n_hparams` entries (descriptor contract).
        unsafe { std::slice::from_raw_parts(d.hparams, d.n_hparams) }
    };
    let hparams = raw
        .iter()
        .map(|h| {
            let choices = if h.choices.is_null() {
                Vec::new()
            } else {
                // SAFETY: `n_choices` C strings (descriptor contract).
                unsafe { std::slice::from_raw_parts(h.choices, h.n_choices) }
                    .iter()
                    // SAFETY: each is a NUL-terminated string.
                    .map(|&c| unsafe { string(c) })
                    .collect()
            };
            HParamInfo {
                // SAFETY: NUL-terminated strings (descriptor contract).
                name: unsafe { string(h.name) },
                kind: h.kind,
                flags: h.flags,
                default_value: h.default_value,
                min: h.min,
                max: h.max,
                choices,
                // SAFETY: as above.
                doc: unsafe { string(h.doc) },
            }
        })
        .collect();
    PluginInfo {
        abi_major: d.abi_major,
        abi_minor: d.abi_minor,
        struct_size: d.struct_size,
        // SAFETY: NUL-terminated strings (descriptor contract).
        name: unsafe { string(d.name) },
        // SAFETY: as above.
        version: unsafe { string(d.version) },
        // SAFETY: as above.
        description: unsafe { string(d.description) },
        hparams,
    }
}

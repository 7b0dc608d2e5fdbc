//! Loading a plugin library: the handshake, the descriptor, the process-wide registry.
//!
//! A library is opened once per process (keyed by its canonical path) and never unloaded: the
//! [`libloading::Library`] is leaked, so every pointer the plugin hands out (descriptor,
//! strings, function pointers) stays valid for the life of the process. Failed loads are cached
//! too, so a broken file is opened (and its error reported) once.

use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use clef_abi::{
    ClefEntryFn, ClefHparam, ClefPluginDescriptor, CLEF_ABI_MAJOR, CLEF_ABI_MINOR,
    CLEF_BACKBONE_CONV, CLEF_DESCRIPTOR_SIZE_V1_0, CLEF_DESCRIPTOR_SIZE_V1_3,
    CLEF_DESCRIPTOR_SIZE_V1_4, CLEF_DESCRIPTOR_SIZE_V1_6, CLEF_ENTRY_SYMBOL, CLEF_HPARAM_BOOL,
    CLEF_HPARAM_CHOICE, CLEF_HPARAM_FLOAT, CLEF_HPARAM_INT, CLEF_HPARAM_LOG_SCALE,
    CLEF_HPARAM_NEEDS_PAST_TASKS,
};

use super::discover::name_from_file;
use clef_engine::strategy::{HParamKind, HParamSpec, HValue};

/// Why a plugin library could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist.
    #[error("plugin {}: no such file", path.display())]
    NoSuchFile {
        /// The path tried.
        path: PathBuf,
    },
    /// The dynamic loader refused the file (not a shared library, wrong architecture, missing
    /// dependency ...).
    #[error("plugin {}: cannot load it as a shared library: {message}", path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The library does not export the entry symbol.
    #[error("plugin {}: no symbol `clef_plugin_entry_v1`; is it a clef plugin?", path.display())]
    MissingEntry {
        /// The file.
        path: PathBuf,
    },
    /// The entry point returned null.
    #[error("plugin {}: `clef_plugin_entry_v1` returned no descriptor (null)", path.display())]
    NullDescriptor {
        /// The file.
        path: PathBuf,
    },
    /// The plugin was built for another ABI major version.
    #[error(
        "plugin `{name}` ({}) was built for clef plugin ABI {major}.{minor}; this clef supports \
         ABI {CLEF_ABI_MAJOR}.x",
        path.display()
    )]
    AbiMismatch {
        /// Name guessed from the file name (the descriptor is not read any further).
        name: String,
        /// The file.
        path: PathBuf,
        /// The plugin's ABI major.
        major: u16,
        /// The plugin's ABI minor.
        minor: u16,
    },
    /// The descriptor is smaller than its declared minor version requires.
    #[error(
        "plugin `{name}` ({}) declares ABI {CLEF_ABI_MAJOR}.{minor} but its descriptor has \
         {size} bytes; that version needs at least {required}",
        path.display()
    )]
    DescriptorTooSmall {
        /// Name guessed from the file name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The plugin's ABI minor.
        minor: u16,
        /// The declared `struct_size`.
        size: u32,
        /// The size the minor version requires.
        required: usize,
    },
    /// The descriptor's content is malformed (null name, bad schema ...).
    #[error("plugin {}: invalid descriptor: {message}", path.display())]
    BadDescriptor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What a plugin declares about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Strategy name used in configs.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One-line description.
    pub description: String,
    /// The library file.
    pub path: PathBuf,
    /// ABI `(major, minor)` the plugin was built against.
    pub abi: (u16, u16),
    /// Hyperparameter schema.
    pub hparams: Vec<HParamSpec>,
    /// Names of the hooks the plugin implements (non-null entries).
    pub hooks: Vec<&'static str>,
    /// True if the plugin declares convolutional backbones (`CLEF_BACKBONE_CONV`, ABI 1.4);
    /// older plugins and those without the bit run on MLPs only.
    pub conv: bool,
}

impl PluginInfo {
    /// The schema entry called `name`.
    pub fn hparam(&self, name: &str) -> Option<&HParamSpec> {
        self.hparams.iter().find(|h| h.name == name)
    }
}

/// A loaded plugin: its description and its (static) descriptor.
pub struct LoadedPlugin {
    /// What the plugin declares.
    pub info: PluginInfo,
    /// Hash of the library file's bytes when it was loaded ([`library_hash`]): part of every
    /// trial's identity, so a rebuilt plugin runs its trials again.
    pub library_hash: String,
    /// The host's copy of the descriptor (fields past the plugin's `struct_size` are null).
    pub(crate) desc: &'static ClefPluginDescriptor,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("info", &self.info)
            .field("library_hash", &self.library_hash)
            .finish_non_exhaustive()
    }
}

type Registry = Mutex<HashMap<PathBuf, Result<&'static LoadedPlugin, LoadError>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Loads the plugin library at `path` (once per process; later calls with the same file return
/// the same plugin or the same error).
pub fn load(path: &Path) -> Result<&'static LoadedPlugin, LoadError> {
    if !path.is_file() {
        return Err(LoadError::NoSuchFile {
            path: path.to_path_buf(),
        });
    }
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    // A poisoned lock only means another thread panicked while loading; the map is still
    // consistent (entries are inserted whole).
    let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = map.get(&key) {
        return r.clone();
    }
    let result = load_uncached(&key);
    if let Ok(p) = &result {
        tracing::debug!(
            plugin = p.info.name,
            version = p.info.version,
            path = %key.display(),
            "loaded plugin"
        );
    }
    map.insert(key, result.clone());
    result
}

/// The first fields of every descriptor version: read before anything else.
#[repr(C)]
struct DescriptorHead {
    abi_major: u16,
    abi_minor: u16,
    struct_size: u32,
}

/// Bytes of the descriptor an ABI `1.minor` plugin must provide. Fields are append-only; ABI
/// 1.0 to 1.2 is every field up to `load_state`, 1.3 adds `create_typed`, 1.4 `backbones`, 1.6
/// the `loss` and `predict` hooks. A plugin newer than this host (`minor > CLEF_ABI_MINOR`) is
/// read as far as this host knows.
fn required_descriptor_size(minor: u16) -> usize {
    if minor >= 6 {
        CLEF_DESCRIPTOR_SIZE_V1_6
    } else if minor >= 4 {
        CLEF_DESCRIPTOR_SIZE_V1_4
    } else if minor >= 3 {
        CLEF_DESCRIPTOR_SIZE_V1_3
    } else {
        CLEF_DESCRIPTOR_SIZE_V1_0
    }
}

/// The host's copy of a plugin's descriptor: the first `size` bytes of the plugin's, the fields
/// past them (added by later minor versions) null, so an older plugin's missing trailing
/// hooks read as absent. Leaked: it lives as long as the (never unloaded) library.
///
/// # Safety
/// `desc_ptr` must point to at least `size` readable bytes of static plugin data, with
/// `size <= size_of::<ClefPluginDescriptor>()`.
unsafe fn copy_descriptor(
    desc_ptr: *const ClefPluginDescriptor,
    size: usize,
) -> &'static ClefPluginDescriptor {
    let mut copy = std::mem::MaybeUninit::<ClefPluginDescriptor>::zeroed();
    // SAFETY: `size` readable bytes at `desc_ptr` (caller) and `size` writable bytes in
    // `copy`, which is at most as large; the two do not overlap (`copy` is a local).
    unsafe {
        std::ptr::copy_nonoverlapping(desc_ptr.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), size)
    };
    // SAFETY: every field of the descriptor is an integer, a raw pointer or an
    // `Option<extern fn>`, for which all-zero bytes are valid (0, null, `None`); the copied
    // prefix holds the plugin's values of those fields.
    Box::leak(Box::new(unsafe { copy.assume_init() }))
}

fn load_uncached(path: &Path) -> Result<&'static LoadedPlugin, LoadError> {
    // SAFETY: opening a library runs its initialisers. That is the point of a plugin system:
    // the user asked for this file to be loaded as a clef plugin and trusts its code.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::NotALibrary {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Never unloaded: plugin code may have registered thread-local destructors, and the
    // descriptor, strings and hooks must outlive every instance.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol, if present, has the type the ABI fixes for it (`ClefEntryFn`).
    let entry: libloading::Symbol<'static, ClefEntryFn> = unsafe { lib.get(CLEF_ENTRY_SYMBOL) }
        .map_err(|_| LoadError::MissingEntry {
            path: path.to_path_buf(),
        })?;
    let entry: ClefEntryFn = *entry;
    // SAFETY: the ABI's entry point takes no arguments and returns a pointer to static data;
    // it must not unwind (the SDK catches panics; C cannot unwind).
    let desc_ptr = unsafe { entry() };
    if desc_ptr.is_null() {
        return Err(LoadError::NullDescriptor {
            path: path.to_path_buf(),
        });
    }
    let guessed = name_from_file(path).unwrap_or_else(|| path.display().to_string());
    if !desc_ptr.cast::<DescriptorHead>().is_aligned()
        || !desc_ptr.cast::<ClefPluginDescriptor>().is_aligned()
    {
        return Err(bad(path, "the descriptor pointer is misaligned"));
    }
    // SAFETY: non-null and aligned; every descriptor version starts with these three fields,
    // which is all that is read before they are checked.
    let head = unsafe { &*desc_ptr.cast::<DescriptorHead>() };
    if head.abi_major != CLEF_ABI_MAJOR {
        return Err(LoadError::AbiMismatch {
            name: guessed,
            path: path.to_path_buf(),
            major: head.abi_major,
            minor: head.abi_minor,
        });
    }
    let required = required_descriptor_size(head.abi_minor);
    if (head.struct_size as usize) < required {
        return Err(LoadError::DescriptorTooSmall {
            name: guessed,
            path: path.to_path_buf(),
            minor: head.abi_minor,
            size: head.struct_size,
            required,
        });
    }
    // Read only the bytes the plugin declares: a 1.0-1.2 descriptor ends before `create_typed`.
    let size = (head.struct_size as usize).min(std::mem::size_of::<ClefPluginDescriptor>());
    // SAFETY: the plugin declares `struct_size` bytes of static descriptor data (at least the
    // size its minor version requires, checked above) in a library that is never unloaded.
    let desc = unsafe { copy_descriptor(desc_ptr, size) };
    let info = read_info(path, desc)?;
    let library_hash = library_hash(path)?;
    Ok(Box::leak(Box::new(LoadedPlugin {
        info,
        library_hash,
        desc,
    })))
}

/// A hash of the bytes of the library file at `path`: 16 hex digits of a SplitMix64 word hash
/// ([`clef_data::seed::word_hash`]; not cryptographic, milliseconds for a 10 MB library).
pub fn library_hash(path: &Path) -> Result<String, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::NotALibrary {
        path: path.to_path_buf(),
        message: format!("cannot read the file to hash it: {e}"),
    })?;
    Ok(format!("{:016x}", clef_data::seed::word_hash(&bytes)))
}

fn bad(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::BadDescriptor {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Copies a plugin-owned C string.
///
/// # Safety
/// `p` must be null or a NUL-terminated string valid for the life of the library.
unsafe fn c_str(path: &Path, p: *const c_char, what: &str) -> Result<Option<String>, LoadError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and NUL-terminated (caller).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| bad(path, format!("{what} is not valid UTF-8")))
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn read_info(path: &Path, desc: &'static ClefPluginDescriptor) -> Result<PluginInfo, LoadError> {
    // SAFETY: descriptor strings are NUL-terminated, plugin-owned and live as long as the
    // library (ABI ownership rules).
    let name = unsafe { c_str(path, desc.name, "the name") }?
        .ok_or_else(|| bad(path, "the name is null"))?;
    if !valid_name(&name) {
        return Err(bad(
            path,
            format!("the name {name:?} is not of the form [a-z0-9_-]+"),
        ));
    }
    // SAFETY: as above.
    let version = unsafe { c_str(path, desc.version, "the version") }?.unwrap_or_default();
    // SAFETY: as above.
    let description =
        unsafe { c_str(path, desc.description, "the description") }?.unwrap_or_default();
    if desc.create.is_none() && desc.create_typed.is_none() {
        return Err(bad(
            path,
            format!("plugin `{name}` has no `create` function (nor `create_typed`)"),
        ));
    }
    const MAX_HPARAMS: usize = 4096;
    if desc.n_hparams > MAX_HPARAMS {
        return Err(bad(
            path,
            format!("{} hyperparameters (at most {MAX_HPARAMS})", desc.n_hparams),
        ));
    }
    let raw: &[ClefHparam] = if desc.n_hparams == 0 {
        &[]
    } else if desc.hparams.is_null() || !desc.hparams.is_aligned() {
        return Err(bad(
            path,
            format!(
                "`hparams` is null or misaligned but `n_hparams` is {}",
                desc.n_hparams
            ),
        ));
    } else {
        // SAFETY: non-null, aligned, `n_hparams` entries of static plugin data (ABI).
        unsafe { std::slice::from_raw_parts(desc.hparams, desc.n_hparams) }
    };
    let mut hparams: Vec<HParamSpec> = Vec::with_capacity(raw.len());
    for (i, h) in raw.iter().enumerate() {
        let spec = read_hparam(path, i, h)?;
        if hparams.iter().any(|o| o.name == spec.name) {
            return Err(bad(
                path,
                format!("hyperparameter `{}` is declared twice", spec.name),
            ));
        }
        hparams.push(spec);
    }
    let hook_table: [(&'static str, bool); 12] = [
        ("on_model_built", desc.on_model_built.is_some()),
        ("on_task_start", desc.on_task_start.is_some()),
        ("before_batch", desc.before_batch.is_some()),
        ("loss", desc.loss.is_some()),
        ("after_backward", desc.after_backward.is_some()),
        ("after_step", desc.after_step.is_some()),
        ("on_task_end", desc.on_task_end.is_some()),
        ("before_eval", desc.before_eval.is_some()),
        ("predict", desc.predict.is_some()),
        ("after_eval", desc.after_eval.is_some()),
        ("save_state", desc.save_state.is_some()),
        ("load_state", desc.load_state.is_some()),
    ];
    Ok(PluginInfo {
        name,
        version,
        description,
        path: path.to_path_buf(),
        abi: (desc.abi_major, desc.abi_minor),
        hparams,
        hooks: hook_table
            .iter()
            .filter(|(_, present)| *present)
            .map(|(n, _)| *n)
            .collect(),
        conv: desc.backbones & CLEF_BACKBONE_CONV != 0,
    })
}

fn read_hparam(path: &Path, i: usize, h: &ClefHparam) -> Result<HParamSpec, LoadError> {
    // SAFETY: schema strings are NUL-terminated static plugin data (ABI).
    let name = unsafe { c_str(path, h.name, &format!("hyperparameter {i}'s name")) }?
        .ok_or_else(|| bad(path, format!("hyperparameter {i} has a null name")))?;
    if !valid_key(&name) {
        return Err(bad(
            path,
            format!("hyperparameter name {name:?} is not of the form [A-Za-z0-9_-]+"),
        ));
    }
    let what = |m: String| bad(path, format!("hyperparameter `{name}`: {m}"));
    // SAFETY: as above.
    let doc = unsafe { c_str(path, h.doc, "a doc string") }?.unwrap_or_default();
    let (min, max, d) = (h.min, h.max, h.default_value);
    if min.is_nan() || max.is_nan() || min > max {
        return Err(what(format!("invalid range [{min}, {max}]")));
    }
    let in_range = |v: f64| v >= min && v <= max;
    let (kind, default) = match h.kind {
        CLEF_HPARAM_FLOAT => {
            if !d.is_finite() || !in_range(d) {
                return Err(what(format!("default {d} is not in [{min}, {max}]")));
            }
            (HParamKind::Float, HValue::Float(d))
        }
        CLEF_HPARAM_INT => {
            let whole = |v: f64| v.is_infinite() || v.fract() == 0.0;
            if !whole(min) || !whole(max) {
                return Err(what(format!("bounds [{min}, {max}] are not whole numbers")));
            }
            if !d.is_finite() || d.fract() != 0.0 || d.abs() > 9.007_199_254_740_992e15 {
                return Err(what(format!("default {d} is not a whole number")));
            }
            if !in_range(d) {
                return Err(what(format!("default {d} is not in [{min}, {max}]")));
            }
            (HParamKind::Int, HValue::Int(d as i64))
        }
        CLEF_HPARAM_BOOL => {
            if d != 0.0 && d != 1.0 {
                return Err(what(format!("bool default {d} is neither 0 nor 1")));
            }
            (HParamKind::Bool, HValue::Bool(d == 1.0))
        }
        CLEF_HPARAM_CHOICE => {
            if h.n_choices == 0 || h.n_choices > 4096 || h.choices.is_null() {
                return Err(what(format!(
                    "a choice needs 1..=4096 non-null choices (n_choices = {})",
                    h.n_choices
                )));
            }
            if !h.choices.is_aligned() {
                return Err(what("`choices` is misaligned".into()));
            }
            // SAFETY: non-null, aligned, `n_choices` entries of static plugin data (ABI).
            let ptrs = unsafe { std::slice::from_raw_parts(h.choices, h.n_choices) };
            let mut choices: Vec<String> = Vec::with_capacity(ptrs.len());
            for &p in ptrs {
                // SAFETY: NUL-terminated static plugin strings (ABI).
                let c = unsafe { c_str(path, p, "a choice") }?
                    .ok_or_else(|| what("a choice is null".into()))?;
                if choices.contains(&c) {
                    return Err(what(format!("choice {c:?} is listed twice")));
                }
                choices.push(c);
            }
            let idx = d;
            if idx.fract() != 0.0 || idx < 0.0 || idx >= choices.len() as f64 {
                return Err(what(format!(
                    "default choice index {idx} is not in 0..{}",
                    choices.len()
                )));
            }
            let default = HValue::Choice(choices[idx as usize].clone());
            (HParamKind::Choice(choices), default)
        }
        other => return Err(what(format!("unknown kind {other}"))),
    };
    let (min, max) = match kind {
        HParamKind::Float | HParamKind::Int => (min, max),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    };
    Ok(HParamSpec {
        name,
        kind,
        log_scale: h.flags & CLEF_HPARAM_LOG_SCALE != 0,
        needs_past_tasks: h.flags & CLEF_HPARAM_NEEDS_PAST_TASKS != 0,
        default,
        min,
        max,
        doc,
    })
}

/// The ABI this host implements, as `major.minor`.
pub fn host_abi() -> String {
    format!("{CLEF_ABI_MAJOR}.{CLEF_ABI_MINOR}")
}

#[cfg(test)]
mod descriptor_tests {
    use super::*;

    unsafe extern "C" fn never_called(
        _host: *const clef_abi::ClefHost,
        _toml: *const c_char,
        _values: *const clef_abi::ClefHparamValue,
        _n: usize,
        _out: *mut *mut std::ffi::c_void,
    ) -> i32 {
        clef_abi::CLEF_ERROR
    }

    #[test]
    fn older_descriptors_are_read_only_as_far_as_they_declare() {
        assert_eq!(required_descriptor_size(0), CLEF_DESCRIPTOR_SIZE_V1_0);
        assert_eq!(required_descriptor_size(2), CLEF_DESCRIPTOR_SIZE_V1_0);
        assert_eq!(required_descriptor_size(3), CLEF_DESCRIPTOR_SIZE_V1_3);
        assert_eq!(required_descriptor_size(4), CLEF_DESCRIPTOR_SIZE_V1_4);
        assert_eq!(required_descriptor_size(5), CLEF_DESCRIPTOR_SIZE_V1_4);
        assert_eq!(required_descriptor_size(6), CLEF_DESCRIPTOR_SIZE_V1_6);
        // SAFETY: a zeroed descriptor is valid (integers, null pointers, `None`s).
        let mut d: ClefPluginDescriptor = unsafe { std::mem::zeroed() };
        d.abi_major = CLEF_ABI_MAJOR;
        d.abi_minor = 2;
        d.n_hparams = 7;
        // Bytes past a 1.2 descriptor's end that happen to look like a hook.
        d.create_typed = Some(never_called);
        // SAFETY: `d` is a whole descriptor, so any prefix of it is readable.
        let old = unsafe { copy_descriptor(&d, CLEF_DESCRIPTOR_SIZE_V1_0) };
        assert!(old.create_typed.is_none());
        assert_eq!((old.abi_minor, old.n_hparams), (2, 7));
        // SAFETY: as above.
        let new = unsafe { copy_descriptor(&d, CLEF_DESCRIPTOR_SIZE_V1_3) };
        assert!(new.create_typed.is_some());
    }
}

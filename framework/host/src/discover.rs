//! Finding plugin libraries: file naming and the search path.
//!
//! A plugin called `name` lives in `{DLL_PREFIX}clef_plugin_{name}{DLL_SUFFIX}` with every `-`
//! of the name replaced by `_` (on Linux `libclef_plugin_l2_init.so` for `l2-init`), which is
//! what cargo produces for a `cdylib` crate named `clef-plugin-l2-init`. Directories are
//! searched in this order, the first match winning:
//!
//! 1. explicit paths (`--plugin-dir` of `clef run`, `validate` and `plugins`): directories, or library
//!    files loaded whatever their name;
//! 2. the config's `plugin_dirs` (relative to the config file);
//! 3. `$CLEF_PLUGIN_PATH` (colon-separated, like `PATH`);
//! 4. the directory of the running `clef` executable (so plugins built into the same cargo
//!    target directory, or installed next to `clef`, are found without configuration).
//!
//! When no file has the expected name, every plugin file in the search path is opened and its
//! declared name compared (so a crate named e.g. `clef-plugin-fixture-panicking` that declares
//! the name `panicking` is still found).

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};

use super::load::{self, LoadError, LoadedPlugin};

/// File-name stem shared by every plugin library (after `DLL_PREFIX`).
const STEM: &str = "clef_plugin_";

/// The library file name of plugin `name` on this platform.
pub fn file_name(name: &str) -> String {
    format!("{DLL_PREFIX}{STEM}{}{DLL_SUFFIX}", name.replace('-', "_"))
}

/// The plugin name a library file name suggests (`libclef_plugin_l2_init.so` → `l2-init`), or
/// `None` if the file does not follow the naming scheme.
pub fn name_from_file(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let rest = file.strip_prefix(DLL_PREFIX)?.strip_prefix(STEM)?;
    let stem = rest.strip_suffix(DLL_SUFFIX)?;
    (!stem.is_empty()).then(|| stem.replace('_', "-"))
}

/// True if `path`'s file name follows the plugin naming scheme.
pub fn is_plugin_file(path: &Path) -> bool {
    name_from_file(path).is_some()
}

/// True if `path` (or the plugin it provides) is one of clef's own test fixtures: the
/// `plugins/fixtures/` crates, broken on purpose for the host's tests, which a workspace build
/// puts next to `clef`. Rule: the file name or the declared name starts with `fixture-`
/// (`libclef_plugin_fixture_bad_abi.so`, plugin `fixture-panic`). Listings hide them unless
/// asked ([`show_fixtures`]).
pub fn is_fixture(path: &Path, plugin: Option<&LoadedPlugin>) -> bool {
    name_from_file(path).is_some_and(|n| n.starts_with("fixture-"))
        || plugin.is_some_and(|p| p.info.name.starts_with("fixture-"))
}

/// True if `CLEF_SHOW_FIXTURES=1`: listings show test fixtures too.
pub fn show_fixtures() -> bool {
    std::env::var_os("CLEF_SHOW_FIXTURES").is_some_and(|v| v == "1")
}

/// Where plugins are looked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSearch {
    /// Library files to load regardless of their name (searched first).
    pub files: Vec<PathBuf>,
    /// Directories, in search order.
    pub dirs: Vec<PathBuf>,
}

/// A plugin file found in the search path.
#[derive(Debug, Clone)]
pub struct Found {
    /// The library.
    pub path: PathBuf,
    /// The loaded plugin, or why it cannot be used.
    pub plugin: Result<&'static LoadedPlugin, LoadError>,
    /// True if an earlier file in the search order provides a plugin of the same name.
    pub shadowed: bool,
}

impl PluginSearch {
    /// The standard search path: `explicit` paths (files or directories), the config's
    /// `plugin_dirs`, `$CLEF_PLUGIN_PATH`, and the directory of the running executable.
    pub fn standard(explicit: &[PathBuf], config_dirs: &[PathBuf]) -> Self {
        let mut s = PluginSearch::default();
        for p in explicit {
            if p.is_file() {
                s.files.push(p.clone());
            } else {
                s.dirs.push(p.clone());
            }
        }
        s.dirs.extend(config_dirs.iter().cloned());
        if let Some(var) = std::env::var_os("CLEF_PLUGIN_PATH") {
            s.dirs
                .extend(std::env::split_paths(&var).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            s.dirs.push(dir);
        }
        s.dirs.dedup();
        s
    }

    /// Every plugin library in the search path (explicit files, then each directory's
    /// `clef_plugin_*` files sorted by name), each loaded. Unreadable directories are skipped.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.files.clone();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_plugin_file(p) && p.is_file())
                .collect();
            files.sort();
            for f in files {
                let canon = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
                let seen = out
                    .iter()
                    .any(|o| std::fs::canonicalize(o).unwrap_or_else(|_| o.clone()) == canon);
                if !seen {
                    out.push(f);
                }
            }
        }
        out
    }

    /// Loads every candidate; marks plugins shadowed by an earlier one of the same name.
    pub fn list(&self) -> Vec<Found> {
        let mut names: Vec<String> = Vec::new();
        self.candidates()
            .into_iter()
            .map(|path| {
                let plugin = load::load(&path);
                let shadowed = match &plugin {
                    Ok(p) if names.contains(&p.info.name) => true,
                    Ok(p) => {
                        names.push(p.info.name.clone());
                        false
                    }
                    Err(_) => false,
                };
                Found {
                    path,
                    plugin,
                    shadowed,
                }
            })
            .collect()
    }

    /// Finds the plugin called `name`: an explicit file declaring it, else the first file named
    /// after it in the directories (loading errors are returned: the user meant that file),
    /// else any plugin file declaring it. `Ok(None)`: no plugin of that name.
    pub fn find(&self, name: &str) -> Result<Option<&'static LoadedPlugin>, LoadError> {
        for f in &self.files {
            if let Ok(p) = load::load(f) {
                if p.info.name == name {
                    return Ok(Some(p));
                }
            }
        }
        let file = file_name(name);
        for dir in &self.dirs {
            let path = dir.join(&file);
            if path.is_file() {
                let p = load::load(&path)?;
                if p.info.name == name {
                    return Ok(Some(p));
                }
            }
        }
        for path in self.candidates() {
            if let Ok(p) = load::load(&path) {
                if p.info.name == name {
                    return Ok(Some(p));
                }
            }
        }
        Ok(None)
    }

    /// Human-readable search path for messages.
    pub fn describe(&self) -> String {
        let all: Vec<String> = self
            .files
            .iter()
            .chain(&self.dirs)
            .map(|p| p.display().to_string())
            .collect();
        if all.is_empty() {
            "(empty)".into()
        } else {
            all.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let f = file_name("l2-init");
        assert!(f.contains("clef_plugin_l2_init"));
        assert_eq!(name_from_file(Path::new(&f)).as_deref(), Some("l2-init"));
        assert_eq!(name_from_file(Path::new("libfoo.so")), None);
        assert_eq!(name_from_file(Path::new(&file_name(""))), None);
    }

    #[test]
    fn fixtures_are_recognised_by_file_name() {
        assert!(is_fixture(Path::new(&file_name("fixture-bad-abi")), None));
        assert!(!is_fixture(Path::new(&file_name("ewc")), None));
        assert!(!is_fixture(Path::new(&file_name("fixtures")), None));
    }

    #[test]
    fn missing_directories_are_skipped() {
        let s = PluginSearch {
            files: Vec::new(),
            dirs: vec![PathBuf::from("/nonexistent/clef/plugins")],
        };
        assert!(s.candidates().is_empty());
        assert!(matches!(s.find("x"), Ok(None)));
    }
}

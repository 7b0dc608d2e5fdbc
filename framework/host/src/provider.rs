//! [`PluginStrategies`]: the [`StrategyProvider`] that serves plugins and built-ins.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;

use clef_data::Invalid;
use clef_engine::spec::StrategyConfig;
use clef_engine::strategy::{self, BuiltinStrategies, Strategy, StrategyProvider, StrategySchema};

use super::discover::PluginSearch;
use super::hparams;
use super::instance::PluginStrategy;
use super::load::{self, LoadedPlugin};

/// Serves strategies by name: plugins found in the search path, and the built-ins.
///
/// Resolution of a `[[strategy]]` entry:
/// 1. `path = "..."` loads that library; its plugin must be called `name`;
/// 2. `joint` is always the built-in (plugins cannot change the data the trainer streams);
/// 3. a plugin called `name` in the search path ([`PluginSearch`]);
/// 4. the built-in of that name (`finetune`): the fallback when no plugin provides it. The
///    `finetune` plugin and the built-in are the same no-op strategy and give identical
///    results.
#[derive(Debug, Clone, Default)]
pub struct PluginStrategies {
    search: PluginSearch,
}

/// What a `[[strategy]]` entry resolves to.
#[derive(Debug, Clone, Copy)]
pub enum Resolved {
    /// A built-in strategy.
    Builtin,
    /// A plugin.
    Plugin(&'static LoadedPlugin),
}

impl PluginStrategies {
    /// A provider searching `search`.
    pub fn new(search: PluginSearch) -> Self {
        PluginStrategies { search }
    }

    /// The standard search path of a config: `explicit` paths (e.g. `--plugin-dir`), the
    /// config's `plugin_dirs`, `$CLEF_PLUGIN_PATH`, the directory of the executable.
    pub fn for_config(plugin_dirs: &[PathBuf], explicit: &[PathBuf]) -> Self {
        Self::new(PluginSearch::standard(explicit, plugin_dirs))
    }

    /// The search path.
    pub fn search(&self) -> &PluginSearch {
        &self.search
    }

    /// Resolves entry `index` of the config (see the type's documentation).
    pub fn resolve(&self, index: usize, cfg: &StrategyConfig) -> Result<Resolved, Invalid> {
        if let Some(path) = &cfg.path {
            let p = load::load(path)
                .map_err(|e| Invalid::new(format!("strategy[{index}].path"), e.to_string()))?;
            if p.info.name != cfg.name {
                return Err(Invalid::new(
                    format!("strategy[{index}].name"),
                    format!(
                        "is `{}` but the library {} provides plugin `{}`",
                        cfg.name,
                        path.display(),
                        p.info.name
                    ),
                ));
            }
            return Ok(Resolved::Plugin(p));
        }
        if cfg.name == "joint" {
            return Ok(Resolved::Builtin);
        }
        match self.search.find(&cfg.name) {
            Ok(Some(p)) => return Ok(Resolved::Plugin(p)),
            Ok(None) => {}
            Err(e) => {
                return Err(Invalid::new(
                    format!("strategy[{index}].name"),
                    e.to_string(),
                ))
            }
        }
        if strategy::builtin(&cfg.name).is_some() {
            return Ok(Resolved::Builtin);
        }
        Err(Invalid::new(
            format!("strategy[{index}].name"),
            self.unknown_message(&cfg.name),
        ))
    }

    fn unknown_message(&self, name: &str) -> String {
        let found = self.search.list();
        let mut names: Vec<String> = strategy::builtin_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut broken = Vec::new();
        // clef's own test fixtures are not offered (unless the name asked for is one).
        let fixtures = super::discover::show_fixtures() || name.starts_with("fixture-");
        for f in &found {
            if !fixtures && super::discover::is_fixture(&f.path, f.plugin.as_ref().ok().copied()) {
                continue;
            }
            match &f.plugin {
                Ok(p) if !names.contains(&p.info.name) => names.push(p.info.name.clone()),
                Ok(_) => {}
                Err(e) => broken.push(e.to_string()),
            }
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = hparams::did_you_mean(name, &refs)
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        let mut msg = format!(
            "unknown strategy `{name}`; {hint}available: {} (plugin search path: {}; add \
             directories with `plugin_dirs`, $CLEF_PLUGIN_PATH or --plugin-dir)",
            names.join(", "),
            self.search.describe()
        );
        if !broken.is_empty() {
            msg.push_str(&format!(
                "; these plugin files could not be loaded: {}",
                broken.join("; ")
            ));
        }
        msg
    }

    /// The full `hparams` table (defaults filled) of entry `index`, checked against the
    /// plugin's schema.
    pub fn resolved_hparams(
        plugin: &LoadedPlugin,
        index: usize,
        cfg: &StrategyConfig,
    ) -> Result<toml::Table, Invalid> {
        hparams::resolve(&plugin.info.name, &plugin.info.hparams, index, &cfg.hparams)
    }
}

impl StrategyProvider for PluginStrategies {
    fn validate(&self, index: usize, cfg: &StrategyConfig) -> Result<(), Invalid> {
        match self.resolve(index, cfg)? {
            Resolved::Builtin => BuiltinStrategies.validate(index, cfg),
            Resolved::Plugin(p) => {
                announce(p);
                Self::resolved_hparams(p, index, cfg).map(|_| ())
            }
        }
    }

    fn schema(&self, index: usize, cfg: &StrategyConfig) -> Result<StrategySchema, Invalid> {
        match self.resolve(index, cfg)? {
            Resolved::Builtin => BuiltinStrategies.schema(index, cfg),
            Resolved::Plugin(p) => Ok(StrategySchema {
                version: p.info.version.clone(),
                library_hash: Some(p.library_hash.clone()),
                conv: p.info.conv,
                hparams: p.info.hparams.clone(),
            }),
        }
    }

    fn resolve_hparams(&self, index: usize, cfg: &StrategyConfig) -> Result<toml::Table, Invalid> {
        match self.resolve(index, cfg)? {
            Resolved::Builtin => BuiltinStrategies.resolve_hparams(index, cfg),
            Resolved::Plugin(p) => Self::resolved_hparams(p, index, cfg),
        }
    }

    fn create(&self, cfg: &StrategyConfig) -> anyhow::Result<Box<dyn Strategy>> {
        // `create` has no index; messages from here name the strategy instead.
        let invalid = |inv: Invalid| {
            anyhow::anyhow!(
                "strategy `{}`: `{}` {}",
                cfg.label(),
                inv.key.replace("strategy[0].", ""),
                inv.message
            )
        };
        match self.resolve(0, cfg).map_err(invalid)? {
            Resolved::Builtin => BuiltinStrategies.create(cfg),
            Resolved::Plugin(p) => {
                let table = Self::resolved_hparams(p, 0, cfg).map_err(invalid)?;
                let text = hparams::to_config_toml(&table);
                let s = PluginStrategy::create(p, &text)
                    .with_context(|| format!("creating strategy `{}`", cfg.label()))?;
                Ok(Box::new(s))
            }
        }
    }
}

/// Logs (once per process and library) which plugin file serves a strategy.
fn announce(p: &'static LoadedPlugin) {
    static ANNOUNCED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let key = p as *const LoadedPlugin as usize;
    let mut seen = ANNOUNCED.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&key) {
        seen.push(key);
        tracing::info!(
            plugin = p.info.name,
            version = p.info.version,
            path = %p.info.path.display(),
            "using plugin"
        );
    }
}

/// Loads the library at `path` and describes its plugin (for `clef plugins`).
pub fn inspect(path: &Path) -> Result<&'static LoadedPlugin, load::LoadError> {
    load::load(path)
}

//! [`Cfg`]: a small builder of clef TOML configs for tests, so a test says what differs from a
//! small digits run (`Cfg::digits().tasks(3).strategy("ewc").hparams("lambda = 50.0")`)
//! instead of pasting thirty lines of TOML.
//!
//! The text is laid out as a person would write it, in a fixed order: top-level keys, then
//! `[protocol]`, `[protocol.tune_data]`, `[data]`, `[scenario]`, `[model]`, `[train]`, other
//! tables, and the `[[strategy]]` tables, each table after a blank line. The layout is stable,
//! so tests may assert line numbers of the text they build; tests *about* TOML text (a
//! malformed file, an unknown key) edit [`Cfg::toml`]'s text or paste their own.

use std::path::{Path, PathBuf};

/// The tables in the order they are written; other tables follow in the order first set.
const TABLE_ORDER: &[&str] = &[
    "",
    "protocol",
    "protocol.tune_data",
    "data",
    "scenario",
    "model",
    "train",
];

/// Known keys in the order they are written within their table; other keys follow in the
/// order first set.
const KEY_ORDER: &[(&str, &[&str])] = &[
    ("", &["name", "seeds", "settings", "plugin_dirs"]),
    (
        "data",
        &[
            "dataset",
            "path",
            "test_fraction",
            "split_seed",
            "synthetic_dim",
        ],
    ),
    (
        "scenario",
        &[
            "kind",
            "tasks",
            "classes_per_task",
            "class_order",
            "permuted_tasks",
        ],
    ),
    (
        "train",
        &[
            "optimizer",
            "lr",
            "momentum",
            "weight_decay",
            "epochs",
            "iterations",
            "batch_size",
        ],
    ),
];

/// One line of a table: `key = value`, or raw text (`key` empty) kept as given.
#[derive(Debug, Clone)]
struct Line {
    key: String,
    text: String,
}

/// A TOML table being built.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    lines: Vec<Line>,
}

impl Table {
    fn new(name: &str) -> Self {
        Table {
            name: name.to_string(),
            lines: Vec::new(),
        }
    }

    /// Sets `key = value`: in place if the key is there, else at its place in [`KEY_ORDER`].
    fn set(&mut self, key: &str, value: &str) {
        let text = format!("{key} = {value}");
        if let Some(l) = self.lines.iter_mut().find(|l| l.key == key) {
            l.text = text;
            return;
        }
        let order = KEY_ORDER
            .iter()
            .find(|(t, _)| *t == self.name)
            .map_or(&[][..], |(_, keys)| *keys);
        let rank = |k: &str| order.iter().position(|o| *o == k);
        let at = match rank(key) {
            // Before the first line whose known key comes later.
            Some(r) => self
                .lines
                .iter()
                .position(|l| rank(&l.key).is_some_and(|lr| lr > r))
                .unwrap_or(self.lines.len()),
            None => self.lines.len(),
        };
        self.lines.insert(
            at,
            Line {
                key: key.to_string(),
                text,
            },
        );
    }

    fn remove(&mut self, key: &str) {
        self.lines.retain(|l| l.key != key);
    }

    fn raw(&mut self, text: &str) {
        self.lines.push(Line {
            key: String::new(),
            text: text.trim_end_matches('\n').to_string(),
        });
    }
}

/// A clef config for a test, rendered as TOML text by [`Cfg::toml`] or written by
/// [`Cfg::write`]. Values are TOML text where they are not plain numbers, so a test writes
/// exactly what a user would (`.hparams("lambda = 1e12")`, `.protocol("kinds = [\"run\"]")`).
///
/// ```
/// # use clef_testkit::Cfg;
/// let text = Cfg::digits().name("t").tasks(3).strategy("l2").hparams("lambda = 0.1").toml();
/// assert!(text.contains("tasks = 3\n"));
/// assert!(text.ends_with("\n[[strategy]]\nname = \"l2\"\nhparams = { lambda = 0.1 }\n"));
/// ```
#[derive(Debug, Clone)]
pub struct Cfg {
    tables: Vec<Table>,
    strategies: Vec<Table>,
}

/// A TOML array of strings (`["a", "b"]`).
fn strings<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML basic string (Rust's debug quoting, which TOML reads the same for paths and names).
fn quote(s: &str) -> String {
    format!("{s:?}")
}

impl Cfg {
    /// The small digits run most tests start from: seed 0, task-IL, 5 class-split tasks of 2
    /// classes, a 32-unit hidden layer, SGD with lr 0.05, one epoch of batches of 32, and no
    /// strategy yet.
    pub fn digits() -> Self {
        Cfg {
            tables: Vec::new(),
            strategies: Vec::new(),
        }
        .seeds(&[0])
        .settings(&["task-il"])
        .dataset("digits")
        .set("scenario", "kind", "\"class-split\"")
        .tasks(5)
        .classes_per_task(2)
        .hidden(&[32])
        .sgd(0.05)
        .epochs(1)
        .batch_size(32)
    }

    /// Sets `key = value` (TOML text) in `table` (`""`: the top level), replacing the key's
    /// value if it is set.
    pub fn set(mut self, table: &str, key: &str, value: &str) -> Self {
        self.table(table).set(key, value);
        self
    }

    /// Removes `key` from `table`.
    pub fn unset(mut self, table: &str, key: &str) -> Self {
        self.table(table).remove(key);
        self
    }

    /// Appends TOML text (one or more lines) to `table`, e.g. keys the builder has no method
    /// for; the table is written even if `text` is empty.
    pub fn raw(mut self, table: &str, text: &str) -> Self {
        self.table(table).raw(text);
        self
    }

    fn table(&mut self, name: &str) -> &mut Table {
        let i = match self.tables.iter().position(|t| t.name == name) {
            Some(i) => i,
            None => {
                let rank = |n: &str| TABLE_ORDER.iter().position(|o| *o == n);
                let at = match rank(name) {
                    Some(r) => self
                        .tables
                        .iter()
                        .position(|t| rank(&t.name).is_none_or(|tr| tr > r))
                        .unwrap_or(self.tables.len()),
                    None => self.tables.len(),
                };
                self.tables.insert(at, Table::new(name));
                at
            }
        };
        &mut self.tables[i]
    }

    /// `name = "..."` (without it clef names the run after the file).
    pub fn name(self, name: &str) -> Self {
        self.set("", "name", &quote(name))
    }

    /// `seeds = [...]`.
    pub fn seeds(self, seeds: &[u64]) -> Self {
        let s: Vec<String> = seeds.iter().map(u64::to_string).collect();
        self.set("", "seeds", &format!("[{}]", s.join(", ")))
    }

    /// `seeds = [0, 1, ..., n - 1]`.
    pub fn seed_count(self, n: u64) -> Self {
        self.seeds(&(0..n).collect::<Vec<_>>())
    }

    /// `settings = [...]` (`task-il`, `class-il`, `domain-il`).
    pub fn settings(self, settings: &[&str]) -> Self {
        self.set("", "settings", &strings(settings))
    }

    /// `plugin_dirs = [...]` (written even when empty).
    pub fn plugin_dirs(self, dirs: &[&Path]) -> Self {
        let d: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        self.set("", "plugin_dirs", &strings(&d))
    }

    /// Lines of the `[protocol]` table, e.g. `kinds = ["conventional"]\ntune_tasks = 2`.
    pub fn protocol(self, lines: &str) -> Self {
        self.raw("protocol", lines)
    }

    /// Lines of the `[protocol.tune_data]` table, e.g. `dataset = "synthetic"`.
    pub fn tune_data(self, lines: &str) -> Self {
        self.raw("protocol.tune_data", lines)
    }

    /// `data.dataset` (`digits`, `mnist-5k`, `synthetic`, ...).
    pub fn dataset(self, name: &str) -> Self {
        self.set("data", "dataset", &quote(name))
    }

    /// `data.test_fraction`.
    pub fn test_fraction(self, f: f64) -> Self {
        self.set("data", "test_fraction", &f.to_string())
    }

    /// `scenario.tasks`.
    pub fn tasks(self, n: usize) -> Self {
        self.set("scenario", "tasks", &n.to_string())
    }

    /// `scenario.classes_per_task`.
    pub fn classes_per_task(self, n: usize) -> Self {
        self.set("scenario", "classes_per_task", &n.to_string())
    }

    /// `scenario.class_order = "shuffled"`.
    pub fn shuffled_classes(self) -> Self {
        self.set("scenario", "class_order", "\"shuffled\"")
    }

    /// `model.hidden`.
    pub fn hidden(self, widths: &[usize]) -> Self {
        let w: Vec<String> = widths.iter().map(usize::to_string).collect();
        self.set("model", "hidden", &format!("[{}]", w.join(", ")))
    }

    /// SGD with learning rate `lr` (no momentum unless [`Cfg::momentum`]).
    pub fn sgd(self, lr: f64) -> Self {
        self.set("train", "optimizer", "\"sgd\"")
            .set("train", "lr", &lr.to_string())
    }

    /// Adam with learning rate `lr`.
    pub fn adam(self, lr: f64) -> Self {
        self.set("train", "optimizer", "\"adam\"")
            .set("train", "lr", &lr.to_string())
            .unset("train", "momentum")
    }

    /// `train.momentum`.
    pub fn momentum(self, m: f64) -> Self {
        self.set("train", "momentum", &m.to_string())
    }

    /// `train.epochs` (instead of `iterations`).
    pub fn epochs(self, n: usize) -> Self {
        self.unset("train", "iterations")
            .set("train", "epochs", &n.to_string())
    }

    /// `train.iterations` per task (instead of `epochs`).
    pub fn iterations(self, n: usize) -> Self {
        self.unset("train", "epochs")
            .set("train", "iterations", &n.to_string())
    }

    /// `train.batch_size`.
    pub fn batch_size(self, n: usize) -> Self {
        self.set("train", "batch_size", &n.to_string())
    }

    /// Adds a `[[strategy]]` table; [`Cfg::label`], [`Cfg::path`], [`Cfg::hparams`] and
    /// [`Cfg::search`] then apply to it.
    pub fn strategy(mut self, name: &str) -> Self {
        let mut t = Table::new("strategy");
        t.set("name", &quote(name));
        self.strategies.push(t);
        self
    }

    fn last_strategy(&mut self, what: &str) -> &mut Table {
        self.strategies
            .last_mut()
            .unwrap_or_else(|| panic!("Cfg::{what} before any Cfg::strategy"))
    }

    /// `label` of the last strategy.
    pub fn label(mut self, label: &str) -> Self {
        self.last_strategy("label").set("label", &quote(label));
        self
    }

    /// `path` (the library file) of the last strategy.
    pub fn path(mut self, lib: &Path) -> Self {
        self.last_strategy("path")
            .set("path", &quote(&lib.display().to_string()));
        self
    }

    /// `hparams = { <entries> }` of the last strategy, e.g. `lambda = 0.1, mode = "b"`.
    pub fn hparams(mut self, entries: &str) -> Self {
        self.last_strategy("hparams")
            .set("hparams", &format!("{{ {entries} }}"));
        self
    }

    /// `search = { <entries> }` of the last strategy, e.g. `lambda = [0.1, 1.0]`.
    pub fn search(mut self, entries: &str) -> Self {
        self.last_strategy("search")
            .set("search", &format!("{{ {entries} }}"));
        self
    }

    /// The TOML text.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            if !t.name.is_empty() {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&format!("[{}]\n", t.name));
            }
            for l in &t.lines {
                out.push_str(&l.text);
                out.push('\n');
            }
        }
        for s in &self.strategies {
            out.push_str("\n[[strategy]]\n");
            for l in &s.lines {
                out.push_str(&l.text);
                out.push('\n');
            }
        }
        out
    }

    /// Writes the text to `dir/file` and returns that path.
    ///
    /// # Panics
    ///
    /// If the file cannot be written (a test's temporary directory).
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.toml())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_digits_run_in_the_usual_layout() {
        let text = Cfg::digits()
            .name("small")
            .seeds(&[3])
            .settings(&["task-il", "class-il"])
            .test_fraction(0.25)
            .shuffled_classes()
            .momentum(0.9)
            .epochs(2)
            .strategy("finetune")
            .strategy("joint")
            .toml();
        let expected = r#"name = "small"
seeds = [3]
settings = ["task-il", "class-il"]

[data]
dataset = "digits"
test_fraction = 0.25

[scenario]
kind = "class-split"
tasks = 5
classes_per_task = 2
class_order = "shuffled"

[model]
hidden = [32]

[train]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
epochs = 2
batch_size = 32

[[strategy]]
name = "finetune"

[[strategy]]
name = "joint"
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn tables_and_keys_keep_their_order_whatever_the_call_order() {
        let text = Cfg::digits()
            .strategy("l2")
            .label("x")
            .search("lambda = [0.01, 1e12]")
            .tune_data("dataset = \"synthetic\"")
            .protocol("kinds = [\"tune-then-evaluate\"]")
            .iterations(20)
            .plugin_dirs(&[])
            .set("", "name", "\"n\"")
            .toml();
        let expected = "name = \"n\"\nseeds = [0]\nsettings = [\"task-il\"]\nplugin_dirs = []\n\n\
            [protocol]\nkinds = [\"tune-then-evaluate\"]\n\n\
            [protocol.tune_data]\ndataset = \"synthetic\"\n\n\
            [data]\ndataset = \"digits\"\n\n\
            [scenario]\nkind = \"class-split\"\ntasks = 5\nclasses_per_task = 2\n\n\
            [model]\nhidden = [32]\n\n\
            [train]\noptimizer = \"sgd\"\nlr = 0.05\niterations = 20\nbatch_size = 32\n\n\
            [[strategy]]\nname = \"l2\"\nlabel = \"x\"\nsearch = { lambda = [0.01, 1e12] }\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn setting_a_key_again_replaces_it() {
        let text = Cfg::digits().tasks(2).tasks(3).adam(0.001).toml();
        assert_eq!(text.matches("tasks =").count(), 1);
        assert!(text.contains("tasks = 3\n"));
        assert!(text.contains("optimizer = \"adam\"\nlr = 0.001\n"));
    }

    #[test]
    #[should_panic(expected = "Cfg::hparams before any Cfg::strategy")]
    fn strategy_options_need_a_strategy() {
        let _ = Cfg::digits().hparams("lambda = 1");
    }
}

//! The config's range and consistency checks, those serde cannot express: every error names
//! the dotted key (`train.lr`, `strategy[1].hparams.lambda`) for `locate` to find its line.

use clef_data::spec::NormalizeSpec;

use super::{
    Backbone, ClassOrder, Config, DataConfig, DatasetKind, Invalid, NormKind, OptimizerKind,
    ScenarioKind, Setting,
};

fn check(ok: bool, key: &str, message: impl Into<String>) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(key, message))
    }
}

impl Config {
    /// Range and consistency checks that serde cannot express. Data-dependent checks (more
    /// classes per task than the data set has) happen when the scenario is built.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            !self.seeds.is_empty(),
            "seeds",
            "must list at least one seed",
        )?;
        check(
            !self.settings.is_empty(),
            "settings",
            "must list at least one setting",
        )?;
        for (i, s) in self.settings.iter().enumerate() {
            check(
                !self.settings[..i].contains(s),
                "settings",
                format!("lists `{}` twice", s.as_str()),
            )?;
        }
        for (i, s) in self.seeds.iter().enumerate() {
            check(
                !self.seeds[..i].contains(s),
                "seeds",
                format!("lists seed {s} twice"),
            )?;
        }
        self.validate_data()?;
        self.validate_scenario()?;
        super::validate_protocol(self)?;
        self.validate_model()?;
        self.validate_train()?;
        let d = &self.diagnostics;
        check(
            d.probe_size >= 1,
            "diagnostics.probe_size",
            "must be at least 1",
        )?;
        check(
            d.dormant_threshold.is_finite() && d.dormant_threshold >= 0.0,
            "diagnostics.dormant_threshold",
            format!("must be a number >= 0, got {}", d.dormant_threshold),
        )?;
        check(
            d.srank_delta > 0.0 && d.srank_delta < 1.0,
            "diagnostics.srank_delta",
            format!("must be in (0, 1), got {}", d.srank_delta),
        )?;
        check(
            !self.strategy.is_empty(),
            "strategy",
            "must have at least one [[strategy]] table",
        )?;
        for (i, s) in self.strategy.iter().enumerate() {
            check(
                !s.name.trim().is_empty(),
                &format!("strategy[{i}].name"),
                "must not be empty",
            )?;
            let dup = self.strategy[..i].iter().any(|o| o.label() == s.label());
            check(
                !dup,
                &format!("strategy[{i}].name"),
                format!(
                    "label `{}` is used twice; give one of them a distinct `label`",
                    s.label()
                ),
            )?;
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<(), Invalid> {
        validate_data_table(&self.data, "data")
    }

    fn validate_scenario(&self) -> Result<(), Invalid> {
        let s = &self.scenario;
        check(s.tasks >= 1, "scenario.tasks", "must be >= 1")?;
        let only = |ok: bool, key: &str, kind: &str| {
            check(
                ok,
                key,
                format!("applies only to scenario.kind = \"{kind}\""),
            )
        };
        let is = |k: ScenarioKind| s.kind == k;
        only(
            s.classes_per_task.is_none() || is(ScenarioKind::ClassSplit),
            "scenario.classes_per_task",
            "class-split",
        )?;
        only(
            s.class_order.is_none() || is(ScenarioKind::ClassSplit),
            "scenario.class_order",
            "class-split",
        )?;
        only(
            s.max_degrees.is_none() || is(ScenarioKind::Rotated),
            "scenario.max_degrees",
            "rotated",
        )?;
        only(
            s.samples.is_none() || is(ScenarioKind::RandomLabels),
            "scenario.samples",
            "random-labels",
        )?;
        match s.kind {
            ScenarioKind::ClassSplit => {
                let cpt = s.classes_per_task.ok_or_else(|| {
                    Invalid::new("scenario.classes_per_task", "is required for class-split")
                })?;
                check(cpt >= 1, "scenario.classes_per_task", "must be >= 1")?;
                if let Some(ClassOrder::Explicit(order)) = &s.class_order {
                    check(
                        order.len() >= s.tasks * cpt,
                        "scenario.class_order",
                        format!(
                            "lists {} classes but {} tasks x {} classes need {}",
                            order.len(),
                            s.tasks,
                            cpt,
                            s.tasks * cpt
                        ),
                    )?;
                    // Task-IL gives every task its own head, so a class may come back in a
                    // later task (e.g. a permuted copy, `permuted_tasks`); never twice in one
                    // task, and never in the other settings (one unit per class).
                    let til_only = self.settings.iter().all(|&st| st == Setting::TaskIl);
                    for (i, c) in order.iter().enumerate() {
                        let task_start = i - i % cpt.max(1);
                        let again = if til_only {
                            order[task_start..i].contains(c)
                        } else {
                            order[..i].contains(c)
                        };
                        check(
                            !again,
                            "scenario.class_order",
                            if til_only {
                                format!("lists class {c} twice in one task")
                            } else {
                                format!(
                                    "lists class {c} twice (a class may repeat in later tasks \
                                     only with settings = [\"task-il\"])"
                                )
                            },
                        )?;
                    }
                }
            }
            ScenarioKind::Permuted | ScenarioKind::Rotated | ScenarioKind::RandomLabels => {
                for st in &self.settings {
                    check(
                        *st == Setting::DomainIl,
                        "settings",
                        format!(
                            "`{}` is not available for a {:?} stream: every task shares the label space, use \"domain-il\"",
                            st.as_str(),
                            s.kind
                        ),
                    )?;
                }
            }
        }
        if let Some(m) = s.max_degrees {
            check(
                m.is_finite() && m.abs() <= 360.0,
                "scenario.max_degrees",
                format!("must be within [-360, 360], got {m}"),
            )?;
        }
        if let Some(n) = s.samples {
            check(n >= 1, "scenario.samples", "must be >= 1")?;
        }
        Ok(())
    }

    fn validate_model(&self) -> Result<(), Invalid> {
        let m = &self.model;
        let name = m.backbone.as_str();
        let unused = |key: &str, set: bool| {
            check(
                !set,
                &format!("model.{key}"),
                format!("is not used by backbone `{name}`"),
            )
        };
        let pool_unused = |set: bool| {
            check(
                !set,
                "model.pool",
                format!(
                    "is not used by backbone `{name}`: only `convnet` takes it (\"flatten\", the \
                     default, or \"avg\" for global average pooling)"
                ),
            )
        };
        match m.backbone {
            Backbone::Mlp => {
                check(
                    m.hidden.is_some(),
                    "model.hidden",
                    "is required for backbone `mlp` (hidden-layer widths, e.g. [256, 256]; [] \
                     for a linear model)",
                )?;
                unused("channels", m.channels.is_some())?;
                unused("width", m.width.is_some())?;
                unused("blocks", m.blocks.is_some())?;
                unused("norm", m.norm.is_some())?;
                pool_unused(m.pool.is_some())?;
            }
            Backbone::Convnet => {
                unused("width", m.width.is_some())?;
                unused("blocks", m.blocks.is_some())?;
            }
            Backbone::Resnet18 => {
                unused("hidden", m.hidden.is_some())?;
                unused("channels", m.channels.is_some())?;
                pool_unused(m.pool.is_some())?;
            }
        }
        for (i, w) in m.hidden.iter().flatten().enumerate() {
            check(
                *w > 0,
                "model.hidden",
                format!("layer {i} has width 0; every width must be positive"),
            )?;
        }
        if let Some(c) = &m.channels {
            check(
                !c.is_empty() && c.iter().all(|&c| c > 0),
                "model.channels",
                "must list at least one convolution, each with a positive channel count",
            )?;
        }
        check(
            m.width != Some(0),
            "model.width",
            "must be positive (64 = ResNet-18, 20 = reduced)",
        )?;
        check(
            m.blocks.is_none_or(|b| b.iter().all(|&n| n > 0)),
            "model.blocks",
            "must have at least one block per stage",
        )?;
        let group = m.norm == Some(NormKind::Group);
        check(
            !group || m.groups.is_some_and(|g| g > 0),
            "model.groups",
            "is required with norm = \"group\" (a positive number of channel groups)",
        )?;
        check(
            group || m.groups.is_none(),
            "model.groups",
            "is only used with norm = \"group\"",
        )?;
        Ok(())
    }

    fn validate_train(&self) -> Result<(), Invalid> {
        let t = &self.train;
        check(
            t.lr.is_finite() && t.lr > 0.0,
            "train.lr",
            format!("must be a positive number, got {}", t.lr),
        )?;
        check(t.batch_size >= 1, "train.batch_size", "must be >= 1")?;
        check(
            t.eval_batch_size >= 1,
            "train.eval_batch_size",
            "must be >= 1",
        )?;
        check(
            t.weight_decay.is_finite() && t.weight_decay >= 0.0,
            "train.weight_decay",
            format!("must be >= 0, got {}", t.weight_decay),
        )?;
        check(
            !(t.epochs.is_some() && t.iterations.is_some()),
            "train.iterations",
            "set either `epochs` or `iterations`, not both",
        )?;
        if let Some(e) = t.epochs {
            check(e >= 1, "train.epochs", "must be >= 1")?;
        }
        if let Some(i) = t.iterations {
            check(i >= 1, "train.iterations", "must be >= 1")?;
        }
        let sgd = t.optimizer == OptimizerKind::Sgd;
        let only = |present: bool, key: &str, opt: &str| {
            check(
                !present,
                key,
                format!("applies only to train.optimizer = \"{opt}\""),
            )
        };
        only(!sgd && t.momentum.is_some(), "train.momentum", "sgd")?;
        only(!sgd && t.nesterov.is_some(), "train.nesterov", "sgd")?;
        only(sgd && t.beta1.is_some(), "train.beta1", "adam")?;
        only(sgd && t.beta2.is_some(), "train.beta2", "adam")?;
        only(sgd && t.eps.is_some(), "train.eps", "adam")?;
        if let Some(m) = t.momentum {
            check(
                (0.0..1.0).contains(&m),
                "train.momentum",
                format!("must be in [0, 1), got {m}"),
            )?;
        }
        for (key, b) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if let Some(b) = b {
                check(
                    (0.0..1.0).contains(&b),
                    key,
                    format!("must be in [0, 1), got {b}"),
                )?;
            }
        }
        if let Some(e) = t.eps {
            check(e > 0.0, "train.eps", format!("must be > 0, got {e}"))?;
        }
        self.validate_augment()
    }

    /// `train.augment`: no operation twice, and image data (every data table the trials read).
    fn validate_augment(&self) -> Result<(), Invalid> {
        let ops = &self.train.augment;
        for (i, a) in ops.iter().enumerate() {
            let twice = ops[..i]
                .iter()
                .any(|b| std::mem::discriminant(a) == std::mem::discriminant(b));
            check(!twice, "train.augment", format!("lists `{a}` twice"))?;
        }
        if ops.is_empty() {
            return Ok(());
        }
        let s = &self.scenario;
        let permuted = s.kind == ScenarioKind::Permuted
            || s.permuted_tasks.as_ref().is_some_and(|t| !t.is_empty());
        check(
            !permuted,
            "train.augment",
            "cannot crop or flip permuted inputs (a permuted image is not spatially \
             meaningful); remove `augment` or the permutation",
        )?;
        let tables = std::iter::once(&self.data).chain(self.protocol.tune_data.as_ref());
        for d in tables {
            check(
                d.dataset.has_image_shape(d),
                "train.augment",
                format!(
                    "needs image data, but dataset = \"{}\" has no image shape{}",
                    dataset_name(d.dataset),
                    if d.dataset == DatasetKind::Csv {
                        " (set data.image_shape)"
                    } else {
                        ""
                    }
                ),
            )?;
        }
        Ok(())
    }
}

/// The config name of a data set kind.
fn dataset_name(kind: DatasetKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// Checks a data table (`[data]` or `[protocol.tune_data]`); keys are named under `prefix`.
pub fn validate_data_table(d: &DataConfig, prefix: &str) -> Result<(), Invalid> {
    check(
        d.test_fraction > 0.0 && d.test_fraction < 1.0,
        &format!("{prefix}.test_fraction"),
        format!("must be in (0, 1), got {}", d.test_fraction),
    )?;
    match d.dataset {
        DatasetKind::Csv | DatasetKind::Idx => check(
            d.path.is_some(),
            &format!("{prefix}.path"),
            "is required for this dataset (a csv file or an idx directory)",
        )?,
        DatasetKind::Cifar10 => check(
            d.path.is_some(),
            &format!("{prefix}.path"),
            "is required for cifar10: the directory holding data_batch_1.bin ... \
             data_batch_5.bin and test_batch.bin",
        )?,
        DatasetKind::Cifar100 => check(
            d.path.is_some(),
            &format!("{prefix}.path"),
            "is required for cifar100: the directory holding train.bin and test.bin",
        )?,
        _ => {}
    }
    check(
        d.label.is_none() || d.dataset == DatasetKind::Cifar100,
        &format!("{prefix}.label"),
        "applies only to dataset = \"cifar100\" (\"fine\" or \"coarse\")",
    )?;
    if let Some(p) = d.pixel_max {
        check(
            p > 0.0,
            &format!("{prefix}.pixel_max"),
            format!("must be > 0, got {p}"),
        )?;
    }
    if let Some(c) = d.num_classes {
        check(
            c >= 2,
            &format!("{prefix}.num_classes"),
            format!("must be >= 2, got {c}"),
        )?;
    }
    d.csv_image_shape()
        .map_err(|e| Invalid::new(format!("{prefix}.image_shape"), e.message))?;
    if let NormalizeSpec::Given { mean, std } = &d.normalize {
        let channels = d.dataset.channels(d);
        for (key, v) in [("mean", mean), ("std", std)] {
            check(
                v.len() == channels,
                &format!("{prefix}.normalize.{key}"),
                format!(
                    "has {} values, expected one per channel ({channels} for this data set)",
                    v.len()
                ),
            )?;
        }
        check(
            mean.iter().all(|m| m.is_finite()),
            &format!("{prefix}.normalize.mean"),
            "must hold finite numbers",
        )?;
        check(
            std.iter().all(|s| s.is_finite() && *s > 0.0),
            &format!("{prefix}.normalize.std"),
            format!("must hold numbers > 0, got {std:?}"),
        )?;
    }
    for (key, v) in [
        (&format!("{prefix}.synthetic_dim"), d.synthetic_dim),
        (
            &format!("{prefix}.synthetic_train_per_class"),
            d.synthetic_train_per_class,
        ),
        (
            &format!("{prefix}.synthetic_test_per_class"),
            d.synthetic_test_per_class,
        ),
    ] {
        if let Some(v) = v {
            check(v > 0, key, "must be > 0")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DatasetKind;

    #[test]
    fn dataset_names_are_the_documented_ones() {
        #[derive(serde::Deserialize)]
        struct D {
            dataset: DatasetKind,
        }
        for (name, kind) in [
            ("digits", DatasetKind::Digits),
            ("mnist-5k", DatasetKind::Mnist5k),
            ("fashion-mnist", DatasetKind::FashionMnist),
            ("idx", DatasetKind::Idx),
            ("csv", DatasetKind::Csv),
            ("synthetic", DatasetKind::Synthetic),
            ("cifar10", DatasetKind::Cifar10),
            ("cifar100", DatasetKind::Cifar100),
        ] {
            let d: D = toml::from_str(&format!("dataset = \"{name}\"")).unwrap();
            assert_eq!(d.dataset, kind, "{name}");
        }
    }

    /// A class may come back in a later task only in task-IL, and never twice in one task.
    #[test]
    fn repeated_classes_need_task_il() {
        let cfg = |settings: &str, order: &str| {
            format!(
                "name = \"x\"\nseeds = [0]\nsettings = [{settings}]\n[data]\ndataset = \"digits\"\n\
                 [scenario]\nkind = \"class-split\"\ntasks = 2\nclasses_per_task = 2\n\
                 class_order = {order}\npermuted_tasks = [1]\n[model]\nhidden = [4]\n\
                 [train]\noptimizer = \"sgd\"\nlr = 0.1\niterations = 1\nbatch_size = 4\n\
                 [[strategy]]\nname = \"finetune\"\n"
            )
        };
        let p = std::path::Path::new("x.toml");
        assert!(crate::config::parse(&cfg("\"task-il\"", "[0, 1, 0, 1]"), p).is_ok());
        let e = crate::config::parse(&cfg("\"task-il\", \"class-il\"", "[0, 1, 0, 1]"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class_order") && e.contains("task-il"), "{e}");
        let e = crate::config::parse(&cfg("\"task-il\"", "[0, 0, 1, 2]"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice in one task"), "{e}");
    }

    /// A config with `data` and `train` extra lines, parsed; the error text if refused.
    fn parse_with(data: &str, train: &str) -> Result<crate::config::Config, String> {
        let text = format!(
            "name = \"x\"\nseeds = [0]\nsettings = [\"class-il\"]\n[data]\n{data}\n\
             [scenario]\nkind = \"class-split\"\ntasks = 2\nclasses_per_task = 2\n\
             [model]\nhidden = [4]\n[train]\noptimizer = \"sgd\"\nlr = 0.1\niterations = 1\n\
             batch_size = 4\n{train}\n[[strategy]]\nname = \"finetune\"\n"
        );
        crate::config::parse(&text, std::path::Path::new("x.toml")).map_err(|e| e.to_string())
    }

    fn refused(data: &str, train: &str, parts: &[&str]) {
        let e = parse_with(data, train).map(|_| ()).unwrap_err();
        for p in parts {
            assert!(e.contains(p), "`{p}` not in: {e}");
        }
    }

    #[test]
    fn augment_needs_image_data_and_distinct_operations() {
        let aug = "augment = [\"crop:4\", \"hflip\"]";
        assert!(parse_with("dataset = \"digits\"", aug).is_ok());
        assert!(parse_with("dataset = \"cifar10\"\npath = \"c\"", aug).is_ok());
        assert!(parse_with(
            "dataset = \"csv\"\npath = \"a.csv\"\nimage_shape = [3, 4, 4]",
            aug
        )
        .is_ok());
        // Line 17 is the augment line: the error is located there.
        refused(
            "dataset = \"synthetic\"",
            aug,
            &[
                "x.toml:17",
                "`train.augment`",
                "dataset = \"synthetic\" has no image shape",
            ],
        );
        refused(
            "dataset = \"csv\"\npath = \"a.csv\"",
            aug,
            &["`train.augment`", "set data.image_shape"],
        );
        refused(
            "dataset = \"digits\"",
            "augment = [\"hflip\", \"crop:2\", \"crop:4\"]",
            &["`train.augment`", "lists `crop:4` twice"],
        );
        refused(
            "dataset = \"digits\"",
            "augment = [\"crop:0\"]",
            &["crop:0", "integer >= 1"],
        );
    }

    #[test]
    fn augment_refuses_permuted_inputs() {
        let cfg = |scenario: &str| {
            format!(
                "name = \"x\"\nseeds = [0]\nsettings = [\"task-il\"]\n[data]\n\
                 dataset = \"digits\"\n[scenario]\n{scenario}\n[model]\nhidden = [4]\n\
                 [train]\noptimizer = \"sgd\"\nlr = 0.1\niterations = 1\nbatch_size = 4\n\
                 augment = [\"hflip\"]\n[[strategy]]\nname = \"finetune\"\n"
            )
        };
        let p = std::path::Path::new("x.toml");
        let split = "kind = \"class-split\"\ntasks = 2\nclasses_per_task = 2";
        assert!(crate::config::parse(&cfg(split), p).is_ok());
        for scenario in [
            format!("{split}\npermuted_tasks = [1]"),
            "kind = \"permuted\"\ntasks = 2".to_string(),
        ] {
            let text = cfg(&scenario).replace(
                "\"task-il\"",
                if scenario.contains("\"permuted\"") {
                    "\"domain-il\""
                } else {
                    "\"task-il\""
                },
            );
            let e = crate::config::parse(&text, p).unwrap_err().to_string();
            assert!(
                e.contains("`train.augment`") && e.contains("permuted inputs"),
                "{scenario}: {e}"
            );
        }
    }

    #[test]
    fn image_data_keys_are_checked() {
        refused(
            "dataset = \"cifar10\"",
            "",
            &["`data.path`", "data_batch_1.bin"],
        );
        refused(
            "dataset = \"cifar100\"",
            "",
            &["`data.path`", "train.bin and test.bin"],
        );
        assert!(parse_with(
            "dataset = \"cifar100\"\npath = \"c\"\nlabel = \"coarse\"",
            ""
        )
        .is_ok());
        refused(
            "dataset = \"cifar10\"\npath = \"c\"\nlabel = \"coarse\"",
            "",
            &["`data.label`", "only to dataset = \"cifar100\""],
        );
        refused(
            "dataset = \"csv\"\npath = \"a.csv\"\nimage_shape = [1, 2, 3, 4]",
            "",
            &[
                "`data.image_shape`",
                "[channels, height, width], got 4 sizes",
            ],
        );
        refused(
            "dataset = \"csv\"\npath = \"a.csv\"\nimage_shape = [0, 4]",
            "",
            &["`data.image_shape`", "positive"],
        );
        // One mean and one std per channel: 3 for CIFAR and a [3, h, w] csv, else 1.
        let c10 = "dataset = \"cifar10\"\npath = \"c\"\n";
        assert!(parse_with(
            &format!("{c10}normalize = {{ mean = [0.49, 0.48, 0.45], std = [0.25, 0.24, 0.26] }}"),
            ""
        )
        .is_ok());
        assert!(parse_with(&format!("{c10}normalize = true"), "").is_ok());
        refused(
            &format!("{c10}normalize = {{ mean = [0.5], std = [0.25, 0.24, 0.26] }}"),
            "",
            &[
                "`data.normalize.mean`",
                "has 1 values, expected one per channel (3",
            ],
        );
        refused(
            "dataset = \"digits\"\nnormalize = { mean = [0.5], std = [0.0] }",
            "",
            &["`data.normalize.std`", "> 0"],
        );
        refused(
            "dataset = \"csv\"\npath = \"a.csv\"\nimage_shape = [2, 4, 4]\nnormalize = { mean = [0.5], std = [1.0] }",
            "",
            &["`data.normalize.mean`", "(2 for this data set)"],
        );
    }
}

//! Building a [`Scenario`] from the `[scenario]` table and a data set.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Scenario, Task, TaskSplit, Transform};
use crate::seed::derive_seed;
use crate::spec::{ClassOrder, ClassOrderName, ScenarioConfig, ScenarioKind, Setting};
use crate::TrainTest;

/// Builds the task stream. `seed` drives class orders, permutations and random labels (the
/// trial seed unless the config fixes `scenario.seed`). Errors name the config key at fault.
pub fn build(
    cfg: &ScenarioConfig,
    data: Arc<TrainTest>,
    setting: Setting,
    seed: u64,
) -> Result<Scenario, crate::Invalid> {
    use crate::Invalid;
    let seed = cfg.seed.unwrap_or(seed);
    let num_classes = data.train.num_classes;
    let tasks = match cfg.kind {
        ScenarioKind::ClassSplit => {
            let cpt = cfg.classes_per_task.unwrap_or(1);
            let order: Vec<usize> = match &cfg.class_order {
                None | Some(ClassOrder::Named(ClassOrderName::Natural)) => {
                    (0..num_classes).collect()
                }
                Some(ClassOrder::Named(ClassOrderName::Shuffled)) => {
                    let mut o: Vec<usize> = (0..num_classes).collect();
                    o.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
                        seed,
                        "class-order",
                    )));
                    o
                }
                Some(ClassOrder::Explicit(o)) => {
                    if let Some(bad) = o.iter().find(|&&c| c >= num_classes) {
                        return Err(Invalid::new(
                            "scenario.class_order",
                            format!(
                                "class {bad} does not exist in `{}` (classes 0..{})",
                                data.train.name,
                                num_classes - 1
                            ),
                        ));
                    }
                    o.clone()
                }
            };
            // An explicit order may repeat classes (e.g. with `permuted_tasks`).
            let needed = cfg.tasks * cpt;
            if needed > order.len() {
                return Err(Invalid::new(
                    "scenario.classes_per_task",
                    format!(
                        "{} tasks x {} classes need {} classes but `{}` has {}{}",
                        cfg.tasks,
                        cpt,
                        needed,
                        data.train.name,
                        num_classes,
                        if order.len() != num_classes {
                            format!(" (class_order lists {})", order.len())
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
            let permuted = cfg.permuted_tasks.clone().unwrap_or_default();
            if let Some(bad) = permuted.iter().find(|&&t| t >= cfg.tasks) {
                return Err(Invalid::new(
                    "scenario.permuted_tasks",
                    format!("task {bad} does not exist ({} tasks)", cfg.tasks),
                ));
            }
            let dil = setting == Setting::DomainIl;
            (0..cfg.tasks)
                .map(|t| {
                    let classes = &order[t * cpt..(t + 1) * cpt];
                    let unit_of = |label: u32| -> Option<usize> {
                        let pos = classes.iter().position(|&c| c == label as usize)?;
                        Some(if dil { pos } else { classes[pos] })
                    };
                    let split = |ds: &crate::Dataset| {
                        let mut s = TaskSplit {
                            indices: Vec::new(),
                            targets: Vec::new(),
                        };
                        for (i, &l) in ds.labels.iter().enumerate() {
                            if let Some(u) = unit_of(l) {
                                s.indices.push(i);
                                s.targets.push(u);
                            }
                        }
                        s
                    };
                    let names: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
                    let transform = if permuted.contains(&t) {
                        let mut perm: Vec<u32> = (0..data.train.dim as u32).collect();
                        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
                            seed,
                            &format!("class-split-permutation-{t}"),
                        )));
                        Transform::Permute(perm)
                    } else {
                        Transform::Identity
                    };
                    let suffix = if permuted.contains(&t) {
                        " permuted"
                    } else {
                        ""
                    };
                    Task {
                        id: t,
                        name: format!("classes {}{suffix}", names.join(",")),
                        units: if dil {
                            (0..cpt).collect()
                        } else {
                            classes.to_vec()
                        },
                        train: split(&data.train),
                        test: split(&data.test),
                        test_from_train: false,
                        transform: Arc::new(transform),
                    }
                })
                .collect::<Vec<_>>()
        }
        ScenarioKind::Permuted => (0..cfg.tasks)
            .map(|t| {
                let mut perm: Vec<u32> = (0..data.train.dim as u32).collect();
                perm.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
                    seed,
                    &format!("permutation-{t}"),
                )));
                whole_task(
                    &data,
                    t,
                    format!("permutation {t}"),
                    Transform::Permute(perm),
                )
            })
            .collect(),
        ScenarioKind::Rotated => {
            let shape = data.train.image_shape.ok_or_else(|| {
                Invalid::new(
                    "scenario.kind",
                    format!(
                        "rotated needs images, but `{}` has no image shape (set data.image_shape)",
                        data.train.name
                    ),
                )
            })?;
            let max = cfg.max_degrees.unwrap_or(180.0);
            (0..cfg.tasks)
                .map(|t| {
                    let deg = if cfg.tasks > 1 {
                        max * t as f32 / (cfg.tasks - 1) as f32
                    } else {
                        0.0
                    };
                    whole_task(
                        &data,
                        t,
                        format!("rotation {deg:.1} deg"),
                        Transform::rotation(shape.height, shape.width, deg),
                    )
                })
                .collect()
        }
        ScenarioKind::RandomLabels => {
            let n = cfg.samples.unwrap_or(1000);
            if n > data.train.len() {
                return Err(Invalid::new(
                    "scenario.samples",
                    format!(
                        "asks for {n} samples but `{}` has {} training samples",
                        data.train.name,
                        data.train.len()
                    ),
                ));
            }
            let mut idx: Vec<usize> = (0..data.train.len()).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
                seed,
                "random-label-subset",
            )));
            idx.truncate(n);
            idx.sort_unstable();
            (0..cfg.tasks)
                .map(|t| {
                    let mut rng =
                        ChaCha8Rng::seed_from_u64(derive_seed(seed, &format!("random-labels-{t}")));
                    let targets: Vec<usize> =
                        idx.iter().map(|_| rng.gen_range(0..num_classes)).collect();
                    let split = TaskSplit {
                        indices: idx.clone(),
                        targets,
                    };
                    Task {
                        id: t,
                        name: format!("random labels {t}"),
                        units: (0..num_classes).collect(),
                        train: split.clone(),
                        test: split,
                        test_from_train: true,
                        transform: Arc::new(Transform::Identity),
                    }
                })
                .collect()
        }
    };
    if let Some(t) = tasks
        .iter()
        .find(|t| t.train.is_empty() || t.test.is_empty())
    {
        return Err(Invalid::new(
            "scenario",
            format!(
                "task {} ({}) has no {} samples in `{}`",
                t.id,
                t.name,
                if t.train.is_empty() {
                    "training"
                } else {
                    "test"
                },
                data.train.name
            ),
        ));
    }
    let num_outputs = match (cfg.kind, setting) {
        (ScenarioKind::ClassSplit, Setting::DomainIl) => cfg.classes_per_task.unwrap_or(1),
        _ => num_classes,
    };
    let name = match cfg.kind {
        ScenarioKind::ClassSplit => format!(
            "class-split({}, {}x{})",
            data.train.name,
            cfg.tasks,
            cfg.classes_per_task.unwrap_or(1)
        ),
        ScenarioKind::Permuted => format!("permuted({}, {} tasks)", data.train.name, cfg.tasks),
        ScenarioKind::Rotated => format!("rotated({}, {} tasks)", data.train.name, cfg.tasks),
        ScenarioKind::RandomLabels => format!(
            "random-labels({}, {} tasks x {} samples)",
            data.train.name,
            cfg.tasks,
            cfg.samples.unwrap_or(1000)
        ),
    };
    Ok(Scenario {
        name,
        setting,
        tasks,
        num_outputs,
        data,
    })
}

fn whole_task(data: &TrainTest, t: usize, name: String, transform: Transform) -> Task {
    let all = |ds: &crate::Dataset| TaskSplit {
        indices: (0..ds.len()).collect(),
        targets: ds.labels.iter().map(|&l| l as usize).collect(),
    };
    Task {
        id: t,
        name,
        units: (0..data.train.num_classes).collect(),
        train: all(&data.train),
        test: all(&data.test),
        test_from_train: false,
        transform: Arc::new(transform),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dataset;

    fn toy() -> Arc<TrainTest> {
        // 4 classes, 3 train + 1 test sample each, 2x2 "images".
        let mk = |per: usize| {
            let mut features = Vec::new();
            let mut labels = Vec::new();
            for c in 0..4u32 {
                for k in 0..per {
                    features.extend([c as f32 / 4.0, k as f32 / 4.0, 0.5, 0.0]);
                    labels.push(c);
                }
            }
            Dataset {
                name: "toy".into(),
                features,
                labels,
                dim: 4,
                num_classes: 4,
                image_shape: Some(crate::ImageShape::grey(2, 2)),
                normalization: None,
                loaded_hashes: None,
            }
        };
        Arc::new(TrainTest {
            train: mk(3),
            test: mk(1),
        })
    }

    fn cfg(kind: ScenarioKind, tasks: usize) -> ScenarioConfig {
        ScenarioConfig::new(kind, tasks)
    }

    #[test]
    fn repeated_classes_and_permuted_tasks() {
        let mut c = cfg(ScenarioKind::ClassSplit, 3);
        c.classes_per_task = Some(2);
        c.class_order = Some(ClassOrder::Explicit(vec![0, 1, 0, 1, 2, 3]));
        c.permuted_tasks = Some(vec![1]);
        let s = build(&c, toy(), Setting::TaskIl, 4).unwrap();
        assert_eq!(s.tasks[1].units, vec![0, 1]);
        assert_eq!(s.tasks[1].train.indices, s.tasks[0].train.indices);
        assert!(matches!(*s.tasks[0].transform, Transform::Identity));
        assert!(matches!(*s.tasks[1].transform, Transform::Permute(_)));
        assert!(s.tasks[1].name.ends_with("permuted"));
        // The same task's inputs, permuted.
        let (mut a, mut b, mut y) = (Vec::new(), Vec::new(), Vec::new());
        s.gather(&s.tasks[0], false, &[0], &mut a, &mut y);
        s.gather(&s.tasks[1], false, &[0], &mut b, &mut y);
        let (mut sa, mut sb) = (a.clone(), b.clone());
        sa.sort_by(f32::total_cmp);
        sb.sort_by(f32::total_cmp);
        assert_eq!(sa, sb);
        c.permuted_tasks = Some(vec![3]);
        assert_eq!(
            build(&c, toy(), Setting::TaskIl, 4).unwrap_err().key,
            "scenario.permuted_tasks"
        );
    }

    #[test]
    fn class_split_assigns_disjoint_classes_and_masks() {
        let mut c = cfg(ScenarioKind::ClassSplit, 2);
        c.classes_per_task = Some(2);
        let s = build(&c, toy(), Setting::ClassIl, 0).unwrap();
        assert_eq!(s.tasks[0].units, vec![0, 1]);
        assert_eq!(s.tasks[1].units, vec![2, 3]);
        assert_eq!(s.tasks[1].train.len(), 6);
        assert!(s.tasks[1].train.targets.iter().all(|&t| t == 2 || t == 3));
        assert_eq!(s.train_mask(0), Some(vec![true, true, false, false]));
        assert_eq!(s.train_mask(1), Some(vec![true; 4]));
        let til = build(&c, toy(), Setting::TaskIl, 0).unwrap();
        assert_eq!(til.train_mask(1), Some(vec![false, false, true, true]));
        assert_eq!(
            til.eval_mask(Some(1), 0),
            Some(vec![true, true, false, false])
        );
        let dil = build(&c, toy(), Setting::DomainIl, 0).unwrap();
        assert_eq!(dil.num_outputs, 2);
        assert!(dil.tasks[1].train.targets.iter().all(|&t| t < 2));
        assert_eq!(dil.train_mask(1), None);
    }

    #[test]
    fn shuffled_class_order_depends_on_seed_only() {
        let mut c = cfg(ScenarioKind::ClassSplit, 4);
        c.classes_per_task = Some(1);
        c.class_order = Some(ClassOrder::Named(ClassOrderName::Shuffled));
        let units = |seed| -> Vec<usize> {
            build(&c, toy(), Setting::ClassIl, seed)
                .unwrap()
                .tasks
                .iter()
                .map(|t| t.units[0])
                .collect()
        };
        assert_eq!(units(3), units(3));
        let distinct: std::collections::HashSet<Vec<usize>> = (0..10).map(units).collect();
        assert!(distinct.len() > 1, "different seeds give different orders");
    }

    #[test]
    fn too_many_classes_per_task_is_an_error_naming_the_key() {
        let mut c = cfg(ScenarioKind::ClassSplit, 3);
        c.classes_per_task = Some(2);
        let e = build(&c, toy(), Setting::ClassIl, 0).unwrap_err();
        assert_eq!(e.key, "scenario.classes_per_task");
        assert!(e.message.contains("need 6 classes") && e.message.contains("has 4"));
    }

    #[test]
    fn permuted_tasks_differ_and_gather_applies_the_permutation() {
        let s = build(&cfg(ScenarioKind::Permuted, 2), toy(), Setting::DomainIl, 1).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        s.gather(&s.tasks[1], false, &[4], &mut x, &mut y);
        let mut sorted_in = s.data.train.row(4).to_vec();
        let mut sorted_out = x.clone();
        sorted_in.sort_by(f32::total_cmp);
        sorted_out.sort_by(f32::total_cmp);
        assert_eq!(sorted_in, sorted_out);
        assert_eq!(y, vec![1]);
        let perm = |t: usize| match &*s.tasks[t].transform {
            Transform::Permute(p) => p.clone(),
            _ => unreachable!(),
        };
        assert_ne!(perm(0), perm(1));
    }

    #[test]
    fn random_labels_reuse_one_subset_with_fresh_labels() {
        let mut c = cfg(ScenarioKind::RandomLabels, 3);
        c.samples = Some(8);
        let s = build(&c, toy(), Setting::DomainIl, 5).unwrap();
        assert!(s
            .tasks
            .iter()
            .all(|t| t.train.indices == s.tasks[0].train.indices));
        assert!(s.tasks[0].test_from_train);
        assert_ne!(s.tasks[0].train.targets, s.tasks[1].train.targets);
        c.samples = Some(100);
        assert_eq!(
            build(&c, toy(), Setting::DomainIl, 5).unwrap_err().key,
            "scenario.samples"
        );
    }

    #[test]
    fn rotated_needs_an_image_shape() {
        let mut data = (*toy()).clone();
        data.train.image_shape = None;
        let e = build(
            &cfg(ScenarioKind::Rotated, 2),
            Arc::new(data),
            Setting::DomainIl,
            0,
        )
        .unwrap_err();
        assert!(e.message.contains("image shape"));
    }
}

//! The host-facing pieces: the exemplar-set update at a task's end (herding in feature space,
//! iCaRL's reduction), the class means of the exemplars, and the old network's outputs (its
//! parameters swapped into the views around a `forward`).

use clef_sdk::memory::{herding, Row, SampleStore};
use clef_sdk::prelude::*;
use clef_sdk::{Error, Split};

use crate::ncm::class_mean;

/// Rows per `task_samples` / `features` call.
const CHUNK: usize = 256;

/// The penultimate features of `x` (`rows × input_dim`), in chunks of [`CHUNK`] rows:
/// `(features, feature_dim)`.
pub fn features_of(ctx: &mut Ctx<'_>, x: &[f32], rows: usize) -> Result<(Vec<f32>, usize)> {
    if rows == 0 {
        return Ok((Vec::new(), 0));
    }
    let dim = x.len() / rows;
    let mut out = Vec::new();
    for start in (0..rows).step_by(CHUNK) {
        let n = CHUNK.min(rows - start);
        out.extend(ctx.features(&x[start * dim..(start + n) * dim], n)?);
    }
    let fdim = out.len() / rows;
    ensure!(
        fdim > 0 && fdim * rows == out.len(),
        "`features` returned {} values for {rows} rows",
        out.len()
    );
    Ok((out, fdim))
}

/// The whole training split of `task` (`train_samples` rows): inputs and targets.
pub fn task_data(ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<(Vec<f32>, Vec<usize>)> {
    let n = task.train_samples;
    let mut xs = Vec::with_capacity(n * task.input_dim);
    let mut ys = Vec::with_capacity(n);
    for start in (0..n).step_by(CHUNK) {
        let rows = CHUNK.min(n - start);
        let (x, y) = ctx
            .task_samples(task.task, Split::Train, start, rows)
            .with_context(|| format!("reading task {}'s training samples", task.task))?;
        xs.extend(x);
        ys.extend(y);
    }
    Ok((xs, ys))
}

/// iCaRL's exemplar-set update at the end of a task (Rebuffi et al. 2017, Algorithms 4 and
/// 5): `m = memory_size / (classes seen)`; every class already in `memory` keeps its first
/// `m` exemplars, then each class of the task's training data (`x`, `y`; `features` of it,
/// `fdim` wide) gets its first `m` herding picks, appended in priority order (classes
/// ascending). Rows of a class the task's data holds are replaced, not kept. Returns `m`.
pub fn update_memory(
    memory: &mut SampleStore,
    memory_size: usize,
    classes_seen: usize,
    task: usize,
    (x, y): (&[f32], &[usize]),
    (features, fdim): (&[f32], usize),
) -> Result<usize> {
    let dim = memory.dim();
    ensure!(
        x.len() == y.len() * dim,
        "exemplar update: {} input values for {} samples of {dim} features",
        x.len(),
        y.len()
    );
    ensure!(
        features.len() == y.len() * fdim,
        "exemplar update: {} feature values for {} samples of {fdim}",
        features.len(),
        y.len()
    );
    let m = memory_size / classes_seen.max(1);
    let mut classes: Vec<usize> = y.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let targets = memory.targets().to_vec();
    memory.retain_rows(|i| classes.binary_search(&targets[i]).is_err());
    memory.keep_first_per_class(m);
    if m == 0 || fdim == 0 {
        return Ok(m);
    }
    for &c in &classes {
        let rows: Vec<usize> = (0..y.len()).filter(|&r| y[r] == c).collect();
        let mut f = Vec::with_capacity(rows.len() * fdim);
        for &r in &rows {
            f.extend_from_slice(&features[r * fdim..(r + 1) * fdim]);
        }
        for p in herding(&f, fdim, m) {
            let r = rows[p];
            memory.push(Row::new(&x[r * dim..(r + 1) * dim], c, task))?;
        }
    }
    Ok(m)
}

/// The class mean of every unit's exemplars (`k` units; empty for a unit without exemplars)
/// from the current network's features.
pub fn class_means(ctx: &mut Ctx<'_>, memory: &SampleStore, k: usize) -> Result<Vec<Vec<f32>>> {
    let all: Vec<usize> = (0..memory.len()).collect();
    let rows = memory.gather(&all);
    let (feats, fdim) = features_of(ctx, &rows.x, all.len())?;
    let mut means = vec![Vec::new(); k];
    for (u, mean) in means.iter_mut().enumerate() {
        let mut f = Vec::new();
        for (r, &t) in rows.targets.iter().enumerate() {
            if t == u {
                f.extend_from_slice(&feats[r * fdim..(r + 1) * fdim]);
            }
        }
        if !f.is_empty() {
            *mean = class_mean(&f, fdim);
        }
    }
    ensure!(
        rows.targets.iter().all(|&t| t < k),
        "an exemplar's class is not one of the {k} outputs"
    );
    Ok(means)
}

/// The logits of the old network on `x` (`rows` inputs): its tensors (`old`, every tensor of
/// the model, batch-norm buffers included) are written into the parameter views, `forward`
/// runs (evaluation mode), and the current tensors are written back bit for bit, whatever
/// happened. `stash` is scratch.
pub fn old_logits(
    ctx: &mut Ctx<'_>,
    old: &[Vec<f32>],
    stash: &mut Vec<Vec<f32>>,
    x: &[f32],
    rows: usize,
) -> Result<Vec<f32>> {
    let n = ctx.param_count()?;
    ensure!(
        old.len() == n,
        "the old network has {} tensors but the model has {n}",
        old.len()
    );
    for (i, o) in old.iter().enumerate() {
        let len = ctx.values_ref(i)?.len();
        ensure!(
            len == o.len(),
            "tensor {i} has {len} values, the old network's copy {}",
            o.len()
        );
    }
    stash.resize_with(n, Vec::new);
    let mut swapped = 0;
    let mut result: Result<Vec<f32>> = Ok(Vec::new());
    for (i, o) in old.iter().enumerate() {
        match ctx.values(i) {
            Ok(v) => {
                stash[i].clear();
                stash[i].extend_from_slice(v);
                v.copy_from_slice(o);
                swapped += 1;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = ctx.forward(x, rows);
    }
    let mut restore_error: Option<Error> = None;
    for (i, s) in stash.iter().enumerate().take(swapped) {
        match ctx.values(i) {
            Ok(v) => v.copy_from_slice(s),
            Err(e) => {
                restore_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = restore_error {
        return Err(e.context("restoring the current parameters after the old network's forward"));
    }
    result.context("forward pass of the old network")
}

//! The plugin's private checkpoint state (`save_state` / `load_state`).
//!
//! Checkpoints are taken at task boundaries (after `on_task_end`, before the next
//! `on_task_start`); at that point a task's working masks are gone and everything the next
//! tasks need is: per masked layer θ0, the consolidated values θ̄, the frozen set and the mask
//! of every finished task; per bias θ0; per finished task its biases. On resume the host
//! calls `on_model_built` on the fresh instance first (which records parameter names, shapes
//! and optimizer slots) and `load_state` second, which checks the saved layout against the
//! model and replaces the rest.

use clef_sdk::state::{Reader, Writer};
use clef_sdk::{ensure, Result};

use crate::Layer;

const MAGIC: &[u8; 8] = b"CLEF-DST";
const VERSION: u32 = 1;

/// What a checkpoint restores.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// Per masked layer: `(param, θ0, θ̄, frozen, task masks)`.
    pub layers: Vec<SavedLayer>,
    /// Per bias: `(param, θ0)`.
    pub biases: Vec<(usize, Vec<f32>)>,
    /// Per finished task, its bias values (empty with `bias = "shared"`).
    pub task_biases: Vec<Vec<Vec<f32>>>,
}

/// One masked layer's saved state.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedLayer {
    /// Parameter index.
    pub param: usize,
    /// Values at initialisation.
    pub init: Vec<f32>,
    /// Consolidated values.
    pub consolidated: Vec<f32>,
    /// Positions used by a finished task.
    pub frozen: Vec<bool>,
    /// Masks of the finished tasks.
    pub task_masks: Vec<Vec<bool>>,
}

/// Encodes the state between two tasks.
pub fn encode(
    layers: &[Layer],
    biases: &[(usize, Vec<f32>)],
    task_biases: &[Vec<Vec<f32>>],
) -> Vec<u8> {
    let mut w = Writer::new(MAGIC, VERSION);
    w.usize(layers.len());
    for l in layers {
        w.usize(l.param);
        w.f32s(&l.init);
        w.f32s(&l.consolidated);
        w.bools(&l.frozen);
        w.usize(l.task_masks.len());
        for m in &l.task_masks {
            w.bools(m);
        }
    }
    w.usize(biases.len());
    for (param, init) in biases {
        w.usize(*param);
        w.f32s(init);
    }
    w.usize(task_biases.len());
    for t in task_biases {
        w.tensors(t);
    }
    w.finish()
}

/// Decodes [`encode`]'s output, checking that every vector has its layer's length and every
/// layer the same number of finished tasks.
pub fn decode(bytes: &[u8]) -> Result<Saved> {
    let mut r = Reader::new(bytes, MAGIC, VERSION)?;
    let n_layers = r.usize()?;
    // Every layer needs at least its param index and four lengths.
    ensure!(
        n_layers <= bytes.len() / 40,
        "dst state: {n_layers} layers announced in {} bytes",
        bytes.len()
    );
    let mut layers = Vec::with_capacity(n_layers);
    for li in 0..n_layers {
        let param = r.usize()?;
        let init = r.f32s()?;
        let consolidated = r.f32s()?;
        let frozen = r.bools()?;
        let n_tasks = r.usize()?;
        ensure!(
            n_tasks <= bytes.len() / 8,
            "dst state: layer {li} announces {n_tasks} task masks in {} bytes",
            bytes.len()
        );
        let task_masks = (0..n_tasks)
            .map(|_| r.bools())
            .collect::<Result<Vec<_>>>()?;
        let n = init.len();
        ensure!(
            consolidated.len() == n && frozen.len() == n && task_masks.iter().all(|m| m.len() == n),
            "dst state: layer {li} (parameter {param}) has vectors of different lengths"
        );
        layers.push(SavedLayer {
            param,
            init,
            consolidated,
            frozen,
            task_masks,
        });
    }
    let n_biases = r.usize()?;
    ensure!(
        n_biases <= bytes.len() / 16,
        "dst state: {n_biases} biases announced in {} bytes",
        bytes.len()
    );
    let biases = (0..n_biases)
        .map(|_| Ok((r.usize()?, r.f32s()?)))
        .collect::<Result<Vec<_>>>()?;
    let n_task_biases = r.usize()?;
    ensure!(
        n_task_biases <= bytes.len() / 8,
        "dst state: {n_task_biases} tasks' biases announced in {} bytes",
        bytes.len()
    );
    let task_biases = (0..n_task_biases)
        .map(|_| r.tensors())
        .collect::<Result<Vec<_>>>()?;
    r.finish()?;
    let tasks = layers.first().map_or(0, |l| l.task_masks.len());
    ensure!(
        layers.iter().all(|l| l.task_masks.len() == tasks),
        "dst state: layers disagree on the number of finished tasks"
    );
    ensure!(
        task_biases.is_empty() || task_biases.len() == tasks,
        "dst state: biases of {} tasks but masks of {tasks}",
        task_biases.len()
    );
    Ok(Saved {
        layers,
        biases,
        task_biases,
    })
}

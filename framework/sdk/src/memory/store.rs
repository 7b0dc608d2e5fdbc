//! [`SampleStore`]: the rows of a rehearsal memory in flat storage.

use serde::{Deserialize, Serialize};

use crate::{ensure, Result};

/// One sample offered to or read from a memory: borrowed inputs and payload, target, task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row<'a> {
    /// The inputs (`dim` values).
    pub x: &'a [f32],
    /// The payload (`width` values; empty for a store without payload).
    pub payload: &'a [f32],
    /// The target (output unit).
    pub target: usize,
    /// The task the sample was seen in.
    pub task: usize,
}

impl<'a> Row<'a> {
    /// A row without payload.
    pub fn new(x: &'a [f32], target: usize, task: usize) -> Self {
        Self {
            x,
            payload: &[],
            target,
            task,
        }
    }

    /// The same row with `payload` attached (e.g. the logits DER stores with a sample).
    pub fn with_payload(self, payload: &'a [f32]) -> Self {
        Self { payload, ..self }
    }
}

/// Rows copied out of a store ([`SampleStore::gather`]), ready for `append_rows`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gathered {
    /// Inputs, `rows × dim`, row-major.
    pub x: Vec<f32>,
    /// Payloads, `rows × width`, row-major.
    pub payload: Vec<f32>,
    /// Targets.
    pub targets: Vec<usize>,
    /// Task ids.
    pub tasks: Vec<usize>,
}

/// Samples in flat storage: `len × dim` inputs, `len × width` payload values, and a target
/// and a task id per row. The row order is the caller's (the policies in this module replace
/// rows in place, so an index stays valid until the row is replaced).
///
/// Serialisable (inputs and payloads as raw float bytes); deserialising checks that the field
/// lengths agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStore")]
pub struct SampleStore {
    dim: usize,
    width: usize,
    #[serde(with = "crate::state::tensor")]
    x: Vec<f32>,
    #[serde(with = "crate::state::tensor")]
    payload: Vec<f32>,
    targets: Vec<usize>,
    tasks: Vec<usize>,
}

/// A [`SampleStore`] as read from a checkpoint, before its checks (same fields, same order).
#[derive(Deserialize)]
struct RawStore {
    dim: usize,
    width: usize,
    #[serde(with = "crate::state::tensor")]
    x: Vec<f32>,
    #[serde(with = "crate::state::tensor")]
    payload: Vec<f32>,
    targets: Vec<usize>,
    tasks: Vec<usize>,
}

impl TryFrom<RawStore> for SampleStore {
    type Error = String;

    /// Accepts a store whose lengths agree: one task id per target, `dim` inputs and `width`
    /// payload values per row.
    fn try_from(s: RawStore) -> std::result::Result<Self, String> {
        let len = s.targets.len();
        if s.tasks.len() != len {
            return Err(format!(
                "sample store: {len} targets but {} task ids",
                s.tasks.len()
            ));
        }
        if Some(s.x.len()) != len.checked_mul(s.dim) {
            return Err(format!(
                "sample store: {} input values for {len} samples of {} features",
                s.x.len(),
                s.dim
            ));
        }
        if Some(s.payload.len()) != len.checked_mul(s.width) {
            return Err(format!(
                "sample store: {} payload values for {len} samples of payload width {}",
                s.payload.len(),
                s.width
            ));
        }
        Ok(Self {
            dim: s.dim,
            width: s.width,
            x: s.x,
            payload: s.payload,
            targets: s.targets,
            tasks: s.tasks,
        })
    }
}

impl SampleStore {
    /// An empty store of samples with `dim` inputs and `width` payload values (0: none).
    pub fn new(dim: usize, width: usize) -> Self {
        Self {
            dim,
            width,
            x: Vec::new(),
            payload: Vec::new(),
            targets: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Inputs per sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Payload values per sample (0: no payload).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the store holds no sample.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Inputs of row `i` (panics if `i >= len`, like slice indexing).
    pub fn x(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// Payload of row `i` (empty when `width` is 0).
    pub fn payload(&self, i: usize) -> &[f32] {
        &self.payload[i * self.width..(i + 1) * self.width]
    }

    /// Writable payload of row `i` (e.g. to refresh stored logits).
    pub fn payload_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.payload[i * self.width..(i + 1) * self.width]
    }

    /// Target of row `i`.
    pub fn target(&self, i: usize) -> usize {
        self.targets[i]
    }

    /// Task of row `i`.
    pub fn task(&self, i: usize) -> usize {
        self.tasks[i]
    }

    /// Every target, in row order.
    pub fn targets(&self) -> &[usize] {
        &self.targets
    }

    /// Every task id, in row order.
    pub fn tasks(&self) -> &[usize] {
        &self.tasks
    }

    /// Row `i`, borrowed.
    pub fn row(&self, i: usize) -> Row<'_> {
        Row {
            x: self.x(i),
            payload: self.payload(i),
            target: self.targets[i],
            task: self.tasks[i],
        }
    }

    /// Checks that `row` has this store's widths.
    pub(super) fn check(&self, row: &Row<'_>) -> Result<()> {
        ensure!(
            row.x.len() == self.dim,
            "rehearsal memory: a sample has {} features, the memory holds samples of {}",
            row.x.len(),
            self.dim
        );
        ensure!(
            row.payload.len() == self.width,
            "rehearsal memory: a sample has a payload of {} values, the memory's payload \
             width is {}",
            row.payload.len(),
            self.width
        );
        Ok(())
    }

    /// Appends `row` (an error if its widths are not the store's).
    pub fn push(&mut self, row: Row<'_>) -> Result<()> {
        self.check(&row)?;
        self.x.extend_from_slice(row.x);
        self.payload.extend_from_slice(row.payload);
        self.targets.push(row.target);
        self.tasks.push(row.task);
        Ok(())
    }

    /// Replaces row `i` by `row` (an error if `i >= len` or the widths are not the store's).
    pub fn set(&mut self, i: usize, row: Row<'_>) -> Result<()> {
        self.check(&row)?;
        ensure!(
            i < self.len(),
            "rehearsal memory: row {i} replaced in a memory of {} samples",
            self.len()
        );
        self.x[i * self.dim..(i + 1) * self.dim].copy_from_slice(row.x);
        self.payload[i * self.width..(i + 1) * self.width].copy_from_slice(row.payload);
        self.targets[i] = row.target;
        self.tasks[i] = row.task;
        Ok(())
    }

    /// Keeps the rows for which `keep(i)` is true, in their order.
    pub fn retain_rows(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let (d, w) = (self.dim, self.width);
        let mut kept = 0;
        for i in 0..self.len() {
            if !keep(i) {
                continue;
            }
            if kept != i {
                self.x.copy_within(i * d..(i + 1) * d, kept * d);
                self.payload.copy_within(i * w..(i + 1) * w, kept * w);
                self.targets[kept] = self.targets[i];
                self.tasks[kept] = self.tasks[i];
            }
            kept += 1;
        }
        self.x.truncate(kept * d);
        self.payload.truncate(kept * w);
        self.targets.truncate(kept);
        self.tasks.truncate(kept);
    }

    /// iCaRL's exemplar-set reduction (Rebuffi et al. 2017, Algorithm 5): keeps the first `m`
    /// rows of every class, in row order (store each class's exemplars in priority order, e.g.
    /// [`herding`](super::herding)'s, so the first are the best).
    pub fn keep_first_per_class(&mut self, m: usize) {
        let mut seen = self.per_class();
        seen.fill(0);
        let targets = self.targets.clone();
        self.retain_rows(|i| {
            let c = &mut seen[targets[i]];
            *c += 1;
            *c <= m
        });
    }

    /// Number of rows of each task (index = task id; length = largest task id + 1).
    pub fn per_task(&self) -> Vec<usize> {
        counts(&self.tasks)
    }

    /// Number of rows of each class (index = target; length = largest target + 1).
    pub fn per_class(&self) -> Vec<usize> {
        counts(&self.targets)
    }

    /// `min(k, len)` distinct row indices drawn uniformly at random (partial Fisher–Yates over
    /// `0..len`: draw `i` is `below(len − i)`), in the order drawn. `below(n)` must return a
    /// uniform integer in `0..n`.
    pub fn sample(&self, k: usize, mut below: impl FnMut(usize) -> usize) -> Vec<usize> {
        let n = self.len();
        let k = k.min(n);
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx
    }

    /// Copies rows `rows` (in that order) out of the store.
    pub fn gather(&self, rows: &[usize]) -> Gathered {
        let mut g = Gathered {
            x: Vec::with_capacity(rows.len() * self.dim),
            payload: Vec::with_capacity(rows.len() * self.width),
            targets: Vec::with_capacity(rows.len()),
            tasks: Vec::with_capacity(rows.len()),
        };
        for &i in rows {
            g.x.extend_from_slice(self.x(i));
            g.payload.extend_from_slice(self.payload(i));
            g.targets.push(self.targets[i]);
            g.tasks.push(self.tasks[i]);
        }
        g
    }
}

/// Occurrences of each value (index = value).
fn counts(values: &[usize]) -> Vec<usize> {
    let mut counts = vec![0; values.iter().max().map_or(0, |&v| v + 1)];
    for &v in values {
        counts[v] += 1;
    }
    counts
}

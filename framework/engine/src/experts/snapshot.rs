//! The expert pool in a trial checkpoint: [`PoolState`] is what [`Experts::snapshot`] takes at a
//! task boundary and [`Experts::rebuild`] / [`Experts::install`] put back on resume, so a trial
//! on the pool continues bit-identically (every expert's spec, parameters and buffers,
//! optimizer state and step count, base and per-task heads, routing, frozen copies, the
//! selected expert).
//!
//! The selected expert lives in the trainer's network and optimizer, which the checkpoint
//! already holds (its `params` and `optimizer`); its slot here carries no tensors of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use clef_backend::{build_network, ModelSpec, Network, Optimizer, OptimizerSpec};
use clef_data::seed::derive_seed;

use super::{read_head, Experts, Head, Loaded, Slot};

/// What a checkpoint records of one expert besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotMeta {
    /// Its architecture.
    pub spec: ModelSpec,
    /// The routed task whose head is in its output layer (`None`: its base layer).
    pub loaded: Option<usize>,
    /// Steps of its optimizer since its last reset.
    pub optimizer_steps: u64,
    /// Its body is frozen (the frozen copy is in [`SlotTensors::frozen`]).
    pub frozen: bool,
    /// Its base layer is stored apart (a task's head is loaded).
    pub base: bool,
    /// Tasks whose heads are stored apart, in the order of [`SlotTensors::heads`].
    pub heads: Vec<usize>,
}

/// What a checkpoint records of the pool besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolMeta {
    /// The selected expert (in the trainer's network).
    pub active: usize,
    /// Expert each task is routed to.
    pub routes: Vec<Option<usize>>,
    /// One entry per expert, expert 0 first.
    pub slots: Vec<SlotMeta>,
}

/// One expert's tensors.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SlotTensors {
    /// Parameter values and buffers (empty for the selected expert: they are the checkpoint's).
    pub params: Vec<Vec<f32>>,
    /// Optimizer state, `(slot name, one tensor per parameter)` (empty for the selected expert).
    pub optimizer: Vec<(String, Vec<Vec<f32>>)>,
    /// The frozen body copy (empty unless [`SlotMeta::frozen`]).
    pub frozen: Vec<Vec<f32>>,
    /// The base layer's weight and bias (empty unless [`SlotMeta::base`]).
    pub base: Vec<Vec<f32>>,
    /// Weight and bias of each stored head, in [`SlotMeta::heads`] order.
    pub heads: Vec<Vec<f32>>,
}

/// The whole pool as a checkpoint holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolState {
    /// Routing and per-expert flags.
    pub meta: PoolMeta,
    /// One entry per expert, as [`PoolMeta::slots`].
    pub slots: Vec<SlotTensors>,
}

/// A pool rebuilt from a [`PoolState`], not yet in the trial ([`Experts::install`]).
pub struct Rebuilt {
    slots: Vec<Slot>,
    active: usize,
    routes: Vec<Option<usize>>,
}

impl Rebuilt {
    /// The selected expert's network, whose parameters the checkpoint's `params` must fit.
    pub fn active_net(&self) -> Option<&dyn Network> {
        self.slots[self.active].net.as_deref()
    }
}

/// Optimizer state of every tensor: `(slot name, tensors)`; a buffer (no state) is empty.
pub fn optimizer_state(opt: &Optimizer, tensors: usize) -> Vec<(String, Vec<Vec<f32>>)> {
    opt.state_names()
        .iter()
        .map(|name| {
            let slots = (0..tensors)
                .map(|i| opt.state(name, i).map(<[f32]>::to_vec).unwrap_or_default())
                .collect();
            (name.to_string(), slots)
        })
        .collect()
}

/// Copies [`optimizer_state`]'s output into `opt`; the error names the slot that does not fit.
/// A buffer has no state: its entry must be empty.
pub fn restore_optimizer(
    opt: &mut Optimizer,
    slots: &[(String, Vec<Vec<f32>>)],
) -> Result<(), String> {
    for (name, tensors) in slots {
        for (i, v) in tensors.iter().enumerate() {
            match opt.state_mut(name, i) {
                Some(dst) if dst.len() == v.len() => dst.copy_from_slice(v),
                None if v.is_empty() => {}
                _ => return Err(format!("optimizer state `{name}` of tensor {i}")),
            }
        }
    }
    Ok(())
}

fn head_tensors(h: &Head) -> [Vec<f32>; 2] {
    [h.weight.clone(), h.bias.clone()]
}

/// Two tensors per head, checked against the expert's output layer.
fn heads_from(ts: &[Vec<f32>], count: usize, like: &Head, what: &str) -> Result<Vec<Head>, String> {
    if ts.len() != 2 * count {
        return Err(format!(
            "{what}: {} tensors, expected {} (weight and bias per head)",
            ts.len(),
            2 * count
        ));
    }
    ts.chunks_exact(2)
        .map(|c| {
            if c[0].len() != like.weight.len() || c[1].len() != like.bias.len() {
                return Err(format!(
                    "{what}: a head of {} + {} values, expected {} + {}",
                    c[0].len(),
                    c[1].len(),
                    like.weight.len(),
                    like.bias.len()
                ));
            }
            Ok(Head {
                weight: c[0].clone(),
                bias: c[1].clone(),
            })
        })
        .collect()
}

impl Experts {
    /// The pool for a checkpoint; the selected expert's parameters and optimizer are the
    /// trainer's and are not repeated here.
    pub fn snapshot(&self) -> PoolState {
        let mut meta = Vec::with_capacity(self.slots.len());
        let mut tensors = Vec::with_capacity(self.slots.len());
        for (id, s) in self.slots.iter().enumerate() {
            let mut t = SlotTensors::default();
            let mut steps = 0;
            if id != self.active {
                if let (Some(net), Some(opt)) = (&s.net, &s.opt) {
                    let p = net.params();
                    t.params = p.values().to_vec();
                    t.optimizer = optimizer_state(opt, p.len());
                    steps = opt.steps();
                }
            }
            t.frozen = s.frozen.clone().unwrap_or_default();
            if let Some(b) = &s.base {
                t.base = head_tensors(b).to_vec();
            }
            t.heads = s.heads.values().flat_map(head_tensors).collect();
            meta.push(SlotMeta {
                spec: s.spec.clone(),
                loaded: match s.loaded {
                    Loaded::Base => None,
                    Loaded::Task(t) => Some(t),
                },
                optimizer_steps: steps,
                frozen: s.frozen.is_some(),
                base: s.base.is_some(),
                heads: s.heads.keys().copied().collect(),
            });
            tensors.push(t);
        }
        PoolState {
            meta: PoolMeta {
                active: self.active,
                routes: self.routes.clone(),
                slots: meta,
            },
            slots: tensors,
        }
    }

    /// Builds the pool of `state` (every expert's network and optimizer, with `optimizer`'s
    /// settings) and checks it against this trial: the same expert 0, the same number of
    /// tasks, tensors that fit. Nothing in the trial changes until [`Experts::install`].
    pub fn rebuild(&self, state: &PoolState, optimizer: &OptimizerSpec) -> Result<Rebuilt, String> {
        let m = &state.meta;
        let n = m.slots.len();
        if n == 0 || state.slots.len() != n {
            return Err(format!(
                "the expert pool has {n} experts and {} tensor sets",
                state.slots.len()
            ));
        }
        if m.active >= n {
            return Err(format!("selected expert {} of {n}", m.active));
        }
        if m.routes.len() != self.routes.len() {
            return Err(format!(
                "the expert pool routes {} tasks, this trial has {}",
                m.routes.len(),
                self.routes.len()
            ));
        }
        if let Some(e) = m.routes.iter().flatten().find(|&&e| e >= n) {
            return Err(format!("a task is routed to expert {e} of {n}"));
        }
        if m.slots[0].spec != self.slots[0].spec {
            return Err("expert 0 is not this trial's network".into());
        }
        let mut slots = Vec::with_capacity(n);
        for (id, (meta, t)) in m.slots.iter().zip(&state.slots).enumerate() {
            let what = format!("expert {id}");
            let spec = meta.spec.clone();
            let seed = if id == 0 {
                self.init_seed
            } else {
                derive_seed(self.init_seed, &format!("expert-{id}"))
            };
            let mut net = build_network(&spec, seed).map_err(|e| format!("{what}: {e}"))?;
            let mut opt = Optimizer::new(optimizer.clone(), net.params());
            if id != m.active {
                let p = net.params_mut();
                if t.params.len() != p.len()
                    || (0..p.len()).any(|i| p.value(i).len() != t.params[i].len())
                {
                    return Err(format!("{what}: its parameters do not match its spec"));
                }
                for (i, v) in t.params.iter().enumerate() {
                    p.value_mut(i).copy_from_slice(v);
                }
                restore_optimizer(&mut opt, &t.optimizer).map_err(|e| format!("{what}: {e}"))?;
                opt.set_steps(meta.optimizer_steps);
            }
            let like = read_head(net.params());
            let frozen = if meta.frozen {
                let p = net.params();
                let body = p.len() - 2;
                if t.frozen.len() != body
                    || (0..body).any(|i| p.value(i).len() != t.frozen[i].len())
                {
                    return Err(format!("{what}: its frozen copy does not match its body"));
                }
                Some(t.frozen.clone())
            } else if t.frozen.is_empty() {
                None
            } else {
                return Err(format!(
                    "{what}: a frozen copy of an expert that is not frozen"
                ));
            };
            let base = heads_from(&t.base, usize::from(meta.base), &like, &what)?
                .into_iter()
                .next();
            let heads: BTreeMap<usize, Head> = meta
                .heads
                .iter()
                .copied()
                .zip(heads_from(&t.heads, meta.heads.len(), &like, &what)?)
                .collect();
            if heads.len() != meta.heads.len() {
                return Err(format!("{what}: a task has two heads"));
            }
            slots.push(Slot {
                spec,
                net: Some(net),
                opt: Some(opt),
                frozen,
                base,
                heads,
                loaded: meta.loaded.map_or(Loaded::Base, Loaded::Task),
            });
        }
        Ok(Rebuilt {
            slots,
            active: m.active,
            routes: m.routes.clone(),
        })
    }

    /// Puts a rebuilt pool in the trial: its selected expert becomes the trainer's `net` and
    /// `opt` (whose values the caller then restores from the checkpoint).
    pub fn install(&mut self, mut r: Rebuilt, net: &mut Box<dyn Network>, opt: &mut Optimizer) {
        let a = r.active;
        if let (Some(n), Some(o)) = (r.slots[a].net.take(), r.slots[a].opt.take()) {
            *net = n;
            *opt = o;
        }
        self.slots = r.slots;
        self.active = a;
        self.routes = r.routes;
        self.enabled = true;
    }
}

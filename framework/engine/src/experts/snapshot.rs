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

#[cfg(test)]
mod tests {
    use clef_backend::{Activation, Init, MlpSpec};

    use super::*;

    fn spec() -> MlpSpec {
        MlpSpec {
            input: 3,
            hidden: vec![4],
            output: 4,
            activation: Activation::Relu,
            init: Init::KaimingUniform,
        }
    }

    fn sgd() -> OptimizerSpec {
        OptimizerSpec::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// A pool of three tasks: expert 1 holds tasks 0 and 1 (task 1's head loaded), frozen,
    /// with momentum; expert 2 is selected for task 2.
    fn pool() -> (Experts, Box<dyn Network>, Optimizer) {
        let mut net = build_network(&spec(), 1).unwrap();
        let mut opt = Optimizer::new(sgd(), net.params());
        let mut e = Experts::new(&spec(), 9, 3);
        let a = e.add(vec![5], Activation::Tanh, &opt).unwrap();
        e.select(0, a, &mut net, &mut opt).unwrap();
        e.select(1, a, &mut net, &mut opt).unwrap();
        opt.state_mut("momentum", 0).unwrap().fill(0.25);
        opt.set_steps(3);
        e.freeze(a, true, &*net).unwrap();
        let b = e.add(vec![2, 2], Activation::Relu, &opt).unwrap();
        e.select(2, b, &mut net, &mut opt).unwrap();
        (e, net, opt)
    }

    #[test]
    fn a_rebuilt_pool_takes_the_same_snapshot() {
        let (e, _, opt) = pool();
        let state = e.snapshot();
        assert_eq!(state.meta.active, 2);
        assert_eq!(state.meta.routes, vec![Some(1), Some(1), Some(2)]);
        let one = &state.meta.slots[1];
        assert_eq!(
            (one.loaded, one.heads.clone(), one.frozen, one.base),
            (Some(1), vec![0], true, true)
        );
        assert_eq!(one.optimizer_steps, 3);
        // The selected expert's tensors are the trainer's, not repeated here.
        assert!(state.slots[2].params.is_empty());

        let (mut fresh, mut net, mut o) = (
            Experts::new(&spec(), 9, 3),
            build_network(&spec(), 1).unwrap(),
            opt.clone(),
        );
        let r = fresh.rebuild(&state, opt.spec()).unwrap();
        assert_eq!(r.active_net().map(|n| n.params().len()), Some(6));
        fresh.install(r, &mut net, &mut o);
        assert!(fresh.enabled());
        assert_eq!(fresh.snapshot(), state);
        assert_eq!(
            net.params().len(),
            6,
            "the selected expert (2 hidden layers) is the trainer's"
        );
    }

    #[test]
    fn a_pool_of_another_trial_or_with_bad_tensors_is_refused() {
        let (e, _, opt) = pool();
        let state = e.snapshot();
        let err = |s: &PoolState, target: &Experts| target.rebuild(s, opt.spec()).err().unwrap();
        let other = MlpSpec {
            hidden: vec![7],
            ..spec()
        };
        assert!(err(&state, &Experts::new(&other, 9, 3))
            .contains("expert 0 is not this trial's network"));
        assert!(
            err(&state, &Experts::new(&spec(), 9, 4)).contains("routes 3 tasks, this trial has 4")
        );
        let mut s = state.clone();
        s.slots[1].params[0].pop();
        assert!(err(&s, &Experts::new(&spec(), 9, 3))
            .contains("expert 1: its parameters do not match its spec"));
        let mut s = state.clone();
        s.slots[1].heads.pop();
        assert!(err(&s, &Experts::new(&spec(), 9, 3)).contains("expert 1: 1 tensors, expected 2"));
        let mut s = state.clone();
        s.meta.routes[0] = Some(7);
        assert!(err(&s, &Experts::new(&spec(), 9, 3)).contains("routed to expert 7 of 3"));
        let mut s = state;
        s.slots[1].frozen.clear();
        assert!(err(&s, &Experts::new(&spec(), 9, 3)).contains("frozen copy does not match"));
    }
}

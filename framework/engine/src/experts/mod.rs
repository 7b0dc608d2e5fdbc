//! A trial's pool of expert networks (the host side of `expert_add`, `expert_add_conv`,
//! `expert_select`, `expert_freeze`, `expert_params`, `head_forward` and `head_vjp`).
//!
//! The configured network is expert 0. Experts are [`ModelSpec`]s: MLPs on any backbone (on
//! an image they read the flattened pixels), ConvNets on a convolutional backbone; an expert's
//! output layer is its last two tensors, its body everything before (buffers included). The *selected* expert lives in the trainer's `net` and
//! `optimizer` (what [`crate::strategy::Ctx`] points to), so training, the parameter views, the
//! forward services and evaluation all use it with no indirection; the others wait in their
//! slots and are swapped in by `Experts::activate`.
//!
//! **Per-task heads.** Once a strategy routes tasks (`expert_select`), every routed task owns a
//! head on its expert: a copy of the output layer (weight and bias), freshly initialised the
//! first time the task goes to that expert. The head of the task being trained or evaluated is
//! loaded into the expert's output layer; the others are kept here. Task-IL masks each task to
//! its units, so a head's parameters are `n_units * (feature_dim + 1)`.
//!
//! **Default path.** Until a strategy adds, selects or freezes an expert, the pool is
//! *inactive*: the trainer makes one boolean check per step and per evaluation and otherwise
//! runs exactly as without a pool (bit-identical results).
//!
//! **Checkpoints.** [`snapshot`]: the whole pool goes into the trial checkpoint at a task
//! boundary and comes back on resume.

pub mod snapshot;

use std::collections::BTreeMap;

use clef_backend::{
    build_network, ConvNetSpec, MlpSpec, ModelSpec, Network, Optimizer, ParamStore,
};

use clef_data::scenario::Scenario;
use clef_data::seed::derive_seed;

/// An output layer: weight `[output, feature_dim]` and bias `[output]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// Weight, row-major `[output, feature_dim]`.
    pub weight: Vec<f32>,
    /// Bias.
    pub bias: Vec<f32>,
}

/// Which head is in an expert's output layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loaded {
    /// The expert's own output layer (unrouted tasks, before routing).
    Base,
    /// The head of a routed task.
    Task(usize),
}

struct Slot {
    spec: ModelSpec,
    /// `None` while this expert is the selected one (it lives in the trainer's `net`).
    net: Option<Box<dyn Network>>,
    opt: Option<Optimizer>,
    /// Body values (every tensor but the output layer's) while frozen.
    frozen: Option<Vec<Vec<f32>>>,
    /// The head not currently loaded: the base layer and the tasks' heads.
    base: Option<Head>,
    heads: BTreeMap<usize, Head>,
    loaded: Loaded,
}

/// The pool; see the [module docs](self).
pub struct Experts {
    slots: Vec<Slot>,
    active: usize,
    /// Expert each task is routed to.
    routes: Vec<Option<usize>>,
    /// Routing is in use (some strategy called `expert_add` or `expert_select`).
    enabled: bool,
    init_seed: u64,
}

/// Index of the output layer's weight and bias in a [`ParamStore`].
fn head_indices(p: &ParamStore) -> (usize, usize) {
    (p.len() - 2, p.len() - 1)
}

fn read_head(p: &ParamStore) -> Head {
    let (w, b) = head_indices(p);
    Head {
        weight: p.value(w).to_vec(),
        bias: p.value(b).to_vec(),
    }
}

/// The weight initialisation of a backbone.
fn init_of(spec: &ModelSpec) -> clef_backend::Init {
    match spec {
        ModelSpec::Mlp(m) => m.init,
        ModelSpec::ConvNet(c) => c.init,
        ModelSpec::ResNet(r) => r.init,
    }
}

fn write_head(p: &mut ParamStore, h: &Head) {
    let (w, b) = head_indices(p);
    p.value_mut(w).copy_from_slice(&h.weight);
    p.value_mut(b).copy_from_slice(&h.bias);
}

impl Experts {
    /// A pool holding only the configured network (expert 0, of architecture `spec`);
    /// `init_seed` seeds new experts and heads.
    pub fn new<S: Clone + Into<ModelSpec>>(spec: &S, init_seed: u64, num_tasks: usize) -> Self {
        Experts {
            slots: vec![Slot {
                spec: spec.clone().into(),
                net: None,
                opt: None,
                frozen: None,
                base: None,
                heads: BTreeMap::new(),
                loaded: Loaded::Base,
            }],
            active: 0,
            routes: vec![None; num_tasks],
            enabled: false,
            init_seed,
        }
    }

    /// True once a strategy has used the pool.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Number of experts (including expert 0).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: expert 0 exists.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Id of the selected expert.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Expert task `task` is routed to.
    pub fn route_of(&self, task: usize) -> Option<usize> {
        self.routes.get(task).copied().flatten()
    }

    /// Architecture of expert `id`.
    pub fn spec(&self, id: usize) -> Option<&ModelSpec> {
        self.slots.get(id).map(|s| &s.spec)
    }

    /// True if expert `id`'s body is frozen.
    pub fn is_frozen(&self, id: usize) -> bool {
        self.slots.get(id).is_some_and(|s| s.frozen.is_some())
    }

    /// Adds an MLP expert with `hidden` widths and `activation` (input, output and
    /// initialisation as expert 0) and returns its id. Its optimizer has `optimizer`'s settings.
    pub fn add(
        &mut self,
        hidden: Vec<usize>,
        activation: clef_backend::Activation,
        optimizer: &Optimizer,
    ) -> Result<usize, String> {
        let base = &self.slots[0].spec;
        let spec = ModelSpec::Mlp(MlpSpec {
            input: base.input_dim(),
            hidden,
            output: base.output(),
            activation,
            init: init_of(base),
        });
        self.push(spec, optimizer)
    }

    /// True if the configured network is convolutional, so [`Experts::add_conv`] can build
    /// experts on its image shape.
    pub fn conv_experts(&self) -> bool {
        self.slots[0].spec.image_shape().is_some()
    }

    /// Adds a ConvNet expert: `channels` 3x3 convolutions, `hidden` dense widths, and the
    /// configured network's input image shape, output size, norm, activation (ReLU for a
    /// ResNet), initialisation and pool (`[model] pool`; flatten on a ResNet); returns its id.
    pub fn add_conv(
        &mut self,
        channels: Vec<usize>,
        hidden: Vec<usize>,
        optimizer: &Optimizer,
    ) -> Result<usize, String> {
        let base = &self.slots[0].spec;
        let spec = match base {
            ModelSpec::ConvNet(c) => ConvNetSpec {
                channels,
                hidden,
                ..c.clone()
            },
            ModelSpec::ResNet(r) => ConvNetSpec {
                input: r.input,
                channels,
                hidden,
                output: r.output,
                norm: r.norm,
                activation: clef_backend::Activation::Relu,
                init: r.init,
                // The ResNet has no `pool` key; its ConvNet experts keep the flatten they had.
                pool: clef_backend::ConvPool::Flatten,
            },
            ModelSpec::Mlp(_) => {
                return Err("convolutional experts need a convolutional backbone".into())
            }
        };
        self.push(ModelSpec::ConvNet(spec), optimizer)
    }

    /// Builds an expert of `spec` (seeded per trial and id) and adds it to the pool.
    fn push(&mut self, spec: ModelSpec, optimizer: &Optimizer) -> Result<usize, String> {
        spec.validate().map_err(|e| e.to_string())?;
        let id = self.slots.len();
        let net = build_network(&spec, derive_seed(self.init_seed, &format!("expert-{id}")))
            .map_err(|e| e.to_string())?;
        let opt = Optimizer::new(optimizer.spec().clone(), net.params());
        self.slots.push(Slot {
            spec,
            net: Some(net),
            opt: Some(opt),
            frozen: None,
            base: None,
            heads: BTreeMap::new(),
            loaded: Loaded::Base,
        });
        self.enabled = true;
        Ok(id)
    }

    /// A fresh head for `task` on expert `id` (deterministic per trial, expert and task): a
    /// linear layer `feature_dim -> output` with the expert's initialisation.
    fn fresh_head(&self, id: usize, task: usize) -> Head {
        let spec = &self.slots[id].spec;
        let layer = MlpSpec {
            input: spec.feature_dim(),
            hidden: Vec::new(),
            output: spec.output(),
            activation: clef_backend::Activation::Relu,
            init: init_of(spec),
        };
        let p = ParamStore::init_mlp(
            &layer,
            derive_seed(self.init_seed, &format!("head-{id}-task-{task}")),
        );
        Head {
            weight: p.value(0).to_vec(),
            bias: p.value(1).to_vec(),
        }
    }

    /// An error naming `id` when the pool has no expert `id`.
    fn check_id(&self, id: usize) -> Result<(), String> {
        if id >= self.slots.len() {
            return Err(format!(
                "expert {id} does not exist ({} experts)",
                self.len()
            ));
        }
        Ok(())
    }

    /// Makes expert `id` the selected one with `head` in its output layer, swapping networks
    /// and optimizers through `net` and `opt` (the trainer's).
    fn activate(
        &mut self,
        id: usize,
        head: Loaded,
        net: &mut Box<dyn Network>,
        opt: &mut Optimizer,
    ) -> Result<(), String> {
        self.check_id(id)?;
        if id == self.active && self.slots[id].loaded == head {
            return Ok(());
        }
        if id != self.active {
            // An unselected expert keeps its loaded head in its own output layer.
            let cur = self.active;
            let (Some(new_net), Some(new_opt)) =
                (self.slots[id].net.take(), self.slots[id].opt.take())
            else {
                return Err(format!("expert {id} is not in its slot (a clef bug)"));
            };
            self.slots[cur].net = Some(std::mem::replace(net, new_net));
            self.slots[cur].opt = Some(std::mem::replace(opt, new_opt));
            self.active = id;
        }
        let loaded = self.slots[id].loaded;
        if loaded == head {
            return Ok(());
        }
        let current = read_head(net.params());
        match loaded {
            Loaded::Base => self.slots[id].base = Some(current),
            Loaded::Task(t) => {
                self.slots[id].heads.insert(t, current);
            }
        }
        let want = match head {
            Loaded::Base => self.slots[id].base.take(),
            Loaded::Task(t) => self.slots[id].heads.remove(&t),
        };
        let want = match (want, head) {
            (Some(h), _) => h,
            (None, Loaded::Task(t)) => self.fresh_head(id, t),
            (None, Loaded::Base) => {
                return Err(format!("expert {id} has no base head (a clef bug)"));
            }
        };
        write_head(net.params_mut(), &want);
        self.slots[id].loaded = head;
        Ok(())
    }

    /// Routes `task` to expert `id` with its own head and selects it; resets its optimizer.
    /// A head the task had on another expert is dropped.
    pub fn select(
        &mut self,
        task: usize,
        id: usize,
        net: &mut Box<dyn Network>,
        opt: &mut Optimizer,
    ) -> Result<(), String> {
        self.check_id(id)?;
        if task >= self.routes.len() {
            return Err(format!("task {task} does not exist"));
        }
        self.enabled = true;
        if let Some(old) = self.routes[task].filter(|&old| old != id) {
            // The task leaves `old`: its head there is discarded.
            if self.slots[old].loaded == Loaded::Task(task) {
                let Some(base) = self.slots[old].base.take() else {
                    return Err(format!("expert {old} has no base head (a clef bug)"));
                };
                if old == self.active {
                    write_head(net.params_mut(), &base);
                } else if let Some(n) = self.slots[old].net.as_mut() {
                    write_head(n.params_mut(), &base);
                }
                self.slots[old].loaded = Loaded::Base;
            } else {
                self.slots[old].heads.remove(&task);
            }
        }
        self.routes[task] = Some(id);
        self.activate(id, Loaded::Task(task), net, opt)?;
        opt.reset();
        Ok(())
    }

    /// At the start of `task` (pool in use): the task starts on the selected expert with a
    /// fresh head of its own, until the strategy selects another.
    pub fn start_task(
        &mut self,
        task: usize,
        net: &mut Box<dyn Network>,
        opt: &mut Optimizer,
    ) -> Result<(), String> {
        let id = self.active;
        self.select(task, id, net, opt)
    }

    /// Before evaluating `task` (task-IL, pool in use): its expert and head, or expert 0's
    /// base layer for a task that was never routed.
    pub fn for_eval(
        &mut self,
        task: usize,
        net: &mut Box<dyn Network>,
        opt: &mut Optimizer,
    ) -> Result<(), String> {
        match self.route_of(task) {
            Some(e) => self.activate(e, Loaded::Task(task), net, opt),
            None => self.activate(0, Loaded::Base, net, opt),
        }
    }

    /// Freezes or unfreezes expert `id`'s body (values now).
    pub fn freeze(&mut self, id: usize, frozen: bool, net: &dyn Network) -> Result<(), String> {
        self.check_id(id)?;
        self.enabled = true;
        if !frozen {
            self.slots[id].frozen = None;
            return Ok(());
        }
        if self.slots[id].frozen.is_some() {
            return Ok(());
        }
        let params = if id == self.active {
            net.params()
        } else {
            match &self.slots[id].net {
                Some(n) => n.params(),
                None => return Err(format!("expert {id} is not in its slot (a clef bug)")),
            }
        };
        let body = params.values()[..params.len() - 2].to_vec();
        self.slots[id].frozen = Some(body);
        Ok(())
    }

    /// After an optimizer step: restores the selected expert's body if it is frozen.
    #[inline]
    pub fn after_step(&self, net: &mut dyn Network) {
        if let Some(body) = &self.slots[self.active].frozen {
            let p = net.params_mut();
            for (i, v) in body.iter().enumerate() {
                p.value_mut(i).copy_from_slice(v);
            }
        }
    }

    /// The head of `task` on the selected expert (a copy), or an error if the task is not
    /// routed there.
    pub fn head_of(&self, task: usize, net: &dyn Network) -> Result<Head, String> {
        if self.route_of(task) != Some(self.active) {
            return Err(format!(
                "task {task} is not routed to the selected expert {}",
                self.active
            ));
        }
        let slot = &self.slots[self.active];
        if slot.loaded == Loaded::Task(task) {
            return Ok(read_head(net.params()));
        }
        slot.heads
            .get(&task)
            .cloned()
            .ok_or_else(|| format!("task {task} has no head on expert {}", self.active))
    }

    /// Parameters of expert `id`: its body plus one head per routed task
    /// (`n_units * (feature_dim + 1)`); buffers (batch-norm statistics) do not count.
    pub fn params_of(&self, id: usize, scenario: &Scenario) -> Option<usize> {
        let spec = &self.slots.get(id)?.spec;
        let fd = spec.feature_dim();
        let body = spec.num_params() - spec.output() * (fd + 1);
        let heads: usize = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| **r == Some(id))
            .map(|(t, _)| scenario.tasks[t].units.len() * (fd + 1))
            .sum();
        Some(body + heads)
    }

    /// Parameters of the pool: every expert with a routed task (see [`Experts::params_of`]).
    pub fn total_params(&self, scenario: &Scenario) -> usize {
        (0..self.slots.len())
            .filter(|&e| self.routes.contains(&Some(e)))
            .filter_map(|e| self.params_of(e, scenario))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clef_backend::{Activation, ConvPool, ImageShape, Init, Norm, OptimizerSpec};

    fn convnet(pool: ConvPool) -> ModelSpec {
        ModelSpec::ConvNet(ConvNetSpec {
            input: ImageShape {
                channels: 1,
                height: 8,
                width: 8,
            },
            channels: vec![4, 4],
            hidden: vec![],
            output: 3,
            norm: Norm::None,
            activation: Activation::Relu,
            init: Init::TorchDefault,
            pool,
        })
    }

    #[test]
    fn conv_experts_inherit_the_trials_pool() {
        for (pool, map) in [(ConvPool::Flatten, (8, 16)), (ConvPool::Avg, (8, 1))] {
            let base = convnet(pool);
            let net = build_network(&base, 1).unwrap();
            let opt = Optimizer::new(
                OptimizerSpec::Sgd {
                    lr: 0.1,
                    momentum: 0.0,
                    weight_decay: 0.0,
                    nesterov: false,
                },
                net.params(),
            );
            let mut e = Experts::new(&base, 9, 2);
            let id = e.add_conv(vec![8, 8, 8], vec![], &opt).unwrap();
            let spec = e.spec(id).unwrap();
            // Three convs, one 2x2 pool: an 8 x 4 x 4 map, flattened or averaged.
            assert_eq!(spec.feature_map(), Some(map), "{pool:?}");
            match spec {
                ModelSpec::ConvNet(s) => assert_eq!(s.pool, pool),
                other => panic!("expected a ConvNet expert, got {other:?}"),
            }
        }
    }
}

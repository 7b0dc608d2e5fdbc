//! [`NativeCnn`]: a convolutional backbone ([`Graph`]) run forward and backward over
//! host-owned parameters.

use std::fmt;

use super::super::gemm::grow;
use super::super::loss::softmax_cross_entropy;
use super::graph::{Graph, Op};
use super::lanes::LaneScratch;
use super::norm::{Mode, NormParams};
use super::simple::{self, Pool};
use crate::network::check_loss_args;
use crate::pool::install;
use crate::{BackendError, Inputs, ModelSpec, Network, ParamStore};

/// A ConvNet or CIFAR ResNet with hand-written forward and backward passes on the `gemm`
/// crate (see the module documentation of [`crate::native`] for the threading rules).
///
/// Modes: [`Network::forward`] and [`Network::features`] normalise with batch norm's running
/// statistics (evaluation); [`Network::loss_backward`] with the batch's statistics and updates
/// the running statistics (training); [`Network::vjp`] uses the batch's statistics without
/// updating them.
pub struct NativeCnn {
    spec: ModelSpec,
    graph: Graph,
    params: ParamStore,
    /// Physical buffer of each activation: an activation function whose input nobody else
    /// reads (and whose input no backward pass needs) overwrites its input's buffer.
    slot: Vec<usize>,
    /// The activation buffers of the last pass (activation `j` in `acts[slot[j]]`, `rows *
    /// graph.sizes[j]` values).
    acts: Vec<Vec<f32>>,
    /// Gradients of the activations during a backward pass (empty when not live).
    dacts: Vec<Vec<f32>>,
    /// Free gradient buffers: a gradient lives from its first write to its producer's backward
    /// pass, then returns here, so a pass needs only a few at a time.
    dpool: Vec<Vec<f32>>,
    /// Per operation: the repacked conv weight.
    wr: Vec<Vec<f32>>,
    /// Per operation: the norm statistics saved by the forward pass.
    saved: Vec<Vec<f32>>,
    /// Scratch for the weight gradient of one conv.
    dwr: Vec<f32>,
    red: Vec<f64>,
    lanes: [LaneScratch; 2],
}

impl fmt::Debug for NativeCnn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NativeCnn")
            .field("spec", &self.spec)
            .field("num_params", &self.params.numel())
            .finish_non_exhaustive()
    }
}

impl NativeCnn {
    /// Validates `spec` (a ConvNet or a ResNet) and initialises the parameters with
    /// [`ParamStore::init`] from `seed`.
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Self, BackendError> {
        let graph = match spec.graph() {
            Some(g) => g?,
            None => {
                return Err(BackendError::Spec(
                    "NativeCnn builds convolutional backbones; use NativeMlp for an MLP".into(),
                ))
            }
        };
        let params = ParamStore::init(&spec, seed);
        let n = graph.ops.len();
        let slot = slots(&graph);
        let slots = slot.iter().max().map_or(1, |m| m + 1);
        Ok(NativeCnn {
            slot,
            acts: vec![Vec::new(); slots],
            dacts: vec![Vec::new(); graph.sizes.len()],
            dpool: Vec::new(),
            wr: vec![Vec::new(); n],
            saved: vec![Vec::new(); n],
            dwr: Vec::new(),
            red: Vec::new(),
            lanes: Default::default(),
            spec,
            graph,
            params,
        })
    }

    /// Number of operations (activation `ops()` holds the logits).
    pub(super) fn ops(&self) -> usize {
        self.graph.ops.len()
    }

    /// Checks that the store still holds this network's tensors.
    pub(super) fn check_params(&self) -> Result<(), BackendError> {
        let p = &self.params;
        if p.len() != self.graph.infos.len() {
            return Err(BackendError::Spec(format!(
                "parameter store has {} tensors, the network needs {}",
                p.len(),
                self.graph.infos.len()
            )));
        }
        for (i, info) in self.graph.infos.iter().enumerate() {
            if p.value(i).len() != info.numel() || p.grad(i).len() != info.numel() {
                return Err(BackendError::Spec(format!(
                    "parameter tensor {} does not have shape {:?}",
                    info.name, info.shape
                )));
            }
        }
        Ok(())
    }

    pub(super) fn check_input(&self, x: &Inputs<'_>) -> Result<(), BackendError> {
        let d = self.spec.input_dim();
        if x.cols != d {
            return Err(BackendError::shape(
                "x (input columns: channels x height x width)",
                d,
                x.cols,
            ));
        }
        if x.rows.checked_mul(x.cols) != Some(x.data.len()) {
            return Err(BackendError::shape(
                "x (input data length)",
                format!("{} x {} values", x.rows, x.cols),
                x.data.len(),
            ));
        }
        Ok(())
    }

    /// Fails (before anything changes) if a batch norm would see a single value per channel
    /// in training mode, which has no variance (PyTorch refuses it too).
    fn check_train(&self, rows: usize) -> Result<(), BackendError> {
        for op in &self.graph.ops {
            if let Op::Norm(nm) = op {
                if nm.groups.is_none() && rows * nm.hw < 2 {
                    return Err(BackendError::shape(
                        "x (a training batch: batch norm needs more than one value per channel)",
                        format!("at least {} rows", 2usize.div_ceil(nm.hw)),
                        rows,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs operations `0..upto` on `x` (activation `upto` is then in `acts[upto]`).
    pub(super) fn forward_to(
        &mut self,
        x: &[f32],
        rows: usize,
        upto: usize,
        mode: Mode,
    ) -> Result<(), BackendError> {
        let NativeCnn {
            graph,
            params,
            slot,
            acts,
            wr,
            saved,
            red,
            lanes,
            ..
        } = self;
        let sizes = &graph.sizes;
        // The input, channel-major per sample, to channels-last.
        let shape = graph.input;
        let (c, hw) = (shape.channels, shape.height * shape.width);
        {
            let a0 = grow(&mut acts[slot[0]], rows * c * hw);
            if c == 1 {
                a0.copy_from_slice(x);
            } else {
                simple::flatten(x, rows, hw, c, false, a0, false, lanes);
            }
        }
        let values = params.values_all_mut();
        for (i, op) in graph.ops.iter().enumerate().take(upto) {
            let size = sizes[i + 1];
            let so = slot[i + 1];
            if let Op::Act { src, act } = *op {
                if slot[src] == so {
                    simple::act_in_place(&mut acts[so][..rows * size], rows, size, act, lanes);
                    continue;
                }
            }
            // The output buffer moves out while the inputs are borrowed.
            let mut ybuf = std::mem::take(&mut acts[so]);
            let y = grow(&mut ybuf, rows * size);
            let x_of = |j: usize| &acts[slot[j]][..rows * sizes[j]];
            let mut res = Ok(());
            match *op {
                Op::Conv(ref cv) => {
                    cv.repack(&values[cv.w], &mut wr[i]);
                    let b = cv.b.map(|b| &values[b][..]);
                    cv.forward(x_of(cv.src), rows, &wr[i], b, y, lanes);
                }
                Op::Norm(ref nm) => {
                    // Running statistics move out while gamma and beta are borrowed.
                    let mut st = nm.stats.map(|(m, v)| {
                        (
                            std::mem::take(&mut values[m]),
                            std::mem::take(&mut values[v]),
                        )
                    });
                    let p = NormParams {
                        gamma: &values[nm.gamma],
                        beta: &values[nm.beta],
                        stats: st.as_mut().map(|(m, v)| (&mut m[..], &mut v[..])),
                    };
                    res = nm.forward(x_of(nm.src), rows, p, mode, y, &mut saved[i], red, lanes);
                    if let (Some((m, v)), Some((mi, vi))) = (st, nm.stats) {
                        values[mi] = m;
                        values[vi] = v;
                    }
                }
                Op::Act { src, act } => simple::act_forward(x_of(src), rows, size, act, y, lanes),
                Op::MaxPool { src, c, ih, iw } => {
                    Pool { c, ih, iw }.forward(x_of(src), rows, y, lanes)
                }
                Op::Gap { src, c, hw } => simple::gap_forward(x_of(src), rows, c, hw, y, lanes),
                Op::Flatten { src, c, hw } => {
                    simple::flatten(x_of(src), rows, c, hw, false, y, false, lanes)
                }
                Op::Linear {
                    src,
                    w,
                    b,
                    fin,
                    fout,
                } => simple::linear_forward(
                    x_of(src),
                    rows,
                    &values[w],
                    &values[b],
                    fin,
                    fout,
                    y,
                    lanes,
                ),
                Op::Add { a, b } => simple::add_forward(x_of(a), x_of(b), rows, size, y, lanes),
            }
            acts[so] = ybuf;
            res?;
        }
        Ok(())
    }

    /// A free gradient buffer of `n` values for the logits (the top of a backward pass).
    /// `vjp` (`update: false`) and `backward_logits` (`update: true`: batch norm's running
    /// statistics are updated as in a training step): adds `J(x)^T * cotangent` into the
    /// gradients, in training mode.
    fn train_vjp(
        &mut self,
        x: Inputs<'_>,
        cotangent: &[f32],
        update: bool,
    ) -> Result<(), BackendError> {
        let classes = self.spec.output();
        if x.rows.checked_mul(classes) != Some(cotangent.len()) {
            return Err(BackendError::shape(
                "cotangent (one per logit)",
                format!("{} x {classes} values", x.rows),
                cotangent.len(),
            ));
        }
        self.check_input(&x)?;
        self.check_params()?;
        if x.rows == 0 {
            return Ok(());
        }
        self.check_train(x.rows)?;
        let last = self.graph.ops.len();
        install(|| -> Result<(), BackendError> {
            self.forward_to(x.data, x.rows, last, Mode::Train { update })?;
            self.top_grad(cotangent.len()).copy_from_slice(cotangent);
            self.backward(x.rows, Mode::Train { update });
            Ok(())
        })
    }

    pub(super) fn top_grad(&mut self, n: usize) -> &mut [f32] {
        let last = self.dacts.len() - 1;
        let buf = self.dpool.pop().unwrap_or_default();
        self.dacts[last] = buf;
        grow(&mut self.dacts[last], n)
    }

    /// Back-propagates `dacts[last]` (set by the caller) through every operation, adding the
    /// parameter gradients into the store; `mode` must be the one of the forward pass
    /// (batch norm's input gradient differs).
    pub(super) fn backward(&mut self, rows: usize, mode: Mode) {
        let NativeCnn {
            graph,
            params,
            slot,
            acts,
            dacts,
            dpool,
            wr,
            saved,
            dwr,
            red,
            lanes,
            ..
        } = self;
        let sizes = &graph.sizes;
        let mut written = vec![false; sizes.len()];
        written[sizes.len() - 1] = true;
        let (values, grads) = params.values_and_grads_mut();
        for (i, op) in graph.ops.iter().enumerate().rev() {
            let out = i + 1;
            if !written[out] {
                continue;
            }
            let dyb = std::mem::take(&mut dacts[out]);
            let dy = &dyb[..rows * sizes[out]];
            let x_of = |j: usize| &acts[slot[j]][..rows * sizes[j]];
            macro_rules! dx_of {
                ($j:expr) => {
                    grad_of(dacts, dpool, &mut written, $j, rows * sizes[$j])
                };
            }
            match *op {
                Op::Conv(ref cv) => {
                    let dx = (cv.src > 0).then(|| dx_of!(cv.src));
                    let (gw, gb) = two(grads, cv.w, cv.b);
                    cv.backward(x_of(cv.src), rows, &wr[i], dy, dx, gw, gb, lanes, dwr);
                }
                Op::Norm(ref nm) => {
                    let (dx, acc) = dx_of!(nm.src);
                    let (gg, gb) = two(grads, nm.gamma, Some(nm.beta));
                    let gb = gb.unwrap_or_default();
                    nm.backward(
                        x_of(nm.src),
                        rows,
                        &values[nm.gamma],
                        &saved[i],
                        dy,
                        dx,
                        acc,
                        gg,
                        gb,
                        red,
                        lanes,
                        mode,
                    );
                }
                Op::Act { src, act } => {
                    let (dx, acc) = dx_of!(src);
                    simple::act_backward(x_of(out), dy, rows, sizes[out], act, dx, acc, lanes);
                }
                Op::MaxPool { src, c, ih, iw } => {
                    let (dx, acc) = dx_of!(src);
                    Pool { c, ih, iw }.backward(x_of(src), x_of(out), dy, rows, dx, acc, lanes);
                }
                Op::Gap { src, c, hw } => {
                    let (dx, acc) = dx_of!(src);
                    simple::gap_backward(dy, rows, c, hw, dx, acc, lanes);
                }
                Op::Flatten { src, c, hw } => {
                    let (dx, acc) = dx_of!(src);
                    simple::flatten(dy, rows, c, hw, true, dx, acc, lanes);
                }
                Op::Linear {
                    src,
                    w,
                    b,
                    fin,
                    fout,
                } => {
                    let dx = (src > 0).then(|| dx_of!(src));
                    let (gw, gb) = two(grads, w, Some(b));
                    let gb = gb.unwrap_or_default();
                    simple::linear_backward(
                        x_of(src),
                        dy,
                        rows,
                        &values[w],
                        fin,
                        fout,
                        dx,
                        gw,
                        gb,
                        lanes,
                    );
                }
                Op::Add { a, b } => {
                    let per = sizes[out];
                    let (da, acc) = dx_of!(a);
                    simple::pass_grad(dy, rows, per, da, acc, lanes);
                    let (db, acc) = dx_of!(b);
                    simple::pass_grad(dy, rows, per, db, acc, lanes);
                }
            }
            // Activation `out` is produced by this operation only: its gradient is complete.
            dpool.push(dyb);
        }
    }
}

/// The gradient buffer of activation `j` (`n` values) and whether it already holds a sum
/// (then operations add into it); marks it as holding one.
fn grad_of<'a>(
    bufs: &'a mut [Vec<f32>],
    pool: &mut Vec<Vec<f32>>,
    written: &mut [bool],
    j: usize,
    n: usize,
) -> (&'a mut [f32], bool) {
    let acc = written[j];
    if !acc {
        bufs[j] = pool.pop().unwrap_or_default();
    }
    written[j] = true;
    (grow(&mut bufs[j], n), acc)
}

/// The physical buffer of every activation (see [`NativeCnn`]'s `slot`): an activation
/// function shares its input's buffer when that input (not the network input) has no other
/// reader and is not the output of another activation function or of a max-pool (whose
/// backward passes read it).
fn slots(graph: &Graph) -> Vec<usize> {
    let n = graph.sizes.len();
    let mut readers = vec![0usize; n];
    for op in &graph.ops {
        for src in op.sources().into_iter().flatten() {
            readers[src] += 1;
        }
    }
    let mut slot: Vec<usize> = vec![0];
    let mut next = 1;
    for (i, op) in graph.ops.iter().enumerate() {
        let shared = match *op {
            Op::Act { src, .. } => {
                // Activation functions and max-pools read their own output backwards.
                let producer_reads_output =
                    src > 0 && matches!(graph.ops[src - 1], Op::Act { .. } | Op::MaxPool { .. });
                (src > 0 && readers[src] == 1 && !producer_reads_output).then_some(slot[src])
            }
            _ => None,
        };
        slot.push(shared.unwrap_or_else(|| {
            next += 1;
            next - 1
        }));
        debug_assert_eq!(slot.len(), i + 2);
    }
    slot
}

/// Gradient buffers `i` and `j > i` (if any), both mutable.
fn two(grads: &mut [Vec<f32>], i: usize, j: Option<usize>) -> (&mut [f32], Option<&mut [f32]>) {
    match j {
        None => (&mut grads[i], None),
        Some(j) => {
            let (lo, hi) = grads.split_at_mut(j);
            (&mut lo[i], Some(&mut hi[0]))
        }
    }
}

impl Network for NativeCnn {
    fn backend_name(&self) -> &'static str {
        "native"
    }

    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn forward(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        self.check_input(&x)?;
        self.check_params()?;
        out.clear();
        if x.rows == 0 {
            return Ok(());
        }
        let last = self.graph.ops.len();
        install(|| self.forward_to(x.data, x.rows, last, Mode::Eval))?;
        out.extend_from_slice(&self.acts[self.slot[last]][..x.rows * self.graph.sizes[last]]);
        Ok(())
    }

    fn features(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        self.check_input(&x)?;
        self.check_params()?;
        out.clear();
        if x.rows == 0 {
            return Ok(());
        }
        let f = self.graph.features;
        install(|| self.forward_to(x.data, x.rows, f, Mode::Eval))?;
        out.extend_from_slice(&self.acts[self.slot[f]][..x.rows * self.graph.sizes[f]]);
        Ok(())
    }

    fn loss_backward(
        &mut self,
        x: Inputs<'_>,
        targets: &[usize],
        class_mask: Option<&[bool]>,
        logits_out: &mut Vec<f32>,
    ) -> Result<f32, BackendError> {
        let (rows, classes) = (x.rows, self.spec.output());
        let mask = check_loss_args(rows, classes, targets, class_mask)?;
        self.check_input(&x)?;
        self.check_params()?;
        logits_out.clear();
        if rows == 0 {
            return Ok(0.0);
        }
        self.check_train(rows)?;
        let last = self.graph.ops.len();
        let total = install(|| -> Result<f64, BackendError> {
            self.forward_to(x.data, rows, last, Mode::Train { update: true })?;
            self.top_grad(rows * classes);
            let total = softmax_cross_entropy(
                &self.acts[self.slot[last]][..rows * classes],
                classes,
                targets,
                |r, c| mask.allowed(r, c),
                1.0 / rows as f32,
                &mut self.dacts[last][..rows * classes],
            );
            self.backward(rows, Mode::Train { update: true });
            Ok(total)
        })?;
        logits_out.extend_from_slice(&self.acts[self.slot[last]][..rows * classes]);
        Ok((total / rows as f64) as f32)
    }

    fn train_logits(&mut self, x: Inputs<'_>, out: &mut Vec<f32>) -> Result<(), BackendError> {
        let (rows, classes) = (x.rows, self.spec.output());
        self.check_input(&x)?;
        self.check_params()?;
        out.clear();
        if rows == 0 {
            return Ok(());
        }
        self.check_train(rows)?;
        let last = self.graph.ops.len();
        install(|| self.forward_to(x.data, rows, last, Mode::Train { update: false }))?;
        out.extend_from_slice(&self.acts[self.slot[last]][..rows * classes]);
        Ok(())
    }

    fn backward_logits(&mut self, x: Inputs<'_>, cotangent: &[f32]) -> Result<(), BackendError> {
        self.train_vjp(x, cotangent, true)
    }

    fn ntk_gram(
        &mut self,
        a: Inputs<'_>,
        b: Inputs<'_>,
        output: usize,
        out: &mut [f64],
    ) -> Result<(), BackendError> {
        self.ntk_gram_into(a, b, output, out)
    }

    fn sample_grad_powers(
        &mut self,
        x: Inputs<'_>,
        cotangent: &[f32],
        power: u32,
    ) -> Result<(), BackendError> {
        self.sample_grad_powers_into(x, cotangent, power)
    }

    fn vjp(&mut self, x: Inputs<'_>, cotangent: &[f32]) -> Result<(), BackendError> {
        self.train_vjp(x, cotangent, false)
    }
}

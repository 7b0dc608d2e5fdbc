//! A convolutional backbone as a list of operations over per-sample activations, built once
//! from its spec: the parameter tensors (names, shapes, roles, initialisation), the shapes of
//! every activation, and the multiply-adds. The spec's `num_params`, `feature_dim`,
//! `forward_macs` and `validate`, [`crate::ParamStore::init`] and `NativeCnn` all read it.
//!
//! Activations are stored channels-last (`[h, w, c]` per sample, samples one after another);
//! activation 0 is the input, operation `i` writes activation `i + 1`.

use crate::spec::{Activation, ConvNetSpec, ConvPool, ImageShape, Norm, ResNetSpec};
use crate::{BackendError, ParamInfo, ParamRole};

/// How a tensor is initialised (see [`crate::ParamStore::init`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum InitKind {
    /// A conv or dense weight with its fans (`fan_in = in * kh * kw`, `fan_out = out * kh * kw`).
    Weight { fan_in: usize, fan_out: usize },
    /// A conv or dense bias (PyTorch draws it from U(±1/sqrt(fan_in)); zero otherwise).
    Bias { fan_in: usize },
    /// All ones (norm weight, BN running variance).
    Ones,
    /// All zeros (norm bias, BN running mean).
    Zeros,
}

/// A 2-D convolution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConvOp {
    pub src: usize,
    pub w: usize,
    pub b: Option<usize>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Batch or group normalisation of `c` channels over `hw` pixels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NormOp {
    pub src: usize,
    /// `None` = batch norm, `Some(g)` = group norm with `g` groups.
    pub groups: Option<usize>,
    pub gamma: usize,
    pub beta: usize,
    /// Running mean and variance (batch norm only).
    pub stats: Option<(usize, usize)>,
    pub c: usize,
    pub hw: usize,
}

/// One operation; its output is the activation after the previous one's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Conv(ConvOp),
    Norm(NormOp),
    /// Elementwise non-linearity.
    Act {
        src: usize,
        act: Activation,
    },
    /// 2x2 max-pool, stride 2 (floor).
    MaxPool {
        src: usize,
        c: usize,
        ih: usize,
        iw: usize,
    },
    /// Mean over the `hw` pixels of each of `c` channels.
    Gap {
        src: usize,
        c: usize,
        hw: usize,
    },
    /// Channels-last to PyTorch's `[c, h, w]` order.
    Flatten {
        src: usize,
        c: usize,
        hw: usize,
    },
    /// Dense layer `y = x Wᵀ + b`.
    Linear {
        src: usize,
        w: usize,
        b: usize,
        fin: usize,
        fout: usize,
    },
    /// Residual sum of two activations of the same size.
    Add {
        a: usize,
        b: usize,
    },
}

impl Op {
    /// The activations this operation reads.
    pub(crate) fn sources(&self) -> [Option<usize>; 2] {
        match *self {
            Op::Conv(ConvOp { src, .. })
            | Op::Norm(NormOp { src, .. })
            | Op::Act { src, .. }
            | Op::MaxPool { src, .. }
            | Op::Gap { src, .. }
            | Op::Flatten { src, .. }
            | Op::Linear { src, .. } => [Some(src), None],
            Op::Add { a, b } => [Some(a), Some(b)],
        }
    }
}

/// The compiled backbone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Graph {
    pub infos: Vec<ParamInfo>,
    pub inits: Vec<InitKind>,
    pub ops: Vec<Op>,
    /// Values per sample of every activation (`sizes[0]` = the input).
    pub sizes: Vec<usize>,
    /// The activation that feeds the head (the `features`).
    pub features: usize,
    pub macs: usize,
    /// The input image shape.
    pub input: ImageShape,
}

/// Spatial shape of an activation while building.
#[derive(Debug, Clone, Copy)]
struct Cur {
    act: usize,
    c: usize,
    h: usize,
    w: usize,
}

struct Builder {
    g: Graph,
    layer: usize,
    norm: Norm,
}

fn spec_err(msg: String) -> BackendError {
    BackendError::Spec(msg)
}

impl Builder {
    fn new(input: ImageShape, norm: Norm) -> Result<Self, BackendError> {
        if input.numel() == 0 {
            return Err(spec_err(format!(
                "the input image shape must be positive, got {}x{}x{} (channels x height x width)",
                input.channels, input.height, input.width
            )));
        }
        if let Norm::Group { groups: 0 } = norm {
            return Err(spec_err(
                "group norm needs at least one group, got 0".into(),
            ));
        }
        Ok(Builder {
            g: Graph {
                infos: Vec::new(),
                inits: Vec::new(),
                ops: Vec::new(),
                sizes: vec![input.numel()],
                features: 0,
                macs: 0,
                input,
            },
            layer: 0,
            norm,
        })
    }

    fn tensor(
        &mut self,
        name: String,
        shape: Vec<usize>,
        role: ParamRole,
        init: InitKind,
    ) -> usize {
        self.g.infos.push(ParamInfo {
            name,
            shape,
            role,
            layer: self.layer,
        });
        self.g.inits.push(init);
        self.g.infos.len() - 1
    }

    fn push(&mut self, op: Op, size: usize) -> usize {
        self.g.ops.push(op);
        self.g.sizes.push(size);
        self.g.sizes.len() - 1
    }

    /// A `k x k` convolution named `name` (`name.weight`, `name.bias` if `bias`).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: Cur,
        name: &str,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Result<Cur, BackendError> {
        if cout == 0 {
            return Err(spec_err(format!(
                "{name}: a convolution needs at least one output channel"
            )));
        }
        if x.h + 2 * pad < k || x.w + 2 * pad < k {
            return Err(spec_err(format!(
                "{name}: the {k}x{k} convolution gets a {}x{} input, smaller than its kernel",
                x.h, x.w
            )));
        }
        let (oh, ow) = (
            (x.h + 2 * pad - k) / stride + 1,
            (x.w + 2 * pad - k) / stride + 1,
        );
        let fan_in = x.c * k * k;
        let w = self.tensor(
            format!("{name}.weight"),
            vec![cout, x.c, k, k],
            ParamRole::Weight,
            InitKind::Weight {
                fan_in,
                fan_out: cout * k * k,
            },
        );
        let b = bias.then(|| {
            self.tensor(
                format!("{name}.bias"),
                vec![cout],
                ParamRole::Bias,
                InitKind::Bias { fan_in },
            )
        });
        self.g.macs += cout * oh * ow * fan_in;
        let op = Op::Conv(ConvOp {
            src: x.act,
            w,
            b,
            cin: x.c,
            cout,
            k,
            stride,
            pad,
            ih: x.h,
            iw: x.w,
            oh,
            ow,
        });
        self.layer += 1;
        let act = self.push(op, oh * ow * cout);
        Ok(Cur {
            act,
            c: cout,
            h: oh,
            w: ow,
        })
    }

    /// The configured norm named `name` (nothing under [`Norm::None`]).
    fn norm(&mut self, x: Cur, name: &str) -> Result<Cur, BackendError> {
        let groups = match self.norm {
            Norm::None => return Ok(x),
            Norm::Batch => None,
            Norm::Group { groups } => {
                if !x.c.is_multiple_of(groups) {
                    return Err(spec_err(format!(
                        "{name}: group norm with {groups} groups needs a channel count divisible \
                         by {groups}, got {} channels",
                        x.c
                    )));
                }
                Some(groups)
            }
        };
        let layer = self.layer;
        self.layer = layer.saturating_sub(1); // the conv it follows
        let c = x.c;
        let gamma = self.tensor(
            format!("{name}.weight"),
            vec![c],
            ParamRole::Weight,
            InitKind::Ones,
        );
        let beta = self.tensor(
            format!("{name}.bias"),
            vec![c],
            ParamRole::Bias,
            InitKind::Zeros,
        );
        let stats = groups.is_none().then(|| {
            let m = self.tensor(
                format!("{name}.running_mean"),
                vec![c],
                ParamRole::Buffer,
                InitKind::Zeros,
            );
            let v = self.tensor(
                format!("{name}.running_var"),
                vec![c],
                ParamRole::Buffer,
                InitKind::Ones,
            );
            (m, v)
        });
        self.layer = layer;
        let op = Op::Norm(NormOp {
            src: x.act,
            groups,
            gamma,
            beta,
            stats,
            c,
            hw: x.h * x.w,
        });
        let act = self.push(op, self.g.sizes[x.act]);
        Ok(Cur { act, ..x })
    }

    fn act(&mut self, x: Cur, act: Activation) -> Cur {
        let a = self.push(Op::Act { src: x.act, act }, self.g.sizes[x.act]);
        Cur { act: a, ..x }
    }

    fn linear(
        &mut self,
        src: usize,
        fin: usize,
        fout: usize,
        name: &str,
    ) -> Result<usize, BackendError> {
        if fout == 0 {
            return Err(spec_err(format!(
                "{name}: a dense layer needs at least one unit"
            )));
        }
        let w = self.tensor(
            format!("{name}.weight"),
            vec![fout, fin],
            ParamRole::Weight,
            InitKind::Weight {
                fan_in: fin,
                fan_out: fout,
            },
        );
        let b = self.tensor(
            format!("{name}.bias"),
            vec![fout],
            ParamRole::Bias,
            InitKind::Bias { fan_in: fin },
        );
        self.g.macs += fin * fout;
        self.layer += 1;
        Ok(self.push(
            Op::Linear {
                src,
                w,
                b,
                fin,
                fout,
            },
            fout,
        ))
    }
}

impl Graph {
    /// The ConvNet of `spec` (see [`ConvNetSpec`]); errors say which layer cannot be built.
    pub(crate) fn convnet(spec: &ConvNetSpec) -> Result<Graph, BackendError> {
        let mut b = Builder::new(spec.input, spec.norm)?;
        if spec.channels.is_empty() {
            return Err(spec_err(
                "convnet: `channels` must list at least one convolution".into(),
            ));
        }
        let mut x = Cur {
            act: 0,
            c: spec.input.channels,
            h: spec.input.height,
            w: spec.input.width,
        };
        let bias = spec.norm == Norm::None;
        for (i, &cout) in spec.channels.iter().enumerate() {
            x = b.conv(x, &format!("convs.{i}"), cout, 3, 1, 1, bias)?;
            x = b.norm(x, &format!("norms.{i}"))?;
            x = b.act(x, spec.activation);
            if i % 2 == 1 {
                if x.h < 2 || x.w < 2 {
                    return Err(spec_err(format!(
                        "convnet: the 2x2 max-pool after conv {i} gets a {}x{} map, which it \
                         would shrink below 1x1 (input {}x{}; use fewer convolutions or larger \
                         images)",
                        x.h, x.w, spec.input.height, spec.input.width
                    )));
                }
                let (oh, ow) = (x.h / 2, x.w / 2);
                let op = Op::MaxPool {
                    src: x.act,
                    c: x.c,
                    ih: x.h,
                    iw: x.w,
                };
                let act = b.push(op, oh * ow * x.c);
                x = Cur {
                    act,
                    h: oh,
                    w: ow,
                    ..x
                };
            }
        }
        let (op, flat) = match spec.pool {
            ConvPool::Flatten => (
                Op::Flatten {
                    src: x.act,
                    c: x.c,
                    hw: x.h * x.w,
                },
                x.c * x.h * x.w,
            ),
            ConvPool::Avg => (
                Op::Gap {
                    src: x.act,
                    c: x.c,
                    hw: x.h * x.w,
                },
                x.c,
            ),
        };
        let mut cur = b.push(op, flat);
        let mut fin = flat;
        for (l, &h) in spec.hidden.iter().enumerate() {
            cur = b.linear(cur, fin, h, &format!("layers.{l}"))?;
            cur = b.push(
                Op::Act {
                    src: cur,
                    act: spec.activation,
                },
                h,
            );
            fin = h;
        }
        b.g.features = cur;
        b.linear(
            cur,
            fin,
            spec.output,
            &format!("layers.{}", spec.hidden.len()),
        )?;
        Ok(b.g)
    }

    /// The CIFAR ResNet of `spec` (see [`ResNetSpec`]).
    pub(crate) fn resnet(spec: &ResNetSpec) -> Result<Graph, BackendError> {
        let mut b = Builder::new(spec.input, spec.norm)?;
        if spec.width == 0 {
            return Err(spec_err("resnet: `width` must be positive".into()));
        }
        if let Some(s) = spec.blocks.iter().position(|&n| n == 0) {
            return Err(spec_err(format!(
                "resnet: every stage needs at least one block, stage {} has none (blocks {:?})",
                s + 1,
                spec.blocks
            )));
        }
        let bias = spec.norm == Norm::None;
        let x = Cur {
            act: 0,
            c: spec.input.channels,
            h: spec.input.height,
            w: spec.input.width,
        };
        let x = b.conv(x, "conv1", spec.width, 3, 1, 1, bias)?;
        let x = b.norm(x, "bn1")?;
        let mut x = b.act(x, Activation::Relu);
        for (s, &blocks) in spec.blocks.iter().enumerate() {
            let planes = spec.width << s;
            let stride = if s == 0 { 1 } else { 2 };
            if stride == 2 && (x.h < 2 || x.w < 2) {
                return Err(spec_err(format!(
                    "resnet: stage {} halves a {}x{} map, which would shrink it below 1x1 (the \
                     input {}x{} is too small for four stages; use at least 8x8 images)",
                    s + 1,
                    x.h,
                    x.w,
                    spec.input.height,
                    spec.input.width
                )));
            }
            for blk in 0..blocks {
                let st = if blk == 0 { stride } else { 1 };
                let p = format!("layer{}.{blk}", s + 1);
                let input = x;
                let y = b.conv(input, &format!("{p}.conv1"), planes, 3, st, 1, bias)?;
                let y = b.norm(y, &format!("{p}.bn1"))?;
                let y = b.act(y, Activation::Relu);
                let y = b.conv(y, &format!("{p}.conv2"), planes, 3, 1, 1, bias)?;
                let y = b.norm(y, &format!("{p}.bn2"))?;
                let short = if st != 1 || input.c != planes {
                    let z = b.conv(input, &format!("{p}.shortcut.0"), planes, 1, st, 0, bias)?;
                    b.norm(z, &format!("{p}.shortcut.1"))?
                } else {
                    input
                };
                let sum = b.push(
                    Op::Add {
                        a: y.act,
                        b: short.act,
                    },
                    b.g.sizes[y.act],
                );
                x = b.act(Cur { act: sum, ..y }, Activation::Relu);
            }
        }
        let feat = b.push(
            Op::Gap {
                src: x.act,
                c: x.c,
                hw: x.h * x.w,
            },
            x.c,
        );
        b.g.features = feat;
        b.linear(feat, x.c, spec.output, "linear")?;
        Ok(b.g)
    }

    /// Trainable scalars (buffers excluded).
    pub(crate) fn num_params(&self) -> usize {
        self.infos
            .iter()
            .filter(|i| i.role != ParamRole::Buffer)
            .map(ParamInfo::numel)
            .sum()
    }
}

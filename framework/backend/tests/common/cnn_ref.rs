//! An f64 reference of the convolutional backbones, written from the PyTorch definitions
//! (NCHW tensors, naive loops) independently of the backend's channels-last kernels.

use std::collections::HashMap;

use clef_backend::{Activation, ConvPool, ModelSpec, Norm, ParamStore};

/// An NCHW tensor.
#[derive(Clone, Debug)]
pub struct T {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub d: Vec<f64>,
}

impl T {
    fn at(&self, n: usize, c: usize, y: usize, x: usize) -> f64 {
        self.d[((n * self.c + c) * self.h + y) * self.w + x]
    }
    fn zeros(n: usize, c: usize, h: usize, w: usize) -> T {
        T {
            n,
            c,
            h,
            w,
            d: vec![0.0; n * c * h * w],
        }
    }
}

/// Parameters by name, in f64.
pub struct RefNet {
    pub spec: ModelSpec,
    pub p: HashMap<String, Vec<f64>>,
    /// Training mode: batch statistics.
    pub train: bool,
    /// Per batch norm in training: (batch mean, unbiased batch variance).
    pub batch_stats: HashMap<String, (Vec<f64>, Vec<f64>)>,
}

impl RefNet {
    pub fn new(spec: &ModelSpec, store: &ParamStore) -> Self {
        let p = store
            .infos()
            .iter()
            .enumerate()
            .map(|(i, info)| {
                (
                    info.name.clone(),
                    store.value(i).iter().map(|&v| f64::from(v)).collect(),
                )
            })
            .collect();
        RefNet {
            spec: spec.clone(),
            p,
            train: false,
            batch_stats: HashMap::new(),
        }
    }

    fn get(&self, name: &str) -> &[f64] {
        self.p
            .get(name)
            .unwrap_or_else(|| panic!("reference: no parameter `{name}`"))
    }

    pub fn conv(&self, x: &T, name: &str, cout: usize, k: usize, stride: usize, pad: usize) -> T {
        let w = self.get(&format!("{name}.weight"));
        let b = self.p.get(&format!("{name}.bias"));
        let oh = (x.h + 2 * pad - k) / stride + 1;
        let ow = (x.w + 2 * pad - k) / stride + 1;
        let mut y = T::zeros(x.n, cout, oh, ow);
        for n in 0..x.n {
            for o in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = b.map_or(0.0, |b| b[o]);
                        for ci in 0..x.c {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as isize - pad as isize;
                                    let ix = (ox * stride + kx) as isize - pad as isize;
                                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize
                                    {
                                        continue;
                                    }
                                    s += w[((o * x.c + ci) * k + ky) * k + kx]
                                        * x.at(n, ci, iy as usize, ix as usize);
                                }
                            }
                        }
                        y.d[((n * cout + o) * oh + oy) * ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    pub fn norm(&mut self, x: &T, name: &str, norm: Norm) -> T {
        let (hw, c) = (x.h * x.w, x.c);
        let mut y = x.clone();
        match norm {
            Norm::None => return y,
            Norm::Batch => {
                let g = self.get(&format!("{name}.weight")).to_vec();
                let b = self.get(&format!("{name}.bias")).to_vec();
                let (mean, var) = if self.train {
                    let m = (x.n * hw) as f64;
                    let mut mean = vec![0.0; c];
                    let mut var = vec![0.0; c];
                    for ch in 0..c {
                        let vals = (0..x.n).flat_map(|n| (0..hw).map(move |p| (n, p)));
                        mean[ch] = vals
                            .clone()
                            .map(|(n, p)| x.d[(n * c + ch) * hw + p])
                            .sum::<f64>()
                            / m;
                        var[ch] = vals
                            .map(|(n, p)| (x.d[(n * c + ch) * hw + p] - mean[ch]).powi(2))
                            .sum::<f64>()
                            / m;
                    }
                    let unbiased = var.iter().map(|v| v * m / (m - 1.0)).collect();
                    self.batch_stats
                        .insert(name.to_string(), (mean.clone(), unbiased));
                    (mean, var)
                } else {
                    (
                        self.get(&format!("{name}.running_mean")).to_vec(),
                        self.get(&format!("{name}.running_var")).to_vec(),
                    )
                };
                for n in 0..x.n {
                    for ch in 0..c {
                        for p in 0..hw {
                            let i = (n * c + ch) * hw + p;
                            y.d[i] = (x.d[i] - mean[ch]) / (var[ch] + 1e-5).sqrt() * g[ch] + b[ch];
                        }
                    }
                }
            }
            Norm::Group { groups } => {
                let g = self.get(&format!("{name}.weight"));
                let b = self.get(&format!("{name}.bias"));
                let cpg = c / groups;
                let m = (cpg * hw) as f64;
                for n in 0..x.n {
                    for gi in 0..groups {
                        let r = (n * c + gi * cpg) * hw..(n * c + (gi + 1) * cpg) * hw;
                        let mean = x.d[r.clone()].iter().sum::<f64>() / m;
                        let var = x.d[r.clone()]
                            .iter()
                            .map(|v| (v - mean).powi(2))
                            .sum::<f64>()
                            / m;
                        for i in r {
                            let ch = (i / hw) % c;
                            y.d[i] = (x.d[i] - mean) / (var + 1e-5).sqrt() * g[ch] + b[ch];
                        }
                    }
                }
            }
        }
        y
    }

    pub fn act(x: &T, a: Activation) -> T {
        let mut y = x.clone();
        for v in &mut y.d {
            *v = match a {
                Activation::Relu => v.max(0.0),
                Activation::Tanh => v.tanh(),
                Activation::Sigmoid => 1.0 / (1.0 + (-*v).exp()),
            };
        }
        y
    }

    pub fn maxpool(x: &T) -> T {
        let (oh, ow) = (x.h / 2, x.w / 2);
        let mut y = T::zeros(x.n, x.c, oh, ow);
        for n in 0..x.n {
            for c in 0..x.c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let m = [(0, 0), (0, 1), (1, 0), (1, 1)]
                            .iter()
                            .map(|&(a, b)| x.at(n, c, 2 * oy + a, 2 * ox + b))
                            .fold(f64::NEG_INFINITY, f64::max);
                        y.d[((n * x.c + c) * oh + oy) * ow + ox] = m;
                    }
                }
            }
        }
        y
    }

    /// `[n, fin]` to `[n, fout]`.
    pub fn linear(&self, x: &[f64], n: usize, name: &str, fout: usize) -> Vec<f64> {
        let w = self.get(&format!("{name}.weight"));
        let b = self.get(&format!("{name}.bias"));
        let fin = x.len() / n;
        let mut y = vec![0.0; n * fout];
        for r in 0..n {
            for o in 0..fout {
                y[r * fout + o] = b[o]
                    + (0..fin)
                        .map(|i| w[o * fin + i] * x[r * fin + i])
                        .sum::<f64>();
            }
        }
        y
    }

    /// `nn.AdaptiveAvgPool2d(1)` + flatten: the mean of each channel's map, `[n, c]`.
    fn global_mean(t: &T) -> Vec<f64> {
        let hw = t.h * t.w;
        (0..t.n * t.c)
            .map(|i| t.d[i * hw..(i + 1) * hw].iter().sum::<f64>() / hw as f64)
            .collect()
    }

    /// `(features, logits)` of `rows` NCHW images.
    pub fn forward(&mut self, x: &[f32], rows: usize) -> (Vec<f64>, Vec<f64>) {
        self.batch_stats.clear();
        let spec = self.spec.clone();
        let img = spec.image_shape().expect("an image backbone");
        let mut t = T {
            n: rows,
            c: img.channels,
            h: img.height,
            w: img.width,
            d: x.iter().map(|&v| f64::from(v)).collect(),
        };
        match &spec {
            ModelSpec::ConvNet(s) => {
                for (i, &c) in s.channels.iter().enumerate() {
                    t = self.conv(&t, &format!("convs.{i}"), c, 3, 1, 1);
                    t = self.norm(&t, &format!("norms.{i}"), s.norm);
                    t = Self::act(&t, s.activation);
                    if i % 2 == 1 {
                        t = Self::maxpool(&t);
                    }
                }
                let mut h = match s.pool {
                    ConvPool::Flatten => t.d.clone(),
                    ConvPool::Avg => Self::global_mean(&t),
                };
                for (l, &w) in s.hidden.iter().enumerate() {
                    h = self.linear(&h, rows, &format!("layers.{l}"), w);
                    let tt = T {
                        n: rows,
                        c: w,
                        h: 1,
                        w: 1,
                        d: h,
                    };
                    h = Self::act(&tt, s.activation).d;
                }
                let logits = self.linear(&h, rows, &format!("layers.{}", s.hidden.len()), s.output);
                (h, logits)
            }
            ModelSpec::ResNet(s) => {
                t = self.conv(&t, "conv1", s.width, 3, 1, 1);
                t = self.norm(&t, "bn1", s.norm);
                t = Self::act(&t, Activation::Relu);
                for (st, &blocks) in s.blocks.iter().enumerate() {
                    let planes = s.width << st;
                    for b in 0..blocks {
                        let stride = if st > 0 && b == 0 { 2 } else { 1 };
                        let p = format!("layer{}.{b}", st + 1);
                        let mut y = self.conv(&t, &format!("{p}.conv1"), planes, 3, stride, 1);
                        y = self.norm(&y, &format!("{p}.bn1"), s.norm);
                        y = Self::act(&y, Activation::Relu);
                        y = self.conv(&y, &format!("{p}.conv2"), planes, 3, 1, 1);
                        y = self.norm(&y, &format!("{p}.bn2"), s.norm);
                        let short = if stride != 1 || t.c != planes {
                            let z = self.conv(&t, &format!("{p}.shortcut.0"), planes, 1, stride, 0);
                            self.norm(&z, &format!("{p}.shortcut.1"), s.norm)
                        } else {
                            t.clone()
                        };
                        for (a, b) in y.d.iter_mut().zip(&short.d) {
                            *a += b;
                        }
                        t = Self::act(&y, Activation::Relu);
                    }
                }
                let feats = Self::global_mean(&t);
                let logits = self.linear(&feats, rows, "linear", s.output);
                (feats, logits)
            }
            ModelSpec::Mlp(_) => panic!("not an image backbone"),
        }
    }

    /// Mean softmax cross-entropy of the logits (optionally masked per class).
    pub fn loss(&mut self, x: &[f32], rows: usize, y: &[usize], mask: Option<&[bool]>) -> f64 {
        let (_, logits) = self.forward(x, rows);
        let k = logits.len() / rows;
        let mut total = 0.0;
        for r in 0..rows {
            let row = &logits[r * k..(r + 1) * k];
            let on = |c: usize| mask.is_none_or(|m| m[c]);
            let max = (0..k)
                .filter(|&c| on(c))
                .map(|c| row[c])
                .fold(f64::NEG_INFINITY, f64::max);
            let lse = max
                + (0..k)
                    .filter(|&c| on(c))
                    .map(|c| (row[c] - max).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - row[y[r]];
        }
        total / rows as f64
    }
}

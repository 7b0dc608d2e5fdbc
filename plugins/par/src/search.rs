//! The search space, parameter accounting, and the MdeNAS multinomial distribution
//! learning update of the official PAR code (`github.com/WenjinW/PAR`,
//! `src/automl/mdenas_search.py`).
//!
//! The space has three decisions ("edges"). On an MLP backbone: depth, width (shared by every
//! hidden layer) and activation. On a convolutional backbone: the number of 3x3 convolutions,
//! their channel count (shared by every convolution) and a third decision with a single option
//! (the backbone's activation; the dense part after the convolutions is the backbone's). Each
//! has a probability vector, initially uniform. After an architecture is
//! sampled, trained and evaluated:
//!
//! ```text
//! h_e[k, o] += 1 for the sampled option o of decision k;  h_a[k, o] = its validation accuracy
//! v⁺(o) = #{o' : h_e(o) < h_e(o') and h_a(o) > h_a(o')}
//! v⁻(o) = #{o' : h_e(o) > h_e(o') and h_a(o) < h_a(o')}
//! p_k ← softmax(p_k + lr · (v⁺ − v⁻))
//! ```
//!
//! The final architecture takes the most probable option of every decision.

use clef_sdk::Activation;

/// An expert architecture: an MLP, or (non-empty `channels`) a ConvNet body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "StoredArch", try_from = "StoredArch")]
pub struct Arch {
    /// Output channels of each 3x3 convolution (empty: an MLP).
    pub channels: Vec<usize>,
    /// Hidden (dense) widths.
    pub hidden: Vec<usize>,
    /// Hidden activation (MLP experts; a ConvNet expert has the backbone's).
    pub activation: Activation,
}

/// Activation code used in reports and state (0 relu, 1 tanh, 2 sigmoid).
pub fn activation_code(a: Activation) -> u8 {
    match a {
        Activation::Relu => 0,
        Activation::Tanh => 1,
        Activation::Sigmoid => 2,
    }
}

/// Inverse of [`activation_code`].
pub fn activation_of(code: u8) -> Option<Activation> {
    match code {
        0 => Some(Activation::Relu),
        1 => Some(Activation::Tanh),
        2 => Some(Activation::Sigmoid),
        _ => None,
    }
}

/// [`Arch`] in checkpoints (the activation as [`activation_code`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredArch {
    #[serde(default)]
    channels: Vec<usize>,
    hidden: Vec<usize>,
    activation: u8,
}

impl From<Arch> for StoredArch {
    fn from(a: Arch) -> Self {
        StoredArch {
            channels: a.channels,
            hidden: a.hidden,
            activation: activation_code(a.activation),
        }
    }
}

impl TryFrom<StoredArch> for Arch {
    type Error = String;

    fn try_from(s: StoredArch) -> Result<Self, String> {
        let activation = activation_of(s.activation).ok_or_else(|| {
            format!(
                "unknown activation code {} (expected 0, 1 or 2)",
                s.activation
            )
        })?;
        Ok(Arch {
            channels: s.channels,
            hidden: s.hidden,
            activation,
        })
    }
}

impl Arch {
    /// An MLP architecture.
    pub fn mlp(hidden: Vec<usize>, activation: Activation) -> Self {
        Arch {
            channels: Vec::new(),
            hidden,
            activation,
        }
    }

    /// True for a ConvNet body.
    pub fn is_conv(&self) -> bool {
        !self.channels.is_empty()
    }

    /// Scalar parameters of an MLP body (every layer but the output layer) on `input` features.
    pub fn body_params(&self, input: usize) -> usize {
        let mut prev = input;
        let mut n = 0;
        for &w in &self.hidden {
            n += prev * w + w;
            prev = w;
        }
        n
    }

    /// Width of the penultimate representation.
    pub fn feature_dim(&self, input: usize) -> usize {
        self.hidden.last().copied().unwrap_or(input)
    }

    /// Parameters of one task head of `units` classes: `units * (feature_dim + 1)`.
    pub fn head_params(&self, input: usize, units: usize) -> usize {
        units * (self.feature_dim(input) + 1)
    }
}

/// The discrete search space.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(into = "StoredSpace", try_from = "StoredSpace")]
pub struct Space {
    /// Depth options (number of hidden layers).
    pub depths: Vec<usize>,
    /// Width options.
    pub widths: Vec<usize>,
    /// Activation options.
    pub activations: Vec<Activation>,
    /// On a convolutional backbone: the backbone's dense hidden widths, kept by every
    /// searched ConvNet body (depth and width are then the convolutions').
    pub conv: Option<Vec<usize>>,
}

/// [`Space`] in checkpoints (activations as [`activation_code`]s).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSpace {
    depths: Vec<usize>,
    widths: Vec<usize>,
    activations: Vec<u8>,
    #[serde(default)]
    conv: Option<Vec<usize>>,
}

impl From<Space> for StoredSpace {
    fn from(s: Space) -> Self {
        StoredSpace {
            depths: s.depths,
            widths: s.widths,
            activations: s.activations.into_iter().map(activation_code).collect(),
            conv: s.conv,
        }
    }
}

impl TryFrom<StoredSpace> for Space {
    type Error = String;

    fn try_from(s: StoredSpace) -> Result<Self, String> {
        let activations = s
            .activations
            .iter()
            .map(|&c| activation_of(c).ok_or_else(|| format!("unknown activation code {c}")))
            .collect::<Result<_, _>>()?;
        Ok(Space {
            depths: s.depths,
            widths: s.widths,
            activations,
            conv: s.conv,
        })
    }
}

impl Space {
    /// Options per decision.
    pub fn sizes(&self) -> [usize; 3] {
        [self.depths.len(), self.widths.len(), self.activations.len()]
    }

    /// The architecture of option indices `[depth, width, activation]`.
    pub fn arch(&self, choice: [usize; 3]) -> Arch {
        let layers = vec![self.widths[choice[1]]; self.depths[choice[0]]];
        let activation = self.activations[choice[2]];
        match &self.conv {
            Some(hidden) => Arch {
                channels: layers,
                hidden: hidden.clone(),
                activation,
            },
            None => Arch::mlp(layers, activation),
        }
    }
}

/// MdeNAS state of the search of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Multinomial {
    /// Probabilities per decision.
    pub p: Vec<Vec<f64>>,
    /// Times each option was sampled.
    pub h_e: Vec<Vec<f64>>,
    /// Latest validation accuracy of each option.
    pub h_a: Vec<Vec<f64>>,
}

impl Multinomial {
    /// Uniform probabilities over `sizes` options per decision.
    pub fn uniform(sizes: &[usize]) -> Self {
        Multinomial {
            p: sizes.iter().map(|&n| vec![1.0 / n as f64; n]).collect(),
            h_e: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            h_a: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// Samples one option per decision from `u` (one uniform draw in `[0, 1)` per decision).
    pub fn sample(&self, u: &[f64]) -> Vec<usize> {
        self.p
            .iter()
            .zip(u)
            .map(|(p, &u)| {
                let mut acc = 0.0;
                for (i, &pi) in p.iter().enumerate() {
                    acc += pi;
                    if u < acc {
                        return i;
                    }
                }
                p.len() - 1
            })
            .collect()
    }

    /// The update after evaluating the sampled options `sampled` at accuracy `acc`.
    pub fn update(&mut self, sampled: &[usize], acc: f64, lr: f64) {
        for (k, &o) in sampled.iter().enumerate() {
            self.h_e[k][o] += 1.0;
            self.h_a[k][o] = acc;
        }
        for k in 0..self.p.len() {
            let (he, ha) = (&self.h_e[k], &self.h_a[k]);
            let n = he.len();
            let logits: Vec<f64> = (0..n)
                .map(|o| {
                    let plus = (0..n).filter(|&q| he[o] < he[q] && ha[o] > ha[q]).count();
                    let minus = (0..n).filter(|&q| he[o] > he[q] && ha[o] < ha[q]).count();
                    self.p[k][o] + lr * (plus as f64 - minus as f64)
                })
                .collect();
            let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let s: f64 = e.iter().sum();
            self.p[k] = e.iter().map(|v| v / s).collect();
        }
    }

    /// The most probable option of every decision (ties: the first).
    pub fn best(&self) -> Vec<usize> {
        self.p
            .iter()
            .map(|p| {
                let mut best = 0;
                for (i, &v) in p.iter().enumerate() {
                    if v > p[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }
}

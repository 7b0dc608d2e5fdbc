//! Model descriptions: the MLP ([`MlpSpec`]), the convolutional backbones ([`ConvNetSpec`],
//! [`ResNetSpec`]) and [`ModelSpec`], which names one of them.

use serde::{Deserialize, Serialize};

mod image;

pub use image::{ConvNetSpec, ConvPool, ImageShape, Norm, ResNetSpec};

use crate::native::conv::Graph;
use crate::BackendError;

/// Hidden-layer non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// tanh(x)
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
}

/// Weight initialisation scheme (biases start at zero, except under `TorchDefault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// U(-b, b), b = sqrt(6 / fan_in) (He et al. 2015, uniform).
    KaimingUniform,
    /// N(0, 2 / fan_in) (He et al. 2015).
    KaimingNormal,
    /// U(-b, b), b = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).
    XavierUniform,
    /// N(0, 2 / (fan_in + fan_out)).
    XavierNormal,
    /// U(-b, b), b = 1 / sqrt(fan_in), for weights and biases: PyTorch's `nn.Linear` default.
    TorchDefault,
}

/// A fully connected network `input -> hidden[0] -> ... -> output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpSpec {
    /// Number of input features.
    pub input: usize,
    /// Widths of the hidden layers (may be empty: a linear model).
    pub hidden: Vec<usize>,
    /// Number of outputs (logits).
    pub output: usize,
    /// Non-linearity after every hidden layer.
    pub activation: Activation,
    /// Weight initialisation.
    pub init: Init,
}

impl MlpSpec {
    /// Layer widths including input and output: `[input, hidden.., output]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = Vec::with_capacity(self.hidden.len() + 2);
        w.push(self.input);
        w.extend_from_slice(&self.hidden);
        w.push(self.output);
        w
    }

    /// Number of dense layers (`hidden.len() + 1`).
    pub fn num_layers(&self) -> usize {
        self.hidden.len() + 1
    }

    /// Width of the penultimate representation (the input to the last layer).
    pub fn feature_dim(&self) -> usize {
        self.hidden.last().copied().unwrap_or(self.input)
    }

    /// Total number of scalar parameters (weights and biases).
    pub fn num_params(&self) -> usize {
        self.widths().windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// Multiply-adds of one forward pass for one sample.
    pub fn forward_macs(&self) -> usize {
        self.widths().windows(2).map(|w| w[0] * w[1]).sum()
    }

    /// Checks that every width is positive.
    pub fn validate(&self) -> Result<(), crate::BackendError> {
        if self.widths().contains(&0) {
            return Err(crate::BackendError::Spec(format!(
                "every layer width must be positive, got {:?}",
                self.widths()
            )));
        }
        Ok(())
    }
}

/// A backbone: what [`crate::build_network`] builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelSpec {
    /// A dense MLP.
    Mlp(MlpSpec),
    /// The small CNN of the CL literature.
    ConvNet(ConvNetSpec),
    /// The CIFAR ResNet-18 family.
    ResNet(ResNetSpec),
}

impl From<MlpSpec> for ModelSpec {
    fn from(spec: MlpSpec) -> Self {
        ModelSpec::Mlp(spec)
    }
}

impl ModelSpec {
    /// The compiled graph of a convolutional backbone (`None` for the MLP).
    pub(crate) fn graph(&self) -> Option<Result<Graph, BackendError>> {
        match self {
            ModelSpec::Mlp(_) => None,
            ModelSpec::ConvNet(s) => Some(Graph::convnet(s)),
            ModelSpec::ResNet(s) => Some(Graph::resnet(s)),
        }
    }

    /// Features per input row (`channels * height * width` for images).
    pub fn input_dim(&self) -> usize {
        match self {
            ModelSpec::Mlp(s) => s.input,
            ModelSpec::ConvNet(s) => s.input.numel(),
            ModelSpec::ResNet(s) => s.input.numel(),
        }
    }

    /// The image shape of a convolutional backbone's input (`None` for the MLP).
    pub fn image_shape(&self) -> Option<ImageShape> {
        match self {
            ModelSpec::Mlp(_) => None,
            ModelSpec::ConvNet(s) => Some(s.input),
            ModelSpec::ResNet(s) => Some(s.input),
        }
    }

    /// Number of outputs (logits).
    pub fn output(&self) -> usize {
        match self {
            ModelSpec::Mlp(s) => s.output,
            ModelSpec::ConvNet(s) => s.output,
            ModelSpec::ResNet(s) => s.output,
        }
    }

    /// Width of `features`: the input of the last linear layer (0 for an invalid spec).
    pub fn feature_dim(&self) -> usize {
        match self.graph() {
            None => self.as_mlp().map_or(0, MlpSpec::feature_dim),
            Some(Ok(g)) => g.sizes[g.features],
            Some(Err(_)) => 0,
        }
    }

    /// The layout of `features` when they are a convolutional feature map: `(channels,
    /// positions)`, the features of one row being `channels` blocks of `positions` values each
    /// (channel-major, PyTorch's flattened `[c, h, w]` order). A ConvNet without dense hidden
    /// layers gives its last `c x h x w` map, `(c, h * w)` (`(c, 1)` under `pool = avg`); the
    /// ResNet its globally pooled vector, `(c, 1)`. `None` for the MLP, a ConvNet whose features are a dense hidden layer,
    /// and an invalid spec. The plasticity diagnostics pool per channel with it (ReDO's
    /// per-channel dormancy).
    pub fn feature_map(&self) -> Option<(usize, usize)> {
        use crate::native::conv::Op;
        let g = self.graph()?.ok()?;
        // Activation `a > 0` is the output of operation `a - 1`.
        match g.ops.get(g.features.checked_sub(1)?)? {
            Op::Flatten { c, hw, .. } => Some((*c, *hw)),
            Op::Gap { c, .. } => Some((*c, 1)),
            _ => None,
        }
    }

    /// Trainable scalars, buffers (BN running statistics) excluded (0 for an invalid spec).
    pub fn num_params(&self) -> usize {
        match self.graph() {
            None => self.as_mlp().map_or(0, MlpSpec::num_params),
            Some(Ok(g)) => g.num_params(),
            Some(Err(_)) => 0,
        }
    }

    /// Multiply-adds of one forward pass for one sample (convolutions and dense layers; 0 for
    /// an invalid spec).
    pub fn forward_macs(&self) -> usize {
        match self.graph() {
            None => self.as_mlp().map_or(0, MlpSpec::forward_macs),
            Some(Ok(g)) => g.macs,
            Some(Err(_)) => 0,
        }
    }

    /// Checks that the backbone can be built: positive sizes, group counts that divide the
    /// channels, images large enough for every pooling or stride. The error names the layer
    /// and says why.
    pub fn validate(&self) -> Result<(), BackendError> {
        match self.graph() {
            None => self.as_mlp().map_or(Ok(()), MlpSpec::validate),
            Some(g) => g.map(|_| ()),
        }
    }

    /// The MLP spec, if this is one.
    pub fn as_mlp(&self) -> Option<&MlpSpec> {
        match self {
            ModelSpec::Mlp(s) => Some(s),
            _ => None,
        }
    }

    /// Short name of the backbone kind: `mlp`, `convnet` or `resnet`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ModelSpec::Mlp(_) => "mlp",
            ModelSpec::ConvNet(_) => "convnet",
            ModelSpec::ResNet(_) => "resnet",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convnet(channels: Vec<usize>, hidden: Vec<usize>) -> ModelSpec {
        convnet_pooled(channels, hidden, ConvPool::Flatten)
    }

    fn convnet_pooled(channels: Vec<usize>, hidden: Vec<usize>, pool: ConvPool) -> ModelSpec {
        ModelSpec::ConvNet(ConvNetSpec {
            input: ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            channels,
            hidden,
            output: 10,
            norm: Norm::Batch,
            activation: Activation::Relu,
            init: Init::TorchDefault,
            pool,
        })
    }

    #[test]
    fn feature_map_gives_channels_and_positions_of_the_features() {
        // Two 2x2 max-pools: 28 -> 14 -> 7; 16 channels of 49 positions = feature_dim.
        let c = convnet(vec![8, 8, 16, 16], vec![]);
        assert_eq!(c.feature_map(), Some((16, 49)));
        assert_eq!(c.feature_dim(), 16 * 49);
        // One pool after the second conv only: 3 convs -> 14x14.
        assert_eq!(convnet(vec![4, 6, 5], vec![]).feature_map(), Some((5, 196)));
        // A dense hidden layer feeds the head: plain units.
        assert_eq!(convnet(vec![8, 8], vec![32]).feature_map(), None);
        // The ResNet's features are already pooled: one position per channel.
        let r = ModelSpec::ResNet(ResNetSpec {
            input: ImageShape {
                channels: 3,
                height: 8,
                width: 8,
            },
            width: 4,
            blocks: [1, 1, 1, 1],
            output: 5,
            norm: Norm::Batch,
            init: Init::TorchDefault,
        });
        assert_eq!(r.feature_map(), Some((32, 1)));
        assert_eq!(r.feature_dim(), 32);
        let m = ModelSpec::Mlp(MlpSpec {
            input: 4,
            hidden: vec![3],
            output: 2,
            activation: Activation::Relu,
            init: Init::TorchDefault,
        });
        assert_eq!(m.feature_map(), None);
        // An invalid spec has no layout.
        assert_eq!(convnet(vec![], vec![]).feature_map(), None);
    }

    #[test]
    fn avg_pool_feeds_one_mean_per_channel_to_the_head() {
        let flat = convnet(vec![8, 8, 16, 16], vec![]);
        let avg = convnet_pooled(vec![8, 8, 16, 16], vec![], ConvPool::Avg);
        assert_eq!(avg.feature_map(), Some((16, 1)));
        assert_eq!(avg.feature_dim(), 16);
        // Same body; the head shrinks from 10 x (784 + 1) to 10 x (16 + 1).
        assert_eq!(
            flat.num_params() - avg.num_params(),
            10 * (16 * 49 + 1) - 10 * (16 + 1)
        );
        // Dense hidden layers read the pooled vector: layers.0 is 16 -> 32.
        let h = convnet_pooled(vec![8, 8, 16, 16], vec![32], ConvPool::Avg);
        assert_eq!(h.feature_map(), None);
        assert_eq!(h.feature_dim(), 32);
        assert_eq!(
            h.num_params() - avg.num_params(),
            (16 * 32 + 32) + 10 * (32 + 1) - 10 * (16 + 1)
        );
        // The last map may be 1x1 already (4x4 input, two pools); pooling it is a copy.
        let small = ModelSpec::ConvNet(ConvNetSpec {
            input: ImageShape {
                channels: 1,
                height: 4,
                width: 4,
            },
            channels: vec![3, 5, 5, 7],
            hidden: vec![],
            output: 2,
            norm: Norm::None,
            activation: Activation::Relu,
            init: Init::TorchDefault,
            pool: ConvPool::Avg,
        });
        assert_eq!(small.feature_map(), Some((7, 1)));
    }

    #[test]
    fn the_default_pool_is_left_out_of_a_serialised_spec() {
        let flat = convnet(vec![4], vec![]);
        let json = serde_json::to_string(&flat).expect("json");
        assert!(!json.contains("pool"), "{json}");
        let back: ModelSpec = serde_json::from_str(&json).expect("read back");
        assert_eq!(back, flat);
        let avg = convnet_pooled(vec![4], vec![], ConvPool::Avg);
        let json = serde_json::to_string(&avg).expect("json");
        assert!(json.contains("\"pool\":\"avg\""), "{json}");
        assert_eq!(
            serde_json::from_str::<ModelSpec>(&json).expect("read back"),
            avg
        );
    }
}

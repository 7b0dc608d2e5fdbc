//! Convolutional backbones: image shape, normalisation, the ConvNet and the CIFAR ResNet-18.

use serde::{Deserialize, Serialize};

use super::{Activation, Init};

/// Shape of one input image; rows of [`crate::Inputs`] hold `channels * height * width` values in
/// channel-major (`[c, h, w]`, PyTorch's NCHW) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageShape {
    /// Channels (1 for grey-scale, 3 for RGB).
    pub channels: usize,
    /// Rows of pixels.
    pub height: usize,
    /// Columns of pixels.
    pub width: usize,
}

impl ImageShape {
    /// Values per image: `channels * height * width`.
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Normalisation after every convolution of the conv stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// `torch.nn.BatchNorm2d` (momentum 0.1, eps 1e-5): batch statistics in training, running
    /// statistics (non-trainable buffers) in evaluation.
    Batch,
    /// `torch.nn.GroupNorm(groups, channels)` (eps 1e-5); `groups` must divide every channel
    /// count.
    Group {
        /// Number of channel groups.
        groups: usize,
    },
    /// No normalisation (convolutions then carry a bias).
    None,
}

/// How the ConvNet turns its last feature map into the vector that feeds the dense layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvPool {
    /// `torch.flatten` of the `[c, h, w]` map: `c * h * w` values.
    #[default]
    Flatten,
    /// Global average pooling, `nn.AdaptiveAvgPool2d(1)` then flatten: one mean per channel,
    /// `c` values.
    Avg,
}

impl ConvPool {
    /// True for the default, `flatten` (left out of a serialised spec, so specs written before
    /// the key existed read and write unchanged).
    pub fn is_flatten(&self) -> bool {
        *self == ConvPool::Flatten
    }

    /// The name used in configs: `flatten` or `avg`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConvPool::Flatten => "flatten",
            ConvPool::Avg => "avg",
        }
    }
}

/// The small CNN of the CL literature: per entry of `channels` a 3x3 convolution (padding 1,
/// stride 1), `norm`, `activation`, and a 2x2 max-pool after every second convolution; then
/// `pool` (flatten in PyTorch's `[c, h, w]` order, or global average pooling), dense `hidden`
/// layers with `activation`, and a linear head of `output` units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvNetSpec {
    /// Input image shape.
    pub input: ImageShape,
    /// Output channels of each convolution.
    pub channels: Vec<usize>,
    /// Widths of the dense hidden layers after the flatten (may be empty).
    pub hidden: Vec<usize>,
    /// Number of outputs (logits).
    pub output: usize,
    /// Normalisation after each convolution.
    pub norm: Norm,
    /// Non-linearity after each normalised convolution and each hidden dense layer.
    pub activation: Activation,
    /// Initialisation of conv and dense weights.
    pub init: Init,
    /// The last feature map to a vector: flatten (the default) or global average pooling.
    #[serde(default, skip_serializing_if = "ConvPool::is_flatten")]
    pub pool: ConvPool,
}

/// The CIFAR ResNet-18 (Mammoth's `resnet18`; `width` 20 is its `reduced_resnet18`): a 3x3
/// conv stem of `width` channels with norm and ReLU, four stages of `blocks[s]` BasicBlocks of
/// widths `[w, 2w, 4w, 8w]` and first strides `[1, 2, 2, 2]` (a 1x1 conv + norm projection
/// shortcut where the shape changes), global average pooling and a linear head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetSpec {
    /// Input image shape.
    pub input: ImageShape,
    /// Channels of the stem and the first stage (64 = standard, 20 = reduced).
    pub width: usize,
    /// BasicBlocks per stage (`[2, 2, 2, 2]` for ResNet-18).
    pub blocks: [usize; 4],
    /// Number of outputs (logits).
    pub output: usize,
    /// Normalisation after each convolution.
    pub norm: Norm,
    /// Initialisation of conv and dense weights.
    pub init: Init,
}

//! The architecture of an MLP: widths, activation and initialisation.

use serde::{Deserialize, Serialize};

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

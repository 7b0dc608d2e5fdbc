//! Convolutional backbones (ConvNet, CIFAR ResNet) on the `gemm` crate.

mod graph;

pub(crate) use graph::{Graph, InitKind};

//! Which [`crate::Network`] implementation to build.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A backend implementation of [`crate::Network`].
///
/// For MLPs both compute the same functions from the same initial parameters (see
/// `tests/native_conformance.rs`); they differ in speed and in the last bits of floating-point
/// rounding. Convolutional backbones are native only ([`crate::NativeCnn`]; dfdx's
/// convolutions need a nightly compiler, so the dfdx backend stays the MLP reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// [`crate::DfdxMlp`]: dfdx 0.13's CPU device with its autodiff tape.
    Dfdx,
    /// [`crate::NativeMlp`]: a hand-fused forward/backward pass on the `gemm` crate (the
    /// default: about 2-3x faster per training step than dfdx at batch 32-512 on 2 cores).
    #[default]
    Native,
}

impl BackendKind {
    /// Every kind, in declaration order.
    pub const ALL: [BackendKind; 2] = [BackendKind::Dfdx, BackendKind::Native];

    /// The name used in configs and by [`crate::Network::backend_name`].
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Dfdx => "dfdx",
            BackendKind::Native => "native",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown backend {s:?} (expected \"dfdx\" or \"native\")"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_default_is_native() {
        assert_eq!(BackendKind::default(), BackendKind::Native);
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>(), Ok(k));
            assert_eq!(k.to_string(), k.name());
        }
        assert!("torch".parse::<BackendKind>().is_err());
    }

    #[test]
    fn serde_uses_the_kebab_case_names() {
        use serde::de::value::{Error, StrDeserializer};
        use serde::de::IntoDeserializer;
        for k in BackendKind::ALL {
            let de: StrDeserializer<'_, Error> = k.name().into_deserializer();
            assert_eq!(BackendKind::deserialize(de), Ok(k));
        }
        let de: StrDeserializer<'_, Error> = "Native".into_deserializer();
        assert!(BackendKind::deserialize(de).is_err());
    }
}

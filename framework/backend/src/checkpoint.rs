//! Save and load parameter values as safetensors files.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{BackendError, ParamStore};

fn err(path: &Path, message: impl ToString) -> BackendError {
    BackendError::Checkpoint {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes every parameter tensor (values, not gradients) to `path` under its name, as f32
/// little-endian.
pub fn save_safetensors(params: &ParamStore, path: &Path) -> Result<(), BackendError> {
    let bytes: Vec<Vec<u8>> = params
        .values()
        .iter()
        .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::with_capacity(params.len());
    for (info, b) in params.infos().iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, info.shape.clone(), b).map_err(|e| err(path, e))?;
        views.push((info.name.clone(), view));
    }
    safetensors::serialize_to_file(views, &None::<HashMap<String, String>>, path)
        .map_err(|e| err(path, e))
}

/// Reads `path` into `params`; every tensor must be present with the same shape and dtype f32.
pub fn load_safetensors(params: &mut ParamStore, path: &Path) -> Result<(), BackendError> {
    let data = std::fs::read(path).map_err(|e| err(path, e))?;
    let st = SafeTensors::deserialize(&data).map_err(|e| err(path, e))?;
    for i in 0..params.len() {
        let info = params.infos()[i].clone();
        let t = st
            .tensor(&info.name)
            .map_err(|_| err(path, format!("tensor `{}` missing", info.name)))?;
        if t.dtype() != Dtype::F32 || t.shape() != info.shape.as_slice() {
            return Err(err(
                path,
                format!(
                    "tensor `{}`: expected f32 {:?}, found {:?} {:?}",
                    info.name,
                    info.shape,
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        for (dst, chunk) in params.value_mut(i).iter_mut().zip(t.data().chunks_exact(4)) {
            *dst = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, Init, MlpSpec};

    fn spec() -> MlpSpec {
        MlpSpec {
            input: 5,
            hidden: vec![4],
            output: 3,
            activation: Activation::Relu,
            init: Init::KaimingUniform,
        }
    }

    #[test]
    fn round_trip_restores_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a = ParamStore::init_mlp(&spec(), 1);
        save_safetensors(&a, &path).unwrap();
        let mut b = ParamStore::init_mlp(&spec(), 2);
        assert_ne!(a.values(), b.values());
        load_safetensors(&mut b, &path).unwrap();
        assert_eq!(a.values(), b.values());
    }

    #[test]
    fn shape_mismatch_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save_safetensors(&ParamStore::init_mlp(&spec(), 1), &path).unwrap();
        let mut other = spec();
        other.hidden = vec![6];
        let mut b = ParamStore::init_mlp(&other, 1);
        let e = load_safetensors(&mut b, &path).unwrap_err().to_string();
        assert!(
            e.contains("layers.0.weight") && e.contains("m.safetensors"),
            "{e}"
        );
    }

    #[test]
    fn garbage_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let mut b = ParamStore::init_mlp(&spec(), 1);
        assert!(load_safetensors(&mut b, &path).is_err());
    }
}

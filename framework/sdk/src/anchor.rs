//! Quadratic pulls towards a stored copy of the parameters (an *anchor*): the building block of
//! L2-to-the-previous-task (`l2`) and L2 Init (`l2init`), and of any strategy that penalises
//! `c/2 · ‖θ − θ_anchor‖²`.
//!
//! ```text
//! gradient added to every parameter tensor:  coef · (θ − θ_anchor)
//! ```
//!
//! [`encode`] / [`decode`] store an optional anchor in a plugin's checkpoint state
//! ([`crate::state`] layout: a presence byte, then the tensor list).

use crate::state::{Reader, Writer};
use crate::{bail, ensure, Ctx, Result};

/// A copy of every parameter tensor, in the host's parameter order.
pub type Tensors = Vec<Vec<f32>>;

/// Copies every parameter tensor of the model.
pub fn capture(ctx: &Ctx<'_>) -> Result<Tensors> {
    (0..ctx.param_count()?)
        .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
        .collect()
}

/// Adds `coef · (values − anchor)` to `grad`, element-wise.
pub fn add_pull_grad(coef: f32, values: &[f32], anchor: &[f32], grad: &mut [f32]) {
    for ((g, &w), &a) in grad.iter_mut().zip(values).zip(anchor) {
        *g += coef * (w - a);
    }
}

/// Adds `coef · (θ − anchor)` to the gradient of every parameter tensor; `anchor` must have
/// the model's layout (else an error naming `what`, e.g. "θ0", and the mismatch).
pub fn add_pull(ctx: &mut Ctx<'_>, anchor: &[Vec<f32>], coef: f32, what: &str) -> Result<()> {
    ensure!(
        anchor.len() == ctx.param_count()?,
        "{what} has {} tensors but the model has {}",
        anchor.len(),
        ctx.param_count()?
    );
    for (i, a) in anchor.iter().enumerate() {
        let (w, g) = ctx.values_and_grads(i)?;
        ensure!(
            w.len() == a.len() && g.len() == a.len(),
            "parameter {i} has {} values, {what} {}",
            w.len(),
            a.len()
        );
        add_pull_grad(coef, w, a, g);
    }
    Ok(())
}

/// `Σ (θ − anchor)²` in f64 (for tests and diagnostics).
pub fn squared_distance(params: &[Vec<f64>], anchor: &[Vec<f32>]) -> f64 {
    params
        .iter()
        .zip(anchor)
        .flat_map(|(p, a)| p.iter().zip(a))
        .map(|(&p, &a)| (p - f64::from(a)).powi(2))
        .sum()
}

/// Encodes an optional anchor as a state blob with the plugin's magic tag and version 1.
pub fn encode(magic: &[u8; 8], anchor: Option<&[Vec<f32>]>) -> Vec<u8> {
    let mut w = Writer::new(magic, 1);
    match anchor {
        None => w.u8(0),
        Some(a) => {
            w.u8(1);
            w.tensors(a);
        }
    }
    w.finish()
}

/// Decodes [`encode`]'s output; an empty blob is a fresh instance's state (`None`).
pub fn decode(magic: &[u8; 8], bytes: &[u8]) -> Result<Option<Tensors>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut r = Reader::new(bytes, magic, 1)?;
    let anchor = match r.u8()? {
        0 => None,
        1 => Some(r.tensors()?),
        other => bail!("invalid anchor flag {other} in the state"),
    };
    r.finish()?;
    Ok(anchor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_gradient_and_distance_by_hand() {
        let mut g = vec![1.0, 0.0, -1.0];
        add_pull_grad(0.5, &[2.0, 1.0, 0.0], &[1.0, 1.0, 4.0], &mut g);
        assert_eq!(g, vec![1.5, 0.0, -3.0]);
        let d = squared_distance(&[vec![2.0, 1.0], vec![0.0]], &[vec![1.0, 1.0], vec![4.0]]);
        assert_eq!(d, 17.0);
    }

    #[test]
    fn state_round_trip_and_errors() {
        let a = vec![vec![1.0, -2.0], vec![], vec![3.5]];
        let blob = encode(b"testanch", Some(&a));
        assert_eq!(decode(b"testanch", &blob).unwrap(), Some(a));
        assert_eq!(
            decode(b"testanch", &encode(b"testanch", None)).unwrap(),
            None
        );
        assert_eq!(decode(b"testanch", &[]).unwrap(), None);
        assert!(decode(b"otheranc", &blob).is_err());
        assert!(decode(b"testanch", &blob[..blob.len() - 1]).is_err());
        let mut bad = encode(b"testanch", None);
        *bad.last_mut().unwrap() = 7;
        assert!(decode(b"testanch", &bad).is_err());
    }
}

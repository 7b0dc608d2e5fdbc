//! Quadratic pulls towards a stored copy of the parameters (an *anchor*): the building block of
//! L2-to-the-previous-task (`l2`) and L2 Init (`l2init`), and of any strategy that penalises
//! `c/2 · ‖θ − θ_anchor‖²`.
//!
//! ```text
//! gradient added to every parameter tensor:  coef · (θ − θ_anchor)
//! ```
//!
//! [`Anchor`] is the stored copy (serialisable: strategies with `type State = SerdeState`
//! checkpoint it as raw float bytes); the free functions work on plain tensor lists.

use serde::{Deserialize, Serialize};

use crate::{ensure, Ctx, Result};

/// A copy of every parameter tensor, in the host's parameter order.
pub type Tensors = Vec<Vec<f32>>;

/// A stored copy of every parameter tensor, and the pull towards it.
///
/// ```ignore
/// self.anchor = Some(Anchor::capture(ctx)?);      // e.g. in on_task_end
/// anchor.pull(ctx, lambda)?;                       // in after_backward: grad += λ·(θ − θ*)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Anchor(#[serde(with = "crate::state::tensors")] pub Tensors);

impl Anchor {
    /// Copies every parameter tensor of the model.
    pub fn capture(ctx: &Ctx<'_>) -> Result<Self> {
        capture(ctx).map(Self)
    }

    /// Adds `coef · (θ − anchor)` to every parameter's gradient (see [`add_pull`]); an empty
    /// anchor (`Anchor::default()`, nothing captured yet) adds nothing.
    pub fn pull(&self, ctx: &mut Ctx<'_>, coef: f32) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        add_pull(ctx, &self.0, coef, "the anchor")
    }

    /// The stored tensors.
    pub fn tensors(&self) -> &Tensors {
        &self.0
    }
}

/// The pull of an anchor that may not exist yet (e.g. before the first task ends): `None`
/// adds nothing.
pub trait MaybePull {
    /// Adds `coef · (θ − anchor)` to every parameter's gradient if there is an anchor.
    fn pull(&self, ctx: &mut Ctx<'_>, coef: f32) -> Result<()>;
}

impl MaybePull for Option<Anchor> {
    fn pull(&self, ctx: &mut Ctx<'_>, coef: f32) -> Result<()> {
        match self {
            Some(a) => a.pull(ctx, coef),
            None => Ok(()),
        }
    }
}

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
}

//! Checkpoints at task boundaries: writing the trial's state after a task, and resuming from
//! it ([`crate::checkpoint`] holds the file format).

use super::trial::Trial;
use crate::checkpoint;
use crate::experts::snapshot::{optimizer_state, restore_optimizer};
use crate::strategy::Strategy;

impl Trial<'_> {
    /// Restores the checkpoint at `self.target`, if it holds one of this trial: returns the
    /// number of finished tasks. The measurements, the step counter, the parameters, the
    /// optimizer state, the RNG position and the strategy's state come back as they were.
    pub(super) fn resume(&mut self, strategy: &mut dyn Strategy) -> Result<Option<usize>, String> {
        let Some(target) = &self.target else {
            return Ok(None);
        };
        let Some(c) = checkpoint::load(&target.path, &target.key).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let p = &c.progress;
        // The expert pool (rebuilt aside: nothing changes until every check has passed).
        let pool = match &c.pool {
            Some(state) => Some(
                self.experts
                    .rebuild(state, self.opt.spec())
                    .map_err(|e| format!("checkpoint {}: {e}", target.path.display()))?,
            ),
            None => None,
        };
        let params = match pool.as_ref().and_then(|r| r.active_net()) {
            Some(net) => net.params(),
            None => self.net.params(),
        };
        if c.params.len() != params.len()
            || (0..params.len()).any(|i| params.value(i).len() != c.params[i].len())
        {
            return Err(format!(
                "checkpoint {}: its parameters do not match the model",
                target.path.display()
            ));
        }
        let word_pos: u128 = p.rng_word_pos.parse().map_err(|_| {
            format!(
                "checkpoint {}: bad RNG position {:?}",
                target.path.display(),
                p.rng_word_pos
            )
        })?;
        let mut opt = match pool.as_ref().and_then(|r| r.active_net()) {
            Some(net) => clef_backend::Optimizer::new(self.opt.spec().clone(), net.params()),
            None => self.opt.clone(),
        };
        restore_optimizer(&mut opt, &c.optimizer).map_err(|e| {
            format!(
                "checkpoint {}: {e} does not match the optimizer",
                target.path.display()
            )
        })?;
        strategy.load_state(&c.strategy_state).map_err(|e| {
            format!(
                "checkpoint {}: the strategy refused its state: {e:#}",
                target.path.display()
            )
        })?;
        if let Some(r) = pool {
            self.experts.install(r, &mut self.net, &mut self.opt);
        }
        self.opt = opt;
        let params = self.net.params_mut();
        for (i, v) in c.params.iter().enumerate() {
            params.value_mut(i).copy_from_slice(v);
        }
        self.opt.set_steps(p.optimizer_steps);
        self.rng.set_word_pos(word_pos);
        self.measured.clone_from(&p.measured);
        self.step = p.measured.steps;
        tracing::info!(
            tasks_done = p.tasks_done,
            path = %target.path.display(),
            "resuming the trial from its checkpoint"
        );
        Ok(Some(p.tasks_done))
    }

    /// Writes the trial's state after `tasks_done` tasks to `self.target` (with the expert
    /// pool if the strategy uses it). A strategy whose `save_state` fails, or a write error,
    /// turns checkpoints off for the rest of the trial (with a warning); the trial itself goes
    /// on.
    pub(super) fn checkpoint(&mut self, tasks_done: usize, strategy: &mut dyn Strategy) {
        let Some(target) = &self.target else { return };
        let stop = |why: String| {
            tracing::warn!(path = %target.path.display(), "no more checkpoints for this trial: {why}");
        };
        let strategy_state = match strategy.save_state() {
            Ok(b) => b,
            Err(e) => {
                stop(format!("the strategy cannot save its state: {e:#}"));
                self.target = None;
                return;
            }
        };
        let params = self.net.params();
        let optimizer = optimizer_state(&self.opt, params.len());
        let mut measured = self.measured.clone();
        measured.steps = self.step;
        let c = checkpoint::Checkpoint {
            progress: checkpoint::Progress {
                key: target.key.clone(),
                tasks_done,
                rng_word_pos: self.rng.get_word_pos().to_string(),
                optimizer_steps: self.opt.steps(),
                measured,
            },
            params: params.values().to_vec(),
            optimizer,
            strategy_state,
            pool: self.experts.enabled().then(|| self.experts.snapshot()),
        };
        if let Err(e) = checkpoint::save(&c, &target.path) {
            stop(e.to_string());
            self.target = None;
        }
    }
}

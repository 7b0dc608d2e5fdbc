//! `run.json`: the machine-readable summary `clef run` writes into the results directory at
//! its end (format in `docs/protocols.md`, "The results directory"), for scripts and tests
//! that would otherwise parse log lines.

use serde_json::json;

/// Trials of one phase in this invocation (this shard).
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseCounts {
    /// Trials of the phase in this shard.
    pub planned: usize,
    /// Run now.
    pub run: usize,
    /// Found already stored and skipped.
    pub skipped: usize,
}

/// What one `clef run` did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The config file as given.
    pub config: String,
    /// `--shard` as `i/n`.
    pub shard: (usize, usize),
    /// `--jobs`.
    pub jobs: usize,
    /// The tuning phase.
    pub tune: PhaseCounts,
    /// Tuning trials of other shards not stored yet (the evaluation phase waits for them).
    pub pending_tune_trials: usize,
    /// The evaluation phase.
    pub eval: PhaseCounts,
    /// Statuses of the config's evaluation records in the store (all shards):
    /// `completed`, `failed`, `diverged`.
    pub eval_statuses: Vec<String>,
    /// Wall time of the command.
    pub wall_seconds: f64,
    /// Peak resident set size of the process, if the platform reports it.
    pub peak_rss_bytes: Option<u64>,
    /// The exit status `clef run` returns.
    pub exit_code: u8,
}

impl RunSummary {
    /// `completed`, `tuning-incomplete` (other shards' tuning trials missing) or
    /// `trials-incomplete` (an evaluation trial failed or diverged).
    pub fn status(&self) -> &'static str {
        if self.pending_tune_trials > 0 {
            "tuning-incomplete"
        } else if self.eval_statuses.iter().any(|s| s != "completed") {
            "trials-incomplete"
        } else {
            "completed"
        }
    }

    /// The JSON text (pretty-printed, with a final newline).
    pub fn to_json(&self) -> String {
        let count = |status: &str| self.eval_statuses.iter().filter(|s| *s == status).count();
        let phase =
            |p: &PhaseCounts| json!({"planned": p.planned, "run": p.run, "skipped": p.skipped});
        let mut tune = phase(&self.tune);
        tune["pending_other_shards"] = json!(self.pending_tune_trials);
        let mut eval = phase(&self.eval);
        eval["records"] = json!(self.eval_statuses.len());
        for s in ["completed", "failed", "diverged"] {
            eval[s] = json!(count(s));
        }
        let v = json!({
            "clef_version": env!("CARGO_PKG_VERSION"),
            "config": self.config,
            "shard": format!("{}/{}", self.shard.0, self.shard.1),
            "jobs": self.jobs,
            "status": self.status(),
            "exit_code": self.exit_code,
            "tune": tune,
            "eval": eval,
            "wall_seconds": (self.wall_seconds * 1000.0).round() / 1000.0,
            "peak_rss_mib": self
                .peak_rss_bytes
                .map(|b| (b as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0),
        });
        let mut text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_statuses_and_rounds_measurements() {
        let s = RunSummary {
            config: "c.toml".into(),
            shard: (0, 1),
            jobs: 2,
            tune: PhaseCounts {
                planned: 3,
                run: 1,
                skipped: 2,
            },
            pending_tune_trials: 0,
            eval: PhaseCounts {
                planned: 3,
                run: 3,
                skipped: 0,
            },
            eval_statuses: vec!["completed".into(), "failed".into(), "diverged".into()],
            wall_seconds: 1.23456,
            peak_rss_bytes: Some(100 * 1024 * 1024 + 1),
            exit_code: 2,
        };
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["status"], "trials-incomplete");
        assert_eq!(v["tune"]["skipped"], 2);
        assert_eq!(v["eval"]["records"], 3);
        assert_eq!(v["eval"]["failed"], 1);
        assert_eq!(v["eval"]["diverged"], 1);
        assert_eq!(v["wall_seconds"], 1.235);
        assert_eq!(v["peak_rss_mib"], 100.0);
        assert_eq!(v["shard"], "0/1");
        assert_eq!(v["clef_version"], env!("CARGO_PKG_VERSION"));
    }
}

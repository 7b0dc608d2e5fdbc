//! What a protocol chose for a strategy, and why: one entry of `selections.json`.

use serde::{Deserialize, Serialize};

/// How one protocol chose one strategy's hyperparameters in one setting: the record behind
/// every hyperparameter value a report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Protocol name.
    pub protocol: String,
    /// Setting.
    pub setting: String,
    /// Strategy label.
    pub strategy: String,
    /// The chosen (full) hyperparameters.
    pub hparams: serde_json::Value,
    /// `tune` if a tuning phase chose them; `config` if they are the config's fixed values
    /// (protocol `run`, or no search space).
    pub chosen_in_phase: String,
    /// Data set (name and fingerprint) and stream the tuning phase ran on.
    #[serde(default)]
    pub tuned_on: Option<String>,
    /// Metric maximised (mean over the tuning seeds).
    #[serde(default)]
    pub selection_metric: Option<String>,
    /// The chosen candidate's mean selection metric.
    #[serde(default)]
    pub score: Option<f64>,
    /// Candidates compared.
    pub candidates: usize,
    /// Ids of the chosen candidate's tuning trials (one per tuning seed).
    #[serde(default)]
    pub tune_trials: Vec<String>,
    /// Ids of every tuning trial compared.
    #[serde(default)]
    pub all_tune_trials: Vec<String>,
    /// Ids of the evaluation trials run with these values (one per evaluation seed).
    #[serde(default)]
    pub eval_trials: Vec<String>,
    /// The searched values of every candidate whose mean equals the winner's, the winner
    /// first (the earliest in search order wins a tie); empty without a tie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tied: Vec<serde_json::Value>,
    /// What a reader of the choice must know: a tie, a winner at the edge of its grid, a
    /// search whose candidates all gave the same result. Shown in `summary.md` and logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

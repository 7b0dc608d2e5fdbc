//! The protocol comparison: per protocol and setting, each strategy's evaluation results over
//! seeds (mean, std, 95% CI), its rank, the hyperparameters and what chose them; Kendall's tau
//! between the rankings of every two protocols; paired tests of each strategy against the
//! best one on the same seeds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::TrialRecord;
use crate::stats::{self, Summary};
use crate::Selection;

/// One strategy under one protocol in one setting.
#[derive(Debug, Clone)]
pub struct ProtocolRow {
    /// The selection behind the row.
    pub selection: Selection,
    /// Final ACC per evaluation seed (completed trials).
    pub acc_by_seed: BTreeMap<u64, f64>,
    /// ACC over seeds.
    pub acc: Option<Summary>,
    /// Average incremental accuracy over seeds.
    pub aia: Option<Summary>,
    /// BWT over seeds.
    pub bwt: Option<Summary>,
    /// Learning accuracy over seeds.
    pub la: Option<Summary>,
    /// Evaluation trials that did not complete (or are missing).
    pub not_completed: usize,
    /// Rank by mean ACC within (protocol, setting), 1 = best.
    pub rank: f64,
}

/// Kendall's tau between two protocols' rankings in one setting.
#[derive(Debug, Clone)]
pub struct RankAgreement {
    /// Setting.
    pub setting: String,
    /// First protocol.
    pub a: String,
    /// Second protocol.
    pub b: String,
    /// Strategies ranked under both.
    pub strategies: usize,
    /// Kendall's tau-b of their mean ACC (`None` if undefined).
    pub tau: Option<f64>,
}

/// A strategy against the best one of its protocol and setting, on their common seeds.
#[derive(Debug, Clone)]
pub struct Paired {
    /// Protocol.
    pub protocol: String,
    /// Setting.
    pub setting: String,
    /// Best strategy (rank 1).
    pub best: String,
    /// Compared strategy.
    pub other: String,
    /// Common seeds.
    pub n: usize,
    /// Paired bootstrap of ACC(best) - ACC(other).
    pub bootstrap: Option<stats::Bootstrap>,
    /// Wilcoxon signed-rank test of the same differences.
    pub wilcoxon: Option<stats::Wilcoxon>,
}

/// The whole comparison.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Rows, grouped by protocol then setting, sorted by rank.
    pub rows: Vec<ProtocolRow>,
    /// Tau between every two protocols, per setting.
    pub agreements: Vec<RankAgreement>,
    /// Paired tests.
    pub paired: Vec<Paired>,
}

fn pick(
    recs: &[&TrialRecord],
    f: impl Fn(&crate::metrics::Metrics) -> Option<f64>,
) -> Option<Summary> {
    let xs: Vec<f64> = recs
        .iter()
        .filter_map(|r| r.metrics.as_ref().and_then(&f))
        .collect();
    stats::summarize(&xs)
}

/// Builds the comparison from the selections and the records (by trial id).
pub fn compare(selections: &[Selection], by_id: &BTreeMap<&str, &TrialRecord>) -> Comparison {
    let mut groups: BTreeMap<(String, String), Vec<ProtocolRow>> = BTreeMap::new();
    let mut order: Vec<(String, String)> = Vec::new();
    for sel in selections {
        let recs: Vec<&TrialRecord> = sel
            .eval_trials
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .filter(|r| r.status == "completed" && r.metrics.is_some())
            .collect();
        let row = ProtocolRow {
            selection: sel.clone(),
            acc_by_seed: recs
                .iter()
                .filter_map(|r| r.metrics.as_ref().map(|m| (r.seed, m.acc)))
                .collect(),
            acc: pick(&recs, |m| Some(m.acc)),
            aia: pick(&recs, |m| Some(m.avg_incremental_accuracy)),
            bwt: pick(&recs, |m| m.bwt),
            la: pick(&recs, |m| Some(m.learning_accuracy)),
            not_completed: sel.eval_trials.len() - recs.len(),
            rank: f64::NAN,
        };
        let key = (sel.protocol.clone(), sel.setting.clone());
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push(row);
    }
    let mut cmp = Comparison::default();
    for key in &order {
        let Some(rows) = groups.get_mut(key) else {
            continue;
        };
        let means: Vec<f64> = rows
            .iter()
            .map(|r| r.acc.map_or(f64::NAN, |s| s.mean))
            .collect();
        for (r, rank) in rows.iter_mut().zip(stats::ranks_desc(&means)) {
            r.rank = rank;
        }
        rows.sort_by(|a, b| a.rank.total_cmp(&b.rank));
        if let Some(best) = rows.first() {
            for other in rows.iter().skip(1) {
                let seeds: Vec<u64> = best
                    .acc_by_seed
                    .keys()
                    .filter(|s| other.acc_by_seed.contains_key(s))
                    .copied()
                    .collect();
                let a: Vec<f64> = seeds.iter().map(|s| best.acc_by_seed[s]).collect();
                let b: Vec<f64> = seeds.iter().map(|s| other.acc_by_seed[s]).collect();
                cmp.paired.push(Paired {
                    protocol: key.0.clone(),
                    setting: key.1.clone(),
                    best: best.selection.strategy.clone(),
                    other: other.selection.strategy.clone(),
                    n: seeds.len(),
                    bootstrap: stats::paired_bootstrap(&a, &b, 10_000, 0),
                    wilcoxon: stats::wilcoxon_signed_rank(&a, &b),
                });
            }
        }
    }
    // Kendall's tau between every two protocols of a setting.
    for (i, ka) in order.iter().enumerate() {
        for kb in order[i + 1..].iter().filter(|kb| kb.1 == ka.1) {
            let (ra, rb) = (&groups[ka], &groups[kb]);
            let mut xa = Vec::new();
            let mut xb = Vec::new();
            for r in ra {
                if let Some(o) = rb
                    .iter()
                    .find(|o| o.selection.strategy == r.selection.strategy)
                {
                    if let (Some(a), Some(b)) = (r.acc, o.acc) {
                        xa.push(a.mean);
                        xb.push(b.mean);
                    }
                }
            }
            cmp.agreements.push(RankAgreement {
                setting: ka.1.clone(),
                a: ka.0.clone(),
                b: kb.0.clone(),
                strategies: xa.len(),
                tau: stats::kendall_tau(&xa, &xb),
            });
        }
    }
    for key in &order {
        cmp.rows.extend(groups.remove(key).unwrap_or_default());
    }
    cmp
}

fn fmt_summary(s: Option<Summary>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s.n == 1 => format!("{:.3}", s.mean),
        Some(s) => format!(
            "{:.3} ± {:.3} [{:.3}, {:.3}]",
            s.mean,
            s.std,
            s.mean - s.ci95.unwrap_or(0.0),
            s.mean + s.ci95.unwrap_or(0.0)
        ),
    }
}

/// Compact `key=value` list of hyperparameters.
pub fn hparams_text(v: &serde_json::Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "—".into(),
    }
}

/// Where a row's hyperparameters come from.
pub fn provenance(s: &Selection) -> String {
    match s.chosen_in_phase.as_str() {
        "tune" => format!(
            "phase `tune`: best of {} candidates{} by mean {} = {} on {}; trials {}",
            s.candidates,
            if s.tied.is_empty() {
                String::new()
            } else {
                format!(" ({} tied, the earliest won)", s.tied.len())
            },
            s.selection_metric.as_deref().unwrap_or("?"),
            s.score.map_or("n/a".into(), |v| format!("{v:.3}")),
            s.tuned_on.as_deref().unwrap_or("?"),
            s.tune_trials
                .iter()
                .map(|id| id.get(..8).unwrap_or(id))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => "fixed in the config (not tuned)".into(),
    }
}

/// The comparison as Markdown.
pub fn markdown(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Metrics of the evaluation phase over seeds: mean ± sample std [95% t interval]. Rank \
         by mean ACC (1 = best). Definitions in docs/metrics.md, protocols in \
         docs/protocols.md.\n"
    );
    let mut last: Option<(String, String)> = None;
    let mut warnings: Vec<String> = Vec::new();
    for r in &c.rows {
        let key = (r.selection.protocol.clone(), r.selection.setting.clone());
        if last.as_ref() != Some(&key) {
            write_warnings(&mut s, &mut warnings);
            let _ = writeln!(s, "\n## Protocol `{}`, {}\n", key.0, key.1);
            let _ = writeln!(
                s,
                "| rank | strategy | seeds | ACC | avg. incr. acc. | BWT | learning acc. | hyperparameters | chosen by |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
            last = Some(key);
        }
        let seeds = if r.not_completed > 0 {
            format!(
                "{} ({} not completed)",
                r.acc_by_seed.len(),
                r.not_completed
            )
        } else {
            r.acc_by_seed.len().to_string()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if r.rank.is_finite() {
                format!("{}", r.rank)
            } else {
                "—".into()
            },
            r.selection.strategy,
            seeds,
            fmt_summary(r.acc),
            fmt_summary(r.aia),
            fmt_summary(r.bwt),
            fmt_summary(r.la),
            hparams_text(&r.selection.hparams),
            provenance(&r.selection)
        );
        warnings.extend(
            r.selection
                .warnings
                .iter()
                .map(|w| format!("`{}`: {w}", r.selection.strategy)),
        );
    }
    write_warnings(&mut s, &mut warnings);
    if !c.agreements.is_empty() {
        let _ = writeln!(s, "\n## Rankings across protocols\n");
        let _ = writeln!(s, "| setting | protocols | strategies | Kendall's tau |");
        let _ = writeln!(s, "|---|---|---|---|");
        for a in &c.agreements {
            let _ = writeln!(
                s,
                "| {} | {} vs {} | {} | {} |",
                a.setting,
                a.a,
                a.b,
                a.strategies,
                a.tau.map_or("undefined".into(), |t| format!("{t:.3}"))
            );
        }
        let _ = writeln!(s, "\nRank of each strategy under each protocol:\n");
        s.push_str(&rank_matrix(c));
    }
    if c.paired.iter().any(|p| p.n >= 2) {
        let _ = writeln!(
            s,
            "\n## Paired comparisons with the best strategy (same seeds)\n\nACC(best) − \
             ACC(other): paired bootstrap (10,000 resamples) 95% interval and exact Wilcoxon \
             signed-rank p-value (with few seeds the smallest attainable p is large: 0.25 \
             for 3 seeds).\n"
        );
        let _ = writeln!(s, "| protocol | setting | best | other | seeds | mean diff. | 95% bootstrap | Wilcoxon p |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for p in c.paired.iter().filter(|p| p.n >= 2) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                p.protocol,
                p.setting,
                p.best,
                p.other,
                p.n,
                p.bootstrap
                    .map_or("n/a".into(), |b| format!("{:.3}", b.mean_diff)),
                p.bootstrap
                    .map_or("n/a".into(), |b| format!("[{:.3}, {:.3}]", b.lo, b.hi)),
                p.wilcoxon
                    .map_or("n/a".into(), |w| format!("{:.3}", w.p_value)),
            );
        }
    }
    s
}

/// The tuning warnings of one protocol table (ties, edge winners, searches without effect),
/// as a list under it; empties `warnings`.
fn write_warnings(s: &mut String, warnings: &mut Vec<String>) {
    if warnings.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n**Tuning warnings:**\n");
    for w in warnings.drain(..) {
        let _ = writeln!(s, "- ⚠ {w}");
    }
}

/// Strategies x protocols table of ranks, per setting.
fn rank_matrix(c: &Comparison) -> String {
    let mut protocols: Vec<String> = Vec::new();
    let mut table: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for r in &c.rows {
        if !protocols.contains(&r.selection.protocol) {
            protocols.push(r.selection.protocol.clone());
        }
        table
            .entry((r.selection.setting.clone(), r.selection.strategy.clone()))
            .or_default()
            .insert(r.selection.protocol.clone(), r.rank);
    }
    let mut s = format!("| setting | strategy | {} |\n", protocols.join(" | "));
    let _ = writeln!(s, "|---|---|{}", "---|".repeat(protocols.len()));
    for ((setting, strategy), ranks) in &table {
        let cells: Vec<String> = protocols
            .iter()
            .map(|p| {
                ranks
                    .get(p)
                    .filter(|r| r.is_finite())
                    .map_or("—".into(), |r| r.to_string())
            })
            .collect();
        let _ = writeln!(s, "| {setting} | {strategy} | {} |", cells.join(" | "));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or(String::new(), |v| format!("{v}"))
}

/// `report/protocols.csv`: one line per protocol, setting and strategy.
pub fn protocols_csv(c: &Comparison) -> String {
    let mut s = String::from(
        "protocol,setting,strategy,rank,seeds,not_completed,acc_mean,acc_std,acc_ci95,aia_mean,aia_std,bwt_mean,la_mean,hparams,chosen_in_phase,selection_metric,score,tuned_on,candidates,tune_trials,eval_trials,warnings\n",
    );
    for r in &c.rows {
        let sel = &r.selection;
        let fields = [
            sel.protocol.clone(),
            sel.setting.clone(),
            sel.strategy.clone(),
            num(Some(r.rank)),
            r.acc_by_seed.len().to_string(),
            r.not_completed.to_string(),
            num(r.acc.map(|s| s.mean)),
            num(r.acc.map(|s| s.std)),
            num(r.acc.and_then(|s| s.ci95)),
            num(r.aia.map(|s| s.mean)),
            num(r.aia.map(|s| s.std)),
            num(r.bwt.map(|s| s.mean)),
            num(r.la.map(|s| s.mean)),
            sel.hparams.to_string(),
            sel.chosen_in_phase.clone(),
            sel.selection_metric.clone().unwrap_or_default(),
            num(sel.score),
            sel.tuned_on.clone().unwrap_or_default(),
            sel.candidates.to_string(),
            sel.tune_trials.join(" "),
            sel.eval_trials.join(" "),
            sel.warnings.join(" | "),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        let _ = writeln!(s, "{}", line.join(","));
    }
    s
}

/// `report/rankings.csv`: Kendall's tau between protocols.
pub fn rankings_csv(c: &Comparison) -> String {
    let mut s = String::from("setting,protocol_a,protocol_b,strategies,kendall_tau\n");
    for a in &c.agreements {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            a.setting,
            a.a,
            a.b,
            a.strategies,
            num(a.tau)
        );
    }
    s
}

/// `report/paired.csv`: paired tests against the best strategy.
pub fn paired_csv(c: &Comparison) -> String {
    let mut s = String::from(
        "protocol,setting,best,other,seeds,mean_diff,bootstrap_lo,bootstrap_hi,wilcoxon_w_plus,wilcoxon_p\n",
    );
    for p in &c.paired {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{}",
            p.protocol,
            p.setting,
            csv_field(&p.best),
            csv_field(&p.other),
            p.n,
            num(p.bootstrap.map(|b| b.mean_diff)),
            num(p.bootstrap.map(|b| b.lo)),
            num(p.bootstrap.map(|b| b.hi)),
            num(p.wilcoxon.map(|w| w.w_plus)),
            num(p.wilcoxon.map(|w| w.p_value)),
        );
    }
    s
}

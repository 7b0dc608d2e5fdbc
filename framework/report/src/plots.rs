//! Per-task curves of a run as SVG plots (`plots/` next to `results.jsonl`).
//!
//! One plot per quantity and setting, one line per strategy: the mean over the seeds of its
//! completed trials at each task (the band is ± one standard deviation when there are several
//! seeds). Quantities: average online accuracy of each task (every run), and, for trials that
//! recorded `[diagnostics]`, the end-of-task training accuracy, the dormant fraction, the
//! feature srank and effective rank, and σ_max and mean |w| of each weight matrix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::results::{mean_std, write_atomic, TrialRecord};

/// One curve: a strategy's per-task values in each seed.
pub(crate) type Curves = BTreeMap<String, Vec<Vec<f64>>>;

/// Reads a quantity's per-task values from a record (`None`: the record does not have it).
type Reader = Box<dyn Fn(&TrialRecord) -> Option<Vec<f64>>>;

/// A quantity to plot: file stem, title, y-axis label, and how to read it from a record.
struct Quantity {
    stem: String,
    title: String,
    y_desc: &'static str,
    values: Reader,
}

fn quantities(max_layers: usize) -> Vec<Quantity> {
    let mut q = vec![
        Quantity {
            stem: "online-accuracy".into(),
            title: "average online accuracy of each task".into(),
            y_desc: "online accuracy",
            values: Box::new(|r| Some(r.online_accuracy.clone())),
        },
        Quantity {
            stem: "train-accuracy".into(),
            title: "training accuracy at the end of each task".into(),
            y_desc: "train accuracy",
            values: Box::new(|r| diag(r, |d| d.train_accuracy)),
        },
        Quantity {
            stem: "dormant-fraction".into(),
            title: "fraction of dormant feature units (channels on CNNs)".into(),
            y_desc: "dormant fraction",
            values: Box::new(|r| diag(r, |d| d.dormant_fraction)),
        },
        Quantity {
            stem: "feature-srank".into(),
            title: "feature srank (δ = config)".into(),
            y_desc: "srank",
            values: Box::new(|r| diag(r, |d| d.feature_srank as f64)),
        },
        Quantity {
            stem: "feature-effective-rank".into(),
            title: "feature effective rank".into(),
            y_desc: "effective rank",
            values: Box::new(|r| diag(r, |d| d.feature_effective_rank)),
        },
    ];
    for l in 0..max_layers {
        q.push(Quantity {
            stem: format!("sigma-max-layer{l}"),
            title: format!("largest singular value of layer {l}'s weights"),
            y_desc: "sigma_max",
            values: Box::new(move |r| diag(r, |d| d.sigma_max.get(l).copied().unwrap_or(f64::NAN))),
        });
        q.push(Quantity {
            stem: format!("mean-abs-weight-layer{l}"),
            title: format!("mean |w| of layer {l}"),
            y_desc: "mean |w|",
            values: Box::new(move |r| {
                diag(r, |d| d.mean_abs_weight.get(l).copied().unwrap_or(f64::NAN))
            }),
        });
    }
    q
}

/// `f` of every task's diagnostics, if the record has them.
fn diag(
    r: &TrialRecord,
    f: impl Fn(&clef_engine::plasticity::TaskDiagnostics) -> f64,
) -> Option<Vec<f64>> {
    (!r.diagnostics.is_empty()).then(|| r.diagnostics.iter().map(f).collect())
}

/// Writes the plots of `records` into `dir/plots/` (atomically, file by file) and returns
/// their paths relative to `dir`, in a stable order. Runs without a task stream (fewer than
/// two tasks) get no plots.
pub fn write_plots(dir: &Path, records: &[TrialRecord]) -> Result<Vec<PathBuf>, String> {
    let done: Vec<&TrialRecord> = records.iter().filter(|r| r.status == "completed").collect();
    if done.iter().all(|r| r.online_accuracy.len() < 2) {
        return Ok(Vec::new());
    }
    let max_layers = done
        .iter()
        .flat_map(|r| r.diagnostics.first())
        .map(|d| d.sigma_max.len())
        .max()
        .unwrap_or(0);
    let mut settings: Vec<&str> = done.iter().map(|r| r.setting.as_str()).collect();
    settings.sort_unstable();
    settings.dedup();
    let out_dir = dir.join("plots");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let mut written = Vec::new();
    for q in quantities(max_layers) {
        for &setting in &settings {
            let mut curves: Curves = BTreeMap::new();
            for r in done.iter().filter(|r| r.setting == setting) {
                if let Some(v) = (q.values)(r) {
                    curves.entry(r.strategy.clone()).or_default().push(v);
                }
            }
            if curves.is_empty() {
                continue;
            }
            let name = format!("{setting}-{}.svg", q.stem);
            let svg = render(&format!("{} ({setting})", q.title), q.y_desc, &curves)?;
            write_atomic(&out_dir.join(&name), svg.as_bytes())
                .map_err(|e| format!("writing {name}: {e}"))?;
            written.push(Path::new("plots").join(name));
        }
    }
    Ok(written)
}

/// Per task: (mean, std) over the seeds that have a finite value there.
fn band(seeds: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let tasks = seeds.iter().map(Vec::len).max().unwrap_or(0);
    (0..tasks)
        .map(|t| {
            let xs: Vec<f64> = seeds
                .iter()
                .filter_map(|s| s.get(t).copied())
                .filter(|v| v.is_finite())
                .collect();
            if xs.is_empty() {
                (f64::NAN, 0.0)
            } else {
                mean_std(&xs)
            }
        })
        .collect()
}

/// One SVG line chart: x = task (1-based), one line per strategy with its ± std band.
pub(crate) fn render(title: &str, y_desc: &str, curves: &Curves) -> Result<String, String> {
    let bands: Vec<(&String, Vec<(f64, f64)>)> = curves.iter().map(|(k, v)| (k, band(v))).collect();
    let tasks = bands.iter().map(|(_, b)| b.len()).max().unwrap_or(1).max(2);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, b) in &bands {
        for &(m, s) in b.iter().filter(|(m, _)| m.is_finite()) {
            lo = lo.min(m - s);
            hi = hi.max(m + s);
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    let (lo, hi) = (lo - pad, hi + pad);
    let mut svg = String::new();
    {
        let err = |e: DrawingAreaErrorKind<std::io::Error>| format!("plot {title}: {e}");
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(1f64..tasks as f64, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("task")
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (i, (name, b)) in bands.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts = |f: &dyn Fn(f64, f64) -> f64| -> Vec<(f64, f64)> {
                b.iter()
                    .enumerate()
                    .filter(|(_, (m, _))| m.is_finite())
                    .map(|(t, &(m, s))| ((t + 1) as f64, f(m, s)))
                    .collect()
            };
            let upper = pts(&|m, s| m + s);
            let mut lower = pts(&|m, s| m - s);
            lower.reverse();
            if b.iter().any(|&(_, s)| s > 0.0) {
                let area: Vec<(f64, f64)> = upper.into_iter().chain(lower).collect();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        area,
                        color.mix(0.15).filled(),
                    )))
                    .map_err(err)?;
            }
            chart
                .draw_series(LineSeries::new(pts(&|m, _| m), color.stroke_width(2)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_is_mean_and_sample_std_per_task_skipping_missing_values() {
        let b = band(&[vec![1.0, 2.0, 5.0], vec![3.0, f64::NAN]]);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].0, 2.0);
        assert!((b[0].1 - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(b[1], (2.0, 0.0));
        assert_eq!(b[2], (5.0, 0.0));
    }

    #[test]
    fn render_draws_one_labelled_line_per_strategy() {
        let mut curves = Curves::new();
        curves.insert(
            "finetune".into(),
            vec![vec![0.9, 0.5, 0.2], vec![0.8, 0.4, 0.2]],
        );
        curves.insert("l2init".into(), vec![vec![0.9, 0.9, 0.85]]);
        let svg = render("train accuracy (domain-il)", "train accuracy", &curves).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(
            svg.contains("\nfinetune\n") && svg.contains("\nl2init\n"),
            "legend"
        );
        assert!(svg.contains("train accuracy (domain-il)"));
        // One 2-px line per strategy and one legend sample each.
        assert_eq!(svg.matches(r#"stroke-width="2""#).count(), 4);
        // finetune has 2 seeds, so a std band is drawn; l2init has one seed, no band.
        assert_eq!(svg.matches("<polygon").count(), 1);
    }
}

//! SVG charts of the protocol comparison: mean accuracy-matrix heatmaps, average accuracy after
//! each task, BWT against learning accuracy (stability vs plasticity), and the rank shift
//! between protocols.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::compare::{Comparison, ProtocolRow};
use crate::metrics::average_accuracy_at;
use crate::results::{write_atomic, TrialRecord};

type Err = String;

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn draw_err(title: &str) -> impl Fn(DrawingAreaErrorKind<std::io::Error>) -> Err + '_ {
    move |e| format!("plot {title}: {e}")
}

/// The evaluation records of a row (completed, square matrices).
fn records<'a>(row: &ProtocolRow, by_id: &BTreeMap<&str, &'a TrialRecord>) -> Vec<&'a TrialRecord> {
    row.selection
        .eval_trials
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .filter(|r| r.status == "completed" && !r.accuracy_matrix.is_empty())
        .collect()
}

/// Element-wise mean of the seeds' accuracy matrices.
fn mean_matrix(recs: &[&TrialRecord]) -> Vec<Vec<f64>> {
    let Some(first) = recs.first() else {
        return Vec::new();
    };
    let t = first.accuracy_matrix.len();
    let mut m = vec![vec![0.0; t]; t];
    let same: Vec<&&TrialRecord> = recs
        .iter()
        .filter(|r| r.accuracy_matrix.len() == t)
        .collect();
    for r in &same {
        for (i, row) in r.accuracy_matrix.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                m[i][j] += v / same.len() as f64;
            }
        }
    }
    m
}

/// Writes every chart into `dir/plots/`; returns their paths relative to `dir`.
pub fn write_all(
    dir: &Path,
    cmp: &Comparison,
    by_id: &BTreeMap<&str, &TrialRecord>,
) -> Result<Vec<PathBuf>, Err> {
    let out = dir.join("plots");
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut save = |name: String, svg: String| -> Result<(), Err> {
        write_atomic(&out.join(&name), svg.as_bytes()).map_err(|e| e.to_string())?;
        written.push(Path::new("plots").join(name));
        Ok(())
    };
    let mut groups: BTreeMap<(String, String), Vec<&ProtocolRow>> = BTreeMap::new();
    for r in &cmp.rows {
        groups
            .entry((r.selection.protocol.clone(), r.selection.setting.clone()))
            .or_default()
            .push(r);
    }
    for ((protocol, setting), rows) in &groups {
        let mut curves: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
        let mut points: Vec<(String, f64, f64)> = Vec::new();
        for row in rows {
            let recs = records(row, by_id);
            let m = mean_matrix(&recs);
            if m.len() >= 2 {
                let title = format!("{} — {protocol}, {setting}", row.selection.strategy);
                save(
                    format!(
                        "heatmap-{}-{}-{}.svg",
                        slug(protocol),
                        slug(setting),
                        slug(&row.selection.strategy)
                    ),
                    heatmap(&title, &m)?,
                )?;
            }
            for r in &recs {
                let t = r.accuracy_matrix.len();
                curves
                    .entry(row.selection.strategy.clone())
                    .or_default()
                    .push(
                        (0..t)
                            .map(|k| average_accuracy_at(&r.accuracy_matrix, k))
                            .collect(),
                    );
            }
            if let (Some(bwt), Some(la)) = (row.bwt, row.la) {
                points.push((row.selection.strategy.clone(), la.mean, bwt.mean));
            }
        }
        if curves.values().any(|c| c.iter().any(|s| s.len() >= 2)) {
            let svg = crate::plots::render(
                &format!("average accuracy after each task ({protocol}, {setting})"),
                "A_k (mean over seen tasks)",
                &curves,
            )?;
            save(
                format!("acc-per-task-{}-{}.svg", slug(protocol), slug(setting)),
                svg,
            )?;
        }
        if !points.is_empty() {
            save(
                format!("bwt-vs-la-{}-{}.svg", slug(protocol), slug(setting)),
                scatter(
                    &format!("stability vs plasticity ({protocol}, {setting})"),
                    &points,
                )?,
            )?;
        }
    }
    let mut settings: Vec<&String> = groups.keys().map(|(_, s)| s).collect();
    settings.sort();
    settings.dedup();
    for setting in settings {
        let cols: Vec<(&String, &Vec<&ProtocolRow>)> = groups
            .iter()
            .filter(|((_, s), _)| s == setting)
            .map(|((p, _), rows)| (p, rows))
            .collect();
        if cols.len() >= 2 {
            save(
                format!("rank-shift-{}.svg", slug(setting)),
                rank_shift(setting, &cols)?,
            )?;
        }
    }
    Ok(written)
}

/// 1-based task number at integer positions, nothing elsewhere.
fn tick(v: &f64) -> String {
    let r = v.round();
    if (v - r).abs() < 1e-6 {
        format!("{}", r as i64)
    } else {
        String::new()
    }
}

/// Heatmap of a mean accuracy matrix (rows: after task i, columns: task j).
fn heatmap(title: &str, m: &[Vec<f64>]) -> Result<String, Err> {
    let t = m.len();
    let mut svg = String::new();
    {
        let err = draw_err(title);
        let root = SVGBackend::with_string(&mut svg, (520, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            // Cell (i, j) spans [j + 0.5, j + 1.5]: integer ticks fall on cell centres.
            .build_cartesian_2d(0.5f64..t as f64 + 0.5, t as f64 + 0.5..0.5f64)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("evaluated task")
            .y_desc("after training task")
            .x_labels(t)
            .y_labels(t)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()
            .map_err(&err)?;
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let shade = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
                let fill = RGBColor(shade, shade, 255);
                let (x, y) = (j as f64 + 0.5, i as f64 + 0.5);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + 1.0, y + 1.0)],
                        fill.filled(),
                    )))
                    .map_err(&err)?;
                let color = if v > 0.55 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{v:.2}"),
                        (x + 0.3, y + 0.55),
                        ("sans-serif", 12).into_font().color(&color),
                    )))
                    .map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Scatter of (learning accuracy, BWT) per strategy, labelled.
fn scatter(title: &str, points: &[(String, f64, f64)]) -> Result<String, Err> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (_, x, y) in points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    let pad = |a: f64, b: f64| ((b - a) * 0.1).max(0.02);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let mut svg = String::new();
    {
        let err = draw_err(title);
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((x0 - px)..(x1 + px * 3.0), (y0 - py)..(y1 + py))
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("learning accuracy (plasticity)")
            .y_desc("BWT (stability; < 0 = forgetting)")
            .draw()
            .map_err(&err)?;
        for (i, (name, x, y)) in points.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(std::iter::once(Circle::new((*x, *y), 5, color.filled())))
                .map_err(&err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (*x + px * 0.1, *y),
                    ("sans-serif", 12),
                )))
                .map_err(&err)?;
        }
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Rank of each strategy under each protocol (columns), one line per strategy.
fn rank_shift(setting: &str, cols: &[(&String, &Vec<&ProtocolRow>)]) -> Result<String, Err> {
    let title = format!("rank shift between protocols ({setting})");
    let mut strategies: Vec<String> = Vec::new();
    for (_, rows) in cols {
        for r in rows.iter() {
            if !strategies.contains(&r.selection.strategy) {
                strategies.push(r.selection.strategy.clone());
            }
        }
    }
    let max_rank = strategies.len().max(2) as f64;
    let n = cols.len() as f64;
    let mut svg = String::new();
    {
        let err = draw_err(&title);
        let root = SVGBackend::with_string(&mut svg, (760, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(-0.3f64..(n - 1.0) + 0.9, (max_rank + 0.5)..0.5f64)
            .map_err(&err)?;
        let names: Vec<String> = cols.iter().map(|(p, _)| p.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(cols.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("rank by mean ACC (1 = best)")
            .draw()
            .map_err(&err)?;
        for (si, s) in strategies.iter().enumerate() {
            let color = Palette99::pick(si).to_rgba();
            let pts: Vec<(f64, f64)> = cols
                .iter()
                .enumerate()
                .filter_map(|(ci, (_, rows))| {
                    rows.iter()
                        .find(|r| &r.selection.strategy == s && r.rank.is_finite())
                        .map(|r| (ci as f64, r.rank))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(&err)?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(&err)?;
            if let Some(&(x, y)) = pts.last() {
                chart
                    .draw_series(std::iter::once(Text::new(
                        s.clone(),
                        (x + 0.05, y),
                        ("sans-serif", 12),
                    )))
                    .map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

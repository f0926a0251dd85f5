//! `pglm plot RUN_DIR...`: one chart per metric of `metrics.jsonl` (every numeric field that
//! exists: loss, eval_loss, eval_accuracy, reward, KL, entropy, lengths, ...), several runs
//! overlaid, as SVG or PNG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::progress::Output;

/// The chart file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Scalable vector graphics (text stays text).
    Svg,
    /// A 1000x600 bitmap.
    Png,
}

/// Arguments of `pglm plot`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Run directories (each with a metrics.jsonl); several are overlaid for comparison.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Output directory. Default: plots/ inside the first run directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// svg or png.
    #[arg(long, value_enum, default_value = "svg")]
    pub format: Format,
}

/// Fields that are bookkeeping, not curves.
const SKIP: &[&str] = &["step", "epoch", "elapsed_s", "nonfinite_total", "tokens", "loss_tokens"];

/// The order charts are listed in; other fields follow alphabetically.
const FIRST: &[&str] = &[
    "eval_accuracy",
    "eval_reward",
    "reward_mean",
    "loss",
    "eval_loss",
    "policy_loss",
    "kl",
    "entropy",
    "completion_len_mean",
];

/// A run's series: metric -> (step, value) points.
pub type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// Reads `metrics.jsonl` of a run directory (or the file itself) into series.
pub fn read_series(run: &Path) -> Result<Series> {
    let path = if run.is_dir() { run.join("metrics.jsonl") } else { run.to_path_buf() };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (is {} a run directory?)", path.display(), run.display()))?;
    let mut series = Series::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // A torn last line (a run killed mid-write) is skipped; a bad line elsewhere is an error.
            Err(_) if i + 1 == text.lines().count() => continue,
            Err(e) => bail!("{}:{}: not a JSON object: {e}", path.display(), i + 1),
        };
        let obj = v.as_object().ok_or_else(|| anyhow!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let step = obj.get("step").and_then(|s| s.as_f64()).unwrap_or((i + 1) as f64);
        for (k, x) in obj {
            if let Some(x) = x.as_f64().filter(|x| x.is_finite())
                && !SKIP.contains(&k.as_str())
            {
                series.entry(k.clone()).or_default().push((step, x));
            }
        }
    }
    Ok(series)
}

static FONT: Once = Once::new();

/// Text is drawn with the embedded DejaVu Sans (no system font needed).
fn register_font() {
    FONT.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The y range of the points, padded; a flat series gets a visible band around its value.
fn y_range(points: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = points.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.1 * lo.abs().max(1.0) };
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    metric: &str,
    runs: &[(String, &[(f64, f64)])],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let x_max = runs.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).fold(1.0, f64::max);
    let (y_lo, y_hi) = y_range(runs.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)));
    let mut chart = ChartBuilder::on(&area)
        .caption(metric, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, y_lo..y_hi)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .label_style(("sans-serif", 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, points)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = ShapeStyle::from(&color).stroke_width(2);
        // Sparse series (evaluations) get markers so that single points show.
        let sparse = points.len() <= 50;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        if sparse {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, style.filled())))
                .map_err(|e| anyhow!("{e}"))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    area.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// A short name for a run in legends: its directory's last component.
fn run_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Draws every metric of `runs` into `out`; returns the files written.
pub fn plot(runs: &[PathBuf], out: &Path, format: Format) -> Result<Vec<PathBuf>> {
    register_font();
    let all: Vec<(String, Series)> =
        runs.iter().map(|r| Ok((run_name(r), read_series(r)?))).collect::<Result<_>>()?;
    let mut metrics: Vec<&String> = all.iter().flat_map(|(_, s)| s.keys()).collect();
    metrics.sort_by_key(|m| (FIRST.iter().position(|f| f == m).unwrap_or(FIRST.len()), m.to_string()));
    metrics.dedup();
    if metrics.is_empty() {
        bail!(
            "no metrics to plot in {}",
            runs.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = Vec::new();
    for metric in metrics {
        let series: Vec<(String, &[(f64, f64)])> =
            all.iter().filter_map(|(name, s)| s.get(metric).map(|p| (name.clone(), p.as_slice()))).collect();
        let ext = if format == Format::Svg { "svg" } else { "png" };
        let path = out.join(format!("{metric}.{ext}"));
        let size = (1000, 600);
        let result = match format {
            Format::Svg => draw(SVGBackend::new(&path, size).into_drawing_area(), metric, &series),
            Format::Png => draw(BitMapBackend::new(&path, size).into_drawing_area(), metric, &series),
        };
        result.with_context(|| format!("cannot draw {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

pub fn run(args: &Args, out: &Output) -> Result<()> {
    let dir = args.out.clone().unwrap_or_else(|| args.runs[0].join("plots"));
    let files = plot(&args.runs, &dir, args.format)?;
    for f in &files {
        if out.json() {
            println!("{}", serde_json::json!({ "file": f }));
        } else {
            println!("{}", f.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_skip_bookkeeping_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let lines = "{\"step\":1,\"loss\":2.0,\"epoch\":0}\n{\"step\":2,\"loss\":1.5,\"eval_accuracy\":0.25}\n{\"step\":3,";
        std::fs::write(dir.path().join("metrics.jsonl"), lines).unwrap();
        let s = read_series(dir.path()).unwrap();
        assert_eq!(s["loss"], [(1.0, 2.0), (2.0, 1.5)]);
        assert_eq!(s["eval_accuracy"], [(2.0, 0.25)]);
        assert!(!s.contains_key("epoch") && !s.contains_key("step"));
    }

    #[test]
    fn charts_are_written_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, scale) in [(&a, 1.0), (&b, 2.0)] {
            std::fs::create_dir_all(d).unwrap();
            let text: String =
                (1..=20).map(|s| format!("{{\"step\":{s},\"loss\":{}}}\n", scale / s as f64)).collect();
            std::fs::write(d.join("metrics.jsonl"), text).unwrap();
        }
        let svg = plot(&[a.clone(), b.clone()], &dir.path().join("svg"), Format::Svg).unwrap();
        let text = std::fs::read_to_string(&svg[0]).unwrap();
        assert!(
            text.contains("<svg")
                && text.contains("loss")
                && ["a", "b"].iter().all(|n| text.lines().any(|l| l == *n))
        );
        let png = plot(&[a], &dir.path().join("png"), Format::Png).unwrap();
        assert_eq!(&std::fs::read(&png[0]).unwrap()[1..4], b"PNG");
    }
}

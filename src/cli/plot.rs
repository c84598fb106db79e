//! `steepest plot`: loss and accuracy per epoch from a `--metrics` file, train and test, one
//! colour per run, drawn as SVG with plotters.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use steepest::{Error, Result};

use crate::PlotArgs;

/// One epoch's numbers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Point {
    pub epoch: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
}

/// One run's epochs, in the order they were written.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: String,
    pub points: Vec<Point>,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let runs = read_metrics(&args.metrics)?;
    let out = args.output.clone().unwrap_or_else(|| args.metrics.with_extension("svg"));
    draw(&runs, &out, &args.metrics.display().to_string())?;
    println!(
        "wrote {} ({} run{})",
        out.display(),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// The epoch lines of a metrics file, grouped by their `run` id (lines from before run ids:
/// a new run wherever the epoch count starts again).
pub fn read_metrics(path: &Path) -> Result<Vec<Run>> {
    let bytes = steepest::data::read_file(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::file(path, "is not UTF-8 text; expected JSON lines from --metrics"))?;
    let mut runs: Vec<Run> = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::file(path, format!("line {}: {e}; expected one JSON object per line", n + 1))
        })?;
        if v.get("kind").and_then(|k| k.as_str()).is_some_and(|k| k != "epoch") {
            continue;
        }
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let (Some(epoch), Some(train_loss), Some(train_acc)) =
            (num("epoch"), num("train_loss"), num("train_acc"))
        else {
            return Err(Error::file(
                path,
                format!("line {}: expected epoch, train_loss and train_acc", n + 1),
            ));
        };
        let point = Point {
            epoch,
            train_loss,
            train_acc,
            test_loss: num("test_loss"),
            test_acc: num("test_acc"),
        };
        let id = v.get("run").and_then(|r| r.as_str()).map(str::to_string);
        let same = |r: &Run| match &id {
            Some(id) => &r.id == id,
            None => r.points.last().is_some_and(|p| p.epoch < epoch),
        };
        match runs.last_mut().filter(|r| same(r)) {
            Some(r) => r.points.push(point),
            None => match id.as_ref().and_then(|id| runs.iter_mut().find(|r| &r.id == id)) {
                Some(r) => r.points.push(point),
                None => runs.push(Run {
                    id: id.unwrap_or_else(|| format!("run {}", runs.len() + 1)),
                    points: vec![point],
                }),
            },
        }
    }
    if runs.is_empty() {
        return Err(Error::file(path, "holds no epoch lines; expected the file --metrics writes"));
    }
    Ok(runs)
}

/// Loss (left) and accuracy (right) against epoch: solid train, dashed test.
pub fn draw(runs: &[Run], out: &Path, title: &str) -> Result<()> {
    if out.extension().and_then(|e| e.to_str()) != Some("svg") {
        return Err(Error::file(
            out,
            "plots are drawn as SVG (open it in a browser); give a name ending in .svg",
        ));
    }
    let fail = |e: String| Error::file(out, format!("could not draw the plot: {e}"));
    let root = SVGBackend::new(out, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(|e| fail(e.to_string()))?;
    let (left, right) = root.split_horizontally(550);
    let max_epoch = runs.iter().flat_map(|r| &r.points).map(|p| p.epoch).fold(1.0, f64::max);
    let losses =
        runs.iter().flat_map(|r| &r.points).flat_map(|p| [Some(p.train_loss), p.test_loss]);
    let max_loss = losses.flatten().filter(|l| l.is_finite()).fold(0.0, f64::max).max(1e-3) * 1.05;
    panel(&left, runs, "loss", max_epoch, max_loss, |p| (p.train_loss, p.test_loss))
        .map_err(fail)?;
    panel(&right, runs, "accuracy (%)", max_epoch, 100.0, |p| {
        (100.0 * p.train_acc, p.test_acc.map(|a| 100.0 * a))
    })
    .map_err(fail)?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    runs: &[Run],
    what: &str,
    max_epoch: f64,
    max_y: f64,
    values: impl Fn(&Point) -> (f64, Option<f64>),
) -> std::result::Result<(), String> {
    let min_epoch = if max_epoch > 1.0 { 1.0 } else { 0.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(what, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(min_epoch..max_epoch, 0.0..max_y)
        .map_err(|e| e.to_string())?;
    // Whole epochs on the x axis (at most 10 labels).
    let span = (max_epoch - min_epoch).round().max(1.0) as usize;
    let step = span.div_ceil(10).max(1);
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(span / step + 1)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| if max_y >= 10.0 { format!("{y:.0}") } else { format!("{y:.2}") })
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, run) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let train: Vec<(f64, f64)> = run.points.iter().map(|p| (p.epoch, values(p).0)).collect();
        let test: Vec<(f64, f64)> =
            run.points.iter().filter_map(|p| values(p).1.map(|v| (p.epoch, v))).collect();
        let label = if runs.len() > 1 { format!("{} ", run.id) } else { String::new() };
        chart
            .draw_series(LineSeries::new(train, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{label}train"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        if !test.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(test, 6, 4, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("{label}test"))
                .legend(move |(x, y)| {
                    plotters::element::DashedPathElement::new(
                        [(x, y), (x + 20, y)],
                        4,
                        3,
                        color.stroke_width(2),
                    )
                });
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(if what == "loss" {
            SeriesLabelPosition::UpperRight
        } else {
            SeriesLabelPosition::LowerRight
        })
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// `train --plot FILE`: the metrics file when there is one (every run in it), else this run's
/// epochs.
pub fn after_training(out: &Path, metrics: Option<&PathBuf>, this_run: Run) -> Result<()> {
    let runs = match metrics {
        Some(path) => read_metrics(path)?,
        None => vec![this_run],
    };
    let title = metrics.map_or("steepest train".to_string(), |p| p.display().to_string());
    draw(&runs, out, &title)
}

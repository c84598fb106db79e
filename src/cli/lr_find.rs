//! `steepest lr-find` and `train --lr auto`: the learning-rate range test
//! ([`steepest::lr_find`]), its suggestion and its plot.

use std::path::Path;

use plotters::prelude::*;
use steepest::backend::Backend;
use steepest::data::Dataset;
use steepest::lr_find::LrFind;
use steepest::nn::ModelSpec;
use steepest::train::TrainConfig;
use steepest::{with_backend, Error, Result};

use super::say;
use crate::{LrFindArgs, TrainArgs};

pub fn run(args: &LrFindArgs) -> Result<()> {
    let t = &args.train;
    super::set_quiet(t.quiet);
    super::set_report_to_stderr(t.json);
    if let Some(p) = &t.plot {
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(Error::file(p, "--plot: plots are SVG; give a name ending in .svg"));
        }
    }
    let spec: ModelSpec = t.model.parse()?;
    let cfg = super::train::config(t)?;
    let mut data = super::load_data(&t.data, None, false)?;
    if let Some(n) = t.limit_train {
        let size = data.sample_size();
        data.train.truncate(n, size);
    }
    let mut backend = super::open_device(&t.data.device, t.data.adapter.as_deref())?;
    let found = with_backend!(&mut backend, b => search(b, t, &spec, &cfg, &data, args.start_lr, args.end_lr, args.steps))?;
    report(&found, &cfg);
    if t.json {
        println!("{}", serde_json::to_string(&found).unwrap_or_default());
    }
    if let Some(p) = &t.plot {
        draw(&found, p)?;
        say!("plot: {}", p.display());
    }
    Ok(())
}

/// The test on a model of its own (the one trained afterwards starts from the same init).
#[allow(clippy::too_many_arguments)]
pub fn search<B: Backend>(
    b: &mut B,
    args: &TrainArgs,
    spec: &ModelSpec,
    cfg: &TrainConfig,
    data: &Dataset,
    start: f32,
    end: f32,
    steps: usize,
) -> Result<LrFind> {
    // The range test descends the loss the run will: the same model, smoothing, normalisation.
    let model = super::train::build_model(b, args, spec, cfg, data)?;
    steepest::lr_find::lr_find(b, &model, data, cfg, start, end, steps)
}

/// The suggestion and a coarse table of the curve.
pub fn report(f: &LrFind, cfg: &TrainConfig) {
    say!(
        "lr-find ({} optimizer, batch {}): {} steps from {:.1e} to {:.1e}{}",
        cfg.optimizer.kind,
        cfg.batch_size,
        f.lrs.len(),
        f.lrs.first().copied().unwrap_or(0.0),
        f.lrs.last().copied().unwrap_or(0.0),
        if f.diverged { ", where the loss blew up" } else { "" }
    );
    let every = (f.lrs.len() / 10).max(1);
    for i in (0..f.lrs.len()).step_by(every) {
        say!("  lr {:>9.2e}  loss {:.4}", f.lrs[i], f.smoothed[i]);
    }
    say!(
        "lowest loss at lr {:.2e}; suggested lr {:.2e} (a tenth of it)",
        f.min_loss_lr,
        f.suggested
    );
}

/// Smoothed loss against the rate, log scale, the suggestion marked.
pub fn draw(f: &LrFind, out: &Path) -> Result<()> {
    let fail = |e: String| Error::file(out, format!("could not draw the plot: {e}"));
    let root = SVGBackend::new(out, (700, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let (lo, hi) = (f.lrs[0] as f64, f.lrs[f.lrs.len() - 1].max(f.lrs[0] * 1.01) as f64);
    let finite: Vec<f64> = f.smoothed.iter().map(|&s| s as f64).filter(|s| s.is_finite()).collect();
    if finite.is_empty() {
        return Err(fail("the loss was never finite (it blew up at the first rate)".into()));
    }
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    // The curve up to its lowest point bounds the top: the blow-up at the end would flatten
    // the rest.
    let at_min = finite.iter().position(|&s| s == min).unwrap_or(0);
    let plateau = finite[..=at_min].iter().copied().fold(min, f64::max);
    let top = (plateau * 1.02).max(min * 1.1).min(min * 4.0);
    let mut chart = ChartBuilder::on(&root)
        .caption("learning-rate range test", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), (min * 0.95)..top)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("learning rate")
        .y_desc("loss (smoothed)")
        .x_label_formatter(&|x| format!("{x:.0e}"))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    let curve = f.lrs.iter().zip(&f.smoothed).map(|(&l, &s)| (l as f64, (s as f64).min(top)));
    chart
        .draw_series(LineSeries::new(curve, RED.stroke_width(2)))
        .map_err(|e| fail(e.to_string()))?
        .label("loss")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    let s = f.suggested as f64;
    if (lo..=hi).contains(&s) {
        chart
            .draw_series(DashedLineSeries::new(
                [(s, min * 0.95), (s, top)],
                6,
                4,
                BLUE.stroke_width(2),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label(format!("suggested {s:.1e}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

//! `steepest train`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use steepest::device::AnyBackend;

use indicatif::{ProgressBar, ProgressStyle};
use steepest::backend::Backend;
use steepest::checkpoint::{self, CheckpointMeta};
use steepest::data::Dataset;
use steepest::nn::{Model, ModelSpec};
use steepest::optim::{OptimizerConfig, OptimizerKind};
use steepest::schedule::Schedule;
use steepest::train::{self, EpochReport, Metrics, Observer, TrainConfig};
use steepest::{with_backend, Error, Result};

use crate::TrainArgs;

pub fn run(args: &TrainArgs) -> Result<()> {
    if args.model == "help" {
        print_model_help();
        return Ok(());
    }
    // Check every flag before the slow parts (data, device) start.
    let spec: ModelSpec = args.model.parse()?;
    let cfg = config(args)?;
    if let Some(path) = &args.save {
        // Fail now rather than after the training the checkpoint was meant to keep: a folder, a
        // device or a FIFO is never replaced by a checkpoint.
        if let Ok(m) = std::fs::metadata(path) {
            if !m.is_file() {
                return Err(Error::file(
                    path,
                    "--save: exists and is not a regular file (a folder, device or FIFO); \
                     give a file name",
                ));
            }
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::file(
                path,
                format!("--save: folder {} does not exist", dir.display()),
            ));
        }
    }
    let mut data = super::load_data(&args.data, None, false)?;
    if let Some(n) = args.limit_train {
        let size = data.sample_size();
        data.train.truncate(n, size);
    }
    let mut backend = super::open_device(&args.data.device, args.data.adapter.as_deref())?;
    let profiling = match (&mut backend, args.profile) {
        (_, false) => false,
        (AnyBackend::Gpu(g), true) => {
            let on = g.start_profiling();
            if !on {
                eprintln!("note: --profile: this adapter has no timestamp queries");
            }
            on
        }
        (AnyBackend::Cpu(_), true) => {
            eprintln!("note: --profile times GPU kernels; this run is on the CPU");
            false
        }
    };
    let steps = with_backend!(&mut backend, b => train_on(b, args, &spec, &cfg, &data))?;
    if let (true, AnyBackend::Gpu(g)) = (profiling, &mut backend) {
        let report = g.stop_profiling();
        super::bench::print_profile(
            "gpu time per training step (evaluation passes included)",
            &report,
            steps.max(1),
        );
    }
    Ok(())
}

fn config(args: &TrainArgs) -> Result<TrainConfig> {
    let kind: OptimizerKind = args.optimizer.parse()?;
    let mut opt = OptimizerConfig::new(kind);
    if let Some(lr) = args.lr {
        opt.lr = lr;
    }
    if let Some(m) = args.momentum {
        opt.momentum = m;
    }
    if let Some(wd) = args.weight_decay {
        opt.weight_decay = wd;
    }
    opt.beta1 = args.beta1;
    opt.beta2 = args.beta2;
    opt.eps = args.eps;
    opt.alpha = args.alpha;
    opt.validate()?;
    if args.epochs == 0 {
        return Err(Error::config("--epochs", "must be at least 1"));
    }
    if args.batch_size == 0 {
        return Err(Error::config("--batch-size", "must be at least 1"));
    }
    let schedule: Schedule = args.schedule.parse()?;
    Ok(TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: opt,
        schedule,
        warmup_steps: args.warmup_steps,
        seed: args.seed,
        shuffle: !args.no_shuffle,
        drop_last: args.drop_last,
        report_every: 0,
        augment: args.augment.parse()?,
    })
}

fn train_on<B: Backend>(
    b: &mut B,
    args: &TrainArgs,
    spec: &ModelSpec,
    cfg: &TrainConfig,
    data: &Dataset,
) -> Result<usize> {
    let mut model = Model::new(b, spec, data.input_shape(), data.num_classes, cfg.seed)?;
    if let Some((mean, std)) = normalization(&args.normalize, data)? {
        model.set_normalization(b, &mean, &std)?;
    }
    if let Some(path) = &args.init_from {
        let ckpt = checkpoint::load(path)?;
        model.import(b, &ckpt.tensors, &path.display().to_string())?;
        // The weights were trained on normalised inputs: fine-tuning them on raw pixels
        // silently undoes the training. Without --normalize, take the checkpoint's.
        if let Some((mean, std)) = &ckpt.meta.normalization {
            if args.normalize == "none" {
                model
                    .set_normalization(b, mean, std)
                    .map_err(|e| Error::file(path, format!("metadata normalization: {e}")))?;
                eprintln!(
                    "note: --init-from {}: normalising inputs as it was trained (mean {mean:?} \
                     std {std:?}); pass --normalize to choose otherwise",
                    path.display()
                );
            } else if model.normalization.as_ref().map(|(m, s, _)| (m, s)) != Some((mean, std)) {
                eprintln!(
                    "warning: --init-from {} was trained with normalisation mean {mean:?} std \
                     {std:?}; this run uses --normalize {}",
                    path.display(),
                    args.normalize
                );
            }
        }
    }
    let say = !args.quiet;
    if say {
        println!(
            "data: {} ({} train, {} test, {}x{}x{}, {} classes)",
            data.name,
            data.train.len,
            data.test.len,
            data.channels,
            data.height,
            data.width,
            data.num_classes
        );
        print_summary(&model);
        if let Some((mean, std)) = &model.normalization.as_ref().map(|(m, s, _)| (m, s)) {
            println!("normalize: mean {mean:?} std {std:?}");
        }
        if cfg.augment != Default::default() {
            println!("augment: {}", cfg.augment);
        }
        println!(
            "optimizer {} lr {}; batch {}; {} epochs",
            cfg.optimizer.kind, cfg.optimizer.lr, cfg.batch_size, cfg.epochs
        );
    }
    let metrics_file = match &args.metrics {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Error::file(path, format!("cannot open for appending: {e}")))?,
        ),
        None => None,
    };
    let show_bar = say && std::io::stderr().is_terminal();
    let mut cfg = cfg.clone();
    if show_bar {
        cfg.report_every = 50;
    }
    let mut obs = Reporter {
        bar: None,
        show_bar,
        say,
        epochs: cfg.epochs,
        metrics: metrics_file.zip(args.metrics.clone()),
        metrics_error: None,
        saving: args.save.is_some(),
    };
    let reports = match train::train(b, &model, data, &cfg, &mut obs) {
        Ok(r) => r,
        Err(e @ Error::Diverged { .. }) => {
            // Keep what was finite: the model is back at the end of the last finite epoch
            // (if there was one), never NaN weights.
            if let (Some(path), Error::Diverged { restored, .. }) = (&args.save, &e) {
                if restored.is_empty() {
                    eprintln!("note: not saved: no epoch finished with a finite loss");
                } else {
                    save(b, &model, data, path)?;
                    eprintln!("note: saved the last finite weights to {}", path.display());
                }
            }
            return Err(e);
        }
        Err(e @ Error::Interrupted { .. }) => {
            if let Some(bar) = obs.bar.take() {
                bar.finish_and_clear();
            }
            // The finished epochs' metrics are already written; keep the weights too.
            if let Some(path) = &args.save {
                save(b, &model, data, path)?;
                eprintln!("note: {e}; saved the weights to {}", path.display());
            } else {
                eprintln!("note: {e}; nothing saved (no --save)");
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if let Some(path) = &args.save {
        save(b, &model, data, path)?;
        if say {
            println!("saved {}", path.display());
        }
    }
    if let Some(e) = obs.metrics_error {
        return Err(e);
    }
    Ok(reports.iter().map(|r| r.steps).sum())
}

/// `--normalize none|auto|MEAN,STD...` for this data set.
fn normalization(flag: &str, data: &Dataset) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    match flag {
        "none" => Ok(None),
        "auto" => Ok(Some(data.channel_stats())),
        list => {
            let values: Vec<f32> = list
                .split(',')
                .map(|v| v.trim().parse::<f32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| {
                    Error::config(
                        "--normalize",
                        format!("{list:?} is not none, auto or a list of numbers"),
                    )
                })?;
            let c = data.channels;
            if values.len() != 2 * c {
                return Err(Error::config(
                    "--normalize",
                    format!("{} has {c} channel(s): give {c} means then {c} standard deviations ({} values), got {}", data.name, 2 * c, values.len()),
                ));
            }
            Ok(Some((values[..c].to_vec(), values[c..].to_vec())))
        }
    }
}

fn print_model_help() {
    println!("--model takes {}", steepest::nn::GRAMMAR);
    println!();
    for (name, layers, what) in steepest::nn::PRESETS {
        println!("{name}: {what}\n    {layers}");
    }
}

/// Each layer with its output shape and parameter count, then the total.
fn print_summary<B: Backend>(model: &Model<B>) {
    println!("model: {}", model.spec);
    println!("  {:>3}  {:<28} {:>12} {:>10}", "#", "layer", "output", "params");
    println!("  {:>3}  {:<28} {:>12} {:>10}", "", "input", model.input.to_string(), "");
    for row in model.summary() {
        println!(
            "  {:>3}  {:<28} {:>12} {:>10}",
            row.position,
            row.layer,
            row.output.to_string(),
            row.params
        );
    }
    println!("  total parameters: {}", model.num_params());
}

fn save<B: Backend>(b: &mut B, model: &Model<B>, data: &Dataset, path: &Path) -> Result<()> {
    let tensors = model.export(b)?;
    let meta = CheckpointMeta {
        model: Some(model.spec.clone()),
        input_shape: Some([data.channels, data.height, data.width]),
        class_names: Some(data.class_names.clone()),
        dataset: Some(data.name.clone()),
        version: None,
        normalization: model.normalization.as_ref().map(|(m, s, _)| (m.clone(), s.clone())),
    };
    checkpoint::save(path, &tensors, &meta)
}

/// Prints a progress bar (on a terminal) and one summary line per epoch.
struct Reporter {
    bar: Option<ProgressBar>,
    show_bar: bool,
    say: bool,
    epochs: usize,
    /// `--metrics`: one line appended and flushed per epoch; the first write error is kept
    /// (and training goes on, so that `--save` still keeps the model).
    metrics: Option<(std::fs::File, std::path::PathBuf)>,
    metrics_error: Option<Error>,
    /// `--save` was given: keep the last finite weights in case the run diverges.
    saving: bool,
}

impl Observer for Reporter {
    fn epoch_started(&mut self, epoch: usize, steps: usize) {
        if self.show_bar {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", self.epochs));
            self.bar = Some(bar);
        }
    }

    fn step_done(&mut self, _step: usize, running: Option<Metrics>) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if let Some(m) = running {
                bar.set_message(format!("loss {:.4} acc {:.2}%", m.loss, 100.0 * m.accuracy));
            }
        }
    }

    fn keeps_last_finite(&self) -> bool {
        self.saving
    }

    fn should_stop(&self) -> bool {
        super::interrupt::requested()
    }

    fn epoch_done(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let (Some((file, path)), None) = (&mut self.metrics, &self.metrics_error) {
            let line = serde_json::to_string(r).unwrap_or_default();
            if let Err(e) = writeln!(file, "{line}").and_then(|_| file.flush()) {
                eprintln!(
                    "warning: --metrics {}: write failed ({e}); training goes on",
                    path.display()
                );
                self.metrics_error = Some(Error::file(path.clone(), format!("write failed: {e}")));
            }
        }
        if self.say {
            let test = match (r.test_loss, r.test_acc) {
                (Some(l), Some(a)) => format!("test loss {l:.4} acc {:.2}%", 100.0 * a),
                _ => "no test set".to_string(),
            };
            let line = format!(
                "epoch {}/{}  train loss {:.4} acc {:.2}%  {}  lr {:.3e}  {:.1}s  {:.0} samples/s",
                r.epoch,
                self.epochs,
                r.train_loss,
                100.0 * r.train_acc,
                test,
                r.lr,
                r.seconds,
                r.samples_per_sec
            );
            println!("{line}");
        }
    }
}

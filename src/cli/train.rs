//! `steepest train`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use steepest::device::AnyBackend;

use indicatif::{ProgressBar, ProgressStyle};
use steepest::backend::Backend;
use steepest::checkpoint::{self, Checkpoint, CheckpointMeta};
use steepest::data::Dataset;
use steepest::nn::{Model, ModelSpec};
use steepest::optim::{OptimizerConfig, OptimizerKind};
use steepest::schedule::Schedule;
use steepest::train::{self, EpochReport, Metrics, Observer, Resume, Snapshot, TrainConfig};
use steepest::{with_backend, Error, Result};

use super::{note, say, warning};
use crate::TrainArgs;

pub fn run(args: &TrainArgs) -> Result<()> {
    if args.model == "help" {
        print_model_help();
        return Ok(());
    }
    super::set_quiet(args.quiet);
    let resumed = match &args.resume {
        Some(path) => Some(open_resume(path, args)?),
        None => None,
    };
    let mut args = resumed.as_ref().map_or(args, |r| &r.args).clone();
    if let Some(path) = args.config.clone() {
        args = read_config_file(&path, &args)?;
        args.config = Some(path);
    }
    if args.run_id.is_none() {
        args.run_id = Some(new_run_id());
    }
    let init = match args.init_from.clone() {
        Some(path) => Some(open_init(&path, &mut args)?),
        None => None,
    };
    super::set_quiet(args.quiet);
    super::set_report_to_stderr(args.json);
    if args.save_best && args.save.is_none() {
        return Err(Error::config("--save-best", "needs --save FILE to know where to save"));
    }
    if args.log_every == Some(0) {
        return Err(Error::config("--log-every", "must be at least 1 (steps)"));
    }
    if args.log_every.is_some() && args.metrics.is_none() {
        return Err(Error::config("--log-every", "needs --metrics FILE to write to"));
    }
    if let Some(p) = &args.plot {
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            return Err(Error::file(p, "--plot: plots are SVG; give a name ending in .svg"));
        }
    }
    if args.save_every == Some(0) {
        return Err(Error::config("--save-every", "must be at least 1 (epochs)"));
    }
    if args.save_every.is_some() && args.save.is_none() {
        return Err(Error::config("--save-every", "needs --save FILE to know where to save"));
    }
    // Check every flag before the slow parts (data, device) start.
    let spec: ModelSpec = args.model.parse()?;
    let mut cfg = config(&args)?;
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
    if args.lr == Some(super::LrFlag::Auto) {
        if resumed.is_some() {
            return Err(Error::config(
                "--lr",
                "auto picks the rate of a new run, not a resumed one",
            ));
        }
        let (start, end, steps) = (1e-7, 10.0, 100);
        let found = with_backend!(&mut backend, b => super::lr_find::search(b, &args, &spec, &cfg, &data, start, end, steps))?;
        super::lr_find::report(&found, &cfg);
        cfg.optimizer.lr = found.suggested;
        cfg.optimizer.validate()?;
        // Stored as the number it became, so a resumed run keeps it.
        args.lr = Some(super::LrFlag::Value(found.suggested));
        say!("--lr auto: training with lr {:.2e}", found.suggested);
    }
    let args = &args;
    let profiling = match (&mut backend, args.profile) {
        (_, false) => false,
        (AnyBackend::Gpu(g), true) => {
            let on = g.start_profiling();
            if !on {
                note!("--profile: this adapter has no timestamp queries");
            }
            on
        }
        (AnyBackend::Cpu(_), true) => {
            note!("--profile times GPU kernels; this run is on the CPU");
            false
        }
    };
    let steps = with_backend!(&mut backend, b => train_on(b, args, &spec, &cfg, &data, resumed.as_ref(), init.as_ref()))?;
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

pub fn config(args: &TrainArgs) -> Result<TrainConfig> {
    let kind: OptimizerKind = args.optimizer.parse()?;
    let mut opt = OptimizerConfig::new(kind);
    // `auto`: the default until the range test has run (`run`).
    if let Some(super::LrFlag::Value(lr)) = args.lr {
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
    if !(0.0..=1.0).contains(&args.label_smoothing) {
        return Err(Error::config(
            "--label-smoothing",
            format!("{} is not a fraction; expected ε from 0 to 1, e.g. 0.1", args.label_smoothing),
        ));
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
        resume: None,
        best_by: args.best_by.parse()?,
        tta: args.tta.parse()?,
        early_stop: match args.early_stop {
            Some(0) => return Err(Error::config("--early-stop", "must be at least 1 (epochs)")),
            n => n,
        },
        freeze: args
            .freeze
            .as_deref()
            .map(|f| f.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
            .unwrap_or_default(),
    })
}

/// `base` (the flags as parsed) with each of `layer`'s values whose flag was not given on the
/// command line, except the `skip`ped ones. A given flag that differs from the layer's value
/// gets a note naming both (`what` names the layer: "the saved run", "run.toml"). A value of
/// the wrong type is an error naming `source` and its key.
pub(super) fn merge_flags(
    base: &TrainArgs,
    layer: &serde_json::Map<String, serde_json::Value>,
    skip: &[&str],
    source: &Path,
    what: &str,
) -> Result<TrainArgs> {
    let mut merged = serde_json::to_value(base)
        .map_err(|e| Error::config("--config", format!("cannot encode the flags: {e}")))?;
    let serde_json::Value::Object(map) = &mut merged else {
        return Err(Error::config("--config", "the flags did not encode as an object"));
    };
    for (key, value) in layer {
        if skip.contains(&key.as_str()) || !map.contains_key(key) {
            continue;
        }
        if base.given.contains(key) {
            if map.get(key) != Some(value) {
                let now = map.get(key).map(|v| v.to_string()).unwrap_or_default();
                note!("--{} {now} (not {value} as in {what})", key.replace('_', "-"));
            }
            continue;
        }
        map.insert(key.clone(), value.clone());
        // Each value on its own, so a wrong type names its key.
        if let Err(e) = serde_json::from_value::<TrainArgs>(serde_json::Value::Object(map.clone()))
        {
            return Err(Error::file(source, format!("{key} = {value}: {e}")));
        }
    }
    let mut out: TrainArgs =
        serde_json::from_value(merged).map_err(|e| Error::file(source, format!("{e}")))?;
    out.given = base.given.clone();
    Ok(out)
}

/// Reads `--config FILE` (TOML; every train flag as a key, `batch-size` or `batch_size`) as a
/// layer under the command line: an unknown key is an error that lists the known ones.
fn read_config_file(path: &Path, args: &TrainArgs) -> Result<TrainArgs> {
    let bytes = steepest::data::read_file(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::file(path, "is not UTF-8 text; expected a TOML file"))?;
    let table: serde_json::Value =
        toml::from_str(&text).map_err(|e| Error::file(path, format!("not valid TOML: {e}")))?;
    let serde_json::Value::Object(table) = table else {
        return Err(Error::file(path, "expected a TOML table of train flags"));
    };
    let known = serde_json::to_value(args).unwrap_or_default();
    let known: Vec<String> =
        known.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let mut layer = serde_json::Map::new();
    for (key, value) in table {
        let field = key.replace('-', "_");
        if !known.contains(&field) || CONFIG_NOT_ALLOWED.contains(&field.as_str()) {
            let mut names: Vec<String> = known
                .iter()
                .filter(|k| !CONFIG_NOT_ALLOWED.contains(&k.as_str()))
                .map(|k| k.replace('_', "-"))
                .collect();
            names.sort();
            return Err(Error::file(
                path,
                format!("unknown key {key:?}; expected train flags: {}", names.join(", ")),
            ));
        }
        layer.insert(field, value);
    }
    let name = path.display().to_string();
    merge_flags(args, &layer, &[], path, &name)
}

/// Keys a config file cannot set: they belong to one invocation.
const CONFIG_NOT_ALLOWED: [&str; 2] = ["run_id", "resume"];

/// Reads `--init-from FILE` and, unless `--model` is given, takes the model it holds (from its
/// metadata, or the MLP its tensor shapes describe); a different `--model` is an error naming
/// both.
fn open_init(path: &Path, args: &mut TrainArgs) -> Result<Checkpoint> {
    let ckpt = checkpoint::load(path)?;
    let stored = match &ckpt.meta.model {
        Some(spec) => Some(spec.clone()),
        None => checkpoint::infer_mlp(&ckpt.tensors, path).ok().map(|(spec, _, _)| spec),
    };
    if let Some(stored) = stored {
        if !args.given.iter().any(|g| g == "model") {
            args.model = stored.to_string();
        } else if args.model.parse::<ModelSpec>()? != stored {
            return Err(Error::file(
                path,
                format!(
                    "--init-from holds model {stored}, but --model says {}; leave out --model \
                     to fine-tune the file's model",
                    args.model
                ),
            ));
        }
    }
    Ok(ckpt)
}

/// A saved run to continue: its file and the flags it ran with, merged with this command's.
struct Resumed {
    args: TrainArgs,
    ckpt: Checkpoint,
    source: PathBuf,
}

/// Flags a resumed run never takes from the saved one: how this invocation prints and runs,
/// and what only the first run's start read.
const NOT_RESUMED: [&str; 4] = ["quiet", "profile", "init_from", "download"];

/// Reads `--resume FILE` (a checkpoint, whose NAME.resume.safetensors is read, or that file
/// itself) and takes every flag from the saved run that this command does not give again.
fn open_resume(path: &Path, args: &TrainArgs) -> Result<Resumed> {
    if args.init_from.is_some() {
        return Err(Error::config(
            "--init-from",
            "--resume continues a run from its own weights; give one of the two",
        ));
    }
    let is_resume_file = path.to_string_lossy().ends_with(".resume.safetensors");
    let source = if is_resume_file { path.to_path_buf() } else { checkpoint::resume_path(path) };
    if !source.exists() {
        return Err(Error::file(
            path,
            format!(
                "--resume: {} does not exist; `train --save {}` writes it beside the weights",
                source.display(),
                path.display()
            ),
        ));
    }
    let ckpt = checkpoint::load(&source)?;
    let (Some(progress), Some(stored)) = (&ckpt.meta.progress, &ckpt.meta.config) else {
        return Err(Error::file(
            &source,
            "--resume: no steepest.progress and steepest.config metadata; expected the \
             NAME.resume.safetensors that `train --save NAME.safetensors` writes",
        ));
    };
    let serde_json::Value::Object(stored) = stored else {
        return Err(Error::file(&source, "metadata steepest.config: expected a JSON object"));
    };
    let mut merged = merge_flags(args, stored, &NOT_RESUMED, &source, "the saved run")?;
    merged.resume = args.resume.clone();
    if merged.schedule == "cosine" && stored.get("epochs") != Some(&merged.epochs.into()) {
        note!(
            "--resume: the cosine schedule now spans {} epochs, so the rates from here on \
             differ from the saved run's plan",
            merged.epochs
        );
    }
    if !args.quiet {
        say!(
            "resuming {}: {} epochs{} and {} steps done; training to epoch {}",
            source.display(),
            progress.epoch,
            if progress.in_epoch > 0 {
                format!(" (+{} steps of the next)", progress.in_epoch)
            } else {
                String::new()
            },
            progress.step,
            merged.epochs
        );
    }
    Ok(Resumed { args: merged, ckpt, source })
}

fn train_on<B: Backend>(
    b: &mut B,
    args: &TrainArgs,
    spec: &ModelSpec,
    cfg: &TrainConfig,
    data: &Dataset,
    resumed: Option<&Resumed>,
    init: Option<&Checkpoint>,
) -> Result<usize> {
    let started = std::time::Instant::now();
    let mut model = build_model(b, args, spec, cfg, data)?;
    let mut cfg = cfg.clone();
    if let Some(r) = resumed {
        model.import(b, &r.ckpt.tensors, &r.source.display().to_string())?;
        if let Some((mean, std)) = &r.ckpt.meta.normalization {
            model
                .set_normalization(b, mean, std)
                .map_err(|e| Error::file(&r.source, format!("metadata normalization: {e}")))?;
        }
        cfg.resume = Some(Arc::new(Resume {
            progress: r.ckpt.meta.progress.unwrap_or_default(),
            optimizer: r.ckpt.optimizer.clone(),
            source: r.source.clone(),
        }));
    }
    if let (Some(path), Some(ckpt)) = (&args.init_from, init) {
        let source = path.display().to_string();
        // A data set with other classes than the checkpoint's: a new head (its last layer, at
        // its fresh init) on the loaded body, the classic fine-tune.
        let model_shapes: Vec<(String, Vec<usize>)> =
            model.params().into_iter().map(|p| (p.name, p.shape)).collect();
        let head = model.head_names();
        let head_differs = head.iter().any(|n| {
            let want = model_shapes.iter().find(|(m, _)| m == n).map(|(_, s)| s);
            let have = ckpt.tensors.iter().find(|(m, _, _)| m == n).map(|(_, s, _)| s);
            have.is_some() && have != want
        });
        if head_differs {
            model.import_without_head(b, &ckpt.tensors, &source)?;
            note!(
                "--init-from {}: its classifier ({}) has other classes than {}'s {}; training \
                 a new one on the loaded layers",
                path.display(),
                head.join(", "),
                data.name,
                data.num_classes
            );
        } else {
            model.import(b, &ckpt.tensors, &source)?;
        }
        note!(
            "--init-from {}: loaded {} tensors ({} parameters) of model {}{}",
            path.display(),
            ckpt.tensors.len() - if head_differs { head.len() } else { 0 },
            model.num_params(),
            model.spec,
            ckpt.meta.dataset.as_ref().map(|d| format!(", trained on {d}")).unwrap_or_default()
        );
        // The weights were trained on normalised inputs: fine-tuning them on raw pixels
        // silently undoes the training. Without --normalize, take the checkpoint's.
        if let Some((mean, std)) = &ckpt.meta.normalization {
            if args.normalize == "none" {
                model
                    .set_normalization(b, mean, std)
                    .map_err(|e| Error::file(path, format!("metadata normalization: {e}")))?;
                note!(
                    "--init-from {}: normalising inputs as it was trained (mean {mean:?} \
                     std {std:?}); pass --normalize to choose otherwise",
                    path.display()
                );
            } else if model.normalization.as_ref().map(|(m, s, _)| (m, s)) != Some((mean, std)) {
                warning!(
                    "--init-from {} was trained with normalisation mean {mean:?} std \
                     {std:?}; this run uses --normalize {}",
                    path.display(),
                    args.normalize
                );
            }
        }
    }
    let say = !args.quiet;
    if say {
        say!(
            "data: {} ({} train, {} {}, {}x{}x{}, {} classes)",
            data.name,
            data.train.len,
            data.test.len,
            data.held_out,
            data.channels,
            data.height,
            data.width,
            data.num_classes
        );
        print_summary(&model);
        if let Some((mean, std)) = &model.normalization.as_ref().map(|(m, s, _)| (m, s)) {
            say!("normalize: mean {mean:?} std {std:?}");
        }
        if cfg.augment != Default::default() {
            say!("augment: {}", cfg.augment);
        }
        if model.label_smoothing > 0.0 {
            say!("loss: cross-entropy with label smoothing {}", model.label_smoothing);
        }
        if cfg.tta != Default::default() {
            say!("test-time augmentation: {} (test numbers score image and mirror)", cfg.tta);
        }
        say!(
            "optimizer {} lr {}; batch {}; {} epochs",
            cfg.optimizer.kind,
            cfg.optimizer.lr,
            cfg.batch_size,
            cfg.epochs
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
    if let Some(n) = args.log_every {
        cfg.report_every = n;
    } else if show_bar {
        cfg.report_every = 50;
    }
    let mut obs = Reporter {
        bar: None,
        show_bar,
        say,
        epochs: cfg.epochs,
        metrics: metrics_file.zip(args.metrics.clone()),
        log_every: args.log_every,
        run_id: args.run_id.clone().unwrap_or_default(),
        held_out: data.held_out,
        epoch: 0,
        metrics_error: None,
        saver: args.save.as_ref().map(|path| Saver {
            path: path.clone(),
            every: args.save_every,
            best_only: args.save_best,
            best_saved: None,
            meta: checkpoint_meta(&model, data, args),
        }),
    };
    let reports = match train::train(b, &model, data, &cfg, &mut obs) {
        Ok(r) => r,
        Err(e @ Error::Diverged { .. }) => {
            // Keep what was finite: the model is back at the end of the last finite epoch
            // (if there was one), never NaN weights.
            if let (Some(path), Error::Diverged { restored, .. }) = (&args.save, &e) {
                if let Some(epoch) = obs.saver.as_ref().and_then(|s| s.best_saved) {
                    eprintln!(
                        "note: {} keeps the best epoch's weights (epoch {epoch})",
                        path.display()
                    );
                } else if restored.is_empty() {
                    eprintln!("note: not saved: no epoch finished with a finite loss");
                } else {
                    checkpoint::save(
                        path,
                        &model.export(b)?,
                        &checkpoint_meta(&model, data, args),
                    )?;
                    eprintln!("note: saved the last finite weights to {}", path.display());
                }
            }
            return Err(e);
        }
        Err(e @ Error::Interrupted { .. }) => {
            if let Some(bar) = obs.bar.take() {
                bar.finish_and_clear();
            }
            // The finished epochs' metrics are already written, and the weights and the
            // optimizer state were saved as the run stopped (`Reporter::snapshot`).
            if let Some(path) = &args.save {
                eprintln!(
                    "note: {e}; saved the {}weights to {}; `steepest train --resume {}` \
                     continues the run",
                    if args.save_best { "best epoch's " } else { "" },
                    path.display(),
                    path.display()
                );
            } else {
                eprintln!("note: {e}; nothing saved (no --save)");
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if let Some(out) = &args.plot {
        let this_run = super::plot::Run {
            id: args.run_id.clone().unwrap_or_default(),
            points: reports
                .iter()
                .map(|r| super::plot::Point {
                    epoch: r.epoch as f64,
                    train_loss: r.train_loss as f64,
                    train_acc: r.train_acc as f64,
                    test_loss: r.test_loss.map(f64::from),
                    test_acc: r.test_acc.map(f64::from),
                })
                .collect(),
        };
        super::plot::after_training(out, args.metrics.as_ref(), this_run)?;
    }
    print_run_summary(
        data.held_out,
        args,
        &cfg,
        &reports,
        obs.saver.as_ref(),
        started.elapsed().as_secs_f64(),
    );
    if let Some(e) = obs.metrics_error {
        return Err(e);
    }
    Ok(reports.iter().map(|r| r.steps).sum())
}

/// The end of a run: best and final epoch, time and speed, where everything went; one JSON
/// object on stdout with `--json`.
fn print_run_summary(
    held_out: &str,
    args: &TrainArgs,
    cfg: &TrainConfig,
    reports: &[EpochReport],
    saver: Option<&Saver>,
    seconds: f64,
) {
    let (Some(last), Some(best)) = (reports.last(), reports.iter().rfind(|r| r.best)) else {
        return;
    };
    let train_seconds: f64 = reports.iter().map(|r| r.train_seconds).sum();
    let samples: f64 = reports.iter().map(|r| r.samples_per_sec * r.train_seconds).sum();
    let samples_per_sec = samples / train_seconds.max(1e-9);
    let best_by = match cfg.best_by {
        train::BestBy::Accuracy => "accuracy",
        train::BestBy::Loss => "loss",
    };
    let weights = saver.map(|s| {
        let epoch = if args.save_best { s.best_saved } else { Some(last.epoch) };
        serde_json::json!({
            "path": s.path,
            "epoch": epoch,
            "resume": checkpoint::resume_path(&s.path),
        })
    });
    if args.json {
        let epoch = |r: &EpochReport| {
            serde_json::json!({
                "epoch": r.epoch, "train_loss": r.train_loss, "train_acc": r.train_acc,
                "test_loss": r.test_loss, "test_acc": r.test_acc,
            })
        };
        let summary = serde_json::json!({
            "run": args.run_id,
            "epochs": last.epoch,
            "early_stop": last.early_stop,
            "best_by": best_by,
            "best": epoch(best),
            "final": epoch(last),
            "seconds": seconds,
            "train_seconds": train_seconds,
            "samples_per_sec": samples_per_sec,
            "device": last.device,
            "weights": weights,
            "metrics": args.metrics,
            "plot": args.plot,
        });
        println!("{summary}");
        return;
    }
    let describe = |r: &EpochReport| match (r.test_acc, r.test_loss) {
        (Some(a), Some(l)) => format!("{held_out} acc {:.2}% loss {l:.4}", 100.0 * a),
        _ => {
            format!("train acc {:.2}% loss {:.4} (no test set)", 100.0 * r.train_acc, r.train_loss)
        }
    };
    let stopped = if last.early_stop {
        format!(", stopped early: {} epochs without a better {best_by}", last.epoch - best.epoch)
    } else {
        String::new()
    };
    say!(
        "done: {} epochs in {seconds:.1}s ({samples_per_sec:.0} samples/s while training){stopped}",
        last.epoch
    );
    say!("  best  epoch {:>3}: {}", best.epoch, describe(best));
    say!("  final epoch {:>3}: {}", last.epoch, describe(last));
    match saver {
        Some(s) => {
            let which = match (args.save_best, s.best_saved) {
                (true, Some(e)) => format!("best epoch's ({e})"),
                // A resumed run that found no better epoch: the file keeps the earlier best.
                (true, None) => "best epoch's (from before this resumed part)".to_string(),
                (false, _) => format!("final epoch's ({})", last.epoch),
            };
            say!(
                "  weights: the {which} in {}; resume state in {}",
                s.path.display(),
                checkpoint::resume_path(&s.path).display()
            );
        }
        None => say!("  weights: not saved (use --save FILE)"),
    }
    if let Some(m) = &args.metrics {
        say!("  metrics: {}", m.display());
    }
    if let Some(p) = &args.plot {
        say!("  plot: {}", p.display());
    }
}

/// `--normalize none|auto|MEAN,STD...` for this data set.
pub fn normalization(flag: &str, data: &Dataset) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
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
    say!("--model takes {}", steepest::nn::GRAMMAR);
    say!();
    for (name, layers, what) in steepest::nn::PRESETS {
        say!("{name}: {what}\n    {layers}");
    }
    say!(
        "resnet18: torchvision's resnet18 (tensor names and shapes too: its weights load as they \
         are), for 224x224 RGB photos; fine-tune with --init-from, --freeze and a new head"
    );
}

/// Each layer with its output shape and parameter count, then the total.
pub fn print_summary<B: Backend>(model: &Model<B>) {
    say!("model: {}", model.spec);
    say!("  {:>3}  {:<28} {:>12} {:>10}", "#", "layer", "output", "params");
    say!("  {:>3}  {:<28} {:>12} {:>10}", "", "input", model.input.to_string(), "");
    for row in model.summary() {
        say!(
            "  {:>3}  {:<28} {:>12} {:>10}",
            row.position,
            row.layer,
            row.output.to_string(),
            row.params
        );
    }
    say!("  total parameters: {}", model.num_params());
}

/// What a checkpoint of this run says besides its tensors: the model, data and the run's
/// resolved flags.
fn checkpoint_meta<B: Backend>(
    model: &Model<B>,
    data: &Dataset,
    args: &TrainArgs,
) -> CheckpointMeta {
    CheckpointMeta {
        model: Some(model.spec.clone()),
        input_shape: Some([data.channels, data.height, data.width]),
        class_names: Some(data.class_names.clone()),
        dataset: Some(data.name.clone()),
        version: None,
        normalization: model.normalization.as_ref().map(|(m, s, _)| (m.clone(), s.clone())),
        config: serde_json::to_value(stored_args(args)).ok().map(|mut v| {
            // How that invocation printed is not part of the run.
            if let Some(map) = v.as_object_mut() {
                map.remove("quiet");
                map.remove("profile");
            }
            v
        }),
        progress: None,
    }
}

/// The flags as a checkpoint stores them: the data folder as an absolute path, so that `eval`
/// and `--resume` find it from any working directory.
fn stored_args(args: &TrainArgs) -> TrainArgs {
    let mut args = args.clone();
    if let Some(dir) = &args.data.data_dir {
        if let Ok(abs) = std::fs::canonicalize(dir) {
            args.data.data_dir = Some(abs);
        }
    }
    args
}

/// `--save` (and `--save-every`, `--save-best`): writes the weights and, beside them, the
/// resume file.
struct Saver {
    path: PathBuf,
    every: Option<usize>,
    /// `--save-best`: the weights file holds the best epoch's weights.
    best_only: bool,
    /// The epoch whose weights `--save-best` wrote last.
    best_saved: Option<usize>,
    meta: CheckpointMeta,
}

impl Saver {
    fn due(&self, epoch: usize, last: bool, best: bool) -> bool {
        last || (best && self.best_only) || self.every.is_some_and(|n| epoch.is_multiple_of(n))
    }

    /// The resume file first, then the weights: each is written atomically, and each alone is
    /// whole (the resume file holds the weights too).
    fn save(&mut self, snap: Snapshot) -> Result<()> {
        let resume = checkpoint::resume_path(&self.path);
        let epoch = snap.progress.epoch;
        if self.best_only && snap.best {
            checkpoint::save(&self.path, &snap.model, &self.meta)?;
            self.best_saved = Some(epoch);
            say!("saved {} (best so far)", self.path.display());
            if !snap.last && !self.every.is_some_and(|n| epoch.is_multiple_of(n)) {
                return Ok(());
            }
        }
        let mut all = snap.model.clone();
        all.extend(snap.optimizer);
        let meta = CheckpointMeta { progress: Some(snap.progress), ..self.meta.clone() };
        checkpoint::save(&resume, &all, &meta)?;
        if !self.best_only {
            checkpoint::save(&self.path, &snap.model, &self.meta)?;
        }
        let mut copy = None;
        if snap.progress.in_epoch == 0 && self.every.is_some_and(|n| epoch.is_multiple_of(n)) {
            let name = self.path.file_name().map(|n| n.to_string_lossy().to_string());
            let name = name.unwrap_or_default();
            let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
            let path = self.path.with_file_name(format!("{stem}.epoch{epoch}.safetensors"));
            checkpoint::save(&path, &snap.model, &self.meta)?;
            copy = Some(path);
        }
        let copy = copy.map(|p| format!(", {}", p.display())).unwrap_or_default();
        if self.best_only {
            say!("saved {}{copy} for --resume", resume.display());
        } else {
            say!("saved {}{copy} (and {} for --resume)", self.path.display(), resume.display());
        }
        Ok(())
    }
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
    /// `--log-every`: also a line per this many steps.
    log_every: Option<usize>,
    /// In every metrics line, so that runs appended to one file stay apart.
    run_id: String,
    /// "test" or "val".
    held_out: &'static str,
    /// The epoch under way.
    epoch: usize,
    metrics_error: Option<Error>,
    /// `--save`: keeps the last finite weights in case the run diverges, and saves the run.
    saver: Option<Saver>,
}

impl Reporter {
    /// Appends and flushes one line; the first failure is kept and ends writing (training goes
    /// on, so that `--save` still keeps the model).
    fn write_metrics(&mut self, line: &serde_json::Value) {
        if let (Some((file, path)), None) = (&mut self.metrics, &self.metrics_error) {
            if let Err(e) = writeln!(file, "{line}").and_then(|_| file.flush()) {
                warning!("--metrics {}: write failed ({e}); training goes on", path.display());
                self.metrics_error = Some(Error::file(path.clone(), format!("write failed: {e}")));
            }
        }
    }
}

/// A run's id: UTC start time and process id, e.g. `20261130-041522-4711`.
fn new_run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}-{}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        std::process::id()
    )
}

impl Observer for Reporter {
    fn note(&mut self, message: &str) {
        note!("{message}");
    }

    fn epoch_started(&mut self, epoch: usize, steps: usize) {
        self.epoch = epoch;
        if self.show_bar {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} steps {msg} (ETA {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", self.epochs));
            self.bar = Some(bar);
        }
    }

    fn step_done(&mut self, step: usize, running: Option<Metrics>) {
        if let (Some(m), Some(n)) = (running, self.log_every) {
            if step.is_multiple_of(n) {
                let line = serde_json::json!({
                    "run": self.run_id,
                    "kind": "step",
                    "epoch": self.epoch,
                    "step": step,
                    "train_loss": m.loss,
                    "train_acc": m.accuracy,
                    "samples": m.samples,
                });
                self.write_metrics(&line);
            }
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if let Some(m) = running {
                let rate = m.samples as f64 / bar.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} acc {:.2}% {rate:.0} samples/s",
                    m.loss,
                    100.0 * m.accuracy
                ));
            }
        }
    }

    fn keeps_last_finite(&self) -> bool {
        self.saver.is_some()
    }

    fn wants_snapshot(&self, epoch: usize, last: bool, best: bool) -> bool {
        self.saver.as_ref().is_some_and(|s| s.due(epoch, last, best))
    }

    fn snapshot(&mut self, snapshot: Snapshot) -> Result<()> {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        match &mut self.saver {
            Some(s) => s.save(snapshot),
            None => Ok(()),
        }
    }

    fn should_stop(&self) -> bool {
        super::interrupt::requested()
    }

    fn epoch_done(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut line = serde_json::json!({ "run": self.run_id, "kind": "epoch" });
        if let (Some(map), Ok(serde_json::Value::Object(fields))) =
            (line.as_object_mut(), serde_json::to_value(r))
        {
            map.extend(fields);
        }
        self.write_metrics(&line);
        if self.say {
            let test = match (r.test_loss, r.test_acc) {
                (Some(l), Some(a)) => {
                    format!("{} loss {l:.4} acc {:.2}%", self.held_out, 100.0 * a)
                }
                _ => format!("no {} set", self.held_out),
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
            say!("{line}");
        }
    }
}

/// The model a run trains (and `lr-find` probes): built from `spec` with the run's seed, label
/// smoothing and input normalisation.
pub fn build_model<B: Backend>(
    b: &mut B,
    args: &TrainArgs,
    spec: &ModelSpec,
    cfg: &TrainConfig,
    data: &Dataset,
) -> Result<Model<B>> {
    let mut model = Model::new(b, spec, data.input_shape(), data.num_classes, cfg.seed)?;
    model.label_smoothing = args.label_smoothing;
    if let Some((mean, std)) = normalization(&args.normalize, data)? {
        model.set_normalization(b, &mean, &std)?;
    }
    Ok(model)
}

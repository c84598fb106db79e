//! `--resume`: a run saved and continued ends with the weights of the run that never stopped.
//! On the CPU bit for bit (every kernel is deterministic there), for every optimizer, with
//! batch norm (running statistics, `num_batches_tracked`), dropout (masks drawn from the step)
//! and augmentation (shifts drawn per epoch), at an epoch boundary and inside an epoch.

mod common;

use std::cell::Cell;

use common::cli::{assert_clean_error, run_ok, steepest, temp};
use common::gpu;
use steepest::backend::Backend;
use steepest::cpu::CpuBackend;
use steepest::data::loader::Augment;
use steepest::data::{synthetic, Dataset};
use steepest::nn::{HostTensors, Model, ModelSpec};
use steepest::optim::{OptimizerConfig, OptimizerKind};
use steepest::schedule::Schedule;
use steepest::train::{self, Observer, Resume, Snapshot, TrainConfig};

/// Stops the run after `stop_after` steps in all (counting from where it started) and keeps the
/// snapshot the trainer hands over then, or at the end.
struct StopAndKeep {
    stop_after: Option<usize>,
    steps: Cell<usize>,
    kept: Option<Snapshot>,
}

impl Observer for StopAndKeep {
    fn step_done(&mut self, _step: usize, _running: Option<train::Metrics>) {
        self.steps.set(self.steps.get() + 1);
    }
    fn should_stop(&self) -> bool {
        self.stop_after.is_some_and(|n| self.steps.get() >= n)
    }
    fn wants_snapshot(&self, _epoch: usize, last: bool, _best: bool) -> bool {
        last
    }
    fn snapshot(&mut self, s: Snapshot) -> steepest::Result<()> {
        self.kept = Some(s);
        Ok(())
    }
}

fn config(kind: OptimizerKind, epochs: usize) -> TrainConfig {
    let mut opt = OptimizerConfig::new(kind);
    if kind == OptimizerKind::Rmsprop {
        opt.momentum = 0.5;
    }
    if kind == OptimizerKind::Sgd {
        opt.lr = 0.05;
    }
    let mut cfg = TrainConfig::new(opt);
    cfg.epochs = epochs;
    cfg.batch_size = 64;
    cfg.seed = 1;
    cfg.schedule = Schedule::Step { every_epochs: 1, gamma: 0.5 };
    cfg.augment = Augment { crop_pad: 2, flip: true };
    cfg
}

/// Trains `epochs` without stopping; returns the final weights.
fn straight<B: Backend>(
    b: &mut B,
    spec: &ModelSpec,
    data: &Dataset,
    cfg: &TrainConfig,
) -> HostTensors {
    let model = Model::new(b, spec, data.input_shape(), data.num_classes, cfg.seed).unwrap();
    train::train(b, &model, data, cfg, &mut train::Silent).unwrap();
    model.export(b).unwrap()
}

/// Trains until `stop_after` steps, then continues in a fresh model and optimizer from the
/// snapshot alone, as `--resume` does; returns the final weights.
fn stopped_and_resumed<B: Backend>(
    b: &mut B,
    spec: &ModelSpec,
    data: &Dataset,
    cfg: &TrainConfig,
    stop_after: usize,
) -> HostTensors {
    let first = Model::new(b, spec, data.input_shape(), data.num_classes, cfg.seed).unwrap();
    let mut obs = StopAndKeep { stop_after: Some(stop_after), steps: Cell::new(0), kept: None };
    let stopped = train::train(b, &first, data, cfg, &mut obs);
    assert!(matches!(stopped, Err(steepest::Error::Interrupted { .. })), "{:?}", stopped.err());
    let snap = obs.kept.expect("a snapshot as the run stopped");
    assert_eq!(snap.progress.step, stop_after);
    drop(first);

    // The same seed as `--resume` builds with: it also seeds dropout's masks.
    let second = Model::new(b, spec, data.input_shape(), data.num_classes, cfg.seed).unwrap();
    second.import(b, &snap.model, "snapshot").unwrap();
    let mut cfg = cfg.clone();
    cfg.resume = Some(std::sync::Arc::new(Resume {
        progress: snap.progress,
        optimizer: snap.optimizer,
        source: "snapshot".into(),
    }));
    let mut obs = StopAndKeep { stop_after: None, steps: Cell::new(0), kept: None };
    let reports = train::train(b, &second, data, &cfg, &mut obs).unwrap();
    assert_eq!(reports.last().unwrap().epoch, cfg.epochs);
    second.export(b).unwrap()
}

fn assert_identical(what: &str, a: &HostTensors, b: &HostTensors) {
    assert_eq!(a.len(), b.len(), "{what}");
    for ((name, _, x), (_, _, y)) in a.iter().zip(b) {
        let differ = x.iter().zip(y).filter(|(p, q)| p.to_bits() != q.to_bits()).count();
        assert_eq!(differ, 0, "{what}: {name} differs in {differ} of {} values", x.len());
    }
}

fn small_cnn() -> ModelSpec {
    "conv:6:3,bn,relu,maxpool:2,flatten,dropout:0.25,linear:32,relu,linear".parse().unwrap()
}

/// Every optimizer, stopped at an epoch boundary and inside an epoch, on the CPU.
#[test]
fn cpu_resume_is_bit_identical_for_every_optimizer() {
    let data = synthetic::generate(3, 300, 0);
    let steps_per_epoch = 300usize.div_ceil(64);
    for kind in OptimizerKind::ALL {
        let cfg = config(kind, 3);
        let spec = small_cnn();
        let mut cpu = CpuBackend::new();
        let want = straight(&mut cpu, &spec, &data, &cfg);
        for stop in [steps_per_epoch, steps_per_epoch + 2] {
            let got = stopped_and_resumed(&mut cpu, &spec, &data, &cfg, stop);
            assert_identical(&format!("{kind}, stopped after step {stop}"), &want, &got);
        }
    }
}

/// The MLP the issue names, with the default Adam and no augmentation.
#[test]
fn cpu_resume_of_the_mlp_is_bit_identical() {
    let data = synthetic::generate(5, 500, 0);
    let mut cfg = config(OptimizerKind::Adam, 4);
    cfg.augment = Augment::default();
    cfg.schedule = Schedule::Constant;
    let spec = ModelSpec::mlp(&[64]);
    let mut cpu = CpuBackend::new();
    let want = straight(&mut cpu, &spec, &data, &cfg);
    let got = stopped_and_resumed(&mut cpu, &spec, &data, &cfg, 2 * 500usize.div_ceil(64));
    assert_identical("mlp:64, adam", &want, &got);
}

/// On the GPU the same: no kernel uses atomics (split-K matmul sums its splits in a fixed
/// order; conv and pooling gradients gather), so one device repeats a computation exactly and
/// a resumed run repeats the uninterrupted one.
#[test]
fn gpu_resume_is_bit_identical() {
    let Some(mut g) = gpu() else { return };
    let data = synthetic::generate(5, 300, 0);
    let cfg = config(OptimizerKind::Adam, 3);
    for spec in [ModelSpec::mlp(&[32]), small_cnn()] {
        let want = straight(&mut g, &spec, &data, &cfg);
        let got = stopped_and_resumed(&mut g, &spec, &data, &cfg, 300usize.div_ceil(64) + 1);
        assert_identical(&format!("gpu {spec}, adam"), &want, &got);
    }
}

/// The recipe through the binary: `--epochs 4` against `--epochs 2 --save` then
/// `--resume --epochs 4`, byte-identical tensors; the metrics file goes on where it stopped.
#[test]
fn cli_resume_matches_the_uninterrupted_run() {
    let dir = temp("resume");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (whole, part, metrics) =
        (dir.join("whole.safetensors"), dir.join("part.safetensors"), dir.join("m.jsonl"));
    let base = [
        "train",
        "--device",
        "cpu",
        "--model",
        "lenet",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
        "--seed",
        "1",
        "--optimizer",
        "momentum",
        "--lr",
        "0.01",
    ];
    run_ok(&[&base[..], &["--epochs", "4", "--save", &s(&whole)]].concat());
    run_ok(
        &[&base[..], &["--epochs", "2", "--save", &s(&part), "--metrics", &s(&metrics)]].concat(),
    );
    assert!(dir.join("part.resume.safetensors").is_file(), "the resume file is written");
    let (out, err) = run_ok(&["train", "--resume", &s(&part), "--epochs", "4"]);
    assert!(out.contains("resuming") && out.contains("2 epochs"), "{out}");
    assert!(err.contains("--epochs 4 (not 2 as in the saved run)"), "{err}");
    assert!(out.contains("epoch 3/4") && !out.contains("epoch 1/4"), "{out}");

    let a = steepest::checkpoint::load(&whole).unwrap();
    let b = steepest::checkpoint::load(&part).unwrap();
    assert_identical("lenet via the CLI", &a.tensors, &b.tensors);
    // The plain checkpoint holds only the model (PyTorch loads it strictly).
    assert!(b.optimizer.is_empty() && b.tensors.iter().all(|(n, _, _)| !n.starts_with("optim")));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let epochs: Vec<u64> = lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2, 3, 4], "metrics continue in the same file");
    assert!(lines.iter().all(|l| l["run"] == lines[0]["run"]), "a resumed run keeps its id");

    // Nothing left to do is an error naming the flag to change.
    let o = steepest(&["train", "--resume", &s(&part)]);
    assert_clean_error(&o, &["already trained 4 epochs", "--epochs"]);
}

#[test]
fn save_every_keeps_periodic_checkpoints() {
    let dir = temp("save-every");
    let w = dir.join("w.safetensors");
    run_ok(&[
        "train",
        "--device",
        "cpu",
        "--limit-train",
        "128",
        "--limit-test",
        "32",
        "--model",
        "mlp:8",
        "--epochs",
        "4",
        "--save-every",
        "2",
        "--save",
        w.to_str().unwrap(),
        "--quiet",
    ]);
    for name in
        ["w.safetensors", "w.resume.safetensors", "w.epoch2.safetensors", "w.epoch4.safetensors"]
    {
        assert!(dir.join(name).is_file(), "{name} was written");
    }
    assert!(
        !dir.join("w.epoch1.safetensors").exists() && !dir.join("w.epoch3.safetensors").exists()
    );
    let r = steepest::checkpoint::load(&dir.join("w.resume.safetensors")).unwrap();
    assert_eq!(r.meta.progress.unwrap().epoch, 4);
    assert!(!r.optimizer.is_empty(), "Adam's moments are in the resume file");
}

#[test]
fn resume_errors_name_the_file() {
    let dir = temp("resume-bad");
    let w = dir.join("plain.safetensors");
    run_ok(&[
        "train",
        "--device",
        "cpu",
        "--limit-train",
        "64",
        "--limit-test",
        "16",
        "--model",
        "mlp:8",
        "--epochs",
        "1",
        "--save",
        w.to_str().unwrap(),
        "--quiet",
    ]);
    // A checkpoint without its resume file (written by PyTorch, or the file was removed).
    std::fs::remove_file(dir.join("plain.resume.safetensors")).unwrap();
    let o = steepest(&["train", "--resume", w.to_str().unwrap()]);
    assert_clean_error(&o, &["plain.resume.safetensors does not exist", "--save"]);
    // A plain checkpoint given as the resume file.
    let fake = dir.join("fake.resume.safetensors");
    std::fs::copy(&w, &fake).unwrap();
    let o = steepest(&["train", "--resume", fake.to_str().unwrap(), "--epochs", "2"]);
    assert_clean_error(&o, &["fake.resume.safetensors", "steepest.progress"]);
    let o = steepest(&[
        "train",
        "--resume",
        fake.to_str().unwrap(),
        "--init-from",
        w.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["--init-from", "--resume"]);
    let o = steepest(&["train", "--save-every", "2"]);
    assert_clean_error(&o, &["--save-every", "--save"]);
}

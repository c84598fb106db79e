//! The descent loop (host-side scheduler), written once over [`Backend`].
//!
//! A step uploads the batch, records forward, loss, backward and the optimizer update, and
//! submits once. Loss and accuracy accumulate in a device buffer (`softmax_xent` adds into it);
//! the host reads it only at the reporting interval and at the end of each epoch.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::data::loader::{augment_image, decode_shift, encode_shift, Augment, Batcher};
use crate::data::{Dataset, Split};
use crate::nn::{DeviceData, HostTensors, Mode, Model, Workspace};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::schedule::{LrSchedule, Schedule};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub drop_last: bool,
    /// Read the running loss back every this many steps (0: only at the end of each epoch).
    pub report_every: usize,
    /// Training-time augmentation of the batches.
    pub augment: Augment,
    /// Continue a saved run (`--resume`): the model already holds its weights; this is the
    /// rest of its state.
    pub resume: Option<std::sync::Arc<Resume>>,
    /// What makes an epoch the best so far (`EpochReport::best`, `--save-best`).
    pub best_by: BestBy,
    /// Stop when this many epochs in a row were not the best (`--early-stop N`).
    pub early_stop: Option<usize>,
    /// Parameters (by `state_dict` name prefix) the optimizer leaves as they are.
    pub freeze: Vec<String>,
    /// Test-time augmentation of the evaluation after each epoch.
    pub tta: Tta,
}

/// Test-time augmentation: what evaluation averages each sample's logits over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tta {
    /// The image as it is.
    #[default]
    None,
    /// The image and its left-right mirror (the mean of both forward passes' logits).
    Flip,
}

impl std::str::FromStr for Tta {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Tta::None),
            "flip" => Ok(Tta::Flip),
            _ => Err(Error::config(
                "--tta",
                format!("unknown test-time augmentation '{s}'; expected none or flip"),
            )),
        }
    }
}

impl std::fmt::Display for Tta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tta::None => "none",
            Tta::Flip => "flip",
        })
    }
}

/// What evaluation with [`Tta::Flip`] needs besides the workspace, made once per run: the
/// mirrored batch on the host, the first pass's logits and their mean with the second's.
pub struct TtaBuffers<B: Backend> {
    mirrored: Vec<u8>,
    /// A held batch's codes with the mirror bit set.
    mirrored_codes: Vec<u32>,
    saved: B::Buf,
    mean: B::Buf,
}

impl<B: Backend> TtaBuffers<B> {
    /// Buffers for `tta` at `ws`'s capacity; `None` when there is nothing to average.
    pub fn new(b: &mut B, model: &Model<B>, ws: &Workspace<B>, tta: Tta) -> Result<Option<Self>> {
        if tta == Tta::None {
            return Ok(None);
        }
        let len = ws.capacity * model.num_classes;
        Ok(Some(TtaBuffers {
            mirrored: vec![0; ws.capacity * model.input_size],
            mirrored_codes: Vec::with_capacity(2 * ws.capacity),
            saved: b.alloc(len)?,
            mean: b.alloc(len)?,
        }))
    }
}

/// One batch, for training or evaluation: pixels and labels from the host, or the codes of
/// samples the device holds ([`DeviceData`]), which upload 8 bytes a sample instead of the pixels.
enum Batch<'a, B: Backend> {
    Host { pixels: &'a [u8], labels: &'a [u32] },
    Held { data: &'a DeviceData<B>, codes: &'a [u32] },
}

impl<'a, B: Backend> Batch<'a, B> {
    /// The next batch of `batches`, as codes when the device holds the split (`held`).
    fn next(batches: &'a mut Batcher<'_>, held: Option<&'a DeviceData<B>>) -> Option<Self> {
        Some(match held {
            Some(data) => Batch::Held { data, codes: batches.next_codes()? },
            None => {
                let (pixels, labels) = batches.next_batch()?;
                Batch::Host { pixels, labels }
            }
        })
    }

    fn rows(&self) -> usize {
        match self {
            Batch::Host { labels, .. } => labels.len(),
            Batch::Held { codes, .. } => codes.len() / 2,
        }
    }

    /// Puts the batch, mirrored left to right when `mirror`, into `ws`'s input and labels.
    fn load(
        &self,
        b: &mut B,
        model: &Model<B>,
        ws: &Workspace<B>,
        mirror: Option<&mut TtaBuffers<B>>,
    ) {
        match (self, mirror) {
            (Batch::Host { pixels, labels }, None) => ws.load_batch(b, pixels, labels),
            (Batch::Held { data, codes }, None) => ws.load_codes(b, data, codes),
            (Batch::Host { pixels, labels }, Some(t)) => {
                let s = model.input;
                let mirrored = &mut t.mirrored[..pixels.len()];
                for (src, dst) in pixels
                    .chunks_exact(model.input_size)
                    .zip(mirrored.chunks_exact_mut(model.input_size))
                {
                    augment_image(src, dst, s.channels, s.height, s.width, 0, 0, true);
                }
                ws.load_batch(b, mirrored, labels);
            }
            (Batch::Held { data, codes }, Some(t)) => {
                t.mirrored_codes.clear();
                for pair in codes.chunks_exact(2) {
                    let (dy, dx, _) = decode_shift(pair[1]);
                    t.mirrored_codes.extend([pair[0], encode_shift(dy, dx, true)]);
                }
                ws.load_codes(b, data, &t.mirrored_codes);
            }
        }
    }
}

/// Forward passes of one evaluation batch into `ws`: with test-time augmentation the mirrored
/// batch first, then the batch itself, and the mean of their logits. Returns the buffer that
/// holds the logits to score.
fn eval_forward<'a, B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    ws: &'a Workspace<B>,
    tta: Option<&'a mut TtaBuffers<B>>,
    batch: Batch<B>,
) -> &'a B::Buf {
    let rows = batch.rows();
    let Some(t) = tta else {
        batch.load(backend, model, ws, None);
        model.forward(backend, ws, rows, Mode::Eval);
        return ws.logits();
    };
    batch.load(backend, model, ws, Some(&mut *t));
    model.forward(backend, ws, rows, Mode::Eval);
    let (classes, len) = (model.num_classes, rows * model.num_classes);
    backend.copy_rows(ws.logits(), &t.saved, rows, classes, classes, classes);
    batch.load(backend, model, ws, None);
    model.forward(backend, ws, rows, Mode::Eval);
    backend.add(ws.logits(), &t.saved, &t.mean, len);
    backend.scale(&t.mean, len, 0.5);
    &t.mean
}

/// How epochs are compared: the test split's accuracy (higher is better) or loss (lower is
/// better); the training split's when there is no test split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BestBy {
    #[default]
    Accuracy,
    Loss,
}

impl std::str::FromStr for BestBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "accuracy" | "acc" => Ok(BestBy::Accuracy),
            "loss" => Ok(BestBy::Loss),
            _ => Err(Error::config(
                "--best-by",
                format!("unknown value {s:?}; expected accuracy or loss"),
            )),
        }
    }
}

impl BestBy {
    /// The compared value of an epoch, as a score where higher is better.
    pub fn score(self, r: &EpochReport) -> f32 {
        match self {
            BestBy::Accuracy => r.test_acc.unwrap_or(r.train_acc),
            BestBy::Loss => -r.test_loss.unwrap_or(r.train_loss),
        }
    }
}

/// Where a run stands: with the weights and the optimizer state, enough to continue it exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs finished.
    pub epoch: usize,
    /// Steps of the next epoch already taken (a run stopped inside an epoch).
    pub in_epoch: usize,
    /// Steps taken in all (the optimizer's step count, the schedule's position).
    pub step: usize,
    /// The unfinished epoch's running `[Σ loss, #correct, #samples]`.
    pub stats: [f32; 3],
    /// The best epoch so far and its score ([`BestBy::score`]); 0 before any.
    #[serde(default)]
    pub best_epoch: usize,
    #[serde(default)]
    pub best_score: f32,
}

/// What a saved run continues from (besides the weights, which the caller imports).
#[derive(Clone, Debug)]
pub struct Resume {
    pub progress: Progress,
    /// The optimizer's state tensors ([`Optimizer::export`]).
    pub optimizer: HostTensors,
    /// The file it came from, for error messages.
    pub source: std::path::PathBuf,
}

/// A run's whole state at one moment, read back for saving.
pub struct Snapshot {
    pub progress: Progress,
    /// The run ends with this snapshot (last epoch, early stop or interrupt).
    pub last: bool,
    /// Taken after the best epoch so far.
    pub best: bool,
    pub model: HostTensors,
    pub optimizer: HostTensors,
}

impl TrainConfig {
    pub fn new(optimizer: OptimizerConfig) -> Self {
        TrainConfig {
            epochs: 3,
            batch_size: 128,
            optimizer,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            seed: 0,
            shuffle: true,
            drop_last: false,
            report_every: 0,
            augment: Augment::default(),
            resume: None,
            best_by: BestBy::Accuracy,
            early_stop: None,
            freeze: Vec::new(),
            tta: Tta::None,
        }
    }
}

/// Loss and accuracy over some samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub loss: f32,
    pub accuracy: f32,
    pub samples: usize,
}

impl Metrics {
    /// From a stats buffer's `[Σ loss, #correct, #samples]`.
    pub fn from_stats(s: &[f32]) -> Self {
        let n = s[2].max(1.0);
        Metrics { loss: s[0] / n, accuracy: s[1] / n, samples: s[2] as usize }
    }
}

/// One line of `--metrics`: what an epoch did.
#[derive(Clone, Debug, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_acc: f32,
    pub test_loss: Option<f32>,
    pub test_acc: Option<f32>,
    /// The learning rate of the epoch's last step.
    pub lr: f32,
    /// Wall time of the epoch, training and evaluation.
    pub seconds: f64,
    pub train_seconds: f64,
    /// Training samples per second (evaluation excluded).
    pub samples_per_sec: f64,
    pub device: String,
    pub steps: usize,
    /// The best epoch so far ([`TrainConfig::best_by`]).
    pub best: bool,
    /// Training stops after this epoch: `--early-stop` epochs passed without a best.
    pub early_stop: bool,
}

/// What the CLI (or any caller) wants to hear during training.
pub trait Observer {
    fn epoch_started(&mut self, _epoch: usize, _steps: usize) {}
    /// After each step; `running` is present at the reporting interval.
    fn step_done(&mut self, _step: usize, _running: Option<Metrics>) {}
    fn epoch_done(&mut self, _report: &EpochReport) {}
    /// Whether to keep a host copy of the weights after every finite epoch, so that a run that
    /// diverges leaves the model as it was at the end of the last finite one (one readback per
    /// epoch; `--save` asks for it).
    fn keeps_last_finite(&self) -> bool {
        false
    }
    /// Polled after every step: true stops the run there with `Error::Interrupted` (the
    /// weights are those after that step).
    fn should_stop(&self) -> bool {
        false
    }
    /// Whether to read the run's state back and hand it to [`Observer::snapshot`] after
    /// `epoch` (`last`: the final epoch, or a run stopping early; `best`: the best epoch so far).
    fn wants_snapshot(&self, _epoch: usize, _last: bool, _best: bool) -> bool {
        false
    }
    /// The run's state, when `wants_snapshot` asked for it; an error ends the run.
    fn snapshot(&mut self, _snapshot: Snapshot) -> Result<()> {
        Ok(())
    }
    /// Something the user should know that changes no result (a slower path taken, and why).
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// One training step on a batch that `ws` already holds (`Workspace::load_batch`): forward,
/// loss (accumulated into `stats`), backward and the optimizer update, then one submit.
pub fn train_step<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    ws: &Workspace<B>,
    optimizer: &mut Optimizer<B>,
    stats: &B::Buf,
    rows: usize,
    lr: f32,
) {
    let mode = Mode::Train { step: optimizer.steps };
    model.forward(backend, ws, rows, mode);
    model.train_loss(backend, ws, stats, rows);
    model.backward_from(backend, ws, rows, mode, optimizer.first_trained_layer());
    optimizer.step(backend, model, lr);
    backend.submit();
}

/// Loss and accuracy of `model` on `split`, forward passes only, in batches of the workspace's
/// capacity (with test-time augmentation when `tta` holds its buffers); one read at the end.
/// `held` is `split` held on the device, when it is: then each batch uploads only its codes.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    ws: &Workspace<B>,
    stats: &B::Buf,
    split: &Split,
    held: Option<&DeviceData<B>>,
    mut tta: Option<&mut TtaBuffers<B>>,
) -> Result<Metrics> {
    backend.fill_zero(stats);
    let mut batches = Batcher::new(split, model.input_size, ws.capacity, false);
    batches.start_epoch(None);
    while let Some(batch) = Batch::next(&mut batches, held) {
        let rows = batch.rows();
        let logits = eval_forward(backend, model, ws, tta.as_deref_mut(), batch);
        model.loss_on(backend, ws, logits, stats, rows);
        backend.submit();
    }
    Ok(Metrics::from_stats(&backend.read(stats, 3)?))
}

/// `split` held on a device that holds data sets (`Backend::holds_data`), for batches of up to
/// `capacity`; `Ok(None)` when the device does not or the split streams from files, the
/// reason when it does not fit (either way its batches are then uploaded one by one).
pub fn hold_split<B: Backend>(
    backend: &mut B,
    split: &Split,
    shape: [usize; 3],
    capacity: usize,
) -> Result<Option<DeviceData<B>>> {
    if !backend.holds_data() || split.images().is_none() || split.len == 0 {
        return Ok(None);
    }
    DeviceData::new(backend, split, shape, capacity).map(Some)
}

/// Loss, accuracy and the confusion matrix (`[true class][predicted class]` counts) of `model`
/// on `split`. Unlike training, this reads the logits back after every batch (once per batch of
/// `batch_size`), since every prediction is wanted.
pub fn confusion<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    split: &Split,
    batch_size: usize,
    tta: Tta,
) -> Result<(Metrics, Vec<Vec<u32>>)> {
    // Halve the batch until its buffers fit the device's limits (a big CNN on a small GPU).
    let mut capacity = batch_size.clamp(1, split.len.max(1));
    let ws = loop {
        match Workspace::new(backend, model, capacity) {
            Ok(ws) => break ws,
            Err(Error::Gpu(_)) if capacity > 1 => capacity /= 2,
            Err(e) => return Err(e),
        }
    };
    let stats = backend.alloc(3)?;
    let mut tta = TtaBuffers::new(backend, model, &ws, tta)?;
    let classes = model.num_classes;
    let mut matrix = vec![vec![0u32; classes]; classes];
    let mut batches = Batcher::new(split, model.input_size, ws.capacity, false);
    batches.start_epoch(None);
    while let Some((pixels, labels)) = batches.next_batch() {
        let rows = labels.len();
        let batch = Batch::Host { pixels, labels };
        let logits = eval_forward(backend, model, &ws, tta.as_mut(), batch);
        model.loss_on(backend, &ws, logits, &stats, rows);
        let logits = backend.read(logits, rows * classes)?;
        for (row, &label) in logits.chunks_exact(classes).zip(labels) {
            // The first largest logit, as the loss kernel's accuracy counts it.
            let pred = row
                .iter()
                .enumerate()
                .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            if (label as usize) < classes {
                matrix[label as usize][pred] += 1;
            }
        }
    }
    Ok((Metrics::from_stats(&backend.read(&stats, 3)?), matrix))
}

/// [`evaluate_with`] with its own buffers.
pub fn evaluate<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    split: &Split,
    batch_size: usize,
    tta: Tta,
) -> Result<Metrics> {
    let ws = Workspace::new(backend, model, batch_size.clamp(1, split.len.max(1)))?;
    let stats = backend.alloc(3)?;
    let mut tta = TtaBuffers::new(backend, model, &ws, tta)?;
    let s = model.input;
    // Not held (it does not fit): evaluated from host batches all the same.
    let held =
        hold_split(backend, split, [s.channels, s.height, s.width], ws.capacity).unwrap_or(None);
    evaluate_with(backend, model, &ws, &stats, split, held.as_ref(), tta.as_mut())
}

/// Trains `model` on `data.train` for `cfg.epochs`, evaluating on `data.test` after each epoch.
pub fn train<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    data: &Dataset,
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochReport>> {
    if cfg.batch_size == 0 {
        return Err(Error::config("--batch-size", "must be at least 1"));
    }
    if data.train.len == 0 {
        return Err(Error::config("--limit-train", "the training set is empty"));
    }
    let shape = [data.channels, data.height, data.width];
    // A shift as large as the image leaves nothing of it: all-black batches, not augmentation.
    if cfg.augment.crop_pad >= data.height.max(data.width) {
        return Err(Error::config(
            "--augment",
            format!(
                "crop:{} pads by at least the image's size ({}x{}); expected a padding below {}",
                cfg.augment.crop_pad,
                data.height,
                data.width,
                data.height.max(data.width)
            ),
        ));
    }
    let mut batches = Batcher::new(&data.train, data.sample_size(), cfg.batch_size, cfg.drop_last)
        .with_augment(cfg.augment, cfg.seed ^ 0xA06_3E47, shape);
    let steps_per_epoch = batches.steps_per_epoch();
    if steps_per_epoch == 0 {
        return Err(Error::config(
            "--drop-last",
            format!(
                "the training set has {} samples, fewer than one batch of {}",
                data.train.len, cfg.batch_size
            ),
        ));
    }
    let capacity = cfg.batch_size.min(data.train.len);
    let ws = Workspace::new(backend, model, capacity)?;
    let train_stats = backend.alloc(3)?;
    let eval_stats = backend.alloc(3)?;
    let mut tta = TtaBuffers::new(backend, model, &ws, cfg.tta)?;
    let mut optimizer = Optimizer::new(backend, cfg.optimizer, model)?;
    if !cfg.freeze.is_empty() {
        optimizer.freeze(model, &cfg.freeze)?;
    }
    // Then, with what training needs allocated: a device that holds data sets gets the splits
    // once, and each step uploads only the batch's indices and augmentation codes (8 bytes a
    // sample). A split that does not fit the device's memory, streamed image folders, and
    // shifts past the codes' ±127 are uploaded batch by batch.
    let mut hold = |split: &Split, what: &str| {
        hold_split(backend, split, shape, capacity).unwrap_or_else(|e| {
            observer.note(&format!(
                "the {what} split stays in host memory ({e}); batches are uploaded one by one"
            ));
            None
        })
    };
    let resident = if cfg.augment.crop_pad <= 127 { hold(&data.train, "training") } else { None };
    let held_test = hold(&data.test, data.held_out);
    let start = match &cfg.resume {
        Some(r) => {
            let p = r.progress;
            if p.epoch >= cfg.epochs && p.in_epoch == 0 {
                return Err(Error::file(
                    &r.source,
                    format!(
                        "the run already trained {} epochs; pass --epochs above {} to continue it",
                        p.epoch, p.epoch
                    ),
                ));
            }
            if p.in_epoch > steps_per_epoch || p.step != p.epoch * steps_per_epoch + p.in_epoch {
                return Err(Error::file(
                    &r.source,
                    format!(
                        "its run stopped at step {} (epoch {}, {} steps into the next), which does \
                         not fit {steps_per_epoch} steps per epoch: the data set, --batch-size or \
                         --drop-last differ from the saved run's",
                        p.step, p.epoch, p.in_epoch
                    ),
                ));
            }
            optimizer.import(backend, model, &r.optimizer, p.step as u64, &r.source)?;
            p
        }
        None => Progress::default(),
    };
    let schedule = LrSchedule {
        base_lr: cfg.optimizer.lr,
        schedule: cfg.schedule,
        warmup_steps: cfg.warmup_steps,
        steps_per_epoch,
        total_steps: steps_per_epoch * cfg.epochs,
    };
    // Init draws from `seed`; the shuffle from its own stream, so both backends see the same
    // batches whatever the model.
    let mut shuffle_rng = fastrand::Rng::with_seed(cfg.seed ^ 0x5EED_5AFF_1E00_0000);
    // A resumed run makes the finished epochs' draws again (shuffles, augmentation), so that
    // the epochs to come see the batches an uninterrupted run would.
    for _ in 0..start.epoch {
        batches.skip_epoch(cfg.shuffle.then_some(&mut shuffle_rng));
    }
    let mut reports = Vec::new();
    let mut step = start.step;
    let mut best = Progress {
        best_epoch: start.best_epoch,
        best_score: start.best_score,
        ..Progress::default()
    };
    let mut last_finite: Option<(usize, HostTensors)> = None;
    for epoch in start.epoch + 1..=cfg.epochs {
        let started = Instant::now();
        observer.epoch_started(epoch, steps_per_epoch);
        let mut in_epoch = 0;
        if epoch == start.epoch + 1 && start.in_epoch > 0 {
            in_epoch = start.in_epoch;
            backend.write(&train_stats, &start.stats);
        } else {
            backend.fill_zero(&train_stats);
        }
        batches.start_epoch_at(cfg.shuffle.then_some(&mut shuffle_rng), in_epoch);
        let mut lr = schedule.lr(step);
        while let Some(batch) = Batch::next(&mut batches, resident.as_ref()) {
            let rows = batch.rows();
            batch.load(backend, model, &ws, None);
            lr = schedule.lr(step);
            train_step(backend, model, &ws, &mut optimizer, &train_stats, rows, lr);
            step += 1;
            in_epoch += 1;
            let running = if cfg.report_every > 0 && in_epoch % cfg.report_every == 0 {
                Some(Metrics::from_stats(&backend.read(&train_stats, 3)?))
            } else {
                None
            };
            observer.step_done(in_epoch, running);
            if observer.should_stop() {
                if observer.wants_snapshot(epoch - 1, true, false) {
                    let stats = backend.read(&train_stats, 3)?;
                    let progress = Progress {
                        epoch: epoch - 1,
                        in_epoch,
                        step,
                        stats: [stats[0], stats[1], stats[2]],
                        ..best
                    };
                    observer.snapshot(Snapshot {
                        progress,
                        last: true,
                        best: false,
                        model: model.export(backend)?,
                        optimizer: optimizer.export(backend, model)?,
                    })?;
                }
                return Err(Error::Interrupted { epoch, step });
            }
        }
        let train = Metrics::from_stats(&backend.read(&train_stats, 3)?);
        let train_seconds = started.elapsed().as_secs_f64();
        // The loss is summed on the device and read once an epoch: a NaN or an infinity there
        // means the weights are gone; stop instead of training (and saving) noise.
        if !train.loss.is_finite() {
            let mut restored = String::new();
            if let Some((finished, tensors)) = &last_finite {
                model.import(backend, tensors, "the last finite epoch")?;
                restored = format!(", the model is back at the end of epoch {finished}");
            }
            return Err(Error::Diverged {
                epoch,
                first_step: step - in_epoch + 1,
                last_step: step,
                lr,
                loss: train.loss,
                restored,
            });
        }
        if observer.keeps_last_finite() {
            last_finite = Some((epoch, model.export(backend)?));
        }
        let test = if data.test.len > 0 {
            let held = held_test.as_ref();
            Some(evaluate_with(backend, model, &ws, &eval_stats, &data.test, held, tta.as_mut())?)
        } else {
            None
        };
        let report = EpochReport {
            epoch,
            train_loss: train.loss,
            train_acc: train.accuracy,
            test_loss: test.map(|t| t.loss),
            test_acc: test.map(|t| t.accuracy),
            lr,
            seconds: started.elapsed().as_secs_f64(),
            train_seconds,
            samples_per_sec: batches.samples_per_epoch() as f64 / train_seconds.max(1e-9),
            device: backend.device_name(),
            steps: steps_per_epoch,
            best: false,
            early_stop: false,
        };
        let mut report = report;
        let score = cfg.best_by.score(&report);
        // NaN never wins (the loss was finite above; an empty test split gives 0 accuracy).
        if best.best_epoch == 0 || score > best.best_score {
            best.best_epoch = epoch;
            best.best_score = score;
            report.best = true;
        }
        report.early_stop = cfg.early_stop.is_some_and(|n| epoch - best.best_epoch >= n);
        let last = epoch == cfg.epochs || report.early_stop;
        observer.epoch_done(&report);
        reports.push(report);
        if observer.wants_snapshot(epoch, last, best.best_epoch == epoch) {
            let progress = Progress { epoch, in_epoch: 0, step, stats: [0.0; 3], ..best };
            observer.snapshot(Snapshot {
                progress,
                last,
                best: best.best_epoch == epoch,
                model: model.export(backend)?,
                optimizer: optimizer.export(backend, model)?,
            })?;
        }
        if last {
            break;
        }
    }
    Ok(reports)
}

/// Class probabilities (softmax of the logits, in f64 on the host) for `rows` samples of u8
/// pixels, in eval mode, in batches of at most `batch_size`; with test-time flips, of the mean
/// logits of each image and its mirror.
pub fn predict<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    pixels: &[u8],
    batch_size: usize,
    tta: Tta,
) -> Result<Vec<Vec<f32>>> {
    let size = model.input_size;
    let rows = pixels.len() / size.max(1);
    if rows == 0 {
        return Ok(Vec::new());
    }
    let ws = Workspace::new(backend, model, batch_size.clamp(1, rows))?;
    let mut tta = TtaBuffers::new(backend, model, &ws, tta)?;
    let classes = model.num_classes;
    let mut out = Vec::with_capacity(rows);
    for chunk in pixels.chunks(ws.capacity * size) {
        let n = chunk.len() / size;
        let labels = vec![0; n];
        let batch = Batch::Host { pixels: chunk, labels: &labels };
        let logits = eval_forward(backend, model, &ws, tta.as_mut(), batch);
        backend.submit();
        let logits = backend.read(logits, n * classes)?;
        for row in logits.chunks_exact(classes) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            out.push(exp.iter().map(|e| (e / sum) as f32).collect());
        }
    }
    Ok(out)
}

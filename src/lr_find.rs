//! The learning-rate range test (Leslie Smith, 2015; fastai's `lr_find`): a short run whose
//! rate rises exponentially from `start` to `end`, one rate per step, recording the loss. The
//! loss first stays flat (rate too small), then falls, then blows up; a good rate sits on the
//! falling part, below the one with the lowest loss.

use crate::backend::Backend;
use crate::data::loader::Batcher;
use crate::data::Dataset;
use crate::nn::{Model, Workspace};
use crate::optim::Optimizer;
use crate::train::{train_step, Metrics, TrainConfig};
use crate::{Error, Result};

/// What the test found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LrFind {
    /// The rate of each step taken.
    pub lrs: Vec<f32>,
    /// Each step's batch loss.
    pub losses: Vec<f32>,
    /// The losses smoothed (exponential moving average, bias-corrected, as fastai does), which
    /// the suggestion reads.
    pub smoothed: Vec<f32>,
    /// The rate with the lowest smoothed loss.
    pub min_loss_lr: f32,
    /// The suggested rate: a tenth of `min_loss_lr`, a step back from where the loss turns.
    pub suggested: f32,
    /// Whether the loss blew up (above 4× its lowest) before `end`, which ended the test.
    pub diverged: bool,
}

/// Runs the test on `model` (whose weights it changes: build a fresh one to train after) with
/// `cfg`'s optimizer, batch size, seed and augmentation, over `steps` steps from `start` to
/// `end`.
pub fn lr_find<B: Backend>(
    backend: &mut B,
    model: &Model<B>,
    data: &Dataset,
    cfg: &TrainConfig,
    start: f32,
    end: f32,
    steps: usize,
) -> Result<LrFind> {
    if !(start > 0.0 && end > start && end.is_finite()) {
        return Err(Error::config(
            "--start-lr",
            format!("{start} to {end}: expected 0 < start < end"),
        ));
    }
    if steps < 10 {
        return Err(Error::config("--steps", format!("{steps}: expected at least 10")));
    }
    if data.train.len == 0 {
        return Err(Error::config("--limit-train", "the training set is empty"));
    }
    let shape = [data.channels, data.height, data.width];
    let mut batches = Batcher::new(&data.train, data.sample_size(), cfg.batch_size, true)
        .with_augment(cfg.augment, cfg.seed ^ 0xA06_3E47, shape);
    if batches.steps_per_epoch() == 0 {
        batches = Batcher::new(&data.train, data.sample_size(), cfg.batch_size, false)
            .with_augment(cfg.augment, cfg.seed ^ 0xA06_3E47, shape);
    }
    let ws = Workspace::new(backend, model, cfg.batch_size.min(data.train.len))?;
    let stats = backend.alloc(3)?;
    let mut optimizer = Optimizer::new(backend, cfg.optimizer, model)?;
    // The learning rate a fine-tune wants is the one for the layers it trains.
    if !cfg.freeze.is_empty() {
        optimizer.freeze(model, &cfg.freeze)?;
    }
    let mut rng = fastrand::Rng::with_seed(cfg.seed ^ 0x5EED_5AFF_1E00_0000);
    let ratio = (end / start) as f64;
    let (mut lrs, mut losses, mut smoothed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut avg, mut best) = (0.0f64, f64::INFINITY);
    let mut diverged = false;
    batches.start_epoch(Some(&mut rng));
    'steps: for i in 0..steps {
        let (pixels, labels) = loop {
            match batches.next_batch() {
                // Copies: the batcher is restarted below while these are borrowed otherwise.
                Some((p, l)) => break (p.to_vec(), l.to_vec()),
                None => batches.start_epoch(Some(&mut rng)),
            }
        };
        let lr = (start as f64 * ratio.powf(i as f64 / (steps - 1) as f64)) as f32;
        backend.fill_zero(&stats);
        ws.load_batch(backend, &pixels, &labels);
        train_step(backend, model, &ws, &mut optimizer, &stats, labels.len(), lr);
        let loss = Metrics::from_stats(&backend.read(&stats, 3)?).loss;
        lrs.push(lr);
        losses.push(loss);
        avg = 0.98 * avg + 0.02 * loss as f64;
        let s = avg / (1.0 - 0.98f64.powi(i as i32 + 1));
        smoothed.push(s as f32);
        if !s.is_finite() || (i > 0 && s > 4.0 * best) {
            diverged = true;
            break 'steps;
        }
        best = best.min(s);
    }
    let at_min = smoothed
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    let min_loss_lr = lrs[at_min];
    Ok(LrFind { lrs, losses, smoothed, min_loss_lr, suggested: min_loss_lr / 10.0, diverged })
}

//! `steepest bench`: matmul GFLOP/s and MLP and CNN training samples/s on one backend, timed as medians
//! of several trials. The GPU side waits for the device at the end of each trial, so the times
//! are of work done, not work queued.

use std::time::Instant;

use serde::Serialize;

use crate::backend::{Backend, MatmulForm};
use crate::data::loader::Batcher;
use crate::data::{synthetic, Dataset, Split};
use crate::nn::{Model, ModelSpec, Workspace};
use crate::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use crate::train::train_step;
use crate::Result;

/// Something that can be timed: the backend plus a way to wait for queued work.
pub trait Timed: Backend {
    fn finish(&mut self);
}

impl Timed for crate::cpu::CpuBackend {
    fn finish(&mut self) {}
}

impl Timed for crate::gpu::GpuBackend {
    fn finish(&mut self) {
        self.wait();
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MatmulResult {
    pub size: usize,
    pub gflops: f64,
    pub median_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainingResult {
    /// Short name (`mlp`, `lenet`).
    pub name: String,
    /// The model spec.
    pub model: String,
    pub batch_size: usize,
    pub optimizer: String,
    pub samples_per_sec: f64,
    pub median_step_seconds: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `trials` runs of `f`, each repeated until it has taken ~`budget` seconds
/// (at least once); returns (seconds per call).
fn time_per_call<B: Timed>(
    b: &mut B,
    trials: usize,
    budget: f64,
    mut f: impl FnMut(&mut B),
) -> f64 {
    // Warm up (first use compiles nothing, but fills caches and bind groups).
    f(b);
    b.finish();
    let t = Instant::now();
    f(b);
    b.finish();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let reps = ((budget / once) as usize).clamp(1, 10_000);
    let samples = (0..trials)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f(b);
            }
            b.finish();
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    median(samples)
}

/// `n×n×n` f32 matmul (`C = A·B`) throughput.
pub fn matmul<B: Timed>(b: &mut B, n: usize) -> Result<MatmulResult> {
    let mut rng = fastrand::Rng::with_seed(n as u64);
    let data: Vec<f32> = (0..n * n).map(|_| rng.f32() - 0.5).collect();
    let (x, y, z) = (b.alloc(n * n)?, b.alloc(n * n)?, b.alloc(n * n)?);
    b.write(&x, &data);
    b.write(&y, &data);
    let secs = time_per_call(b, 5, 0.2, |b| {
        b.matmul(MatmulForm::AB, &x, &y, &z, n, n, n);
        b.submit();
    });
    Ok(MatmulResult {
        size: n,
        gflops: 2.0 * (n as f64).powi(3) / secs / 1e9,
        median_seconds: secs,
    })
}

/// A training workload on data of the model's input size (synthetic 28×28 grey images, or
/// random CIFAR-sized ones), batch 128, SGD momentum (lr 0.05): each step gathers a batch,
/// uploads it, and runs forward, backward and update.
pub struct Workload<'a, B: Backend> {
    model: Model<B>,
    ws: Workspace<B>,
    stats: B::Buf,
    opt: Optimizer<B>,
    batches: Batcher<'a>,
    rng: fastrand::Rng,
    lr: f32,
    pub spec: ModelSpec,
}

pub const BATCH: usize = 128;

/// `samples` synthetic MNIST-sized images for a `Workload`.
pub fn data(samples: usize) -> Dataset {
    synthetic::generate(1, samples, 0)
}

/// `samples` images of `input` (C, H, W) for a `Workload`: the synthetic set at MNIST's size,
/// else random pixels and labels (speed does not depend on what the pixels show).
pub fn data_for(input: [usize; 3], samples: usize) -> Dataset {
    if input == [1, synthetic::SIDE, synthetic::SIDE] {
        return data(samples);
    }
    let [channels, height, width] = input;
    let mut rng = fastrand::Rng::with_seed(7);
    let pixels = (0..samples * channels * height * width).map(|_| rng.u8(..)).collect();
    let labels = (0..samples).map(|_| rng.u8(..10)).collect();
    Dataset {
        name: "random".to_string(),
        channels,
        height,
        width,
        num_classes: 10,
        class_names: (0..10).map(|c| c.to_string()).collect(),
        train: Split::in_memory(pixels, labels),
        test: Split::in_memory(Vec::new(), Vec::new()),
        held_out: "test",
    }
}

impl<'a, B: Backend> Workload<'a, B> {
    pub fn new(b: &mut B, data: &'a Dataset, spec: &str) -> Result<Self> {
        let spec: ModelSpec = spec.parse()?;
        let model = Model::new(b, &spec, data.input_shape(), data.num_classes, 0)?;
        let ws = Workspace::new(b, &model, BATCH)?;
        let stats = b.alloc(3)?;
        let mut cfg = OptimizerConfig::new(OptimizerKind::Momentum);
        cfg.lr = 0.05;
        let opt = Optimizer::new(b, cfg, &model)?;
        let mut batches = Batcher::new(&data.train, data.sample_size(), BATCH, true);
        let mut rng = fastrand::Rng::with_seed(3);
        batches.start_epoch(Some(&mut rng));
        Ok(Workload { model, ws, stats, opt, batches, rng, lr: cfg.lr, spec })
    }

    /// Records one step (submitted, not waited for).
    pub fn step(&mut self, b: &mut B) {
        let (pixels, labels) = match self.batches.next_batch() {
            Some(x) => x,
            None => {
                self.batches.start_epoch(Some(&mut self.rng));
                self.batches.next_batch().expect("the data set holds a batch")
            }
        };
        let rows = labels.len();
        self.ws.load_batch(b, pixels, labels);
        train_step(b, &self.model, &self.ws, &mut self.opt, &self.stats, rows, self.lr);
    }

    /// Reads the metrics back (waits for the device).
    pub fn sync(&self, b: &mut B) -> Result<()> {
        b.read(&self.stats, 3).map(|_| ())
    }
}

/// One MLP training step from nothing (model, buffers, first pipelines), waited for: with the
/// time to open the adapter, what a user waits before training starts.
pub fn first_step<B: Timed>(b: &mut B) -> Result<()> {
    let data = data(256);
    let mut w = Workload::new(b, &data, "mlp:256")?;
    w.step(b);
    w.sync(b)
}

/// A training workload `steepest bench` times.
#[derive(Clone, Copy, Debug)]
pub struct BenchModel {
    /// What `--models` calls it.
    pub name: &'static str,
    pub spec: &'static str,
    /// The input it trains on, (C, H, W).
    pub input: [usize; 3],
}

/// The training workloads `steepest bench` times: the MNIST MLP and the LeNet-style CNN of
/// PyTorch's baseline (`shared/bench/torch_mnist.py`), and the CIFAR presets.
pub const TRAINING_MODELS: [BenchModel; 5] = [
    BenchModel { name: "mlp", spec: "mlp:256", input: [1, 28, 28] },
    BenchModel { name: "lenet", spec: "lenet", input: [1, 28, 28] },
    BenchModel { name: "resnet8", spec: "resnet8", input: [3, 32, 32] },
    BenchModel { name: "resnet20", spec: "resnet20", input: [3, 32, 32] },
    BenchModel { name: "cifar-cnn", spec: "cifar-cnn", input: [3, 32, 32] },
];

/// Training throughput of `model` (see `Workload`), median of 5 trials.
pub fn training<B: Timed>(b: &mut B, model: &BenchModel) -> Result<TrainingResult> {
    let (name, spec) = (model.name, model.spec);
    let data = data_for(model.input, 4096);
    let mut w = Workload::new(b, &data, spec)?;
    let secs = time_per_call(b, 5, 0.3, |b| w.step(b));
    Ok(TrainingResult {
        name: name.to_string(),
        model: w.spec.to_string(),
        batch_size: BATCH,
        optimizer: "sgd momentum 0.9".to_string(),
        samples_per_sec: BATCH as f64 / secs,
        median_step_seconds: secs,
    })
}

/// GPU time per kernel (split by grid) over `steps` training steps of `spec` (after one
/// warm-up step), or `None` when the adapter has no timestamp queries.
pub fn profile_training(
    g: &mut crate::gpu::GpuBackend,
    model: &BenchModel,
    steps: usize,
) -> Result<Option<Vec<crate::gpu::profile::KernelTime>>> {
    let data = data_for(model.input, 4096);
    let mut w = Workload::new(g, &data, model.spec)?;
    w.step(g);
    w.sync(g)?;
    if !g.start_profiling() {
        return Ok(None);
    }
    for _ in 0..steps {
        w.step(g);
    }
    w.sync(g)?;
    Ok(Some(g.stop_profiling()))
}

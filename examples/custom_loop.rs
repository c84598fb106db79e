//! Your own descent loop over the backend API: forward, loss, backward and an optimizer step,
//! spelled out, on the CPU and (if there is one) the GPU, side by side.
//!
//!     cargo run --release --example custom_loop

use steepest::backend::Backend;
use steepest::cpu::CpuBackend;
use steepest::data::loader::Batcher;
use steepest::gpu::{context::Choice, GpuBackend};
use steepest::nn::{Mode, Model, ModelSpec, Workspace};
use steepest::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use steepest::train::Metrics;

fn descend<B: Backend>(b: &mut B) -> steepest::Result<()> {
    let data = steepest::data::open("synthetic", None)?;
    let model = Model::new(b, &ModelSpec::mlp(&[128]), data.sample_size(), data.num_classes, 0)?;
    let ws = Workspace::new(b, &model, 64)?;
    let stats = b.alloc(3)?; // [loss sum, correct, samples], accumulated on the device
    let mut opt = Optimizer::new(b, OptimizerConfig::new(OptimizerKind::Nesterov), &model)?;
    let mut batches = Batcher::new(&data.train, data.sample_size(), 64, true);
    let mut rng = fastrand::Rng::with_seed(1);
    for epoch in 1..=2 {
        b.fill_zero(&stats);
        batches.start_epoch(Some(&mut rng));
        while let Some((pixels, labels)) = batches.next_batch() {
            let rows = labels.len();
            ws.load_batch(b, pixels, labels); // upload u8 pixels, convert on the device
            let mode = Mode::Train { step: opt.steps };
            model.forward(b, &ws, rows, mode);
            model.loss(b, &ws, &stats, rows); // logits' gradient + metrics
            model.backward(b, &ws, rows, mode);
            opt.step(b, &model, 0.05);
            b.submit(); // one submit per step, nothing read back
        }
        let m = Metrics::from_stats(&b.read(&stats, 3)?); // the only wait
        println!(
            "{}: epoch {epoch} loss {:.4} accuracy {:.2}%",
            b.device_name(),
            m.loss,
            100.0 * m.accuracy
        );
    }
    Ok(())
}

fn main() -> steepest::Result<()> {
    descend(&mut CpuBackend::new())?;
    match GpuBackend::open(Choice::AnyAdapter, None)? {
        Some(mut gpu) => descend(&mut gpu)?,
        None => println!("no GPU adapter: CPU only"),
    }
    Ok(())
}

//! Train the MNIST MLP in a few lines of library code.
//!
//!     cargo run --release --example train_mnist -- path/to/mnist

use steepest::device::{AnyBackend, DeviceChoice};
use steepest::nn::{Model, ModelSpec};
use steepest::optim::{OptimizerConfig, OptimizerKind};
use steepest::train::{self, EpochReport, Observer, TrainConfig};
use steepest::with_backend;

struct Print;
impl Observer for Print {
    fn epoch_done(&mut self, r: &EpochReport) {
        println!("epoch {}: test accuracy {:.2}%", r.epoch, 100.0 * r.test_acc.unwrap_or(0.0));
    }
}

fn main() -> steepest::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "../shared/data/mnist".into());
    let data = steepest::data::open("mnist", Some(dir.as_ref()))?;
    let mut device = AnyBackend::open(DeviceChoice::Auto, None, &mut |n| eprintln!("{n}"))?;
    println!("device: {}", device.describe());
    let spec: ModelSpec = "mlp:256".parse()?;
    let mut cfg = TrainConfig::new(OptimizerConfig::new(OptimizerKind::Adam));
    cfg.epochs = 3;
    with_backend!(&mut device, b => {
        let model = Model::new(b, &spec, data.sample_size(), data.num_classes, 0)?;
        train::train(b, &model, &data, &cfg, &mut Print)?;
    });
    Ok(())
}

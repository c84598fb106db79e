//! `steepest eval`.

use steepest::backend::Backend;
use steepest::checkpoint::{self, Checkpoint};
use steepest::data::Dataset;
use steepest::nn::Model;
use steepest::train;
use steepest::{with_backend, Error, Result};

use crate::EvalArgs;

pub fn run(args: &EvalArgs) -> Result<()> {
    let ckpt = checkpoint::load(&args.weights)?;
    let data = super::load_data(&args.data)?;
    check_fits(&ckpt, &data, args)?;
    let mut backend = super::open_device(&args.data)?;
    let m = with_backend!(&mut backend, b => evaluate_on(b, &ckpt, &data, args))?;
    if args.json {
        let out = serde_json::json!({
            "test_loss": m.loss,
            "test_acc": m.accuracy,
            "samples": m.samples,
        });
        println!("{out}");
    } else {
        println!(
            "{} on {} test ({} samples): loss {:.4}, accuracy {:.2}%",
            args.weights.display(),
            data.name,
            m.samples,
            m.loss,
            100.0 * m.accuracy
        );
    }
    Ok(())
}

/// The checkpoint's input and classes must be the data set's.
fn check_fits(ckpt: &Checkpoint, data: &Dataset, args: &EvalArgs) -> Result<()> {
    if let Some([c, h, w]) = ckpt.meta.input_shape {
        if [c, h, w] != [data.channels, data.height, data.width] {
            return Err(Error::file(
                &args.weights,
                format!(
                    "was trained on {c}x{h}x{w} inputs, but --dataset {} has {}x{}x{}",
                    data.name, data.channels, data.height, data.width
                ),
            ));
        }
    }
    Ok(())
}

fn evaluate_on<B: Backend>(
    b: &mut B,
    ckpt: &Checkpoint,
    data: &Dataset,
    args: &EvalArgs,
) -> Result<train::Metrics> {
    let (spec, inputs, classes) = match &ckpt.meta.model {
        Some(spec) => (spec.clone(), data.sample_size(), data.num_classes),
        None => checkpoint::infer_mlp(&ckpt.tensors, &args.weights)?,
    };
    if inputs != data.sample_size() || classes != data.num_classes {
        return Err(Error::file(
            &args.weights,
            format!(
                "model takes {inputs} inputs and gives {classes} classes, but --dataset {} has \
                 {} inputs and {} classes",
                data.name,
                data.sample_size(),
                data.num_classes
            ),
        ));
    }
    let model = Model::new(b, &spec, data.input_shape(), classes, 0)?;
    model.import(b, &ckpt.tensors, &args.weights.display().to_string())?;
    if data.test.len == 0 {
        return Err(Error::config("--limit-test", "the test set is empty"));
    }
    train::evaluate(b, &model, &data.test, 1000)
}

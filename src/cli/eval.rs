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
    let (m, matrix) = with_backend!(&mut backend, b => evaluate_on(b, &ckpt, &data, args))?;
    let names = ckpt
        .meta
        .class_names
        .clone()
        .filter(|n| n.len() == data.num_classes)
        .unwrap_or_else(|| data.class_names.clone());
    let per_class: Vec<Option<f64>> = matrix
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: u32 = row.iter().sum();
            (total > 0).then(|| row[c] as f64 / total as f64)
        })
        .collect();
    if args.json {
        let per: serde_json::Map<String, serde_json::Value> =
            names.iter().zip(&per_class).map(|(n, a)| (n.clone(), serde_json::json!(a))).collect();
        let out = serde_json::json!({
            "test_loss": m.loss,
            "test_acc": m.accuracy,
            "samples": m.samples,
            "per_class_acc": per,
            "confusion": matrix,
            "class_names": names,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{} on {} test ({} samples): loss {:.4}, accuracy {:.2}%",
        args.weights.display(),
        data.name,
        m.samples,
        m.loss,
        100.0 * m.accuracy
    );
    let width = names.iter().map(|n| n.len()).max().unwrap_or(5).clamp(5, 16);
    println!("\nper class:");
    for (name, acc) in names.iter().zip(&per_class) {
        let acc = acc.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a));
        println!("  {name:>width$}  {acc:>8}");
    }
    println!("\nconfusion matrix (rows: true class, columns: predicted):");
    let header: Vec<String> = (0..names.len()).map(|j| format!("{j:>6}")).collect();
    println!("  {:>width$}  {}", "", header.join(""));
    for (i, row) in matrix.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>6}")).collect();
        println!("  {:>width$}  {}   ({i})", names[i], cells.join(""));
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
) -> Result<(train::Metrics, Vec<Vec<u32>>)> {
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
    let mut model = Model::new(b, &spec, data.input_shape(), classes, 0)?;
    if let Some((mean, std)) = &ckpt.meta.normalization {
        model
            .set_normalization(b, mean, std)
            .map_err(|e| Error::file(&args.weights, format!("metadata normalization: {e}")))?;
    }
    model.import(b, &ckpt.tensors, &args.weights.display().to_string())?;
    if data.test.len == 0 {
        return Err(Error::config("--limit-test", "the test set is empty"));
    }
    train::confusion(b, &model, &data.test, 1000)
}

//! `steepest eval`.

use steepest::backend::Backend;
use steepest::checkpoint::{self, Checkpoint};
use steepest::data::Dataset;
use steepest::train;
use steepest::{with_backend, Error, Result};

use crate::EvalArgs;

pub fn run(args: &EvalArgs) -> Result<()> {
    let ckpt = checkpoint::load(&args.weights)?;
    let data_args =
        super::data_args_from_checkpoint(&args.data, &args.given, &ckpt, &args.weights)?;
    let data = super::load_data(&data_args, ckpt.meta.input_shape, true)?;
    check_fits(&ckpt, &data, args)?;
    let mut backend = super::open_device(&args.data.device, args.data.adapter.as_deref())?;
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
    // JSON escapes names itself; the terminal gets them with control characters escaped.
    let names: Vec<String> = names.iter().map(|n| super::printable(n)).collect();
    println!(
        "{} on {} {} ({} samples): loss {:.4}, accuracy {:.2}%",
        args.weights.display(),
        data.name,
        data.held_out,
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
    // Columns as wide as the longest name (cut at 8 characters) or count.
    let most = matrix.iter().flatten().max().copied().unwrap_or(0).to_string().len();
    let col = names.iter().map(|n| n.chars().count().min(8)).max().unwrap_or(1).max(most) + 2;
    let short = |n: &str| n.chars().take(8).collect::<String>();
    let header: Vec<String> = names.iter().map(|n| format!("{:>col$}", short(n))).collect();
    println!("  {:>width$}  {}", "", header.join(""));
    for (i, row) in matrix.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>col$}")).collect();
        println!("  {:>width$}  {}", names[i], cells.join(""));
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
    let d = ckpt.describe(&args.weights)?;
    let [c, h, w] = d.input_shape;
    let (inputs, classes) = (c * h * w, d.class_names.len());
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
    if data.test.len == 0 {
        return Err(Error::config("--limit-test", "the test set is empty"));
    }
    // A flat MLP file without metadata describes its input as an image; the data's shape rules.
    let ckpt = Checkpoint {
        tensors: ckpt.tensors.clone(),
        meta: checkpoint::CheckpointMeta {
            input_shape: Some([data.channels, data.height, data.width]),
            class_names: Some(data.class_names.clone()),
            ..ckpt.meta.clone()
        },
        optimizer: Vec::new(),
    };
    let (model, _) = ckpt.restore(b, &args.weights)?;
    let tta = super::tta_flag(args.tta.as_deref(), &ckpt, &args.weights)?;
    train::confusion(b, &model, &data.test, 1000, tta)
}

//! `steepest predict`: top-k classes for image files, prepared as training prepared its data
//! (size, channels and normalisation come from the checkpoint's metadata).

use steepest::checkpoint;
use steepest::data::folder;
use steepest::{train, with_backend, Error, Result};

use crate::PredictArgs;

pub fn run(args: &PredictArgs) -> Result<()> {
    if args.images.is_empty() {
        return Err(Error::config("IMAGE", "name at least one image file to classify"));
    }
    if args.top_k == 0 {
        return Err(Error::config("--top-k", "must be at least 1"));
    }
    let ckpt = checkpoint::load(&args.weights)?;
    let described = ckpt.describe(&args.weights)?;
    let [c, h, w] = described.input_shape;
    if c != 1 && c != 3 {
        return Err(Error::file(
            &args.weights,
            format!(
                "takes {c}-channel inputs; predict reads images as 1 (grey) or 3 (RGB) channels"
            ),
        ));
    }
    // Decode everything first; a file that cannot be read is reported and the rest go on.
    let mut pixels = Vec::with_capacity(args.images.len() * c * h * w);
    let mut decoded = Vec::new();
    let mut failed = Vec::new();
    for path in &args.images {
        match folder::decode(path, c, h, w) {
            Ok(p) => {
                pixels.extend_from_slice(&p);
                decoded.push(path);
            }
            Err(e) => failed.push((path, e)),
        }
    }
    let probs = if decoded.is_empty() {
        Vec::new()
    } else {
        let mut backend = super::open_device(&args.device, args.adapter.as_deref())?;
        with_backend!(&mut backend, b => {
            let (model, _) = ckpt.restore(b, &args.weights)?;
            train::predict(b, &model, &pixels, 256)
        })?
    };
    let names = &described.class_names;
    let k = args.top_k.min(names.len());
    let top = |p: &[f32]| -> Vec<(usize, f32)> {
        let mut idx: Vec<usize> = (0..p.len()).collect();
        // Highest first; ties keep the lower class index first, as argmax does.
        idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        idx.into_iter().take(k).map(|i| (i, p[i])).collect()
    };
    if args.json {
        let mut results: Vec<serde_json::Value> = decoded
            .iter()
            .zip(&probs)
            .map(|(path, p)| {
                let top: Vec<serde_json::Value> = top(p)
                    .into_iter()
                    .map(|(i, pr)| serde_json::json!({"class": names[i], "index": i, "probability": pr}))
                    .collect();
                serde_json::json!({"file": path.display().to_string(), "top": top})
            })
            .collect();
        results.extend(failed.iter().map(|(path, e)| {
            serde_json::json!({"file": path.display().to_string(), "error": e.to_string()})
        }));
        println!("{}", serde_json::Value::Array(results));
    } else {
        for (path, p) in decoded.iter().zip(&probs) {
            let line: Vec<String> = top(p)
                .into_iter()
                .map(|(i, pr)| format!("{} {:.1}%", super::printable(&names[i]), 100.0 * pr))
                .collect();
            println!("{}: {}", path.display(), line.join(", "));
        }
    }
    for (_, e) in &failed {
        eprintln!("error: {e}");
    }
    if !failed.is_empty() {
        return Err(Error::Other(format!(
            "{} of {} images could not be read",
            failed.len(),
            args.images.len()
        )));
    }
    Ok(())
}

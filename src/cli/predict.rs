//! `steepest predict`: top-k classes for image files and folders of them, prepared as training
//! prepared its data (size, channels and normalisation come from the checkpoint's metadata).
//! One line (or one JSON object) per image, printed as each chunk of images is done.

use std::path::{Path, PathBuf};

use steepest::backend::Backend;
use steepest::checkpoint;
use steepest::data::folder;
use steepest::nn::Model;
use steepest::{train, with_backend, Error, Result};

use crate::PredictArgs;

/// Images decoded and classified together: memory stays bounded for a folder of any size.
const CHUNK: usize = 256;

/// The extensions a folder's images are recognised by (named files are always tried).
const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "gif", "bmp"];

pub fn run(args: &PredictArgs) -> Result<()> {
    if args.images.is_empty() {
        return Err(Error::config("IMAGE", "name at least one image file or folder to classify"));
    }
    if args.top_k == 0 {
        return Err(Error::config("--top-k", "must be at least 1"));
    }
    let ckpt = checkpoint::load(&args.weights)?;
    let described = ckpt.describe(&args.weights)?;
    let [c, _, _] = described.input_shape;
    if c != 1 && c != 3 {
        return Err(Error::file(
            &args.weights,
            format!(
                "takes {c}-channel inputs; predict reads images as 1 (grey) or 3 (RGB) channels"
            ),
        ));
    }
    let files = expand(&args.images)?;
    if files.is_empty() {
        return Err(Error::config("IMAGE", "the folders given hold no image files"));
    }
    let tta = super::tta_flag(args.tta.as_deref(), &ckpt, &args.weights)?;
    let mut backend = super::open_device(&args.device, args.adapter.as_deref())?;
    let failed = with_backend!(&mut backend, b => {
        let (model, _) = ckpt.restore(b, &args.weights)?;
        classify_all(b, &model, &files, &described.class_names, args, tta)
    })?;
    if failed > 0 {
        return Err(Error::Other(format!("{failed} of {} images could not be read", files.len())));
    }
    Ok(())
}

/// Named files as they are; folders walked (sorted, recursively) for image files.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot list: {e}")))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::file(dir, format!("cannot list: {e}")))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Classifies `files` chunk by chunk, printing each image's line; returns how many failed.
fn classify_all<B: Backend>(
    b: &mut B,
    model: &Model<B>,
    files: &[PathBuf],
    names: &[String],
    args: &PredictArgs,
    tta: train::Tta,
) -> Result<usize> {
    let (c, h, w) = (model.input.channels, model.input.height, model.input.width);
    let k = args.top_k.min(names.len());
    let mut failed = 0;
    for chunk in files.chunks(CHUNK) {
        let mut pixels = Vec::with_capacity(chunk.len() * c * h * w);
        let mut decoded = Vec::new();
        let mut errors = Vec::new();
        for path in chunk {
            match folder::decode(path, c, h, w) {
                Ok(p) => {
                    pixels.extend_from_slice(&p);
                    decoded.push(path);
                }
                Err(e) => errors.push((path, e)),
            }
        }
        let probs = if decoded.is_empty() {
            Vec::new()
        } else {
            train::predict(b, model, &pixels, CHUNK, tta)?
        };
        for (path, p) in decoded.iter().zip(&probs) {
            print_line(path, &top(p, k), names, args.json);
        }
        for (path, e) in &errors {
            if args.json {
                let line =
                    serde_json::json!({"file": path.display().to_string(), "error": e.to_string()});
                println!("{line}");
            }
            eprintln!("error: {e}");
        }
        failed += errors.len();
    }
    Ok(failed)
}

/// The `k` most likely classes, highest first; ties keep the lower class index first, as
/// argmax does.
fn top(p: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, p[i])).collect()
}

fn print_line(path: &Path, top: &[(usize, f32)], names: &[String], json: bool) {
    if json {
        let top: Vec<serde_json::Value> = top
            .iter()
            .map(|&(i, pr)| serde_json::json!({"class": names[i], "index": i, "probability": pr}))
            .collect();
        println!("{}", serde_json::json!({"file": path.display().to_string(), "top": top}));
    } else {
        let line: Vec<String> = top
            .iter()
            .map(|&(i, pr)| format!("{} {:.1}%", super::printable(&names[i]), 100.0 * pr))
            .collect();
        println!("{}: {}", path.display(), line.join(", "));
    }
}

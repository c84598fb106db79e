//! `steepest inspect`: what a checkpoint holds, without running anything.

use std::path::Path;

use steepest::checkpoint::{self, Checkpoint};
use steepest::cpu::CpuBackend;
use steepest::Result;

use crate::InspectArgs;

pub fn run(args: &InspectArgs) -> Result<()> {
    let ckpt = checkpoint::load(&args.file)?;
    if args.config {
        print_config_toml(&ckpt);
        return Ok(());
    }
    if args.json {
        let tensors: Vec<serde_json::Value> = ckpt
            .tensors
            .iter()
            .chain(&ckpt.optimizer)
            .map(|(n, s, _)| serde_json::json!({ "name": n, "shape": s }))
            .collect();
        let m = &ckpt.meta;
        let out = serde_json::json!({
            "file": args.file,
            "model": m.model.as_ref().map(|s| s.to_string()),
            "input_shape": m.input_shape,
            "class_names": m.class_names,
            "dataset": m.dataset,
            "version": m.version,
            "normalize": m.normalization.as_ref().map(|(mean, std)| serde_json::json!({"mean": mean, "std": std})),
            "config": m.config,
            "progress": m.progress,
            "tensors": tensors,
        });
        println!("{out}");
        return Ok(());
    }
    describe(&ckpt, &args.file)
}

fn describe(ckpt: &Checkpoint, path: &Path) -> Result<()> {
    let m = &ckpt.meta;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{}: {:.1} MB, written by {}",
        path.display(),
        size as f64 / 1e6,
        m.version.as_deref().map_or("PyTorch or another tool (no steepest metadata)".into(), |v| {
            format!("steepest {v}")
        })
    );
    // The model as training prints it (built on the CPU from the file's description).
    let mut cpu = CpuBackend::new();
    match ckpt.restore(&mut cpu, path) {
        Ok((model, d)) => {
            super::train::print_summary(&model);
            let names: Vec<String> = d.class_names.iter().map(|n| super::printable(n)).collect();
            println!("classes ({}): {}", names.len(), names.join(", "));
        }
        Err(e) => println!("model: does not build here: {e}"),
    }
    if let Some(d) = &m.dataset {
        println!("data set: {d}");
    }
    if let Some((mean, std)) = &m.normalization {
        println!("normalize: mean {mean:?} std {std:?}");
    }
    if let Some(p) = &m.progress {
        println!(
            "resume state: {} epochs and {} steps done{}; best epoch {}",
            p.epoch,
            p.step,
            if p.in_epoch > 0 { format!(" (+{} of the next)", p.in_epoch) } else { String::new() },
            p.best_epoch
        );
    }
    if m.config.is_some() {
        println!("run configuration (`steepest inspect --config` writes it as a --config file):");
        for line in config_lines(ckpt) {
            println!("  {line}");
        }
    }
    println!("tensors ({}):", ckpt.tensors.len() + ckpt.optimizer.len());
    let width = ckpt.tensors.iter().chain(&ckpt.optimizer).map(|(n, _, _)| n.len()).max();
    let width = width.unwrap_or(0).min(48);
    for (name, shape, _) in ckpt.tensors.iter().chain(&ckpt.optimizer) {
        println!("  {name:<width$}  {shape:?}");
    }
    Ok(())
}

/// The stored flags as TOML lines (`key = value`), in the form `train --config` reads.
fn config_lines(ckpt: &Checkpoint) -> Vec<String> {
    let Some(serde_json::Value::Object(map)) = &ckpt.meta.config else { return Vec::new() };
    map.iter()
        .filter(|(k, v)| !v.is_null() && k.as_str() != "run_id")
        .map(|(k, v)| format!("{} = {}", k.replace('_', "-"), shortest(v)))
        .collect()
}

fn print_config_toml(ckpt: &Checkpoint) {
    for line in config_lines(ckpt) {
        println!("{line}");
    }
}

/// Flags are f32: 0.02 stored as the f64 0.019999999552965164 prints as 0.02 again (within
/// the last bits, as serde_json reads floats without exact rounding).
fn shortest(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() && ((x as f32) as f64 - x).abs() <= 1e-15 * x.abs() => {
            format!("{:?}", x as f32)
        }
        _ => v.to_string(),
    }
}

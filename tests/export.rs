//! `steepest export --pytorch DIR --weights FILE`, through the real binary: the script and the
//! checkpoint it writes, the refusals, and (where python with torch and safetensors is found)
//! the script itself: it loads the checkpoint strictly, its test accuracy is `steepest eval`'s,
//! and what it trains loads back into `steepest eval`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::{assert_clean_error, run_ok, steepest, temp, text};

/// Models that cover every way a layer maps to PyTorch: a leading linear layer on the image,
/// batch norm, a residual block, pooling, dropout, and a linear layer after global average
/// pooling without a flatten.
const MODELS: [&str; 3] = [
    "mlp:16",
    "conv:4:3:p=1,bn,relu,res(conv:4:3:p=1:nobias,bn),relu,maxpool:2,flatten,dropout:0.1,linear:8,relu,linear",
    "conv:6:3,relu,res(conv:6:3:p=1,relu;conv:6:1:nobias),avgpool:2,gap,linear",
];

/// A small IDX data set whose classes can be learned: 8×8 images with a bright band whose
/// position is the class (3 classes), over seeded noise; `train` and `test` samples.
fn write_idx(dir: &Path, train: u32, test: u32) {
    let side = 8u32;
    let mut seed = 0x5EED_u32;
    let mut noise = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 24) as u8 / 2
    };
    for (stem, count) in [("train", train), ("t10k", test)] {
        let mut images = vec![0, 0, 8, 3];
        for d in [count, side, side] {
            images.extend_from_slice(&d.to_be_bytes());
        }
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&count.to_be_bytes());
        for i in 0..count {
            let label = (i * 7 % 3) as u8;
            for y in 0..side {
                for _ in 0..side {
                    let band = y / 3 == u32::from(label);
                    images.push(if band { 120 } else { 30 } + noise());
                }
            }
            labels.push(label);
        }
        std::fs::write(dir.join(format!("{stem}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{stem}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// Flags of the run that trains `MODELS[i]`: the batch-norm one also smooths labels and
/// evaluates with test-time flips, which train.py must then do too.
fn extra_flags(i: usize) -> &'static [&'static str] {
    if i == 1 {
        &["--label-smoothing", "0.1", "--tta", "flip"]
    } else {
        &[]
    }
}

/// Trains `model` on the IDX set in `data` for 2 epochs and saves it to `weights`.
fn train(data: &Path, model: &str, weights: &Path, extra: &[&str]) {
    let flags = [
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        model,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--optimizer",
        "momentum",
        "--lr",
        "0.05",
        "--schedule",
        "cosine",
        "--warmup-steps",
        "3",
        "--normalize",
        "auto",
        "--augment",
        "crop:1,flip",
        "--device",
        "cpu",
        "--quiet",
        "--save",
        weights.to_str().unwrap(),
    ];
    run_ok(&[&flags[..], extra].concat());
}

fn export(weights: &Path, dir: &Path) -> (String, String) {
    run_ok(&["export", "--pytorch", dir.to_str().unwrap(), "--weights", weights.to_str().unwrap()])
}

#[test]
fn export_writes_the_script_and_the_checkpoints_tensors() {
    let dir = temp("export-files");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data, 96, 48);
    for (i, model) in MODELS.iter().enumerate() {
        let weights = dir.join(format!("w{i}.safetensors"));
        train(&data, model, &weights, extra_flags(i));
        let out = dir.join(format!("pt{i}"));
        let (said, _) = export(&weights, &out);
        assert!(said.contains("train.py"), "{said}");
        let script = std::fs::read_to_string(out.join("train.py")).unwrap();
        assert!(script.starts_with("#!/usr/bin/env python3\n"), "{script}");
        for needle in [
            "strict=True",
            "DistributedDataParallel",
            "DistributedSampler",
            "def build_model",
            "torch.optim.SGD",
            "\"kind\": \"cosine\"",
            "\"warmup_steps\": 3",
            "\"batch_size\": 16",
            "\"crop\": 1",
            "save_file(",
            if i == 1 { "\"tta\": \"flip\"" } else { "\"tta\": \"none\"" },
            if i == 1 { "\"label_smoothing\": 0.1" } else { "\"label_smoothing\": 0.0" },
        ] {
            assert!(script.contains(needle), "train.py for {model} lacks {needle:?}:\n{script}");
        }
        assert!(!script.contains("__RUN__") && !script.contains("__MODEL__"), "{script}");
        let original = steepest::checkpoint::load(&weights).unwrap();
        let copy = steepest::checkpoint::load(&out.join("model.safetensors")).unwrap();
        assert_eq!(copy.tensors, original.tensors, "{model}: the tensors are the checkpoint's");
        assert_eq!(copy.meta.model, original.meta.model);
        assert_eq!(copy.meta.normalization, original.meta.normalization);
        assert_eq!(copy.meta.class_names, original.meta.class_names);
        // `train --save` wrote the resume file beside the weights: its optimizer state goes too.
        let state = steepest::checkpoint::load(&out.join("optimizer.safetensors")).unwrap();
        assert!(
            state.optimizer.iter().any(|(n, _, _)| n == "optimizer.0.weight.momentum_buffer"),
            "{:?}",
            state.optimizer.iter().map(|t| &t.0).collect::<Vec<_>>()
        );
        assert_eq!(state.meta.progress.map(|p| p.epoch), Some(2));
        // The same weights without their resume file, exported over that folder: the earlier
        // optimizer state does not stay beside weights it no longer belongs to.
        let alone = dir.join(format!("alone{i}.safetensors"));
        std::fs::copy(&weights, &alone).unwrap();
        export(&alone, &out);
        assert!(!out.join("optimizer.safetensors").exists(), "stale optimizer state removed");
    }
}

#[test]
fn export_refuses_synthetic_data_and_files_without_a_run() {
    let dir = temp("export-refusals");
    let weights = dir.join("synthetic.safetensors");
    run_ok(&[
        "train",
        "--model",
        "linear",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
        "--device",
        "cpu",
        "--quiet",
        "--save",
        weights.to_str().unwrap(),
    ]);
    let out = dir.join("pt");
    let o = steepest(&[
        "export",
        "--pytorch",
        out.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["synthetic.safetensors", "synthetic", "mnist", "cannot regenerate"]);
    assert!(!out.join("train.py").exists(), "nothing is written for a refused export");

    // A bare state_dict (what PyTorch saves): no model, no run to continue.
    let bare = dir.join("bare.safetensors");
    let tensors = steepest::checkpoint::load(&weights).unwrap().tensors;
    steepest::checkpoint::save(&bare, &tensors, &Default::default()).unwrap();
    let o = steepest(&[
        "export",
        "--pytorch",
        out.to_str().unwrap(),
        "--weights",
        bare.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["bare.safetensors", "steepest.model", "train --save"]);

    let o = steepest(&[
        "export",
        "--pytorch",
        out.to_str().unwrap(),
        "--weights",
        dir.join("missing.safetensors").to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["missing.safetensors"]);
}

/// A python that imports torch, numpy and safetensors: `STEEPEST_PYTHON`, else `python3`; or
/// why there is none.
fn python() -> Result<PathBuf, String> {
    let python = std::env::var_os("STEEPEST_PYTHON").map_or("python3".into(), PathBuf::from);
    let probe = Command::new(&python)
        .args(["-c", "import torch, numpy, safetensors"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !probe.status.success() {
        let err = String::from_utf8_lossy(&probe.stderr);
        return Err(format!(
            "{} cannot import torch, numpy and safetensors ({})",
            python.display(),
            err.lines().last().unwrap_or("").trim()
        ));
    }
    Ok(python)
}

/// The JSON lines a run of train.py printed on stdout.
fn run_script(python: &Path, script: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let o = Command::new(python).arg(script).args(args).output().expect("run python");
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "{} {args:?} failed\nstdout: {out}\nstderr: {err}",
        script.display()
    );
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn eval_json(weights: &Path) -> serde_json::Value {
    let (out, _) =
        run_ok(&["eval", "--weights", weights.to_str().unwrap(), "--device", "cpu", "--json"]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn exported_script_evaluates_as_steepest_and_trains_where_torch_is_found() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the exported train.py is not run: {why} (set STEEPEST_PYTHON to a \
                 python with them)"
            );
            return;
        }
    };
    let dir = temp("export-python");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data, 96, 48);
    for (i, model) in MODELS.iter().enumerate() {
        let weights = dir.join(format!("w{i}.safetensors"));
        train(&data, model, &weights, extra_flags(i));
        let out = dir.join(format!("pt{i}"));
        export(&weights, &out);
        let script = out.join("train.py");
        let want = eval_json(&weights);
        let lines = run_script(&python, &script, &["--eval-only"]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let got = &lines[0];
        let (acc, want_acc) =
            (got["test_acc"].as_f64().unwrap(), want["test_acc"].as_f64().unwrap());
        assert!(
            (acc - want_acc).abs() <= 1e-4,
            "{model}: train.py {acc}, steepest eval {want_acc}"
        );
        let (loss, want_loss) =
            (got["test_loss"].as_f64().unwrap(), want["test_loss"].as_f64().unwrap());
        assert!(
            (loss - want_loss).abs() <= 1e-4 * want_loss.abs().max(1.0),
            "{model}: train.py loss {loss}, steepest eval {want_loss}"
        );
        assert_eq!(got["samples"], want["samples"]);

        // One epoch of training, then the round trip: what the script saved loads into eval.
        let trained = dir.join(format!("trained{i}.safetensors"));
        let lines =
            run_script(&python, &script, &["--epochs", "1", "--out", trained.to_str().unwrap()]);
        assert_eq!(lines.len(), 2, "the eval line, then one per epoch: {lines:?}");
        assert_eq!(lines[1]["kind"], "epoch");
        assert_eq!(lines[1]["epoch"], 3, "the run had trained 2 epochs");
        let back = eval_json(&trained);
        let (acc, want_acc) =
            (lines[1]["test_acc"].as_f64().unwrap(), back["test_acc"].as_f64().unwrap());
        assert!(
            (acc - want_acc).abs() <= 1e-4,
            "{model}: train.py {acc}, steepest eval {want_acc}"
        );
        let reread = steepest::checkpoint::load(&trained).unwrap();
        assert_eq!(reread.meta.model, steepest::checkpoint::load(&weights).unwrap().meta.model);

        // DistributedDataParallel on the CPU (gloo), with batch norm and a residual block.
        if i == 1 {
            let ddp = dir.join("trained_ddp.safetensors");
            let torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"];
            let args = [script.to_str().unwrap(), "--epochs", "1", "--out", ddp.to_str().unwrap()];
            let o = Command::new(&python).args(torchrun).args(args).output().expect("torchrun");
            let (out, err) = text(&o);
            assert!(o.status.success(), "torchrun failed\nstdout: {out}\nstderr: {err}");
            let lines: Vec<serde_json::Value> =
                out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(lines.len(), 2, "rank 0 alone prints: {out}");
            assert_eq!(lines[1]["processes"], 2);
            let back = eval_json(&ddp);
            let (acc, want_acc) =
                (lines[1]["test_acc"].as_f64().unwrap(), back["test_acc"].as_f64().unwrap());
            assert!((acc - want_acc).abs() <= 1e-4, "torchrun {acc}, steepest eval {want_acc}");
        }
    }
}

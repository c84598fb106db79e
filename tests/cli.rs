//! The command-line contract: what users and scripts rely on, run through the real binary.
//! Bad input must end with a clear `error:` line that names the file or flag, a non-zero exit,
//! and never a panic.

mod common;

use std::path::Path;

use common::cli::{assert_clean_error, run_ok, steepest, steepest_env, temp, text};

fn idx_images(count: u32, rows: u32, cols: u32, fill: u8) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [count, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(fill, (count * rows * cols) as usize));
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// A tiny valid IDX data set: 20 train and 10 test 4×4 images.
fn write_idx(dir: &Path) {
    let labels: Vec<u8> = (0..20).map(|i| i % 3).collect();
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(20, 4, 4, 9)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_images(10, 4, 4, 9)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_labels(&labels[..10])).unwrap();
}

#[test]
fn train_save_metrics_and_eval_agree() {
    let dir = temp("train");
    let (w, m) = (dir.join("w.safetensors"), dir.join("m.jsonl"));
    let (out, err) = run_ok(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--limit-train",
        "1500",
        "--limit-test",
        "300",
        "--model",
        "mlp:32",
        "--save",
        w.to_str().unwrap(),
        "--metrics",
        m.to_str().unwrap(),
    ]);
    assert!(err.contains("device: cpu"), "the chosen device is printed: {err}");
    assert!(out.contains("epoch 2/2"), "{out}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in [
        "epoch",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "lr",
        "seconds",
        "samples_per_sec",
        "device",
    ] {
        assert!(lines[1].get(key).is_some(), "metrics lack {key}: {}", lines[1]);
    }
    assert_eq!(lines[1]["device"], "cpu");

    let (out, _) = run_ok(&[
        "eval",
        "--weights",
        w.to_str().unwrap(),
        "--device",
        "cpu",
        "--limit-test",
        "300",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["samples"], 300);
    // The confusion matrix accounts for every sample, and its diagonal is the accuracy.
    let matrix: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    let total: u64 = matrix.iter().flatten().sum();
    let diagonal: u64 = (0..matrix.len()).map(|i| matrix[i][i]).sum();
    assert_eq!(total, 300);
    assert!((diagonal as f64 / 300.0 - v["test_acc"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(v["per_class_acc"].as_object().unwrap().len(), 10);
    let (a, b) = (v["test_acc"].as_f64().unwrap(), lines[1]["test_acc"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-6, "eval {a} vs train's last epoch {b}");

    // --init-from continues from the saved weights: its first epoch starts better than scratch.
    let m2 = dir.join("m2.jsonl");
    let o = steepest(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--limit-train",
        "1500",
        "--limit-test",
        "300",
        "--model",
        "mlp:32",
        "--init-from",
        w.to_str().unwrap(),
        "--metrics",
        m2.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let resumed: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&m2).unwrap().trim()).unwrap();
    assert!(resumed["train_loss"].as_f64() < lines[0]["train_loss"].as_f64());
}

#[test]
fn gpu_training_runs_from_the_command_line() {
    if common::gpu().is_none() {
        return;
    }
    let (out, err) = run_ok(&[
        "train",
        "--device",
        "gpu",
        "--epochs",
        "1",
        "--limit-train",
        "1000",
        "--limit-test",
        "200",
        "--model",
        "mlp:32",
    ]);
    assert!(err.contains("device: gpu"), "{err}");
    assert!(out.contains("epoch 1/1"), "{out}");
}

#[test]
fn a_model_too_big_for_the_gpu_names_the_limit() {
    if common::gpu().is_none() {
        return;
    }
    // 12,000 samples × 4096 activations × 4 bytes = 196 MB in one buffer: over lavapipe's
    // 128 MiB max_storage_buffer_binding_size (real GPUs allow more: then it trains).
    let o = steepest(&[
        "train",
        "--device",
        "gpu",
        "--model",
        "mlp:4096",
        "--batch-size",
        "12000",
        "--epochs",
        "1",
        "--limit-test",
        "10",
    ]);
    if !o.status.success() {
        assert_clean_error(&o, &["max_storage_buffer_binding_size", "--batch-size"]);
    }
}

#[test]
fn devices_lists_or_says_none() {
    // Probing every backend (GL through EGL included) prints nothing that looks like an error,
    // even without a display or XDG_RUNTIME_DIR.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_steepest"))
        .arg("devices")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("backend") || out.contains("no GPU adapter"), "{out}");
    assert!(!err.contains("error"), "stderr: {err}");
}

/// `--device gpu` on a software adapter warns that the CPU is the faster choice.
#[test]
fn a_software_adapter_is_named_slower_than_the_cpu() {
    if common::gpu().is_none() {
        return;
    }
    let o = steepest(&[
        "train",
        "--device",
        "gpu",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
    ]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let software = err.contains("(Vulkan, Cpu)") || err.contains("(Gl, Cpu)");
    assert_eq!(software, err.contains("slower than --device cpu"), "{err}");
}

#[test]
fn bench_prints_json_with_both_sides() {
    let (out, _) = run_ok(&["bench", "--device", "cpu", "--sizes", "32,33", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["matmul"].as_array().unwrap().len(), 2);
    assert!(v["matmul"][0]["cpu_gflops"].as_f64().unwrap() > 0.0);
    let training = v["training"].as_array().unwrap();
    assert_eq!(training.len(), 2, "an MLP row and a CNN row");
    assert_eq!(
        (training[0]["name"].as_str(), training[1]["name"].as_str()),
        (Some("mlp"), Some("lenet"))
    );
    assert!(training.iter().all(|t| t["cpu_samples_per_sec"].as_f64().unwrap() > 0.0));
    // The CIFAR ResNet trains on 3x32x32 images.
    let (out, _) =
        run_ok(&["bench", "--device", "cpu", "--sizes", "32", "--models", "resnet8", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let row = &v["training"][0];
    assert_eq!(
        (row["name"].as_str(), row["input"].clone()),
        (Some("resnet8"), serde_json::json!([3, 32, 32]))
    );
    assert!(row["cpu_samples_per_sec"].as_f64().unwrap() > 0.0);
    let o = steepest(&["bench", "--device", "cpu", "--models", "resnet"]);
    assert_clean_error(&o, &["--models", "resnet"]);
}

#[test]
fn idx_folder_trains_and_bad_files_are_named() {
    let dir = temp("idx");
    write_idx(&dir);
    let d = dir.to_str().unwrap();
    let o = steepest(&[
        "train",
        "--dataset",
        "idx",
        "--data-dir",
        d,
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));

    // Wrong magic: a labels file where images belong.
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_labels(&[1, 2, 3])).unwrap();
    let o = steepest(&["train", "--dataset", "idx", "--data-dir", d, "--device", "cpu"]);
    assert_clean_error(&o, &["train-images-idx3-ubyte", "magic"]);

    // Truncated data.
    let mut short = idx_images(20, 4, 4, 9);
    short.truncate(100);
    std::fs::write(dir.join("train-images-idx3-ubyte"), short).unwrap();
    let o = steepest(&["train", "--dataset", "idx", "--data-dir", d, "--device", "cpu"]);
    assert_clean_error(&o, &["train-images-idx3-ubyte"]);

    // Image and label counts differ.
    std::fs::write(dir.join("train-images-idx3-ubyte"), idx_images(19, 4, 4, 9)).unwrap();
    let o = steepest(&["train", "--dataset", "idx", "--data-dir", d, "--device", "cpu"]);
    assert_clean_error(&o, &["train-images-idx3-ubyte", "19", "20"]);

    // Missing file.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    write_idx(&dir);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let o = steepest(&["train", "--dataset", "idx", "--data-dir", d, "--device", "cpu"]);
    assert_clean_error(&o, &["t10k-labels-idx1-ubyte"]);

    // No folder at all.
    let o = steepest(&["train", "--dataset", "mnist", "--device", "cpu"]);
    assert_clean_error(&o, &["--data-dir"]);
}

#[test]
fn unknown_option_values_are_named() {
    for (args, needle) in [
        (&["train", "--optimizer", "adamax"][..], "--optimizer"),
        (&["train", "--model", "mlp:25x6"][..], "--model"),
        (&["train", "--model", "cnn"][..], "--model"),
        (&["train", "--schedule", "cosin"][..], "--schedule"),
        (&["train", "--device", "tpu"][..], "--device"),
        (&["train", "--dataset", "imagenet"][..], "--dataset"),
        (&["train", "--batch-size", "0"][..], "--batch-size"),
        (&["train", "--lr", "-1"][..], "--lr"),
        (&["train", "--epochs", "many"][..], "--epochs"),
        (&["bench", "--device", "tpu"][..], "--device"),
    ] {
        let o = steepest(args);
        assert_clean_error(&o, &[needle]);
    }
}

#[test]
fn device_gpu_without_an_adapter_is_an_error() {
    // WGPU_BACKEND limits wgpu to one API; Metal exists on no Linux machine, so no adapter.
    if cfg!(target_os = "macos") {
        return;
    }
    let o =
        steepest_env(&["train", "--device", "gpu", "--epochs", "1"], &[("WGPU_BACKEND", "metal")]);
    assert_clean_error(&o, &["--device", "no adapter"]);
    // auto falls back to the CPU with a notice instead.
    let o = steepest_env(
        &["train", "--device", "auto", "--epochs", "1", "--limit-train", "300"],
        &[("WGPU_BACKEND", "metal")],
    );
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("device: cpu") && err.contains("note:"), "{err}");
}

#[test]
fn checkpoints_that_do_not_fit_are_named() {
    let dir = temp("ckpt");
    let w = dir.join("small.safetensors");
    let o = steepest(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--limit-train",
        "300",
        "--model",
        "mlp:16",
        "--save",
        w.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = steepest(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--model",
        "mlp:32",
        "--init-from",
        w.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["small.safetensors", "holds model mlp:16", "--model says mlp:32"]);

    // An IDX data set of 4×4 images does not fit a 28×28 checkpoint.
    let idx = temp("ckpt-idx");
    write_idx(&idx);
    let o = steepest(&[
        "eval",
        "--weights",
        w.to_str().unwrap(),
        "--dataset",
        "idx",
        "--data-dir",
        idx.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_error(&o, &["small.safetensors", "28"]);

    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"nope").unwrap();
    let o = steepest(&["eval", "--weights", junk.to_str().unwrap(), "--device", "cpu"]);
    assert_clean_error(&o, &["junk.safetensors"]);
    let o = steepest(&[
        "eval",
        "--weights",
        dir.join("absent.safetensors").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_clean_error(&o, &["absent.safetensors"]);

    // Saving into a folder that does not exist fails before training, leaving nothing behind.
    let nowhere = dir.join("no/such/dir/w.safetensors");
    let o = steepest(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--limit-train",
        "300",
        "--save",
        nowhere.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["w.safetensors"]);
    assert!(!nowhere.exists());
}

#[test]
fn normalize_and_augment_flags() {
    let dir = temp("norm");
    let w = dir.join("n.safetensors");
    let (out, _) = run_ok(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--limit-train",
        "500",
        "--limit-test",
        "100",
        "--model",
        "mlp:16",
        "--normalize",
        "auto",
        "--augment",
        "crop:2,flip",
        "--label-smoothing",
        "0.1",
        "--tta",
        "flip",
        "--metrics",
        dir.join("m.jsonl").to_str().unwrap(),
        "--save",
        w.to_str().unwrap(),
    ]);
    assert!(out.contains("normalize: mean") && out.contains("augment: crop:2,flip"), "{out}");
    assert!(out.contains("label smoothing 0.1"), "{out}");
    assert!(out.contains("test-time augmentation: flip"), "{out}");
    // eval applies the stored normalisation and test-time flips by itself: the last epoch's
    // test numbers, which flips change.
    let metrics = std::fs::read_to_string(dir.join("m.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let eval = |tta: &[&str]| {
        let weights = w.to_str().unwrap();
        let base = ["eval", "--weights", weights, "--device", "cpu", "--limit-test", "100"];
        let o = steepest(&[&base[..], tta, &["--json"]].concat());
        assert!(o.status.success(), "{:?}", text(&o));
        let v: serde_json::Value = serde_json::from_str(text(&o).0.trim()).unwrap();
        (v, text(&o).1)
    };
    let (flipped, said) = eval(&[]);
    assert!(said.contains("--tta flip (from"), "{said}");
    assert_eq!(flipped["test_acc"], last["test_acc"], "{flipped} vs {last}");
    let (loss, want) =
        (flipped["test_loss"].as_f64().unwrap(), last["test_loss"].as_f64().unwrap());
    assert!((loss - want).abs() <= 1e-6 * want, "{loss} vs {want}");
    let (plain, _) = eval(&["--tta", "none"]);
    assert_ne!(plain["test_loss"], flipped["test_loss"]);
    // The run's flags carry both, for --resume and `inspect --config`.
    let (config, _) = run_ok(&["inspect", w.to_str().unwrap(), "--config"]);
    assert!(
        config.contains("label-smoothing = 0.1") && config.contains("tta = \"flip\""),
        "{config}"
    );
    for (flag, value) in [
        ("--normalize", "0.5"),
        ("--normalize", "x,y"),
        ("--augment", "rotate"),
        ("--normalize", "0.5,0"),
        ("--tta", "mirror"),
        ("--label-smoothing", "1.5"),
        ("--label-smoothing", "NaN"),
    ] {
        let o = steepest(&[
            "train",
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--limit-train",
            "100",
            flag,
            value,
        ]);
        assert_clean_error(&o, &[flag]);
    }
}

#[test]
fn model_help_summary_and_typos() {
    let o = steepest(&["train", "--model", "help"]);
    let (out, _) = text(&o);
    assert!(o.status.success() && out.contains("lenet") && out.contains("conv:OUT:K"), "{out}");

    let (out, _) = run_ok(&[
        "train",
        "--device",
        "cpu",
        "--model",
        "conv:4:5,relu,maxpool:2,flatten,linear",
        "--epochs",
        "1",
        "--limit-train",
        "200",
        "--limit-test",
        "50",
    ]);
    assert!(
        out.contains("maxpool:2")
            && out.contains("4x12x12")
            && out.contains("total parameters: 5874"),
        "{out}"
    );

    let o = steepest(&["train", "--model", "conv:4:5,relu,maxpol:2,flatten,linear"]);
    assert_clean_error(&o, &["--model", "item 3", "maxpol", "presets"]);
}

fn cifar_batch(records: usize, label_of: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut v = Vec::new();
    for r in 0..records {
        v.push(label_of(r));
        v.extend((0..3072).map(|i| ((i * 7 + r * 13) % 256) as u8));
    }
    v
}

#[test]
fn cifar_folder_trains_cifar_cnn_and_bad_batches_are_named() {
    let dir = temp("cifar");
    std::fs::write(dir.join("data_batch_1.bin"), cifar_batch(12, |r| (r % 10) as u8)).unwrap();
    std::fs::write(dir.join("data_batch_2.bin"), cifar_batch(8, |r| (r % 3) as u8)).unwrap();
    std::fs::write(dir.join("test_batch.bin"), cifar_batch(6, |r| (r % 10) as u8)).unwrap();
    let d = dir.to_str().unwrap();
    let (out, _) = run_ok(&[
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        d,
        "--device",
        "cpu",
        "--model",
        "cifar-cnn",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--normalize",
        "auto",
        "--augment",
        "crop:4,flip",
    ]);
    assert!(out.contains("20 train, 6 test, 3x32x32"), "{out}");

    // A file cut mid-record, and a label byte above 9.
    let mut cut = cifar_batch(2, |_| 1);
    cut.truncate(3073 + 100);
    std::fs::write(dir.join("data_batch_2.bin"), cut).unwrap();
    let o = steepest(&["train", "--dataset", "cifar10", "--data-dir", d, "--device", "cpu"]);
    assert_clean_error(&o, &["data_batch_2.bin", "3073"]);
    std::fs::write(dir.join("data_batch_2.bin"), cifar_batch(3, |r| if r == 2 { 42 } else { 0 }))
        .unwrap();
    let o = steepest(&["train", "--dataset", "cifar10", "--data-dir", d, "--device", "cpu"]);
    assert_clean_error(&o, &["data_batch_2.bin", "42"]);
}

/// A diverging run stops with an error naming the epoch, the steps and the learning rate, exits
/// non-zero, and writes no checkpoint of NaNs; a NaN normalisation is refused before training.
#[test]
fn a_diverging_run_stops_and_saves_no_nan_checkpoint() {
    let dir = temp("diverge");
    let save = dir.join("w.safetensors");
    let metrics = dir.join("m.jsonl");
    let o = steepest(&[
        "train",
        "--device",
        "cpu",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--epochs",
        "3",
        "--limit-train",
        "512",
        "--limit-test",
        "64",
        "--save",
        save.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["training diverged", "epoch 1", "steps 1..=4", "--lr"]);
    assert!(!save.exists(), "a checkpoint of a diverged run was written");
    assert_eq!(std::fs::read_to_string(&metrics).unwrap_or_default(), "", "no epoch finished");

    let o = steepest(&["train", "--device", "cpu", "--epochs", "1", "--normalize", "nan,1"]);
    assert_clean_error(&o, &["--normalize", "mean NaN"]);
    let o = steepest(&["train", "--device", "cpu", "--epochs", "1", "--normalize", "0.5,1e-45"]);
    assert_clean_error(&o, &["--normalize", "standard deviation"]);
}

/// `--metrics` has one JSON line per epoch, in order (each is written and flushed as its epoch
/// ends).
#[test]
fn metrics_file_has_one_line_per_epoch() {
    let dir = temp("metrics-per-epoch");
    let metrics = dir.join("m.jsonl");
    run_ok(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let epochs: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2]);

    // --log-every adds the running loss every N steps; every line names its run, and a second
    // run appended to the same file has another id.
    run_ok(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "64",
        "--batch-size",
        "32",
        "--log-every",
        "3",
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let runs: std::collections::BTreeSet<&str> =
        lines.iter().map(|l| l["run"].as_str().unwrap()).collect();
    assert_eq!(runs.len(), 2, "{lines:?}");
    let second: Vec<&serde_json::Value> = lines[2..].iter().collect();
    let steps: Vec<u64> = second
        .iter()
        .filter(|l| l["kind"] == "step")
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [3, 6], "8 steps, a line every 3");
    assert!(second.iter().all(|l| l["train_loss"].as_f64().unwrap().is_finite()));
    assert_eq!(second.last().unwrap()["kind"], "epoch");
}

/// Values that used to panic, abort or quietly mean something else are clear errors before any
/// large allocation; a batch far larger than the data set just trains.
#[test]
fn oversized_and_out_of_range_values_are_clear_errors() {
    let base =
        ["train", "--device", "cpu", "--epochs", "1", "--limit-train", "256", "--limit-test", "64"];
    let with = |extra: &[&str]| steepest(&[&base[..], extra].concat());
    assert_clean_error(
        &with(&["--model", "linear:18446744073709551615,linear"]),
        &["--model", "more memory than can be counted"],
    );
    assert_clean_error(&with(&["--augment", "crop:1000000"]), &["--augment", "padding below 28"]);
    assert_clean_error(
        &with(&["--augment", "crop:18446744073709551615"]),
        &["--augment", "padding below 28"],
    );
    assert_clean_error(&with(&["--lr", "-inf"]), &["--lr", "-inf is out of range"]);
    let dir = temp("save-onto-folder");
    assert_clean_error(
        &with(&["--save", dir.to_str().unwrap()]),
        &["--save", "not a regular file"],
    );
    assert!(dir.is_dir(), "the folder is still there");
    run_ok(&[&base[..], &["--batch-size", "1000000000"]].concat());
}

/// Special files are refused at once instead of being read forever (`/dev/zero`).
#[cfg(unix)]
#[test]
fn a_device_as_a_checkpoint_is_refused() {
    assert_clean_error(
        &steepest(&["eval", "--weights", "/dev/zero", "--device", "cpu"]),
        &["/dev/zero", "not a regular file"],
    );
}

/// Fine-tuning from a checkpoint trained on normalised inputs keeps that normalisation and says
/// so, instead of silently feeding raw pixels to weights that never saw them.
#[test]
fn init_from_takes_the_checkpoints_normalisation() {
    let dir = temp("init-norm");
    let first = dir.join("first.safetensors");
    let base =
        ["train", "--device", "cpu", "--epochs", "1", "--limit-train", "256", "--limit-test", "64"];
    run_ok(&[&base[..], &["--normalize", "0.25,0.5", "--save", first.to_str().unwrap()]].concat());
    let (_, err) = run_ok(&[&base[..], &["--init-from", first.to_str().unwrap()]].concat());
    assert!(
        err.contains("normalising inputs as it was trained") && err.contains("[0.25]"),
        "{err}"
    );
}

/// The first Ctrl-C lets the step finish, keeps the finished epochs' metrics and saves the
/// weights, and exits 130.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_after_the_step_and_saves() {
    let dir = temp("sigint");
    let save = dir.join("w.safetensors");
    let metrics = dir.join("m.jsonl");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_steepest"))
        .args([
            "train",
            "--device",
            "cpu",
            "--epochs",
            "100000",
            "--limit-train",
            "512",
            "--limit-test",
            "64",
            "--quiet",
            "--save",
            save.to_str().unwrap(),
            "--metrics",
            metrics.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a finished epoch (at most a minute), then press Ctrl-C once.
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).unwrap_or_default().lines().count() < 1 {
        assert!(started.elapsed().as_secs() < 60, "no epoch finished");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted after step") && err.contains("saved the weights"), "{err}");
    let ckpt = steepest::checkpoint::load(&save).unwrap();
    assert!(ckpt.tensors.iter().all(|(_, _, v)| v.iter().all(|x| x.is_finite())));
    assert!(std::fs::read_to_string(&metrics).unwrap().lines().count() >= 1);
    // The optimizer state and the position went beside the weights, and the run continues.
    let r = steepest::checkpoint::load(&dir.join("w.resume.safetensors")).unwrap();
    let p = r.meta.progress.expect("progress in the resume file");
    assert!(p.epoch >= 1 && p.step >= 4 * p.epoch, "{p:?}");
    let (out, _) = run_ok(&[
        "train",
        "--resume",
        save.to_str().unwrap(),
        "--epochs",
        &(p.epoch + 1).to_string(),
    ]);
    assert!(out.contains("resuming") && out.contains(&format!("epoch {}/", p.epoch + 1)), "{out}");
}

/// A mistyped kernel override is an error naming the variable, not silently ignored.
#[test]
fn an_unknown_steepest_matmul_is_an_error() {
    if common::gpu().is_none() {
        return;
    }
    let o = steepest_env(
        &["bench", "--device", "gpu", "--sizes", "64", "--models", "none"],
        &[("STEEPEST_MATMUL", "fast")],
    );
    assert_clean_error(&o, &["STEEPEST_MATMUL", "tiled, register or wide"]);
}

/// `--save-best` keeps the best epoch's weights (those `--save-every 1` kept of that epoch, and
/// `eval` reproduces its accuracy); `--early-stop` ends a run that stopped improving; both are
/// in the metrics and in the `--json` summary.
#[test]
fn save_best_and_early_stop() {
    let dir = temp("save-best");
    let (w, m) = (dir.join("w.safetensors"), dir.join("m.jsonl"));
    let base = ["train", "--device", "cpu", "--limit-train", "1000", "--limit-test", "200"];
    let (out, _) = run_ok(
        &[
            &base[..],
            &[
                "--epochs",
                "5",
                "--optimizer",
                "sgd",
                "--lr",
                "0.3",
                "--save-best",
                "--save-every",
                "1",
            ],
            &["--save", w.to_str().unwrap(), "--metrics", m.to_str().unwrap(), "--json"],
        ]
        .concat(),
    );
    let summary: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let accs: Vec<f64> = lines.iter().map(|l| l["test_acc"].as_f64().unwrap()).collect();
    let best = 1 + (0..accs.len()).fold(0, |b, i| if accs[i] > accs[b] { i } else { b });
    assert_eq!(summary["best"]["epoch"].as_u64(), Some(best as u64), "{summary}");
    assert_eq!(summary["weights"]["epoch"].as_u64(), Some(best as u64), "{summary}");
    let flagged: Vec<usize> = lines
        .iter()
        .filter(|l| l["best"] == true)
        .map(|l| l["epoch"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(flagged.last(), Some(&best), "{lines:?}");
    let kept = steepest::checkpoint::load(&w).unwrap();
    let of_best =
        steepest::checkpoint::load(&dir.join(format!("w.epoch{best}.safetensors"))).unwrap();
    assert_eq!(kept.tensors, of_best.tensors, "--save holds the best epoch's weights");
    let (eval_out, _) = run_ok(&[
        "eval",
        "--weights",
        w.to_str().unwrap(),
        "--device",
        "cpu",
        "--limit-test",
        "200",
        "--json",
    ]);
    let eval: serde_json::Value = serde_json::from_str(eval_out.trim()).unwrap();
    let got = eval["test_acc"].as_f64().unwrap();
    assert!((got - accs[best - 1]).abs() < 1e-6, "eval {got} vs best epoch {}", accs[best - 1]);

    // A learning rate of 0 never improves: the run stops after the patience runs out.
    let (out, err) = run_ok(
        &[&base[..], &["--epochs", "10", "--optimizer", "sgd", "--lr", "0", "--early-stop", "2"]]
            .concat(),
    );
    assert!(out.contains("epoch 3/10") && !out.contains("epoch 4/10"), "{out}{err}");
    assert!(out.contains("stopped early: 2 epochs without a better accuracy"), "{out}");
    assert!(
        out.contains("best  epoch   1") && out.contains("not saved (use --save FILE)"),
        "{out}"
    );

    // --quiet prints nothing but errors.
    let o = steepest(&[&base[..], &["--epochs", "1", "--quiet"]].concat());
    let (out, err) = text(&o);
    assert!(
        o.status.success() && out.is_empty() && err.is_empty(),
        "stdout {out:?} stderr {err:?}"
    );
}

/// A checkpoint carries its run: `eval --weights` alone evaluates on the data it was trained
/// on (from any working directory), and `--init-from` takes its model and says what it loaded.
#[test]
fn checkpoints_carry_their_run() {
    let dir = temp("carry");
    let data = dir.join("digits");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data);
    let w = dir.join("w.safetensors");
    let train = |extra: &[&str]| {
        let base = ["train", "--device", "cpu", "--dataset", "idx", "--epochs", "1"];
        let data = ["--data-dir", data.to_str().unwrap()];
        run_ok(&[&base[..], &data[..], extra].concat())
    };
    train(&["--model", "mlp:12", "--save", w.to_str().unwrap()]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_steepest"))
        .args(["eval", "--weights", w.to_str().unwrap(), "--device", "cpu"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("--dataset idx --data-dir") && err.contains("(from "), "{err}");
    assert!(out.contains("on idx test (10 samples)"), "{out}");
    // The columns of the confusion matrix are the class names.
    let header = out.lines().skip_while(|l| !l.starts_with("confusion")).nth(1).unwrap();
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert!(header.split_whitespace().eq(names.iter().map(String::as_str)), "{header:?}");

    let (_, err) = train(&["--init-from", w.to_str().unwrap()]);
    assert!(err.contains("loaded 4 tensors") && err.contains("of model mlp:12"), "{err}");
    let o = steepest(&[
        "train",
        "--device",
        "cpu",
        "--dataset",
        "idx",
        "--data-dir",
        data.to_str().unwrap(),
        "--init-from",
        w.to_str().unwrap(),
        "--model",
        "mlp:64",
    ]);
    assert_clean_error(&o, &["w.safetensors", "holds model mlp:12", "--model says mlp:64"]);
}

/// `train --config run.toml`: every flag as a key (either spelling), the command line wins,
/// mistakes name the file and key; `inspect` shows what a checkpoint holds and writes its flags
/// back as a config that trains again.
#[test]
fn config_files_and_inspect() {
    let dir = temp("config");
    let (cfg, w) = (dir.join("run.toml"), dir.join("w.safetensors"));
    std::fs::write(
        &cfg,
        "epochs = 2\nbatch-size = 64\nmodel = \"mlp:8\"\nlimit_train = 256\nlimit-test = 64\n\
         device = \"cpu\"\nlr = 0.02\n",
    )
    .unwrap();
    let (out, err) = run_ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--epochs",
        "1",
        "--save",
        w.to_str().unwrap(),
    ]);
    assert!(
        out.contains("model: mlp:8") && out.contains("batch 64") && out.contains("lr 0.02"),
        "{out}"
    );
    assert!(out.contains("epoch 1/1") && err.contains("--epochs 1 (not 2 as in"), "{out}{err}");

    let (out, _) = run_ok(&["inspect", w.to_str().unwrap()]);
    assert!(
        out.contains("model: mlp:8") && out.contains("0.weight") && out.contains("[8, 784]"),
        "{out}"
    );
    assert!(out.contains("limit-train = 256"), "{out}");
    let (json, _) = run_ok(&["inspect", "--json", w.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["config"]["batch_size"], 64);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 4);
    let (again, _) = run_ok(&["inspect", "--config", w.to_str().unwrap()]);
    let again_path = dir.join("again.toml");
    std::fs::write(&again_path, again).unwrap();
    let (out, _) = run_ok(&[
        "train",
        "--config",
        again_path.to_str().unwrap(),
        "--save",
        dir.join("w2.safetensors").to_str().unwrap(),
    ]);
    assert!(out.contains("model: mlp:8") && out.contains("epoch 1/1"), "{out}");

    for (text, needles) in [
        ("epoch = 3\n", &["bad.toml", "unknown key \"epoch\"", "epochs"][..]),
        ("epochs = \"three\"\n", &["bad.toml", "epochs", "expected usize"][..]),
        ("epochs = [\n", &["bad.toml", "not valid TOML"][..]),
    ] {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        assert_clean_error(&steepest(&["train", "--config", bad.to_str().unwrap()]), needles);
    }
}

/// `--classes` keeps a subset of the classes (names or indices), relabelled in the order given;
/// eval of such a checkpoint evaluates on the same subset.
#[test]
fn classes_subset() {
    let dir = temp("classes");
    let data = dir.join("d");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data);
    let w = dir.join("w.safetensors");
    let base =
        ["train", "--device", "cpu", "--dataset", "idx", "--data-dir", data.to_str().unwrap()];
    let (out, _) = run_ok(
        &[&base[..], &["--classes", "2,0", "--epochs", "1", "--save", w.to_str().unwrap()]]
            .concat(),
    );
    // write_idx labels i % 3: 20 train samples → 7 of class 0 and 6 of class 2; 10 test → 4 + 3.
    assert!(out.contains("(13 train, 7 test, 1x4x4, 2 classes)"), "{out}");
    let ckpt = steepest::checkpoint::load(&w).unwrap();
    assert_eq!(ckpt.meta.class_names.unwrap(), ["2", "0"]);
    let (out, err) = run_ok(&["eval", "--weights", w.to_str().unwrap(), "--device", "cpu"]);
    assert!(err.contains("--classes 2,0") && out.contains("(7 samples)"), "{out}{err}");
    for (list, needles) in [
        ("2,zebra", &["--classes", "\"zebra\" is not a class", "0, 1, 2"][..]),
        ("1,1", &["--classes", "listed twice"][..]),
        ("1", &["--classes", "at least 2"][..]),
    ] {
        let o = steepest(&[&base[..], &["--classes", list]].concat());
        assert_clean_error(&o, needles);
    }
}

/// `steepest plot` draws every run of a metrics file (one colour each, named in the legend);
/// `train --plot` draws at the end; lines from before run ids split where the epochs restart.
#[test]
fn plot_draws_each_run() {
    let dir = temp("plot");
    let (m, svg) = (dir.join("m.jsonl"), dir.join("curves.svg"));
    let base =
        ["train", "--device", "cpu", "--epochs", "3", "--limit-train", "300", "--limit-test", "60"];
    run_ok(&[&base[..], &["--metrics", m.to_str().unwrap(), "--quiet"]].concat());
    let (out, _) = run_ok(
        &[&base[..], &["--metrics", m.to_str().unwrap(), "--plot", svg.to_str().unwrap()]].concat(),
    );
    assert!(out.contains(&format!("plot: {}", svg.display())), "{out}");
    let drawn = std::fs::read_to_string(&svg).unwrap();
    let runs: std::collections::BTreeSet<String> = std::fs::read_to_string(&m)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["run"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(runs.len(), 2);
    for id in &runs {
        // Each run is in both panels' legends, train and test.
        assert_eq!(drawn.matches(&format!("{id} train")).count(), 2, "{id}");
        assert_eq!(drawn.matches(&format!("{id} test")).count(), 2, "{id}");
    }

    // Old lines without run ids; the default output name.
    let old = dir.join("old.jsonl");
    let line = |e: u32| format!("{{\"epoch\":{e},\"train_loss\":1.0,\"train_acc\":0.5}}\n");
    std::fs::write(&old, [line(1), line(2), line(1), line(2), line(3)].concat()).unwrap();
    let (out, _) = run_ok(&["plot", old.to_str().unwrap()]);
    assert!(out.contains("old.svg (2 runs)"), "{out}");
    assert!(std::fs::read_to_string(dir.join("old.svg")).unwrap().contains("run 2 train"));

    std::fs::write(&old, "{\"epoch\":1,\"train_loss\":1.0,\"train_acc\":0.5}\nnot json\n").unwrap();
    assert_clean_error(&steepest(&["plot", old.to_str().unwrap()]), &["old.jsonl", "line 2"]);
    let png = dir.join("c.png");
    assert_clean_error(
        &steepest(&["plot", m.to_str().unwrap(), "-o", png.to_str().unwrap()]),
        &["c.png", ".svg"],
    );
}

/// The learning-rate range test: rates rise exponentially, the suggestion is a tenth of the
/// rate with the lowest (smoothed) loss, which is below where the curve started; `--lr auto`
/// trains with that rate and stores it as a number.
#[test]
fn lr_find_and_lr_auto() {
    let dir = temp("lr-find");
    let svg = dir.join("lr.svg");
    let base = ["--device", "cpu", "--limit-train", "2000", "--limit-test", "200"];
    let (out, _) = run_ok(
        &[&["lr-find"][..], &base[..], &["--json", "--plot", svg.to_str().unwrap()]].concat(),
    );
    let f: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let lrs: Vec<f64> = f["lrs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let smoothed: Vec<f64> =
        f["smoothed"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(lrs.len() >= 10 && lrs.len() <= 100 && (lrs[0] - 1e-7).abs() < 1e-12, "{lrs:?}");
    let ratio = lrs[1] / lrs[0];
    assert!(
        lrs.windows(2).all(|w| (w[1] / w[0] / ratio - 1.0).abs() < 1e-3),
        "exponential: {lrs:?}"
    );
    let at_min = (0..smoothed.len()).fold(0, |b, i| if smoothed[i] < smoothed[b] { i } else { b });
    assert_eq!(f["min_loss_lr"].as_f64(), Some(lrs[at_min]));
    assert!((f["suggested"].as_f64().unwrap() - lrs[at_min] / 10.0).abs() < 1e-9 * lrs[at_min]);
    assert!(smoothed[at_min] < 0.95 * smoothed[0], "the loss fell: {smoothed:?}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("suggested"));

    let w = dir.join("w.safetensors");
    let (out, _) = run_ok(
        &[
            &["train"][..],
            &base[..],
            &["--epochs", "1", "--lr", "auto", "--save", w.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(out.contains("--lr auto: training with lr"), "{out}");
    let cfg = steepest::checkpoint::load(&w).unwrap().meta.config.unwrap();
    assert!(cfg["lr"].as_f64().is_some_and(|lr| lr > 0.0), "{cfg}");

    let o = steepest(&["lr-find", "--device", "cpu", "--start-lr", "1", "--end-lr", "0.1"]);
    assert_clean_error(&o, &["--start-lr", "expected 0 < start < end"]);
    let o = steepest(&["train", "--lr", "fast"]);
    assert!(!o.status.success() && text(&o).1.contains("not a number or auto"));
}

/// Fine-tuning: `--init-from` a checkpoint with other classes loads every layer but the
/// classifier, which starts fresh; `--freeze` leaves the named parameters untouched.
#[test]
fn fine_tune_with_a_new_head_and_frozen_layers() {
    let dir = temp("fine-tune");
    let data = dir.join("d");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data);
    let (base_w, tuned) = (dir.join("base.safetensors"), dir.join("tuned.safetensors"));
    let train =
        ["train", "--device", "cpu", "--dataset", "idx", "--data-dir", data.to_str().unwrap()];
    run_ok(
        &[
            &train[..],
            &[
                "--model",
                "conv:4:3,relu,flatten,linear",
                "--epochs",
                "1",
                "--save",
                base_w.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let (_, err) = run_ok(
        &[
            &train[..],
            &["--classes", "0,1", "--init-from", base_w.to_str().unwrap(), "--freeze", "0."],
            &[
                "--epochs",
                "2",
                "--optimizer",
                "sgd",
                "--lr",
                "0.1",
                "--save",
                tuned.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(err.contains("has other classes") && err.contains("3.weight"), "{err}");
    let (a, b) =
        (steepest::checkpoint::load(&base_w).unwrap(), steepest::checkpoint::load(&tuned).unwrap());
    let get = |c: &steepest::checkpoint::Checkpoint, n: &str| {
        c.tensors.iter().find(|t| t.0 == n).unwrap().clone()
    };
    assert_eq!(get(&a, "0.weight"), get(&b, "0.weight"), "frozen conv unchanged");
    assert_eq!(get(&a, "0.bias"), get(&b, "0.bias"));
    assert_eq!(get(&b, "3.weight").1[0], 2, "a head for 2 classes");
    let o = steepest(&[&train[..], &["--freeze", "9."]].concat());
    assert_clean_error(&o, &["--freeze", "\"9.\" matches no parameter", "0.weight"]);
}

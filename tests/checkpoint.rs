//! Checkpoints: save/load round trip with identical predictions, PyTorch state_dict names and
//! shapes, loading a file written independently of steepest's save code, and shape errors.

mod common;

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use steepest::backend::Backend;
use steepest::checkpoint::{self, CheckpointMeta};
use steepest::cpu::CpuBackend;
use steepest::data::synthetic;
use steepest::nn::{Model, ModelSpec, Workspace};
use steepest::optim::{OptimizerConfig, OptimizerKind};
use steepest::train::{self, TrainConfig};

fn temp(name: &str) -> common::cli::TempDir {
    common::cli::TempDir::new(&format!("steepest-ckpt-{}-{name}", std::process::id()))
}

fn logits(cpu: &mut CpuBackend, model: &Model<CpuBackend>, pixels: &[u8], rows: usize) -> Vec<f32> {
    let ws = Workspace::new(cpu, model, rows).unwrap();
    ws.load_batch(cpu, pixels, &vec![0; rows]);
    model.forward(cpu, &ws, rows, steepest::nn::Mode::Eval);
    cpu.read(ws.logits(), rows * model.num_classes).unwrap()
}

#[test]
fn save_then_load_gives_identical_predictions_and_pytorch_names() {
    let data = synthetic::generate(1, 600, 100);
    let mut cpu = CpuBackend::new();
    let spec = ModelSpec::mlp(&[32, 16]);
    let model = Model::new(&mut cpu, &spec, 784, 10, 3).unwrap();
    let mut cfg = TrainConfig::new(OptimizerConfig::new(OptimizerKind::Adam));
    cfg.epochs = 1;
    train::train(&mut cpu, &model, &data, &cfg, &mut train::Silent).unwrap();

    let path_dir = temp("roundtrip");

    let path = path_dir.join("w.safetensors");
    let meta = CheckpointMeta {
        model: Some(spec.clone()),
        input_shape: Some([1, 28, 28]),
        class_names: Some(data.class_names.clone()),
        dataset: Some("synthetic".into()),
        version: None,
        normalization: Some((vec![0.25], vec![0.5])),
        ..Default::default()
    };
    checkpoint::save(&path, &model.export(&mut cpu).unwrap(), &meta).unwrap();

    let loaded = checkpoint::load(&path).unwrap();
    let names: Vec<(String, Vec<usize>)> =
        loaded.tensors.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    let want = [
        ("0.weight", vec![32, 784]),
        ("0.bias", vec![32]),
        ("2.weight", vec![16, 32]),
        ("2.bias", vec![16]),
        ("4.weight", vec![10, 16]),
        ("4.bias", vec![10]),
    ];
    assert_eq!(names, want.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());
    assert_eq!(loaded.meta.model, Some(spec.clone()));
    assert_eq!(loaded.meta.input_shape, Some([1, 28, 28]));
    assert_eq!(loaded.meta.class_names, Some(data.class_names.clone()));
    assert_eq!(loaded.meta.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(loaded.meta.normalization, Some((vec![0.25], vec![0.5])));

    let fresh = Model::new(&mut cpu, &spec, 784, 10, 99).unwrap();
    let pixels = &data.test.images().unwrap()[..50 * 784];
    assert_ne!(logits(&mut cpu, &fresh, pixels, 50), logits(&mut cpu, &model, pixels, 50));
    fresh.import(&mut cpu, &loaded.tensors, "w.safetensors").unwrap();
    assert_eq!(logits(&mut cpu, &fresh, pixels, 50), logits(&mut cpu, &model, pixels, 50));
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left beside the checkpoint: {leftovers:?}");
}

/// A file written with the safetensors crate alone, as PyTorch's `save_file(model.state_dict())`
/// would write it (no steepest metadata): loads by name, and the MLP shape is inferred.
#[test]
fn a_file_written_elsewhere_loads_by_state_dict_name() {
    let (w0, b0, w2, b2): (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) = (
        (0..8 * 784).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect(),
        (0..8).map(|i| i as f32 * 0.1).collect(),
        (0..10 * 8).map(|i| (i % 7) as f32 * 0.02 - 0.06).collect(),
        (0..10).map(|i| -(i as f32) * 0.05).collect(),
    );
    let bytes = |v: &Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (bw0, bb0, bw2, bb2) = (bytes(&w0), bytes(&b0), bytes(&w2), bytes(&b2));
    // PyTorch writes tensors in its own order; keys here are deliberately not in model order.
    let tensors = vec![
        ("2.bias", TensorView::new(Dtype::F32, vec![10], &bb2).unwrap()),
        ("0.weight", TensorView::new(Dtype::F32, vec![8, 784], &bw0).unwrap()),
        ("2.weight", TensorView::new(Dtype::F32, vec![10, 8], &bw2).unwrap()),
        ("0.bias", TensorView::new(Dtype::F32, vec![8], &bb0).unwrap()),
    ];
    let mut info = HashMap::new();
    info.insert("format".to_string(), "pt".to_string());
    let path_dir = temp("foreign");
    let path = path_dir.join("torch.safetensors");
    std::fs::write(&path, safetensors::tensor::serialize(tensors, Some(info)).unwrap()).unwrap();

    let ckpt = checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.meta.model, None);
    let (spec, inputs, classes) = checkpoint::infer_mlp(&ckpt.tensors, &path).unwrap();
    assert_eq!((spec.to_string(), inputs, classes), ("mlp:8".to_string(), 784, 10));

    let mut cpu = CpuBackend::new();
    let model = Model::new(&mut cpu, &spec, 784, 10, 0).unwrap();
    model.import(&mut cpu, &ckpt.tensors, "torch.safetensors").unwrap();
    let got = model.export(&mut cpu).unwrap();
    assert_eq!(got[0].2, w0);
    assert_eq!(got[1].2, b0);
    assert_eq!(got[2].2, w2);
    assert_eq!(got[3].2, b2);
}

#[test]
fn shapes_that_do_not_fit_the_model_are_named() {
    let mut cpu = CpuBackend::new();
    let small = Model::new(&mut cpu, &ModelSpec::mlp(&[16]), 784, 10, 0).unwrap();
    let tensors = small.export(&mut cpu).unwrap();
    let big = Model::new(&mut cpu, &ModelSpec::mlp(&[32]), 784, 10, 0).unwrap();
    let err = big.import(&mut cpu, &tensors, "small.safetensors").unwrap_err().to_string();
    assert!(
        err.contains("small.safetensors")
            && err.contains("0.weight")
            && err.contains("[16, 784]")
            && err.contains("[32, 784]"),
        "{err}"
    );

    let linear = Model::new(&mut cpu, &ModelSpec::linear(), 784, 10, 0).unwrap();
    let err = linear.import(&mut cpu, &tensors, "small.safetensors").unwrap_err().to_string();
    assert!(err.contains("0.weight"), "{err}");

    let mut missing = tensors.clone();
    missing.retain(|(n, _, _)| n != "2.bias");
    let err = small.import(&mut cpu, &missing, "m.safetensors").unwrap_err().to_string();
    assert!(err.contains("2.bias") && err.contains("missing"), "{err}");
}

#[test]
fn garbage_is_not_a_checkpoint() {
    let path_dir = temp("garbage");
    let path = path_dir.join("junk.safetensors");
    std::fs::write(&path, b"definitely not safetensors").unwrap();
    let err = checkpoint::load(&path).err().unwrap().to_string();
    assert!(err.contains("junk.safetensors") && err.contains("safetensors"), "{err}");
    let err =
        checkpoint::load(&path.with_file_name("absent.safetensors")).err().unwrap().to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

/// Batch norm's running statistics and `num_batches_tracked` (an int64 scalar, as PyTorch
/// writes it) travel with the weights, and eval-mode predictions survive the round trip.
#[test]
fn batchnorm_state_round_trips_with_pytorch_names() {
    let data = synthetic::generate(2, 300, 50);
    let mut cpu = CpuBackend::new();
    let spec: ModelSpec =
        "conv:4:3:nobias,bn,relu,maxpool:2,flatten,dropout:0.2,linear".parse().unwrap();
    let model = Model::new(&mut cpu, &spec, data.input_shape(), 10, 3).unwrap();
    let mut cfg = TrainConfig::new(OptimizerConfig::new(OptimizerKind::Adam));
    cfg.epochs = 1;
    train::train(&mut cpu, &model, &data, &cfg, &mut train::Silent).unwrap();
    let tensors = model.export(&mut cpu).unwrap();
    let names: Vec<(&str, Vec<usize>)> =
        tensors.iter().map(|(n, s, _)| (n.as_str(), s.clone())).collect();
    assert_eq!(
        names,
        vec![
            ("0.weight", vec![4, 1, 3, 3]),
            ("1.weight", vec![4]),
            ("1.bias", vec![4]),
            ("1.running_mean", vec![4]),
            ("1.running_var", vec![4]),
            ("1.num_batches_tracked", vec![]),
            ("6.weight", vec![10, 676]),
            ("6.bias", vec![10]),
        ]
    );
    // 300 samples in batches of 128: 3 training steps.
    assert_eq!(tensors[5].2, vec![3.0]);
    assert!(tensors[3].2.iter().any(|&v| v != 0.0), "running mean moved");

    let path_dir = temp("bn");

    let path = path_dir.join("bn.safetensors");
    checkpoint::save(
        &path,
        &tensors,
        &CheckpointMeta { model: Some(spec.clone()), ..Default::default() },
    )
    .unwrap();
    let raw = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    assert_eq!(st.tensor("1.num_batches_tracked").unwrap().dtype(), Dtype::I64);

    let loaded = checkpoint::load(&path).unwrap();
    let fresh = Model::new(&mut cpu, &spec, data.input_shape(), 10, 77).unwrap();
    fresh.import(&mut cpu, &loaded.tensors, "bn.safetensors").unwrap();
    assert_eq!(fresh.export(&mut cpu).unwrap(), tensors);
    let pixels = &data.test.images().unwrap()[..20 * 784];
    assert_eq!(logits(&mut cpu, &fresh, pixels, 20), logits(&mut cpu, &model, pixels, 20));
}

/// A checkpoint with NaN or infinite weights (a diverged run's) is refused by name: `eval` and
/// `predict` would otherwise report argmaxes of NaNs as if they were predictions.
#[test]
fn non_finite_tensors_are_refused_by_name() {
    let good: Vec<u8> = [0.5f32; 10].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut bad_values = [0.25f32; 10];
    bad_values[3] = f32::NAN;
    bad_values[7] = f32::INFINITY;
    let bad: Vec<u8> = bad_values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = vec![
        ("0.bias", TensorView::new(Dtype::F32, vec![10], &good).unwrap()),
        ("0.weight", TensorView::new(Dtype::F32, vec![10, 1], &bad).unwrap()),
    ];
    let path_dir = temp("nan");
    let path = path_dir.join("nan.safetensors");
    std::fs::write(&path, safetensors::tensor::serialize(tensors, None).unwrap()).unwrap();
    let err = checkpoint::load(&path).err().expect("refused").to_string();
    assert!(
        err.contains("\"0.weight\"") && err.contains("2 non-finite") && err.contains("index 3"),
        "{err}"
    );
}

/// Metadata that would divide by zero or allocate terabytes later (an input of 4294967296²
/// pixels) is refused when the file is read, naming the field.
#[test]
fn an_impossible_input_shape_in_metadata_is_refused() {
    let path_dir = temp("shape");
    let path = path_dir.join("w.safetensors");
    let tensors = vec![("0.bias".to_string(), vec![2], vec![0.0f32, 1.0])];
    for shape in [[1, 4_294_967_296, 4_294_967_296], [0, 28, 28], [3, 100_000, 100_000]] {
        let meta = CheckpointMeta { input_shape: Some(shape), ..Default::default() };
        checkpoint::save(&path, &tensors, &meta).unwrap();
        let err = checkpoint::load(&path).err().expect("refused").to_string();
        assert!(err.contains("steepest.input_shape") && err.contains("4096"), "{shape:?}: {err}");
    }
}

/// A save removes the temporary files that killed saves left behind (their process is gone).
#[cfg(target_os = "linux")]
#[test]
fn a_save_removes_stale_temp_files_of_dead_processes() {
    let dir = temp("stale");
    let path = dir.join("w.safetensors");
    // Linux process ids stay below 2^22, so this one is never alive.
    let stale = dir.join(".w.safetensors.999999999.tmp");
    let other = dir.join(".other.safetensors.999999999.tmp");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    std::fs::write(&other, b"someone else's").unwrap();
    let tensors = vec![("0.bias".to_string(), vec![2], vec![0.0f32, 1.0])];
    checkpoint::save(&path, &tensors, &CheckpointMeta::default()).unwrap();
    assert!(!stale.exists(), "the stale temp file is gone");
    assert!(other.exists(), "another file's temp file is left alone");
    assert!(checkpoint::load(&path).is_ok());
}

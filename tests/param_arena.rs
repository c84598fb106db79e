//! A model's parameters live in one arena and their gradients in another (`nn::ParamArena`), so
//! the optimizer updates every parameter in one call: one dispatch on the GPU however many
//! tensors the model has. The update is element-wise, so the one call must give bit for bit what
//! updating tensor by tensor gives, on both backends, and the padding between tensors must stay
//! exactly 0 (a wrong offset or a view past its tensor would move it, or move a neighbour).

mod common;

use common::gpu;
use steepest::backend::Backend;
use steepest::cpu::CpuBackend;
use steepest::data::loader::Batcher;
use steepest::data::synthetic;
use steepest::nn::{HostTensors, Model, ModelSpec, Workspace};
use steepest::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use steepest::train::train_step;

/// Weights and optimizer state after three steps, the padding of the arenas (values, gradients
/// and the optimizer's state) as read back, and the weights before.
fn train<B: Backend>(
    b: &mut B,
    kind: OptimizerKind,
    per_tensor: bool,
) -> (HostTensors, Vec<f32>, HostTensors) {
    let data = synthetic::generate(3, 96, 0);
    // Conv (weight and bias), batch norm (gamma and beta), a residual block and a linear layer.
    let spec: ModelSpec =
        "conv:4:3:p=1,bn,relu,res(conv:4:3:p=1,bn,relu),maxpool:2,flatten,linear:7,relu,linear"
            .parse()
            .unwrap();
    let model = Model::new(b, &spec, data.input_shape(), data.num_classes, 4).unwrap();
    let init = model.export(b).unwrap();
    let mut cfg = OptimizerConfig::new(kind);
    cfg.weight_decay = 0.01;
    let mut opt = Optimizer::new(b, cfg, &model).unwrap();
    opt.per_tensor = per_tensor;
    let ws = Workspace::new(b, &model, 32).unwrap();
    let stats = b.alloc(3).unwrap();
    let mut batches = Batcher::new(&data.train, data.sample_size(), 32, true);
    batches.start_epoch(None);
    while let Some((pixels, labels)) = batches.next_batch() {
        ws.load_batch(b, pixels, labels);
        train_step(b, &model, &ws, &mut opt, &stats, labels.len(), 0.05);
    }
    let mut out = model.export(b).unwrap();
    out.extend(opt.export(b, &model).unwrap());
    let arena = model.arena.as_ref().expect("the model's parameters are in an arena");
    let mut padding = Vec::new();
    let (s1, s2) = opt.state_arenas().expect("the state is in arenas too");
    let mut wholes = vec![&arena.values, &arena.grads];
    if kind != OptimizerKind::Sgd {
        wholes.push(s1);
    }
    if matches!(kind, OptimizerKind::Adam | OptimizerKind::AdamW | OptimizerKind::Rmsprop) {
        wholes.push(s2);
    }
    for whole in wholes {
        let all = b.read(whole, arena.len).unwrap();
        let mut at = 0;
        for (&start, &len) in arena.starts.iter().zip(&arena.lens) {
            padding.extend_from_slice(&all[at..start]);
            at = start + len;
        }
        padding.extend_from_slice(&all[at..]);
    }
    (out, padding, init)
}

fn one_update_matches_tensor_by_tensor<B: Backend>(b: &mut B, device: &str) {
    for kind in OptimizerKind::ALL {
        let (whole, padding, init) = train(b, kind, false);
        let (apart, _, _) = train(b, kind, true);
        assert!(!padding.is_empty(), "{device}: the arena has padding between tensors");
        assert!(padding.iter().all(|&v| v == 0.0), "{device} {kind}: padding moved");
        assert_eq!(whole.len(), apart.len());
        for ((name, _, w), (_, _, a)) in whole.iter().zip(&apart) {
            assert_eq!(w, a, "{device} {kind}: {name}");
        }
        // Every parameter moved (the running statistics are not parameters).
        for ((name, _, before), (_, _, after)) in init.iter().zip(&whole) {
            if !name.contains("running") && !name.contains("tracked") {
                assert_ne!(before, after, "{device} {kind}: {name} was not updated");
            }
        }
    }
}

#[test]
fn one_arena_update_is_tensor_by_tensor_on_the_cpu() {
    one_update_matches_tensor_by_tensor(&mut CpuBackend::new(), "cpu");
}

#[test]
fn one_arena_update_is_tensor_by_tensor_on_the_gpu() {
    let Some(mut g) = gpu() else { return };
    one_update_matches_tensor_by_tensor(&mut g, "gpu");
}

/// A GPU step updates LeNet's 8 tensors in one dispatch: tensor by tensor takes 7 more.
#[test]
fn a_gpu_step_updates_every_parameter_in_one_dispatch() {
    let Some(mut g) = gpu() else { return };
    let input = steepest::nn::Shape::new(1, 28, 28);
    let model = Model::new(&mut g, &"lenet".parse().unwrap(), input, 10, 0).unwrap();
    let tensors = model.params().len();
    assert_eq!(tensors, 8);
    let ws = Workspace::new(&mut g, &model, 16).unwrap();
    let stats = g.alloc(3).unwrap();
    let mut dispatches = Vec::new();
    // The arena, tensor by tensor, and eps = 0 (where a zero gradient's 0/0 would put NaN in
    // the padding, so it goes tensor by tensor too).
    for (per_tensor, eps) in [(false, 1e-8), (true, 1e-8), (false, 0.0)] {
        let mut cfg = OptimizerConfig::new(OptimizerKind::Adam);
        cfg.eps = eps;
        let mut opt = Optimizer::new(&mut g, cfg, &model).unwrap();
        opt.per_tensor = per_tensor;
        ws.load_batch(&mut g, &[3; 16 * 784], &[1; 16]);
        train_step(&mut g, &model, &ws, &mut opt, &stats, 16, 0.01);
        let before = g.counters().dispatches;
        train_step(&mut g, &model, &ws, &mut opt, &stats, 16, 0.01);
        dispatches.push(g.counters().dispatches - before);
    }
    assert_eq!(dispatches[1] - dispatches[0], tensors as u64 - 1, "{dispatches:?}");
    assert_eq!(dispatches[2], dispatches[1], "eps = 0 updates tensor by tensor");
}

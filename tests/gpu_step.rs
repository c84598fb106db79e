//! The GPU step is recorded, not waited on: after the first step has created its bind groups,
//! further steps create no buffer and no bind group, read nothing back, and submit exactly once.

mod common;

use common::gpu;
use steepest::backend::Backend;
use steepest::nn::{Model, ModelSpec, Workspace};
use steepest::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use steepest::train::train_step;

#[test]
fn training_steps_allocate_nothing_and_read_nothing_back() {
    let Some(mut g) = gpu() else { return };
    for kind in OptimizerKind::ALL {
        let model = Model::new(&mut g, &ModelSpec::mlp(&[32, 16]), 784, 10, 0).unwrap();
        let ws = Workspace::new(&mut g, &model, 64).unwrap();
        let stats = g.alloc(3).unwrap();
        let mut opt = Optimizer::new(&mut g, OptimizerConfig::new(kind), &model).unwrap();
        let pixels = vec![7u8; 64 * 784];
        let labels: Vec<u32> = (0..64).map(|i| i % 10).collect();
        ws.load_batch(&mut g, &pixels, &labels);
        train_step(&mut g, &model, &ws, &mut opt, &stats, 64, 0.01);

        let before = g.counters();
        let steps = 5;
        for _ in 0..steps {
            ws.load_batch(&mut g, &pixels, &labels);
            train_step(&mut g, &model, &ws, &mut opt, &stats, 64, 0.01);
        }
        let after = g.counters();
        assert_eq!(
            after.buffers_created, before.buffers_created,
            "{kind}: buffers created in a step"
        );
        assert_eq!(
            after.bind_groups_created, before.bind_groups_created,
            "{kind}: bind groups created in a step"
        );
        assert_eq!(after.readbacks, before.readbacks, "{kind}: readbacks in a step");
        assert_eq!(after.submits - before.submits, steps, "{kind}: one submit per step");
        // pixels, 2 layers × (matmul, bias) + 1, loss, backward, 6 parameter updates.
        assert!(after.dispatches - before.dispatches >= steps * 16, "{kind}: dispatches recorded");

        // Reading the metrics is the only readback, and it sees all 6 steps.
        let s = g.read(&stats, 3).unwrap();
        assert_eq!(s[2], 6.0 * 64.0);
        assert_eq!(g.counters().readbacks, after.readbacks + 1);
    }
}

/// A batch whose matmul would need more workgroups than the device allows per dimension is
/// refused when the buffers are made, naming the limit, instead of failing inside a kernel.
#[test]
fn matmul_rows_over_the_workgroup_cap_name_the_limit() {
    let Some(mut g) = gpu() else { return };
    let cap = g.max_matmul_dim();
    let model = Model::new(
        &mut g,
        &"conv:1:1,flatten,linear".parse::<ModelSpec>().unwrap(),
        steepest::nn::Shape::new(1, 64, 64),
        2,
        0,
    )
    .unwrap();
    // 64·64 output pixels per sample: this many samples overflow the cap by one row block.
    let rows = cap / (64 * 64) + 1;
    let err = Workspace::new(&mut g, &model, rows).err().expect("over the cap").to_string();
    assert!(
        err.contains("max_compute_workgroups_per_dimension") && err.contains("--batch-size"),
        "{err}"
    );
}

/// Pipelines are compiled on first use; this compiles every one, so a WGSL entry point that fails
/// validation fails here and not in the middle of someone's run.
#[test]
fn every_kernel_compiles() {
    let Some(mut g) = gpu() else { return };
    g.compile_all_kernels();
}

/// With the data set held on the device (`DeviceData`), a step uploads only its batch's codes:
/// 8 bytes a sample, 1 KB at batch 128 (the kernels' params, one write of the params arena per
/// submit, are counted apart), and still creates nothing, reads nothing and submits once.
/// Under the adapter's own plans and the other kind's (a GPU's wide matmuls and split sizes
/// on lavapipe, where an H200 first showed a step creating bind groups).
#[test]
fn a_step_on_device_held_data_uploads_one_kilobyte() {
    for software in [true, false] {
        held_data_step(software);
    }
}

fn held_data_step(software: bool) {
    use steepest::data::loader::Batcher;
    use steepest::data::synthetic;
    use steepest::nn::DeviceData;
    let Some(mut g) = gpu() else { return };
    g.plan_as_software(Some(software));
    let data = synthetic::generate(5, 1000, 0);
    let shape = [data.channels, data.height, data.width];
    let model =
        Model::new(&mut g, &"lenet".parse::<ModelSpec>().unwrap(), data.input_shape(), 10, 0)
            .unwrap();
    let ws = Workspace::new(&mut g, &model, 128).unwrap();
    let held = DeviceData::new(&mut g, &data.train, shape, 128).unwrap();
    let stats = g.alloc(3).unwrap();
    let mut opt =
        Optimizer::new(&mut g, OptimizerConfig::new(OptimizerKind::Momentum), &model).unwrap();
    let mut batches = Batcher::new(&data.train, data.sample_size(), 128, true);
    batches.start_epoch(Some(&mut fastrand::Rng::with_seed(1)));
    // Two warm-up steps: the first grows the split scratch as its largest split appears (on a
    // GPU plan, after some of that step's dispatches bound the smaller one), and the second
    // binds those dispatches to the grown scratch; from then on a step creates nothing.
    for _ in 0..2 {
        let codes = batches.next_codes().unwrap().to_vec();
        ws.load_codes(&mut g, &held, &codes);
        train_step(&mut g, &model, &ws, &mut opt, &stats, 128, 0.01);
    }

    let before = g.counters();
    let steps = 4;
    for _ in 0..steps {
        let codes = batches.next_codes().unwrap();
        ws.load_codes(&mut g, &held, codes);
        train_step(&mut g, &model, &ws, &mut opt, &stats, 128, 0.01);
    }
    let after = g.counters();
    assert_eq!(after.bytes_written - before.bytes_written, steps * 1024, "uploads per step");
    assert_eq!(after.buffers_created, before.buffers_created, "buffers created in a step");
    assert_eq!(after.bind_groups_created, before.bind_groups_created, "bind groups in a step");
    assert_eq!(after.readbacks, before.readbacks, "readbacks in a step");
    assert_eq!(after.submits - before.submits, steps, "one submit per step");
    assert_eq!(g.read(&stats, 3).unwrap()[2], 6.0 * 128.0);
}

/// Evaluation from a test split the device holds uploads only each batch's codes (8 bytes a
/// sample, twice with test-time flips), and scores exactly as uploading the pixels does.
#[test]
fn evaluation_on_device_held_data_uploads_only_codes() {
    use steepest::data::synthetic;
    use steepest::nn::DeviceData;
    use steepest::train::{evaluate_with, Tta, TtaBuffers};
    let Some(mut g) = gpu() else { return };
    let data = synthetic::generate(5, 10, 300);
    let shape = [data.channels, data.height, data.width];
    let spec: ModelSpec = "conv:4:3,relu,flatten,linear".parse().unwrap();
    let model = Model::new(&mut g, &spec, data.input_shape(), 10, 0).unwrap();
    let ws = Workspace::new(&mut g, &model, 128).unwrap();
    let held = DeviceData::new(&mut g, &data.test, shape, 128).unwrap();
    let stats = g.alloc(3).unwrap();
    for (tta, passes) in [(Tta::None, 1), (Tta::Flip, 2)] {
        let mut t = TtaBuffers::new(&mut g, &model, &ws, tta).unwrap();
        let uploaded = evaluate_with(&mut g, &model, &ws, &stats, &data.test, None, t.as_mut());
        let before = g.counters();
        let on_device =
            evaluate_with(&mut g, &model, &ws, &stats, &data.test, Some(&held), t.as_mut());
        let written = g.counters().bytes_written - before.bytes_written;
        assert_eq!(written, passes * 300 * 8, "{tta}: bytes uploaded");
        let (uploaded, on_device) = (uploaded.unwrap(), on_device.unwrap());
        assert_eq!(on_device.samples, 300);
        assert_eq!(on_device, uploaded, "{tta}: the same scores");
    }
}

/// `train --profile` and `steepest bench`: with timestamp queries, every dispatch of the
/// profiled steps is counted once, under its kernel (the Linear forwards under their epilogue's
/// label) and its workgroup grid; under the adapter's plans and the other kind's.
#[test]
fn the_profile_counts_every_dispatch_by_kernel_and_grid() {
    for software in [true, false] {
        profile_steps(software);
    }
}

fn profile_steps(software: bool) {
    use steepest::backend::MatmulForm;
    let Some(mut g) = gpu() else { return };
    g.plan_as_software(Some(software));
    let model = Model::new(&mut g, &ModelSpec::mlp(&[32]), 784, 10, 0).unwrap();
    let ws = Workspace::new(&mut g, &model, 64).unwrap();
    let stats = g.alloc(3).unwrap();
    let mut opt =
        Optimizer::new(&mut g, OptimizerConfig::new(OptimizerKind::Momentum), &model).unwrap();
    let pixels = vec![7u8; 64 * 784];
    let labels: Vec<u32> = (0..64).map(|i| i % 10).collect();
    ws.load_batch(&mut g, &pixels, &labels);
    train_step(&mut g, &model, &ws, &mut opt, &stats, 64, 0.01);
    if !g.start_profiling() {
        eprintln!("skipped: this adapter has no timestamp queries");
        return;
    }
    let before = g.counters().dispatches;
    for _ in 0..3 {
        ws.load_batch(&mut g, &pixels, &labels);
        train_step(&mut g, &model, &ws, &mut opt, &stats, 64, 0.01);
    }
    let dispatched = g.counters().dispatches - before;
    let report = g.stop_profiling();
    let counted: u64 = report.iter().map(|k| k.dispatches).sum();
    assert_eq!(counted, dispatched, "every dispatch once");
    for k in &report {
        let grids: u64 = k.by_grid.iter().map(|g| g.dispatches).sum();
        assert_eq!(grids, k.dispatches, "{}: its grids add up", k.kernel);
        let seconds: f64 = k.by_grid.iter().map(|g| g.seconds).sum();
        assert!((seconds - k.seconds).abs() <= 1e-9 * k.seconds.max(1.0), "{}", k.kernel);
        assert!(k.seconds >= 0.0 && k.seconds.is_finite(), "{}: {}", k.kernel, k.seconds);
    }
    // A Linear forward whose K is one range stores through the matmul's bias epilogue (with K
    // split, `sum_splits` applies it).
    let one_pass = [(784, 32), (32, 10)]
        .into_iter()
        .filter(|&(k, n)| g.matmul_plan(MatmulForm::ABt, 64, k, n).ranges == 1)
        .count() as u64;
    let fused: u64 =
        report.iter().filter(|k| k.kernel.ends_with("+bias")).map(|k| k.dispatches).sum();
    assert_eq!(fused, 3 * one_pass, "software plan {software}: Linear forwards with the epilogue");
    assert!(one_pass > 0, "software plan {software}: no Linear forward reached the epilogue");
}

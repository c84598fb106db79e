//! Criterion benches: matmul and one MLP training step, CPU and GPU (when there is an adapter).
//! `steepest bench` gives the same figures as a table with GPU/CPU ratios.

use criterion::{criterion_group, criterion_main, Criterion};
use steepest::backend::MatmulForm;
use steepest::bench::Timed;
use steepest::cpu::CpuBackend;
use steepest::gpu::{context::Choice, GpuBackend};
use steepest::nn::{Model, ModelSpec, Workspace};
use steepest::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use steepest::train::train_step;

fn matmul_on<B: Timed>(c: &mut Criterion, b: &mut B, name: &str) {
    for n in [128, 256, 512] {
        let x = b.alloc(n * n).unwrap();
        let y = b.alloc(n * n).unwrap();
        let z = b.alloc(n * n).unwrap();
        b.write(&x, &vec![0.5; n * n]);
        b.write(&y, &vec![0.25; n * n]);
        c.bench_function(&format!("matmul {n}x{n}x{n} {name}"), |bench| {
            bench.iter(|| {
                b.matmul(MatmulForm::AB, &x, &y, &z, n, n, n);
                b.finish();
            })
        });
    }
}

fn step_on<B: Timed>(c: &mut Criterion, b: &mut B, name: &str) {
    let model = Model::new(b, &ModelSpec::mlp(&[256]), 784, 10, 0).unwrap();
    let ws = Workspace::new(b, &model, 128).unwrap();
    let stats = b.alloc(3).unwrap();
    let mut opt = Optimizer::new(b, OptimizerConfig::new(OptimizerKind::Momentum), &model).unwrap();
    let pixels: Vec<u8> = (0..128 * 784).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u32> = (0..128).map(|i| i % 10).collect();
    c.bench_function(&format!("mlp 784-256-10 train step batch 128 {name}"), |bench| {
        bench.iter(|| {
            ws.load_batch(b, &pixels, &labels);
            train_step(b, &model, &ws, &mut opt, &stats, 128, 0.01);
            b.finish();
        })
    });
}

fn benches(c: &mut Criterion) {
    let mut cpu = CpuBackend::new();
    matmul_on(c, &mut cpu, "cpu");
    step_on(c, &mut cpu, "cpu");
    if let Ok(Some(mut gpu)) = GpuBackend::open(Choice::AnyAdapter, None) {
        let name = format!("gpu ({})", gpu.adapter_info().name);
        matmul_on(c, &mut gpu, &name);
        step_on(c, &mut gpu, &name);
    }
}

criterion_group!(kernels, benches);
criterion_main!(kernels);

//! `steepest bench`.

use steepest::bench::{self, MatmulResult, MlpResult, Timed};
use steepest::cpu::CpuBackend;
use steepest::gpu::context::Choice;
use steepest::gpu::GpuBackend;
use steepest::{Error, Result};

use crate::BenchArgs;

struct Side {
    device: String,
    matmul: Vec<MatmulResult>,
    mlp: MlpResult,
}

fn measure<B: Timed>(b: &mut B, sizes: &[usize]) -> Result<Side> {
    let matmul = sizes.iter().map(|&n| bench::matmul(b, n)).collect::<Result<Vec<_>>>()?;
    Ok(Side { device: b.device_name(), matmul, mlp: bench::mlp(b)? })
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let (want_cpu, want_gpu) = match args.device.as_str() {
        "cpu" => (true, false),
        "gpu" => (false, true),
        "both" => (true, true),
        d => {
            return Err(Error::config(
                "--device",
                format!("unknown {d:?}; expected cpu, gpu or both"),
            ))
        }
    };
    if args.sizes.contains(&0) {
        return Err(Error::config("--sizes", "sizes must be at least 1"));
    }
    let cpu = if want_cpu {
        eprintln!("device: cpu ({} threads)", steepest::device::cpu_threads());
        Some(measure(&mut CpuBackend::new(), &args.sizes)?)
    } else {
        None
    };
    let gpu = if want_gpu {
        match GpuBackend::open(Choice::AnyAdapter, args.adapter.as_deref())? {
            Some(mut g) => {
                let i = g.adapter_info();
                eprintln!("device: gpu: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
                Some(measure(&mut g, &args.sizes)?)
            }
            None if args.device == "gpu" => {
                return Err(Error::config(
                    "--device",
                    "gpu was asked for but wgpu found no adapter",
                ))
            }
            None => {
                eprintln!("note: no GPU adapter; measuring the CPU only");
                None
            }
        }
    } else {
        None
    };
    let ratio = |g: f64, c: f64| if c > 0.0 { Some(g / c) } else { None };
    if args.json {
        let rows: Vec<_> = args
            .sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let c = cpu.as_ref().map(|s| s.matmul[i].gflops);
                let g = gpu.as_ref().map(|s| s.matmul[i].gflops);
                serde_json::json!({
                    "size": n, "cpu_gflops": c, "gpu_gflops": g,
                    "gpu_over_cpu": c.zip(g).and_then(|(c, g)| ratio(g, c)),
                })
            })
            .collect();
        let c = cpu.as_ref().map(|s| s.mlp.samples_per_sec);
        let g = gpu.as_ref().map(|s| s.mlp.samples_per_sec);
        let out = serde_json::json!({
            "cpu_device": cpu.as_ref().map(|s| s.device.clone()),
            "gpu_device": gpu.as_ref().map(|s| s.device.clone()),
            "matmul": rows,
            "mlp": {
                "model": "784-256-10", "batch_size": 128, "optimizer": "sgd momentum 0.9",
                "cpu_samples_per_sec": c, "gpu_samples_per_sec": g,
                "gpu_over_cpu": c.zip(g).and_then(|(c, g)| ratio(g, c)),
            },
        });
        println!("{out}");
        return Ok(());
    }
    let fmt = |v: Option<f64>, digits: usize| match v {
        Some(x) => format!("{x:.digits$}"),
        None => "-".to_string(),
    };
    println!(
        "matmul n×n×n f32 (median of 5)   {:>12} {:>12} {:>9}",
        "cpu GFLOP/s", "gpu GFLOP/s", "gpu/cpu"
    );
    for (i, n) in args.sizes.iter().enumerate() {
        let c = cpu.as_ref().map(|s| s.matmul[i].gflops);
        let g = gpu.as_ref().map(|s| s.matmul[i].gflops);
        println!(
            "  {:<30} {:>12} {:>12} {:>9}",
            n,
            fmt(c, 1),
            fmt(g, 1),
            fmt(c.zip(g).and_then(|(c, g)| ratio(g, c)), 2)
        );
    }
    let c = cpu.as_ref().map(|s| s.mlp.samples_per_sec);
    let g = gpu.as_ref().map(|s| s.mlp.samples_per_sec);
    println!("MLP 784-256-10 training, batch 128, SGD momentum (samples/s)");
    println!(
        "  {:<30} {:>12} {:>12} {:>9}",
        "",
        fmt(c, 0),
        fmt(g, 0),
        fmt(c.zip(g).and_then(|(c, g)| ratio(g, c)), 2)
    );
    Ok(())
}

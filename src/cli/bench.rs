//! `steepest bench`.

use steepest::bench::{self, BenchModel, MatmulResult, Timed, TrainingResult};
use steepest::cpu::CpuBackend;
use steepest::gpu::context::Choice;
use steepest::gpu::matmul::MatmulVariant;
use steepest::gpu::profile::KernelTime;
use steepest::gpu::GpuBackend;
use steepest::{Error, Result};

use crate::BenchArgs;

struct Side {
    device: String,
    matmul: Vec<MatmulResult>,
    training: Vec<TrainingResult>,
}

/// GPU only: each matmul variant at each size (where its alignment fits), and the time from
/// opening the adapter to the first finished training step.
struct GpuExtras {
    variants: Vec<(MatmulVariant, Vec<MatmulResult>)>,
    cold_start_seconds: f64,
    /// Per model: GPU time per kernel (and per grid, in the JSON) over 20 steps (when the
    /// adapter has timestamps).
    profiles: Vec<(String, Vec<KernelTime>)>,
}

const PROFILED_STEPS: usize = 20;

fn gpu_extras(
    g: &mut GpuBackend,
    sizes: &[usize],
    models: &[BenchModel],
    opened: f64,
) -> Result<GpuExtras> {
    // The cold start: adapter and pipelines (already paid: `opened`) plus the first MLP step.
    let t = std::time::Instant::now();
    bench::first_step(g)?;
    let cold_start_seconds = opened + t.elapsed().as_secs_f64();
    let mut variants = Vec::new();
    for v in MatmulVariant::ALL {
        g.force_matmul_variant(Some(v));
        let r = sizes.iter().map(|&n| bench::matmul(g, n)).collect::<Result<Vec<_>>>()?;
        variants.push((v, r));
    }
    g.force_matmul_variant(None);
    let mut profiles = Vec::new();
    for model in models {
        if let Some(p) = bench::profile_training(g, model, PROFILED_STEPS)? {
            profiles.push((model.name.to_string(), p));
        }
    }
    Ok(GpuExtras { variants, cold_start_seconds, profiles })
}

fn measure<B: Timed>(b: &mut B, sizes: &[usize], models: &[BenchModel]) -> Result<Side> {
    let matmul = sizes.iter().map(|&n| bench::matmul(b, n)).collect::<Result<Vec<_>>>()?;
    let training = models.iter().map(|m| bench::training(b, m)).collect::<Result<_>>()?;
    Ok(Side { device: b.device_name(), matmul, training })
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
    let mut models = Vec::new();
    for m in &args.models {
        match bench::TRAINING_MODELS.iter().find(|model| model.name == m) {
            Some(entry) => models.push(*entry),
            None if m == "none" => {}
            None => {
                return Err(Error::config(
                    "--models",
                    format!(
                        "unknown {m:?}; expected a list of {} (or none)",
                        bench::TRAINING_MODELS.map(|m| m.name).join(", ")
                    ),
                ))
            }
        }
    }
    let cpu = if want_cpu {
        eprintln!("device: cpu ({} threads)", steepest::device::cpu_threads());
        Some(measure(&mut CpuBackend::new(), &args.sizes, &models)?)
    } else {
        None
    };
    let mut extras = None;
    let gpu = if want_gpu {
        let t = std::time::Instant::now();
        match GpuBackend::open(Choice::AnyAdapter, args.adapter.as_deref())? {
            Some(mut g) => {
                let opened = t.elapsed().as_secs_f64();
                let i = g.adapter_info();
                eprintln!("device: gpu: {} ({:?}, {:?})", i.name, i.backend, i.device_type);
                extras = Some(gpu_extras(&mut g, &args.sizes, &models, opened)?);
                Some(measure(&mut g, &args.sizes, &models)?)
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
        let training: Vec<_> = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let c = cpu.as_ref().map(|s| s.training[i].samples_per_sec);
                let g = gpu.as_ref().map(|s| s.training[i].samples_per_sec);
                serde_json::json!({
                    "name": m.name, "model": m.spec, "input": m.input, "batch_size": 128,
                    "optimizer": "sgd momentum 0.9",
                    "cpu_samples_per_sec": c, "gpu_samples_per_sec": g,
                    "gpu_over_cpu": c.zip(g).and_then(|(c, g)| ratio(g, c)),
                })
            })
            .collect();
        let variants: serde_json::Map<String, serde_json::Value> = extras
            .iter()
            .flat_map(|e| &e.variants)
            .map(|(v, r)| (v.name().to_string(), serde_json::json!(r)))
            .collect();
        let out = serde_json::json!({
            "cpu_device": cpu.as_ref().map(|s| s.device.clone()),
            "gpu_device": gpu.as_ref().map(|s| s.device.clone()),
            "matmul": rows,
            "gpu_matmul_variants": variants,
            "gpu_cold_start_seconds": extras.as_ref().map(|e| e.cold_start_seconds),
            "gpu_kernel_seconds_per_step": extras.as_ref().map(|e| {
                e.profiles
                    .iter()
                    .map(|(name, p)| {
                        let per_step: Vec<_> = p
                            .iter()
                            .map(|k| {
                                let by_grid: Vec<_> = k
                                    .by_grid
                                    .iter()
                                    .map(|g| serde_json::json!({
                                        "groups": g.groups,
                                        "dispatches": g.dispatches as f64 / PROFILED_STEPS as f64,
                                        "seconds": g.seconds / PROFILED_STEPS as f64,
                                    }))
                                    .collect();
                                serde_json::json!({
                                    "kernel": k.kernel,
                                    "dispatches": k.dispatches as f64 / PROFILED_STEPS as f64,
                                    "seconds": k.seconds / PROFILED_STEPS as f64,
                                    "by_grid": by_grid,
                                })
                            })
                            .collect();
                        (name.clone(), serde_json::json!(per_step))
                    })
                    .collect::<serde_json::Map<_, _>>()
            }),
            "training": training,
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
    if let Some(e) = &extras {
        println!("gpu matmul variants (GFLOP/s; the tiled kernel where one does not fit)");
        for (v, r) in &e.variants {
            let cells: Vec<String> =
                r.iter().map(|m| format!("{}: {:.1}", m.size, m.gflops)).collect();
            println!("  {:<30} {}", v.name(), cells.join("  "));
        }
        println!(
            "gpu cold start (adapter, pipelines, first MLP step)   {:.2} s",
            e.cold_start_seconds
        );
        for (name, p) in &e.profiles {
            print_profile(&format!("gpu time per {name} step"), p, PROFILED_STEPS);
        }
    }
    if !models.is_empty() {
        println!("training, batch 128, SGD momentum (samples/s, median of 5)");
    }
    for (i, m) in models.iter().enumerate() {
        let c = cpu.as_ref().map(|s| s.training[i].samples_per_sec);
        let g = gpu.as_ref().map(|s| s.training[i].samples_per_sec);
        let [ch, h, w] = m.input;
        let label = match m.name == m.spec {
            true => format!("{} on {ch}x{h}x{w}", m.name),
            false => format!("{} ({}) on {ch}x{h}x{w}", m.name, m.spec),
        };
        println!(
            "  {:<30} {:>12} {:>12} {:>9}",
            label,
            fmt(c, 0),
            fmt(g, 0),
            fmt(c.zip(g).and_then(|(c, g)| ratio(g, c)), 2)
        );
    }
    Ok(())
}

/// Each kernel's GPU time per step and share, largest first.
pub fn print_profile(title: &str, p: &[KernelTime], steps: usize) {
    let total: f64 = p.iter().map(|k| k.seconds).sum();
    println!("{title}: {:.3} ms in kernels (GPU timestamps)", total * 1e3 / steps as f64);
    for k in p {
        println!(
            "  {:<30} {:>9.3} ms {:>6.1} %  {:>5.1} dispatches",
            k.kernel,
            k.seconds * 1e3 / steps as f64,
            100.0 * k.seconds / total.max(f64::MIN_POSITIVE),
            k.dispatches as f64 / steps as f64
        );
    }
}

//! Cross-check the matmul kernels on your GPU against the CPU reference, and print the worst
//! error next to the f32 bound it must stay under. (`cargo test` runs every such check.)
//!
//!     cargo run --release --example check_my_gpu [ADAPTER-NAME-SUBSTRING]

use steepest::backend::{Backend, MatmulForm};
use steepest::cpu::matmul::matmul;
use steepest::gpu::{context::Choice, GpuBackend};

fn main() -> steepest::Result<()> {
    let filter = std::env::args().nth(1);
    let Some(mut gpu) = GpuBackend::open(Choice::AnyAdapter, filter.as_deref())? else {
        println!("wgpu found no adapter with compute shaders");
        return Ok(());
    };
    println!("adapter: {} ({:?})", gpu.adapter_info().name, gpu.adapter_info().backend);
    let mut rng = fastrand::Rng::with_seed(0);
    let mut ok = true;
    for form in MatmulForm::ALL {
        for (m, k, n) in [(7, 13, 5), (130, 257, 63), (512, 784, 256)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.f32() * 2.0 - 1.0).collect();
            let mut want = vec![0.0; m * n];
            matmul(form, &a, &b, &mut want, m, k, n);
            let (ga, gb, gc) = (gpu.alloc(a.len())?, gpu.alloc(b.len())?, gpu.alloc(m * n)?);
            gpu.write(&ga, &a);
            gpu.write(&gb, &b);
            gpu.matmul(form, &ga, &gb, &gc, m, k, n);
            let got = gpu.read(&gc, m * n)?;
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
            // Each element sums k products of values below 1: f32 order error <= 2·k·u·k.
            let bound = 2.0 * (k as f32) * (k as f32) * f32::EPSILON / 2.0;
            let pass = worst <= bound;
            ok &= pass;
            println!(
                "{:<11} {m}x{k}x{n}: max |gpu - cpu| = {worst:.3e} (bound {bound:.1e}) {}",
                form.name(),
                if pass { "ok" } else { "FAIL" }
            );
        }
    }
    println!("{}", if ok { "all kernels agree with the CPU" } else { "MISMATCH: please report" });
    Ok(())
}

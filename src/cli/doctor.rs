//! `steepest doctor`: does this GPU compute what the CPU computes? Every kernel on its check
//! shapes and the presets' training shapes (`steepest::checks`, the list the tests run too),
//! then 20 steps of LeNet on both devices.

use std::io::Write;

use steepest::checks::{self, Outcome};
use steepest::cpu::CpuBackend;
use steepest::gpu::context::Choice;
use steepest::gpu::GpuBackend;
use steepest::{Error, Result};

use crate::DoctorArgs;

/// Where a failing run writes everything it measured, to attach to a report.
const REPORT: &str = "steepest-doctor-report.json";

pub fn run(args: &DoctorArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let Some(mut gpu) = GpuBackend::open(Choice::AnyAdapter, args.adapter.as_deref())? else {
        return Err(Error::config(
            "--adapter",
            "wgpu found no adapter with compute shaders (run `steepest devices`; on Linux \
             without a GPU, apt-get install mesa-vulkan-drivers libvulkan1 gives lavapipe)",
        ));
    };
    let info = gpu.adapter_info();
    let adapter =
        format!("{} ({:?}, {:?}, {})", info.name, info.backend, info.device_type, info.driver_info);
    let mut cpu = CpuBackend::new();
    let all = checks::all();
    let kernels: std::collections::BTreeSet<String> =
        all.iter().map(|c| c.kernel.clone()).collect();
    let list: Vec<_> = all
        .into_iter()
        .filter(|c| args.only.as_ref().is_none_or(|o| c.kernel.contains(o.as_str())))
        .collect();
    if let (Some(only), true) = (&args.only, list.is_empty()) {
        // Zero checks would pass, and say nothing about the GPU.
        let names: Vec<&str> = kernels.iter().map(String::as_str).collect();
        return Err(Error::config(
            "--only",
            format!("{only:?} names no check; the kernels are {}", names.join(", ")),
        ));
    }
    if !args.json {
        println!("doctor: {adapter}");
        println!(
            "{:<34} {:<44} {:>10} {:>10} {:>7}  {:<8} {:>7}",
            "kernel", "shapes", "max error", "bound", "ratio", "verdict", "time"
        );
    }
    let mut outcomes = Vec::new();
    let show = |o: &Outcome| {
        if !args.json {
            println!(
                "{:<34} {:<44} {:>10.2e} {:>10.2e} {:>7.3}  {:<8} {:>6.2}s",
                o.kernel,
                cut(&o.shapes, 44),
                o.max_error,
                o.bound,
                o.ratio,
                match (&o.skipped, o.passed()) {
                    (Some(_), _) => "skipped",
                    (None, true) => "ok",
                    (None, false) => "MISMATCH",
                },
                o.seconds
            );
            let _ = std::io::stdout().flush();
        }
    };
    for check in &list {
        let o = check
            .run(&mut cpu, &mut gpu)
            .unwrap_or_else(|e| failed(&check.kernel, &check.shapes, e));
        show(&o);
        outcomes.push(o);
    }
    if args.only.as_ref().is_none_or(|o| "lenet training".contains(o.as_str())) {
        let o = checks::lenet_steps(&mut cpu, &mut gpu)
            .unwrap_or_else(|e| failed("lenet training", "20 steps", e));
        show(&o);
        outcomes.push(o);
    }
    let bad: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    let seconds = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "adapter": adapter,
        "steepest": env!("CARGO_PKG_VERSION"),
        "seconds": seconds,
        "checks": outcomes,
        "mismatches": bad.len(),
    });
    if args.json {
        println!("{report}");
    }
    let skipped = outcomes.iter().filter(|o| o.skipped.is_some()).count();
    if bad.is_empty() && skipped == outcomes.len() {
        return Err(Error::Other(format!(
            "none of the {skipped} checks could run on {adapter}: their buffers exceed its limits"
        )));
    }
    if bad.is_empty() {
        if !args.json {
            let ran = outcomes.len() - skipped;
            let note = if skipped > 0 {
                format!("; {skipped} skipped: their buffers exceed this adapter's limits, as training at those shapes would")
            } else {
                String::new()
            };
            println!("all {ran} checks agree with the CPU ({seconds:.1}s){note}");
        }
        return Ok(());
    }
    let written = std::fs::write(REPORT, format!("{report:#}\n")).is_ok();
    let names: Vec<&str> = bad.iter().map(|o| o.kernel.as_str()).collect();
    Err(Error::Other(format!(
        "{} of {} checks disagree with the CPU on {adapter}: {}; please report it{}",
        bad.len(),
        outcomes.len(),
        names.join(", "),
        if written { format!(", attaching {REPORT}") } else { String::new() }
    )))
}

/// A check that could not run (an allocation the adapter refused, say) fails with the reason.
fn failed(kernel: &str, shapes: &str, e: Error) -> Outcome {
    Outcome {
        kernel: kernel.to_string(),
        shapes: format!("{shapes}: {e}"),
        max_error: f64::NAN,
        bound: 0.0,
        ratio: f64::INFINITY,
        seconds: 0.0,
        skipped: None,
    }
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

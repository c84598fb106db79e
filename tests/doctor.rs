//! `steepest doctor`'s checks are the tests' checks: every one passes on this machine's
//! adapter (lavapipe in CI), and a wrong kernel result is reported by name with a non-zero exit.

mod common;

use common::cli::text;
use common::gpu;
use steepest::checks;
use steepest::cpu::CpuBackend;

/// Every kernel check doctor runs, and its 20-step LeNet comparison.
#[test]
fn every_doctor_check_passes() {
    let Some(mut g) = gpu() else { return };
    let mut cpu = CpuBackend::new();
    let list = checks::all();
    assert!(list.len() > 100, "{} checks", list.len());
    let mut failures = Vec::new();
    let mut skipped = 0;
    for check in &list {
        let o = check.run(&mut cpu, &mut g).unwrap();
        if o.skipped.is_some() {
            skipped += 1;
        }
        if !o.passed() {
            failures.push(format!(
                "{} {}: error {} bound {} ({}x)",
                o.kernel, o.shapes, o.max_error, o.bound, o.ratio
            ));
        }
    }
    let o = checks::lenet_steps(&mut cpu, &mut g).unwrap();
    if !o.passed() {
        failures.push(format!("lenet training: {o:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Only shapes over an adapter's buffer limits may skip (on lavapipe: cifar-fast's widest
    // convolutions at batch 128, 151 MB in one buffer against 128 MiB).
    assert!(skipped * 20 < list.len(), "{skipped} of {} checks skipped", list.len());
}

/// A kernel whose GPU result is made wrong (a test hook adds 1 to one value) is named in the
/// table and the last line, the report file is written, and the exit is non-zero; the same
/// checks untouched pass.
#[test]
fn doctor_reports_a_wrong_kernel() {
    if gpu().is_none() {
        return;
    }
    let dir = common::cli::temp("doctor");
    let run = |inject: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_steepest"))
            .args(["doctor", "--only", "add"])
            .env("STEEPEST_DOCTOR_INJECT", inject)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let o = run("add_bias");
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(out.contains("add_bias") && out.contains("MISMATCH"), "{out}");
    assert!(err.contains("disagree with the CPU") && err.contains("add_bias"), "{err}");
    assert!(dir.join("steepest-doctor-report.json").is_file());
    let o = run("none");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("checks agree with the CPU") && !out.contains("MISMATCH"), "{out}");
    // A name that matches no check is an error, not "all 0 checks agree".
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_steepest"))
        .args(["doctor", "--only", "addd"])
        .output()
        .unwrap();
    common::cli::assert_clean_error(&o, &["--only", "\"addd\" names no check", "add_bias"]);
}

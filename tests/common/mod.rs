//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;

use steepest::gpu::context::Choice;
use steepest::gpu::GpuBackend;

/// The GPU backend on whatever adapter there is (lavapipe in CI). Without one, the test is
/// skipped with a printed reason, unless `STEEPEST_REQUIRE_GPU=1` (CI), where that is a failure.
pub fn gpu() -> Option<GpuBackend> {
    match GpuBackend::open(Choice::AnyAdapter, None) {
        Ok(Some(g)) => Some(g),
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                _ => "wgpu found no adapter with compute shaders".to_string(),
            };
            if std::env::var("STEEPEST_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("STEEPEST_REQUIRE_GPU=1 but no GPU backend: {why}");
            }
            eprintln!("skipping GPU part: {why} (install mesa-vulkan-drivers for lavapipe)");
            None
        }
    }
}

/// Seeded values uniform in [-1, 1).
pub fn random(rng: &mut fastrand::Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// Unit roundoff of f32.
pub const U: f32 = f32::EPSILON / 2.0;

/// Asserts `|got - want| <= atol + rtol·|want|` element-wise, naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        assert!(
            (g - w).abs() <= tol && g.is_finite() == w.is_finite(),
            "{what}[{i}]: got {g}, want {w} (|diff| {} > tol {tol})",
            (g - w).abs()
        );
    }
}

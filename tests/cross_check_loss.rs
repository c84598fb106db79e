//! `softmax_xent` (shaders/loss.wgsl) against its CPU twin (src/cpu/loss.rs).
//!
//! Tolerances: per element both sides compute the same formula (max, Σexp, log, one division);
//! `exp` and `log` in WGSL are not correctly rounded (a few ulp), and Σexp over `cols` terms is
//! summed in the same order, so gradients agree to a few ulp of 1/rows: atol 1e-6/rows + rtol 1e-5.
//! The loss sum adds `rows` per-row losses in trees (256 rows a workgroup, then the workgroups) on
//! the GPU and in row order on the CPU, each
//! per-row loss carrying a few ulp of error: rtol 1e-5 plus γ_rows·Σloss for the orders.
//! Correct counts and sample counts are integers and must be equal. Label smoothing adds
//! ε/cols·Σx to each row's loss (Σx in the same order on both sides) and a constant to each
//! gradient: the same tolerances.

mod common;

use common::{assert_close, gpu, random, U};
use steepest::backend::Backend;
use steepest::cpu::loss;

#[test]
fn softmax_xent_matches_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(7);
    let cases = [(1, 1), (1, 10), (7, 13), (256, 10), (257, 10), (1000, 3), (33, 65), (10_000, 10)];
    for (i, &(rows, cols)) in cases.iter().enumerate() {
        // Every shape with and without label smoothing, two values of ε between them.
        for smoothing in [0.0, [0.1, 0.35][i % 2]] {
            one_loss(&mut g, &mut rng, rows, cols, smoothing);
        }
    }
}

fn one_loss(
    g: &mut steepest::gpu::GpuBackend,
    rng: &mut fastrand::Rng,
    rows: usize,
    cols: usize,
    smoothing: f32,
) {
    {
        // Logits spread over ±8 so softmax is far from uniform, and some ties for argmax.
        let mut logits: Vec<f32> = random(rng, rows * cols).iter().map(|v| v * 8.0).collect();
        if cols > 1 {
            logits[1] = logits[0];
        }
        let labels: Vec<u32> = (0..rows).map(|_| rng.u32(0..cols as u32)).collect();
        let mut want_grad = vec![0.0; rows * cols];
        let want = loss::softmax_xent(&logits, &labels, &mut want_grad, cols, smoothing);

        let gl = g.alloc(logits.len()).unwrap();
        let glab = g.alloc_indices(rows).unwrap();
        let gg = g.alloc(logits.len()).unwrap();
        let gs = g.alloc(3).unwrap();
        g.write(&gl, &logits);
        g.write_indices(&glab, &labels);
        g.write(&gs, &[1.5, 2.0, 3.0]); // accumulates onto what is there
        g.softmax_xent(&gl, &glab, &gg, &gs, rows, cols, smoothing);
        let grad = g.read(&gg, logits.len()).unwrap();
        let stats = g.read(&gs, 3).unwrap();

        assert_close("grad", &grad, &want_grad, 1e-6 / rows as f32, 1e-5);
        let n = rows as f32;
        let loss_tol = 1e-5 * want[0] + 2.0 * n * U * want[0] + 1e-6;
        assert!(
            ((stats[0] - 1.5) - want[0]).abs() <= loss_tol,
            "loss {rows}x{cols} ε {smoothing}: {} vs {}",
            stats[0] - 1.5,
            want[0]
        );
        assert_eq!(stats[1] - 2.0, want[1], "correct count {rows}x{cols}");
        assert_eq!(stats[2] - 3.0, rows as f32, "sample count");
    }
}

#[test]
fn cpu_softmax_xent_is_the_textbook_formula() {
    // Two rows: logits [0, ln 3] -> softmax [1/4, 3/4].
    let logits = [0.0, 3f32.ln(), 2.0, 2.0];
    let labels = [1, 0];
    let mut grad = [0.0; 4];
    let s = loss::softmax_xent(&logits, &labels, &mut grad, 2, 0.0);
    let want_loss = -(0.75f32).ln() - (0.5f32).ln();
    assert!((s[0] - want_loss).abs() < 1e-6);
    assert_eq!(s[1], 2.0, "row 0 argmax 1 = label; row 1 tie -> first index 0 = label");
    assert_eq!(s[2], 2.0);
    let want = [0.25 / 2.0, -0.25 / 2.0, -0.5 / 2.0, 0.5 / 2.0];
    for (g, w) in grad.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{grad:?}");
    }
}

#[test]
fn cpu_label_smoothing_is_pytorchs_formula() {
    // Logits [0, ln 3] -> softmax [1/4, 3/4]; label 1, ε = 0.2, 2 classes: target [0.1, 0.9].
    let logits = [0.0, 3f32.ln()];
    let mut grad = [0.0; 2];
    let s = loss::softmax_xent(&logits, &[1], &mut grad, 2, 0.2);
    // -Σ q·log p
    let want_loss = -(0.1 * 0.25f32.ln() + 0.9 * 0.75f32.ln());
    assert!((s[0] - want_loss).abs() < 1e-6, "{} vs {want_loss}", s[0]);
    assert_eq!(s[1], 1.0);
    for (g, w) in grad.iter().zip([0.25 - 0.1, 0.75 - 0.9]) {
        assert!((g - w).abs() < 1e-6, "{grad:?}");
    }
}

#[test]
fn cpu_smoothed_gradient_matches_finite_differences() {
    // The gradient written is d(mean loss)/d(logits): compare with central differences of the
    // returned loss sum in f32 (step 1e-2 on logits of order 1: truncation ~1e-5, rounding
    // ~1e-7·|loss|/step), at 2e-3 of the gradient's scale.
    let mut rng = fastrand::Rng::with_seed(3);
    let (rows, cols) = (4, 5);
    let logits: Vec<f32> = (0..rows * cols).map(|_| rng.f32() * 4.0 - 2.0).collect();
    let labels = [0, 3, 4, 1];
    for eps in [0.0, 0.1, 0.5, 1.0] {
        let mut grad = vec![0.0; rows * cols];
        loss::softmax_xent(&logits, &labels, &mut grad, cols, eps);
        let mean_loss = |x: &[f32]| {
            let mut scratch = vec![0.0; rows * cols];
            loss::softmax_xent(x, &labels, &mut scratch, cols, eps)[0] as f64 / rows as f64
        };
        for i in 0..rows * cols {
            let h = 1e-2f32;
            let (mut up, mut down) = (logits.clone(), logits.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (mean_loss(&up) - mean_loss(&down)) / (2.0 * h as f64);
            assert!(
                (numeric - grad[i] as f64).abs() < 2e-3 / rows as f64,
                "ε {eps} logit {i}: analytic {} numeric {numeric}",
                grad[i]
            );
        }
    }
}

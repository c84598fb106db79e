//! Finite-difference checks of the CPU reference's backward pass: an MLP (every matmul form,
//! bias gradient, fused ReLU) and CNNs (conv with stride and padding, max and average pooling,
//! a standalone ReLU, flatten).
//!
//! The loss is the batch-mean cross-entropy in f32. Central differences with h = 1e-3 have
//! truncation error O(h²·L''') ~ 1e-6 and rounding error ~ u·L/h ~ 1e-4·L, so we accept
//! |analytic - numeric| <= 2e-3 + 2e-2·|numeric|. A sign error, a missing term or a wrong index
//! gives errors of the gradient's own size, and the test also requires the two to agree in
//! direction overall (cosine > 0.999). A coordinate whose perturbation switches a ReLU or moves
//! a max-pool's argmax is skipped: the loss has a kink there.

use steepest::backend::Backend;
use steepest::cpu::{CpuBackend, CpuBuf};
use steepest::nn::{Mode, Model, ModelSpec, Shape, Workspace};

/// Everything a kink changes: every activation's sign and every max-pool's argmax.
fn loss_and_pattern(
    cpu: &mut CpuBackend,
    model: &Model<CpuBackend>,
    ws: &Workspace<CpuBackend>,
    rows: usize,
) -> (f32, Vec<u32>) {
    let stats = cpu.alloc(3).unwrap();
    model.forward(cpu, ws, rows, Mode::Train { step: 0 });
    model.loss(cpu, ws, &stats, rows);
    let s = stats.to_vec();
    // Every layer's output but the logits, blocks' layers included.
    let logits = ws.logits() as *const _;
    let mut pattern: Vec<u32> = ws
        .all_activations()
        .into_iter()
        .filter(|a| !std::ptr::eq(*a, logits))
        .flat_map(|a| a.to_vec())
        .map(|v| (v > 0.0) as u32)
        .collect();
    for idx in ws.all_argmax() {
        pattern.extend(idx.borrow().iter());
    }
    (s[0] / s[2], pattern)
}

fn gradcheck(spec: &str, input: Shape, classes: usize, rows: usize) {
    let mut cpu = CpuBackend::new();
    let spec: ModelSpec = spec.parse().unwrap();
    let model = Model::new(&mut cpu, &spec, input, classes, 42).unwrap();
    let ws = Workspace::new(&mut cpu, &model, rows).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let pixels: Vec<u8> = (0..rows * input.len()).map(|_| rng.u8(..)).collect();
    let labels: Vec<u32> = (0..rows).map(|_| rng.u32(0..classes as u32)).collect();
    ws.load_batch(&mut cpu, &pixels, &labels);

    let stats = cpu.alloc(3).unwrap();
    model.forward(&mut cpu, &ws, rows, Mode::Train { step: 0 });
    model.loss(&mut cpu, &ws, &stats, rows);
    model.backward(&mut cpu, &ws, rows, Mode::Train { step: 0 });

    let h = 1e-3f32;
    let (mut dot, mut na, mut nn, mut checked, mut skipped) = (0f64, 0f64, 0f64, 0, 0);
    let mut max_grad = 0f32;
    for p in model.params() {
        let analytic = p.grad.to_vec();
        let value: &CpuBuf = p.value;
        let original = value.to_vec();
        for i in 0..original.len() {
            let mut plus = original.clone();
            plus[i] += h;
            cpu.write(value, &plus);
            let (lp, kp) = loss_and_pattern(&mut cpu, &model, &ws, rows);
            let mut minus = original.clone();
            minus[i] -= h;
            cpu.write(value, &minus);
            let (lm, km) = loss_and_pattern(&mut cpu, &model, &ws, rows);
            cpu.write(value, &original);
            if kp != km {
                skipped += 1;
                continue;
            }
            let numeric = (lp - lm) / (2.0 * h);
            let a = analytic[i];
            assert!(
                (a - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                "{spec}: {}[{i}]: backward gives {a}, finite differences {numeric}",
                p.name
            );
            dot += a as f64 * numeric as f64;
            na += (a as f64).powi(2);
            nn += (numeric as f64).powi(2);
            max_grad = max_grad.max(a.abs());
            checked += 1;
        }
    }
    let cosine = dot / (na.sqrt() * nn.sqrt());
    assert!(cosine > 0.999, "{spec}: gradient direction: cosine {cosine}");
    assert!(
        max_grad > 0.02,
        "{spec}: gradients too small ({max_grad}) for the check to mean anything"
    );
    assert!(skipped * 10 < checked, "{spec}: {skipped} kinks skipped of {checked}");
}

#[test]
fn mlp_backward_matches_finite_differences() {
    gradcheck("mlp:9,7", Shape::flat(12), 5, 6);
}

#[test]
fn cnn_backward_matches_finite_differences() {
    // conv (padding) + fused relu + maxpool; conv (stride 2, no bias) + standalone relu after
    // avgpool; flatten; linear.
    gradcheck(
        "conv:3:3:p=1,relu,maxpool:2,conv:4:2:s=2:nobias,avgpool:2:1,relu,flatten,linear",
        Shape::new(2, 8, 8),
        3,
        3,
    );
    // Overlapping max-pool windows and global average pooling.
    gradcheck("conv:3:3,relu,maxpool:3:2,gap,flatten,linear", Shape::new(1, 7, 7), 4, 3);
    // Padded max pooling (ResNet's stem).
    gradcheck("conv:3:3:p=1,maxpool:3:2:p=1,flatten,linear", Shape::new(1, 7, 7), 4, 3);
}

#[test]
fn batchnorm_and_dropout_backward_match_finite_differences() {
    // Training-mode batch norm (batch statistics) after a conv and before a linear; dropout with
    // a fixed step, so every forward of the check draws the same mask.
    gradcheck(
        "conv:3:3:nobias,bn,relu,flatten,dropout:0.3,linear:6,relu,linear",
        Shape::new(2, 5, 5),
        3,
        4,
    );
}

/// Residual blocks: an identity shortcut, a 1×1 conv + batch norm shortcut that halves the
/// size, a body that ends with its own ReLU (the block copies the output gradient for it), a
/// block nested in a block, and a block as the first layer (no input gradient needed).
#[test]
fn residual_backward_matches_finite_differences() {
    gradcheck(
        "conv:3:3:p=1,res(conv:3:3:p=1,relu,conv:3:3:p=1),relu,\
         res(conv:4:3:s=2:p=1:nobias,bn,relu,conv:4:3:p=1;conv:4:1:s=2:nobias,bn),flatten,linear",
        Shape::new(2, 6, 6),
        3,
        3,
    );
    gradcheck(
        "res(conv:3:3:p=1,relu,conv:3:3:p=1,relu),res(conv:3:1,res(conv:3:3:p=1);conv:3:1),\
         gap,flatten,linear",
        Shape::new(3, 5, 5),
        3,
        3,
    );
}

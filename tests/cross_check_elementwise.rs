//! `pixels_to_f32`, `add_bias` / `add_bias_relu`, `add`, `scale`, `relu_backward`, `normalize`, `copy_rows`
//! (shaders/elementwise.wgsl) and
//! `bias_grad` (shaders/reduce.wgsl) against their CPU twins (src/cpu/elementwise.rs, reduce.rs).
//!
//! Tolerances: the element-wise kernels do one correctly rounded f32 operation per element
//! (x/255, x+b, max, a compare), identical on both sides, so they must match exactly. `bias_grad`
//! sums `rows` values in a different order (4 interleaved partial sums on the GPU, row order on
//! the CPU); each order's error is at most γ_rows·Σ|g| (γ_n = n·u/(1-n·u)), so the two differ
//! by at most 2·γ_rows·Σ|g|.

mod common;

use common::{assert_close, gpu, random, U};
use steepest::backend::{Backend, Nchw};
use steepest::cpu::{elementwise, reduce};

const SHAPES: &[(usize, usize)] = &[(1, 1), (7, 13), (33, 65), (130, 257), (1, 300), (1000, 3)];

#[test]
fn pixels_to_f32_matches_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(3);
    for len in [1, 2, 3, 5, 784, 1001, 128 * 784 + 3] {
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let mut want = vec![0.0; len];
        elementwise::pixels_to_f32(&bytes, &mut want);
        let src = g.alloc_bytes(len).unwrap();
        let dst = g.alloc(len).unwrap();
        g.write_bytes(&src, &bytes);
        g.pixels_to_f32(&src, &dst, len);
        assert_eq!(g.read(&dst, len).unwrap(), want, "pixels_to_f32 len {len}");
    }
}

/// `add` (residual blocks): one correctly rounded addition per element. Lengths up to a
/// resnet block's output at batch 256 (256 × 16 × 32 × 32 = 4,194,304 values, past the 65,535
/// workgroups of a 1D dispatch).
#[test]
fn add_matches_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(9);
    for len in [1, 3, 256, 257, 100_003, 256 * 16 * 32 * 32] {
        let (a, b) = (random(&mut rng, len), random(&mut rng, len));
        let mut want = vec![0.0; len];
        elementwise::add(&a, &b, &mut want);
        let (ga, gb, out) = (g.alloc(len).unwrap(), g.alloc(len).unwrap(), g.alloc(len).unwrap());
        g.write(&ga, &a);
        g.write(&gb, &b);
        g.add(&ga, &gb, &out, len);
        assert_eq!(g.read(&out, len).unwrap(), want, "add len {len}");
    }
}

/// `scale` (test-time augmentation's mean of logits): one correctly rounded product per
/// element, so exact; up to a batch of 4096 rows of 1000 classes.
#[test]
fn scale_matches_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(31);
    for (len, factor) in [(1, 0.5), (257, -3.0), (4096 * 1000, 0.5)] {
        let x = random(&mut rng, len);
        let mut want = x.clone();
        elementwise::scale(&mut want, factor);
        let gx = g.alloc(len).unwrap();
        g.write(&gx, &x);
        g.scale(&gx, len, factor);
        assert_eq!(g.read(&gx, len).unwrap(), want, "scale len {len} by {factor}");
    }
}

#[test]
fn add_bias_and_relu_match_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(4);
    for &(rows, cols) in SHAPES {
        for relu in [false, true] {
            let x = random(&mut rng, rows * cols);
            let b = random(&mut rng, cols);
            let mut want = x.clone();
            if relu {
                elementwise::add_bias_relu(&mut want, &b);
            } else {
                elementwise::add_bias(&mut want, &b);
            }
            let (gx, gb) = (g.alloc(x.len()).unwrap(), g.alloc(cols).unwrap());
            g.write(&gx, &x);
            g.write(&gb, &b);
            g.add_bias(&gx, &gb, rows, cols, relu);
            let got = g.read(&gx, x.len()).unwrap();
            assert_eq!(got, want, "add_bias relu={relu} {rows}x{cols}");
            if relu {
                assert!(got.iter().all(|&v| v >= 0.0));
            }
        }
    }
}

#[test]
fn relu_backward_matches_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(5);
    for &(rows, cols) in SHAPES {
        let len = rows * cols;
        let grad = random(&mut rng, len);
        // Activations as ReLU leaves them: zeros and positives.
        let act: Vec<f32> = random(&mut rng, len).into_iter().map(|v| v.max(0.0)).collect();
        let mut want = grad.clone();
        elementwise::relu_backward(&mut want, &act);
        let (gg, ga) = (g.alloc(len).unwrap(), g.alloc(len).unwrap());
        g.write(&gg, &grad);
        g.write(&ga, &act);
        g.relu_backward(&gg, &ga, len);
        assert_eq!(g.read(&gg, len).unwrap(), want, "relu_backward {rows}x{cols}");
    }
}

#[test]
fn bias_grad_matches_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(6);
    // Both chunk plans: a software adapter's (4,096-row chunks) and a GPU's (about √rows rows,
    // then a second pass over up to a few hundred chunk sums), at LeNet's conv shapes too.
    let shapes = SHAPES.iter().chain(&[
        (4097, 70),
        (3, 1025),
        (257, 3),
        (8_192, 64),
        (73_728, 8),
        (73_728, 32),
        (589_824, 32),
        // The presets' other bias gradients at batch 128 and 256: LeNet's convs, the MLP.
        (147_456, 32),
        (16_384, 64),
        (128, 256),
        (256, 10),
    ]);
    for (&(rows, cols), software) in shapes.flat_map(|s| [(s, true), (s, false)]) {
        g.plan_as_software(Some(software));
        let grad = random(&mut rng, rows * cols);
        let mut want = vec![0.0; cols];
        reduce::bias_grad(&grad, &mut want, rows, cols);
        let abs: Vec<f32> = grad.iter().map(|v| v.abs()).collect();
        let mut bound = vec![0.0; cols];
        reduce::bias_grad(&abs, &mut bound, rows, cols);
        let (gg, go) = (g.alloc(grad.len()).unwrap(), g.alloc(cols).unwrap());
        g.write(&gg, &grad);
        g.bias_grad(&gg, &go, rows, cols);
        let got = g.read(&go, cols).unwrap();
        let n = rows as f32;
        let gamma = n * U / (1.0 - n * U);
        for c in 0..cols {
            let tol = 2.0 * gamma * bound[c];
            assert!(
                (got[c] - want[c]).abs() <= tol,
                "bias_grad {rows}x{cols} (software plan {software}) col {c}: {} vs {}",
                got[c],
                want[c]
            );
        }
    }
}

#[test]
fn dispatches_past_65535_workgroups_fold_into_2d() {
    let Some(mut g) = gpu() else { return };
    // 65535 workgroups of 256 threads cover 16,776,960 elements; go past that.
    let (rows, cols) = (16_777_216 / 64 + 17, 64);
    let len = rows * cols;
    let x: Vec<f32> = (0..len).map(|i| (i % 1000) as f32 - 500.0).collect();
    let b: Vec<f32> = (0..cols).map(|c| c as f32 * 0.5).collect();
    let (gx, gb) = (g.alloc(len).unwrap(), g.alloc(cols).unwrap());
    g.write(&gx, &x);
    g.write(&gb, &b);
    g.add_bias(&gx, &gb, rows, cols, false);
    let got = g.read(&gx, len).unwrap();
    let mut want = x;
    elementwise::add_bias(&mut want, &b);
    assert_close("add_bias 2D fold", &got, &want, 0.0, 0.0);
}

/// `normalize` (shaders/elementwise.wgsl) against `elementwise::normalize`: one subtraction and
/// one multiplication per element, the same on both sides (nothing to contract into an FMA), so
/// the results must be equal.
#[test]
fn normalize_matches_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(7);
    for &(rows, channels, pixels) in &[(1, 1, 1), (2, 3, 1024), (5, 1, 784), (3, 7, 5)] {
        let len = rows * channels * pixels;
        let x = random(&mut rng, len);
        let mut stats = random(&mut rng, channels);
        stats.extend((0..channels).map(|_| 1.0 / (0.1 + rng.f32())));
        let mut want = x.clone();
        elementwise::normalize(&mut want, &stats, channels, pixels);
        let (gx, gs) = (g.alloc(len).unwrap(), g.alloc(2 * channels).unwrap());
        g.write(&gx, &x);
        g.write(&gs, &stats);
        g.normalize(&gx, &gs, Nchw::new(rows, channels, pixels));
        assert_eq!(g.read(&gx, len).unwrap(), want, "normalize {rows}x{channels}x{pixels}");
    }
}

#[test]
fn copy_rows_pads_and_trims_exactly_like_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(8);
    // (rows, cols, src_width, dst_width): a first conv's weights padded to the im2col width and
    // trimmed back, and odd shapes.
    for &(rows, cols, sw, dw) in
        &[(32, 25, 25, 28), (32, 25, 28, 25), (64, 27, 27, 28), (1, 1, 1, 4), (7, 5, 9, 6)]
    {
        let src = random(&mut rng, rows * sw);
        let mut want = vec![f32::NAN; rows * dw];
        elementwise::copy_rows(&src, &mut want, rows, cols, sw, dw);
        let (gs, gd) = (g.alloc(src.len()).unwrap(), g.alloc(rows * dw).unwrap());
        g.write(&gs, &src);
        g.write(&gd, &vec![f32::NAN; rows * dw]);
        g.copy_rows(&gs, &gd, rows, cols, sw, dw);
        assert_eq!(g.read(&gd, rows * dw).unwrap(), want, "copy_rows {rows}x{cols} {sw}->{dw}");
    }
}

#[test]
fn gather_batch_matches_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(9);
    // (samples, channels, height, width, rows)
    // MNIST-sized and CIFAR-sized batches of 128 and 256 (what training gathers), and odd ones.
    let cases = [
        (600, 1, 28, 28, 128),
        (600, 3, 32, 32, 256),
        (50, 1, 28, 28, 16),
        (20, 3, 5, 7, 9),
        (3, 2, 1, 1, 3),
    ];
    for &(n, c, h, w, rows) in &cases {
        let sample = c * h * w;
        let images: Vec<u8> = (0..n * sample).map(|_| rng.u8(..)).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
        // Shifts inside the image and past it (a whole row or column of padding), flips.
        let mut batch = Vec::new();
        for _ in 0..rows {
            let dy = rng.i32(-(h as i32) - 1..=h as i32 + 1).clamp(-127, 127);
            let dx = rng.i32(-(w as i32) - 1..=w as i32 + 1).clamp(-127, 127);
            let code = (dy + 128) as u32 | ((dx + 128) as u32) << 8 | (rng.bool() as u32) << 16;
            batch.extend([rng.u32(0..n as u32), code]);
        }
        let mut want = vec![0.0; rows * sample];
        let mut want_labels = vec![0; rows];
        let shape = [c, h, w];
        elementwise::gather_batch(
            &images,
            0..n,
            &labels,
            &batch,
            &mut want,
            &mut want_labels,
            rows,
            shape,
        );

        let (gl, gb) = (g.alloc_indices(n).unwrap(), g.alloc_indices(batch.len()).unwrap());
        g.write_indices(&gl, &labels);
        g.write_indices(&gb, &batch);
        // The data set in one buffer, and split across up to three (as one larger than a
        // binding is held): every row comes from the one part that holds its sample.
        for parts in [1, 3] {
            let (go, gol) = (g.alloc(rows * sample).unwrap(), g.alloc_indices(rows).unwrap());
            g.write(&go, &vec![f32::NAN; rows * sample]);
            let per_part = n.div_ceil(parts);
            for first in (0..n).step_by(per_part) {
                let held = first..(first + per_part).min(n);
                let gi = g.alloc_bytes(held.len() * sample).unwrap();
                g.write_bytes(&gi, &images[held.start * sample..held.end * sample]);
                g.gather_batch(&gi, held, &gl, &gb, &go, &gol, rows, shape);
            }
            let what = format!("gather_batch {shape:?} in {parts} parts");
            assert_eq!(g.read(&go, rows * sample).unwrap(), want, "{what}: pixels");
            // Labels come back through an f32 read of the u32 buffer: compare the bits.
            let got: Vec<u32> = g.read(&gol, rows).unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want_labels, "{what}: labels");
        }
    }
}

/// The CPU twin leaves rows whose sample another part holds as they were.
#[test]
fn gather_batch_writes_only_the_rows_its_part_holds() {
    let images: Vec<u8> = (0..4 * 2).map(|v| v as u8 * 30).collect();
    let labels = [7, 8, 9, 6];
    // Samples 3, 1, 2 with no shift; the part holds samples 2..4.
    let code = (128 | 128 << 8) as u32;
    let batch = [3, code, 1, code, 2, code];
    let mut input = vec![-1.0; 3 * 2];
    let mut out = vec![99; 3];
    elementwise::gather_batch(
        &images[4..],
        2..4,
        &labels,
        &batch,
        &mut input,
        &mut out,
        3,
        [1, 1, 2],
    );
    let px = |v: u8| v as f32 / 255.0;
    assert_eq!(input, [px(180), px(210), -1.0, -1.0, px(120), px(150)]);
    assert_eq!(out, [6, 99, 9]);
}

/// `copy` (a transfer: a model's initial weights into its arena) between whole buffers and
/// arena views, as on the CPU: the view's values arrive, its neighbours and the padding keep
/// theirs.
#[test]
fn copy_into_and_out_of_arena_views_matches_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut cpu = steepest::cpu::CpuBackend::new();
    let mut rng = fastrand::Rng::with_seed(12);
    let lens = [5, 300, 1, 64];
    let values: Vec<Vec<f32>> = lens.iter().map(|&n| random(&mut rng, n)).collect();
    fn run<B: Backend>(b: &mut B, lens: &[usize], values: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let arena = b.alloc_arena(lens).unwrap();
        b.write(&arena.whole, &vec![7.0; arena.len]);
        let mut out = Vec::new();
        for (view, v) in arena.views.iter().zip(values).skip(1) {
            let src = b.alloc(v.len()).unwrap();
            b.write(&src, v);
            b.copy(&src, view, v.len());
        }
        // The first view back out into a whole buffer.
        let back = b.alloc(lens[0]).unwrap();
        b.copy(&arena.views[0], &back, lens[0]);
        out.push(b.read(&back, lens[0]).unwrap());
        for (view, &n) in arena.views.iter().zip(lens) {
            out.push(b.read(view, n).unwrap());
        }
        let whole = b.read(&arena.whole, arena.len).unwrap();
        let moved = lens.iter().skip(1).sum::<usize>();
        out.push(vec![(whole.len() - whole.iter().filter(|&&v| v == 7.0).count()) as f32]);
        assert_eq!(out.last().unwrap()[0] as usize, moved, "only the views' values changed");
        out
    }
    let want = run(&mut cpu, &lens, &values);
    let got = run(&mut g, &lens, &values);
    assert_eq!(want[0], vec![7.0; 5]);
    for (i, v) in values.iter().enumerate().skip(1) {
        assert_eq!(&want[i + 1], v, "cpu view {i}");
    }
    assert_eq!(got[..5], want[..5]);
}

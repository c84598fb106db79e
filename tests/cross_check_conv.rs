//! `im2col`, `col2im`, `to_channels_first`, `to_channels_last` (shaders/conv.wgsl) against their
//! CPU twins (src/cpu/conv.rs) over stride and padding combinations, 1×1 images and channel
//! counts that are not multiples of 4; then the whole Conv2d forward and backward, which the GPU
//! runs as those kernels plus the tiled matmul over the batch, and the CPU runs in cache-sized
//! chunks of samples per thread.
//!
//! Whole-conv tolerance: each output is a sum of n products (forward n = C·kh·kw; weight
//! gradient n = rows·pixels; bias gradient n = rows·pixels; input gradient n = O·kh·kw), summed
//! in different orders on the two sides, so they differ by at most 2·γ_n·Σ|terms|; Σ|terms| is
//! the same computation on absolute values.
//!
//! Tolerances: `im2col` and the two layout moves copy values (plus one f32 bias add, the same
//! op on both sides), so they must match exactly. `col2im` sums up to kh·kw patch entries per
//! input value: the GPU gathers them ky-major, the CPU scatters them patch by patch, so the order
//! differs; each order's error is at most γ_n·Σ|terms| (n = kh·kw, γ_n = n·u/(1-n·u)), so they
//! differ by at most 2·γ_n·Σ|terms|, which we compute from |col|.
//!
//! Without a GPU, `conv_matches_the_definition` still holds the CPU's whole conv to the
//! textbook sums in f64, over the same windows.

mod common;

use common::{gpu, random, U};
use steepest::backend::{Backend, Nchw, Window};
use steepest::cpu::{conv, CpuBackend};

/// (rows, channels, height, width, kernel, stride, padding)
const CASES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 1, 0),
    (2, 3, 5, 5, 3, 1, 1),
    (3, 5, 7, 6, 3, 2, 1),
    (2, 1, 28, 28, 5, 1, 0),
    (1, 6, 9, 9, 2, 2, 0),
    (2, 2, 4, 7, 3, 3, 2),
    (1, 7, 3, 3, 3, 1, 2),
    // Padding wider than the kernel: whole output columns and rows see only padding.
    (2, 2, 4, 3, 1, 1, 2),
    (1, 3, 5, 4, 3, 2, 4),
    // A ResNet shortcut: 1×1, stride 2, no padding.
    (2, 4, 8, 8, 1, 2, 0),
    // A "same" 5×5 conv on a 1×1 map (a deep layer after pooling): most taps see only padding.
    (2, 3, 1, 1, 5, 1, 2),
    // Output rows of 10: the CPU im2col's blocks of 8 and a tail in one run.
    (1, 2, 10, 10, 3, 1, 1),
    // Stride past the image: the one output's only tap lands in the padding.
    (1, 2, 1, 1, 1, 3, 1),
];

fn window(c: &(usize, usize, usize, usize, usize, usize, usize)) -> (usize, Window) {
    (c.0, Window::square(c.1, c.2, c.3, c.4, c.5, c.6))
}

#[test]
fn im2col_and_col2im_match_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(20);
    for case in CASES {
        let (rows, w) = window(case);
        let (in_len, col_len) = (rows * w.in_len(), rows * w.out_pixels() * w.col_width());
        let x = random(&mut rng, in_len);
        let mut want = vec![0.0; col_len];
        conv::im2col(&x, &mut want, rows, &w);
        let (gx, gc) = (g.alloc(in_len).unwrap(), g.alloc(col_len).unwrap());
        g.write(&gx, &x);
        g.im2col(&gx, &gc, rows, &w);
        assert_eq!(g.read(&gc, col_len).unwrap(), want, "im2col {case:?}");

        let col = random(&mut rng, col_len);
        let mut want = vec![0.0; in_len];
        conv::col2im(&col, &mut want, rows, &w);
        let abs: Vec<f32> = col.iter().map(|v| v.abs()).collect();
        let mut bound = vec![0.0; in_len];
        conv::col2im(&abs, &mut bound, rows, &w);
        g.write(&gc, &col);
        g.col2im(&gc, &gx, rows, &w);
        let got = g.read(&gx, in_len).unwrap();
        let n = (w.kernel_h * w.kernel_w) as f32;
        let gamma = n * U / (1.0 - n * U);
        for i in 0..in_len {
            assert!(
                (got[i] - want[i]).abs() <= 2.0 * gamma * bound[i],
                "col2im {case:?} [{i}]: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn col2im_is_the_adjoint_of_im2col() {
    // <im2col(x), c> = <x, col2im(c)> for any x and c: the CPU pair is a true transpose.
    let mut rng = fastrand::Rng::with_seed(21);
    for case in CASES {
        let (rows, w) = window(case);
        let x = random(&mut rng, rows * w.in_len());
        let c = random(&mut rng, rows * w.out_pixels() * w.col_width());
        let mut ix = vec![0.0; c.len()];
        conv::im2col(&x, &mut ix, rows, &w);
        let mut tc = vec![0.0; x.len()];
        conv::col2im(&c, &mut tc, rows, &w);
        let lhs: f64 = ix.iter().zip(&c).map(|(a, b)| (a * b) as f64).sum();
        let rhs: f64 = x.iter().zip(&tc).map(|(a, b)| (a * b) as f64).sum();
        assert!((lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()), "{case:?}: {lhs} vs {rhs}");
    }
}

#[test]
fn channel_layout_moves_match_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(22);
    for &(rows, pixels, channels) in &[(1, 1, 1), (2, 25, 3), (3, 64, 7), (5, 1, 13), (2, 576, 32)]
    {
        let len = rows * pixels * channels;
        let z = random(&mut rng, len);
        let bias = random(&mut rng, channels);
        let (gz, gb, gy) =
            (g.alloc(len).unwrap(), g.alloc(channels).unwrap(), g.alloc(len).unwrap());
        g.write(&gz, &z);
        g.write(&gb, &bias);
        for (with_bias, relu) in [(false, false), (true, false), (true, true), (false, true)] {
            let mut want = vec![0.0; len];
            let shape = Nchw::new(rows, channels, pixels);
            conv::to_channels_first(&z, with_bias.then_some(&bias[..]), &mut want, shape, relu);
            g.to_channels_first(&gz, with_bias.then_some(&gb), &gy, shape, relu);
            assert_eq!(
                g.read(&gy, len).unwrap(),
                want,
                "to_channels_first {rows}x{pixels}x{channels} bias={with_bias} relu={relu}"
            );
        }
        let y = random(&mut rng, len);
        let mut want = vec![0.0; len];
        conv::to_channels_last(&y, &mut want, Nchw::new(rows, channels, pixels));
        g.write(&gy, &y);
        g.to_channels_last(&gy, &gz, Nchw::new(rows, channels, pixels));
        assert_eq!(g.read(&gz, len).unwrap(), want, "to_channels_last {rows}x{pixels}x{channels}");
    }
}

fn gamma(n: usize) -> f32 {
    let n = n as f32;
    n * U / (1.0 - n * U)
}

fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32], n: usize) {
    let g = 2.0 * gamma(n);
    for i in 0..want.len() {
        assert!(
            (got[i] - want[i]).abs() <= g * bound[i] + f32::MIN_POSITIVE,
            "{what} [{i}]: {} vs {} (bound {})",
            got[i],
            want[i],
            g * bound[i]
        );
    }
}

/// Runs forward then backward on `b`; returns (y, grad_weight, grad_bias, dx).
#[allow(clippy::type_complexity)]
fn whole_conv<B: Backend>(
    b: &mut B,
    rows: usize,
    w: &Window,
    outputs: usize,
    relu: bool,
    (x, weight, bias, dy): (&[f32], &[f32], &[f32], &[f32]),
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let buf = |b: &mut B, data: &[f32]| {
        let t = b.alloc(data.len()).unwrap();
        b.write(&t, data);
        t
    };
    let (gx, gw, gb, gdy) = (buf(b, x), buf(b, weight), buf(b, bias), buf(b, dy));
    let y_len = rows * outputs * w.out_pixels();
    let (col_len, z_len) = b.conv_scratch_len(rows, w, outputs);
    let (y, col, z) = (b.alloc(y_len).unwrap(), b.alloc(col_len).unwrap(), b.alloc(z_len).unwrap());
    let (ggw, ggb, gdx) =
        (b.alloc(weight.len()).unwrap(), b.alloc(outputs).unwrap(), b.alloc(x.len()).unwrap());
    b.conv2d_forward(&gx, &gw, Some(&gb), &y, &col, &z, rows, w, outputs, relu);
    b.conv2d_backward(&gx, &gdy, &gw, &ggw, Some(&ggb), Some(&gdx), &col, &z, rows, w, outputs);
    b.submit();
    (
        b.read(&y, y_len).unwrap(),
        b.read(&ggw, weight.len()).unwrap(),
        b.read(&ggb, outputs).unwrap(),
        b.read(&gdx, x.len()).unwrap(),
    )
}

#[test]
fn whole_conv_forward_and_backward_match_gpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(23);
    let mut cases = CASES.to_vec();
    // Big enough per sample that the CPU cuts the batch into several chunks on each thread.
    cases.push((6, 16, 24, 24, 5, 1, 2));
    for (i, case) in cases.iter().enumerate() {
        let (rows, w) = window(case);
        let outputs = [3, 5, 8, 1][i % 4];
        let relu = i % 2 == 0;
        let x = random(&mut rng, rows * w.in_len());
        let weight = random(&mut rng, outputs * w.patch_len());
        let bias = random(&mut rng, outputs);
        let dy = random(&mut rng, rows * outputs * w.out_pixels());
        let mut cpu = CpuBackend::new();
        let want = whole_conv(&mut cpu, rows, &w, outputs, relu, (&x, &weight, &bias, &dy));
        let got = whole_conv(&mut g, rows, &w, outputs, relu, (&x, &weight, &bias, &dy));
        // Σ|terms|: the same convolution of absolute values, without ReLU.
        let abs = |v: &[f32]| v.iter().map(|v| v.abs()).collect::<Vec<f32>>();
        let bound = whole_conv(
            &mut cpu,
            rows,
            &w,
            outputs,
            false,
            (&abs(&x), &abs(&weight), &abs(&bias), &abs(&dy)),
        );
        let (patch, pixels) = (w.patch_len(), w.out_pixels());
        let what = |part: &str| format!("{part} {case:?} outputs {outputs}");
        // The bias is one more term; ReLU never widens a gap.
        assert_within(&what("forward"), &got.0, &want.0, &bound.0, patch + 1);
        assert_within(&what("weight grad"), &got.1, &want.1, &bound.1, rows * pixels);
        assert_within(&what("bias grad"), &got.2, &want.2, &bound.2, rows * pixels);
        assert_within(
            &what("input grad"),
            &got.3,
            &want.3,
            &bound.3,
            outputs * w.kernel_h * w.kernel_w,
        );
    }
}

/// The whole CPU conv, forward and backward, against the textbook sums in f64 (no GPU needed): each output
/// is a sum of n f32 products (forward C·k·k + the bias, weight and bias gradients
/// rows·pixels, input gradient at most O·k·k), so within 2·γ_n·Σ|terms|. Every other case has
/// no bias (a conv before batch norm): no bias added, and no bias gradient written.
#[test]
fn conv_matches_the_definition() {
    let mut rng = fastrand::Rng::with_seed(43);
    for (i, &(rows, c, h, wd, k, s, p)) in CASES.iter().enumerate() {
        let w = Window::square(c, h, wd, k, s, p);
        let o = [3, 5, 1, 4][i % 4];
        let (ow, patch, pixels) = (w.out_w(), w.patch_len(), w.out_pixels());
        let x = random(&mut rng, rows * w.in_len());
        let weight = random(&mut rng, o * patch);
        let bias = random(&mut rng, o);
        let dy = random(&mut rng, rows * o * pixels);
        let (col_len, part_len) = conv::scratch_len(rows, &w, o);
        let (mut col, mut partials) = (vec![0.0; col_len], vec![0.0; part_len]);
        let mut y = vec![f32::NAN; rows * o * pixels];
        let with_bias = i % 2 == 0;
        let b = with_bias.then_some(&bias[..]);
        conv::conv2d_forward(&x, &weight, b, &mut y, &mut col, rows, &w, o, false);
        let (mut gw, mut gb, mut dx) =
            (vec![f32::NAN; o * patch], vec![f32::NAN; o], vec![f32::NAN; x.len()]);
        let (gb_out, dx_out) = (with_bias.then_some(&mut gb[..]), Some(&mut dx[..]));
        let scratch = (&mut col[..], &mut partials[..]);
        conv::conv2d_backward(
            &x, &dy, &weight, &mut gw, gb_out, dx_out, scratch.0, scratch.1, rows, &w, o,
        );

        let gamma = |n: usize| {
            let u = f32::EPSILON as f64 / 2.0;
            2.0 * n as f64 * u / (1.0 - n as f64 * u)
        };
        let check = |what: &str, got: f32, want: f64, abs: f64, n: usize| {
            assert!(
                (got as f64 - want).abs() <= gamma(n) * abs + 1e-30,
                "{what} {w:?}: {got} vs {want}"
            );
        };
        let (mut want_gw, mut abs_gw) = (vec![0.0f64; o * patch], vec![0.0f64; o * patch]);
        let (mut want_dx, mut abs_dx) = (vec![0.0f64; x.len()], vec![0.0f64; x.len()]);
        for n in 0..rows {
            for f in 0..o {
                for q in 0..pixels {
                    let (oy, ox) = (q / ow, q % ow);
                    let b = if with_bias { bias[f] } else { 0.0 };
                    let (mut sum, mut abs) = (b as f64, b.abs() as f64);
                    let g = dy[(n * o + f) * pixels + q] as f64;
                    for t in 0..patch {
                        let (ch, ky, kx) = (t / (k * k), (t / k) % k, t % k);
                        // Input pixel (iy, ix) under this tap, if it is not padding.
                        let iy = (oy * s + ky).checked_sub(p).filter(|&v| v < h);
                        let ix = (ox * s + kx).checked_sub(p).filter(|&v| v < wd);
                        let Some(j) = iy.zip(ix).map(|(iy, ix)| ((n * c + ch) * h + iy) * wd + ix)
                        else {
                            continue;
                        };
                        let (v, wt) = (x[j] as f64, weight[f * patch + t] as f64);
                        sum += wt * v;
                        abs += (wt * v).abs();
                        want_gw[f * patch + t] += g * v;
                        abs_gw[f * patch + t] += (g * v).abs();
                        want_dx[j] += g * wt;
                        abs_dx[j] += (g * wt).abs();
                    }
                    check("forward", y[(n * o + f) * pixels + q], sum, abs, patch + 1);
                }
            }
        }
        let m = rows * pixels;
        for j in 0..o * patch {
            check("weight gradient", gw[j], want_gw[j], abs_gw[j], m);
        }
        for f in 0..o {
            let g = (0..rows).flat_map(|n| &dy[(n * o + f) * pixels..][..pixels]);
            let (want, abs) = g.fold((0.0, 0.0), |(s, a), &v| (s + v as f64, a + v.abs() as f64));
            if with_bias {
                check("bias gradient", gb[f], want, abs, m);
            } else {
                assert!(gb[f].is_nan(), "{w:?}: a bias gradient written without a bias");
            }
        }
        for j in 0..x.len() {
            check("input gradient", dx[j], want_dx[j], abs_dx[j], o * k * k);
        }
    }
}

/// The GPU's conv forward stores the matmul's rows straight into NCHW with the bias and ReLU
/// (the matmul's epilogue). It must give bit for bit what the separate passes give (im2col,
/// matmul, `to_channels_first`), in every matmul variant and wherever the epilogue runs: in the
/// matmul kernel (one K range), in `sum_splits` (a 4,608-long patch split side by side), and
/// when the plan's passes run one after another (scratch and K ranges capped), where the
/// separate passes run.
#[test]
fn fused_conv_forward_is_the_separate_passes_exactly() {
    use steepest::backend::MatmulForm;
    use steepest::gpu::matmul::MatmulVariant;
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(29);
    // (rows, window, outputs, scratch cap in floats: 0 leaves the adapter's)
    let cases = [
        (8, Window::square(4, 10, 10, 3, 1, 1), 8, 0),
        (3, Window::square(8, 9, 7, 3, 2, 0), 5, 0),
        (2, Window::square(512, 4, 4, 3, 1, 1), 12, 0),
        (2, Window::square(512, 4, 4, 3, 1, 1), 12, 2 * 32 * 12),
    ];
    for variant in MatmulVariant::ALL {
        g.force_matmul_variant(Some(variant));
        for &(rows, w, outputs, cap) in &cases {
            assert_eq!(w.col_width(), w.patch_len(), "unpadded patches");
            // The cap also cuts K into ranges of 1,024 at most: passes one after another.
            g.limit_split_scratch((cap > 0).then_some((cap, 1_024)));
            let (m, pixels) = (rows * w.out_pixels(), w.out_pixels());
            let plan = g.matmul_plan(MatmulForm::ABt, m, w.patch_len(), outputs);
            assert_eq!(cap > 0, plan.ranges > plan.splits, "{plan:?}: passes only when capped");
            if w.channels == 512 && cap == 0 {
                assert!(plan.splits > 1, "{plan:?}: the case that reaches sum_splits' epilogue");
            }
            let x = random(&mut rng, rows * w.in_len());
            let weight = random(&mut rng, outputs * w.patch_len());
            let bias = random(&mut rng, outputs);
            // (no bias, no ReLU: every conv before a batch norm)
            for (with_bias, relu) in [(true, false), (true, true), (false, true), (false, false)] {
                let [gx, gw, gb] = [&x, &weight, &bias].map(|v| {
                    let t = g.alloc(v.len()).unwrap();
                    g.write(&t, v);
                    t
                });
                let bias_buf = with_bias.then_some(&gb);
                let (col_len, z_len) = g.conv_scratch_len(rows, &w, outputs);
                let (col, z) = (g.alloc(col_len).unwrap(), g.alloc(z_len).unwrap());
                let y_len = rows * outputs * pixels;
                let (fused, apart) = (g.alloc(y_len).unwrap(), g.alloc(y_len).unwrap());
                g.conv2d_forward(&gx, &gw, bias_buf, &fused, &col, &z, rows, &w, outputs, relu);
                g.im2col(&gx, &col, rows, &w);
                g.matmul(MatmulForm::ABt, &col, &gw, &z, m, w.patch_len(), outputs);
                g.to_channels_first(&z, bias_buf, &apart, Nchw::new(rows, outputs, pixels), relu);
                let (fused, apart) =
                    (g.read(&fused, y_len).unwrap(), g.read(&apart, y_len).unwrap());
                let what =
                    format!("{variant:?} {w:?} rows {rows} bias {with_bias} relu {relu} {plan:?}");
                if let Some(i) = (0..y_len).find(|&i| fused[i].to_bits() != apart[i].to_bits()) {
                    panic!("{what}: y[{i}] fused {} apart {}", fused[i], apart[i]);
                }
                assert!(fused.iter().any(|&v| v != 0.0), "{what}: all zero");
            }
        }
    }
    g.force_matmul_variant(None);
    g.limit_split_scratch(None);
}

//! `maxpool`, `maxpool_backward`, `avgpool`, `avgpool_backward` (shaders/pool.wgsl) and `relu`
//! (shaders/elementwise.wgsl) against their CPU twins (src/cpu/pool.rs, elementwise.rs).
//!
//! Tolerances: max pooling picks values and indices (exact). Average pooling sums the window in
//! the same order on both sides and scales by the same f32 (exact). Backward passes: for
//! windows that do not overlap every input has at most one term (exact); where windows overlap
//! the GPU gathers and the CPU scatters, so sums of up to kh·kw terms run in other orders and
//! may differ by 2·γ_n·Σ|terms| (n = kh·kw), computed from |dy|.

mod common;

use common::{gpu, random, U};
use steepest::backend::{Backend, Window};
use steepest::cpu::{elementwise, pool};

/// (rows, channels, height, width, kernel, stride)
const CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 1),
    (2, 3, 4, 4, 2, 2),
    (3, 5, 7, 5, 2, 2),
    (2, 6, 9, 9, 3, 2),
    (1, 7, 5, 6, 3, 1),
    (2, 2, 8, 8, 8, 8),
    (4, 32, 24, 24, 2, 2),
];

#[test]
fn pooling_forward_and_backward_match_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(30);
    for &(rows, c, h, w, k, s) in CASES {
        let win = Window::square(c, h, w, k, s, 0);
        let (in_len, out_len) = (rows * win.in_len(), rows * c * win.out_pixels());
        // Quantised values, so windows hold ties and the first-max rule is exercised.
        let x: Vec<f32> = random(&mut rng, in_len).iter().map(|v| (v * 4.0).round()).collect();
        let (gx, gy, gi) = (
            g.alloc(in_len).unwrap(),
            g.alloc(out_len).unwrap(),
            g.alloc_indices(out_len).unwrap(),
        );
        g.write(&gx, &x);

        let (mut y, mut idx) = (vec![0.0; out_len], vec![0u32; out_len]);
        pool::maxpool(&x, &mut y, &mut idx, rows, &win);
        g.maxpool(&gx, &gy, &gi, rows, &win);
        assert_eq!(g.read(&gy, out_len).unwrap(), y, "maxpool {rows}x{c}x{h}x{w} k{k} s{s}");

        let (dy, abs, gdy) = maxpool_backward_matches(
            &mut g,
            &mut rng,
            &idx,
            &gi,
            &gx,
            rows,
            &win,
            "maxpool_backward",
        );

        let mut y = vec![0.0; out_len];
        g.write(&gx, &x);
        pool::avgpool(&x, &mut y, rows, &win);
        g.avgpool(&gx, &gy, rows, &win);
        assert_eq!(g.read(&gy, out_len).unwrap(), y, "avgpool {rows}x{c}x{h}x{w} k{k} s{s}");

        let (mut dx, mut bound) = (vec![0.0; in_len], vec![0.0; in_len]);
        pool::avgpool_backward(&dy, &mut dx, rows, &win);
        pool::avgpool_backward(&abs, &mut bound, rows, &win);
        g.avgpool_backward(&gdy, &gx, rows, &win);
        check("avgpool_backward", &g.read(&gx, in_len).unwrap(), &dx, &bound, k * k);
    }
}

/// Max pooling with padding (ResNet's stem: 3×3, stride 2, padding 1; and 2×2 padding 1):
/// padded positions never win, so the outputs and argmax are selections (exact); backward sums
/// up to k·k terms where windows overlap, as above. Against PyTorch's rule, written out: each
/// output is the largest input of its window cut to the image.
#[test]
fn padded_maxpool_matches_cpu_and_the_definition() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(31);
    for &(rows, c, h, w, k, s, p) in &[
        (2, 3, 8, 8, 3, 2, 1),
        (1, 2, 7, 5, 3, 2, 1),
        (2, 4, 5, 6, 2, 2, 1),
        (1, 1, 1, 1, 3, 1, 1),
        // resnet18's stem at a fine-tuning batch: 4 × 64 × 112 × 112 (3.2M inputs).
        (4, 64, 112, 112, 3, 2, 1),
    ] {
        let win = Window::square(c, h, w, k, s, p);
        let (in_len, out_len) = (rows * win.in_len(), rows * c * win.out_pixels());
        let x: Vec<f32> = random(&mut rng, in_len).iter().map(|v| (v * 4.0).round()).collect();
        let (mut y, mut idx) = (vec![0.0; out_len], vec![0u32; out_len]);
        pool::maxpool(&x, &mut y, &mut idx, rows, &win);
        // The definition: the window's rows and columns in padded coordinates, cut to the image.
        let (oh, ow) = (win.out_h(), win.out_w());
        for plane in 0..rows * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best = f32::NEG_INFINITY;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                best = best.max(x[plane * h * w + iy as usize * w + ix as usize]);
                            }
                        }
                    }
                    let o = (plane * oh + oy) * ow + ox;
                    assert_eq!(y[o], best, "{h}x{w} k{k} s{s} p{p} at {o}");
                    assert_eq!(x[idx[o] as usize], best);
                }
            }
        }
        let (gx, gy, gi) = (
            g.alloc(in_len).unwrap(),
            g.alloc(out_len).unwrap(),
            g.alloc_indices(out_len).unwrap(),
        );
        g.write(&gx, &x);
        g.maxpool(&gx, &gy, &gi, rows, &win);
        assert_eq!(g.read(&gy, out_len).unwrap(), y, "maxpool p{p}");
        maxpool_backward_matches(&mut g, &mut rng, &idx, &gi, &gx, rows, &win, "padded maxpool");
    }
}

/// `maxpool_backward` of a random `dy` through the windows' maxima `idx` (`gi` on the device),
/// into `gx`, against the CPU; gives back `dy`, `|dy|` and the device copy of `dy`.
#[allow(clippy::too_many_arguments)]
fn maxpool_backward_matches(
    g: &mut steepest::gpu::GpuBackend,
    rng: &mut fastrand::Rng,
    idx: &[u32],
    gi: &steepest::gpu::GpuBuf,
    gx: &steepest::gpu::GpuBuf,
    rows: usize,
    win: &Window,
    what: &str,
) -> (Vec<f32>, Vec<f32>, steepest::gpu::GpuBuf) {
    let (in_len, out_len) = (rows * win.in_len(), idx.len());
    let dy = random(rng, out_len);
    let abs: Vec<f32> = dy.iter().map(|v| v.abs()).collect();
    let (mut dx, mut bound) = (vec![0.0; in_len], vec![0.0; in_len]);
    pool::maxpool_backward(&dy, idx, &mut dx, rows, win);
    pool::maxpool_backward(&abs, idx, &mut bound, rows, win);
    let gdy = g.alloc(out_len).unwrap();
    g.write(&gdy, &dy);
    g.maxpool_backward(&gdy, gi, gx, rows, win);
    check(what, &g.read(gx, in_len).unwrap(), &dx, &bound, win.kernel_h * win.kernel_w);
    (dy, abs, gdy)
}

fn check(what: &str, got: &[f32], want: &[f32], bound: &[f32], terms: usize) {
    let n = terms as f32;
    let gamma = n * U / (1.0 - n * U);
    for i in 0..want.len() {
        assert!(
            (got[i] - want[i]).abs() <= 2.0 * gamma * bound[i],
            "{what}[{i}]: {} vs {}",
            got[i],
            want[i]
        );
    }
}

#[test]
fn cpu_maxpool_backward_routes_to_the_first_maximum() {
    // One 2×2 window with a tie: the gradient goes to the first of the two maxima only.
    let win = Window::square(1, 2, 2, 2, 2, 0);
    let (mut y, mut idx) = ([0.0], [0u32]);
    pool::maxpool(&[1.0, 3.0, 3.0, 0.0], &mut y, &mut idx, 1, &win);
    assert_eq!((y[0], idx[0]), (3.0, 1));
    let mut dx = [9.0; 4];
    pool::maxpool_backward(&[5.0], &idx, &mut dx, 1, &win);
    assert_eq!(dx, [0.0, 5.0, 0.0, 0.0]);
}

#[test]
fn relu_matches_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(31);
    for len in [1, 255, 257, 10_000] {
        let x = random(&mut rng, len);
        let mut want = x.clone();
        elementwise::relu(&mut want);
        let gx = g.alloc(len).unwrap();
        g.write(&gx, &x);
        g.relu(&gx, len);
        assert_eq!(g.read(&gx, len).unwrap(), want, "relu {len}");
    }
}

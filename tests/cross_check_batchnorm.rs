//! `batchnorm_stats`, `batchnorm_forward`, `batchnorm_backward_reduce`, `batchnorm_backward`
//! (shaders/batchnorm.wgsl) and `dropout` (shaders/elementwise.wgsl) against their CPU twins
//! (src/cpu/batchnorm.rs, elementwise.rs).
//!
//! Tolerances: the reductions sum M = rows·pixels values per channel, in a 256-way tree on the
//! GPU and in order on the CPU; each order's error is at most γ_M·Σ|terms| (γ_M = M·u/(1-M·u)),
//! so sums differ by at most 2·γ_M·Σ|terms| and the derived mean, 1/√var and running averages
//! inherit that relative size (we allow 4·γ_M relative on 1/√var, as the square root halves it
//! and the division doubles it back). The element-wise kernels are fed the same statistics and
//! compute the same expression; a compiler may contract a·b+c into one FMA (one rounding fewer),
//! so they agree to 4 ulp relative (plus 1e-6 absolute near zero). Dropout masks come from the
//! same integer hash on both sides, so they match exactly.

mod common;

use common::{assert_close, gpu, random, U};
use steepest::backend::{Backend, BatchNormHyper, Nchw};
use steepest::cpu::{batchnorm, elementwise};

const SHAPES: &[(usize, usize, usize)] =
    &[(1, 1, 1), (4, 3, 5), (2, 7, 64), (8, 32, 49), (300, 2, 1)];

fn gamma(m: usize) -> f32 {
    let m = m as f32;
    m * U / (1.0 - m * U)
}

#[test]
fn batchnorm_kernels_match_cpu() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(40);
    for &(rows, c, p) in SHAPES {
        let len = rows * c * p;
        let m = rows * p;
        let x: Vec<f32> = random(&mut rng, len).iter().map(|v| v * 3.0 + 0.5).collect();
        let dy = random(&mut rng, len);
        let gam = random(&mut rng, c);
        let beta = random(&mut rng, c);
        let rm0 = random(&mut rng, c);
        let rv0: Vec<f32> = random(&mut rng, c).iter().map(|v| v.abs() + 0.5).collect();
        for train in [true, false] {
            let h = BatchNormHyper { eps: 1e-5, momentum: 0.1, train };
            let (mut saved, mut rm, mut rv) = (vec![0.0; 2 * c], rm0.clone(), rv0.clone());
            batchnorm::batchnorm_stats(&x, &mut saved, &mut rm, &mut rv, Nchw::new(rows, c, p), &h);
            let up = |g: &mut steepest::gpu::GpuBackend, v: &[f32]| {
                let b = g.alloc(v.len()).unwrap();
                g.write(&b, v);
                b
            };
            let (gx, gs, grm, grv) =
                (up(&mut g, &x), g.alloc(2 * c).unwrap(), up(&mut g, &rm0), up(&mut g, &rv0));
            g.batchnorm_stats(&gx, &gs, &grm, &grv, Nchw::new(rows, c, p), &h);
            let got = g.read(&gs, 2 * c).unwrap();
            let tol = 4.0 * gamma(m);
            let scale = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for ch in 0..c {
                assert!(
                    (got[ch] - saved[ch]).abs() <= 2.0 * tol * scale + 1e-7,
                    "mean {rows}x{c}x{p} train={train}: {} vs {}",
                    got[ch],
                    saved[ch]
                );
                let inv = saved[c + ch];
                assert!(
                    (got[c + ch] - inv).abs() <= tol * inv.abs() * 4.0 + 1e-6 * inv.abs(),
                    "invstd {rows}x{c}x{p}: {} vs {inv}",
                    got[c + ch]
                );
            }
            assert_close(
                "running_mean",
                &g.read(&grm, c).unwrap(),
                &rm,
                2.0 * tol * scale + 1e-7,
                1e-6,
            );
            assert_close("running_var", &g.read(&grv, c).unwrap(), &rv, 1e-6, 8.0 * tol + 1e-6);
            if !train {
                assert_eq!(rm, rm0, "eval leaves the running mean alone");
                assert_eq!(g.read(&grv, c).unwrap(), rv0, "eval leaves the running variance alone");
            }

            // Element-wise kernels and the backward reductions, from the CPU's statistics.
            let gs = up(&mut g, &saved);
            let (gg, gbeta, gy) = (up(&mut g, &gam), up(&mut g, &beta), g.alloc(len).unwrap());
            let mut y = vec![0.0; len];
            batchnorm::batchnorm_forward(&x, &saved, &gam, &beta, &mut y, Nchw::new(rows, c, p));
            g.batchnorm_forward(&gx, &gs, &gg, &gbeta, &gy, Nchw::new(rows, c, p));
            assert_close(
                "batchnorm_forward",
                &g.read(&gy, len).unwrap(),
                &y,
                1e-6,
                4.0 * f32::EPSILON,
            );

            let (mut ggam, mut gbet) = (vec![0.0; c], vec![0.0; c]);
            batchnorm::batchnorm_backward_reduce(
                &x,
                &dy,
                &saved,
                &mut ggam,
                &mut gbet,
                Nchw::new(rows, c, p),
            );
            let gdy = up(&mut g, &dy);
            let (ggg, ggb) = (g.alloc(c).unwrap(), g.alloc(c).unwrap());
            g.batchnorm_backward_reduce(&gx, &gdy, &gs, &ggg, &ggb, Nchw::new(rows, c, p));
            let (got_gg, got_gb) = (g.read(&ggg, c).unwrap(), g.read(&ggb, c).unwrap());
            for ch in 0..c {
                // The same terms summed in two orders (plus FMA contraction inside each term).
                let (mut abs_gg, mut abs_gb) = (0f32, 0f32);
                for n in 0..rows {
                    for q in 0..p {
                        let i = (n * c + ch) * p + q;
                        abs_gg += (dy[i] * (x[i] - saved[ch]) * saved[c + ch]).abs();
                        abs_gb += dy[i].abs();
                    }
                }
                let tol_gg = (2.0 * gamma(m) + 4.0 * f32::EPSILON) * abs_gg + 1e-7;
                assert!(
                    (got_gg[ch] - ggam[ch]).abs() <= tol_gg,
                    "grad_gamma {rows}x{c}x{p}: {} vs {}",
                    got_gg[ch],
                    ggam[ch]
                );
                assert!(
                    (got_gb[ch] - gbet[ch]).abs() <= 2.0 * gamma(m) * abs_gb + 1e-7,
                    "grad_beta {rows}x{c}x{p}"
                );
            }

            let mut dx = vec![0.0; len];
            batchnorm::batchnorm_backward(
                &x,
                &dy,
                &saved,
                &gam,
                &ggam,
                &gbet,
                &mut dx,
                Nchw::new(rows, c, p),
            );
            let (ggg, ggb, gdx) = (up(&mut g, &ggam), up(&mut g, &gbet), g.alloc(len).unwrap());
            g.batchnorm_backward(&gx, &gdy, &gs, &gg, &ggg, &ggb, &gdx, Nchw::new(rows, c, p));
            let dscale = dx.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert_close(
                "batchnorm_backward",
                &g.read(&gdx, len).unwrap(),
                &dx,
                8.0 * f32::EPSILON * dscale + 1e-6,
                8.0 * f32::EPSILON,
            );
        }
    }
}

#[test]
fn dropout_masks_match_cpu_exactly() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(41);
    for (len, p, seed) in [(1, 0.5, 1), (1000, 0.25, 7), (4097, 0.9, 123), (300, 0.0, 5)] {
        let x = random(&mut rng, len);
        let mut want = x.clone();
        elementwise::dropout(&mut want, seed, p);
        let gx = g.alloc(len).unwrap();
        g.write(&gx, &x);
        g.dropout(&gx, len, seed, p);
        assert_eq!(g.read(&gx, len).unwrap(), want, "dropout len {len} p {p}");
    }
}

#[test]
fn dropout_drops_about_p_and_keeps_the_mean() {
    let n = 100_000;
    for p in [0.1f32, 0.5, 0.8] {
        let mut x = vec![1.0f32; n];
        elementwise::dropout(&mut x, 99, p);
        let dropped = x.iter().filter(|&&v| v == 0.0).count() as f32 / n as f32;
        let mean = x.iter().sum::<f32>() / n as f32;
        assert!((dropped - p).abs() < 0.01, "p {p}: dropped {dropped}");
        assert!((mean - 1.0).abs() < 0.03, "p {p}: mean {mean}");
    }
}

/// Channels with many values: past 16,384 a channel's sums run in spans, one workgroup each,
/// and a finishing pass adds the spans (`batchnorm_partial`, `batchnorm_finish`). The widest
/// case, 8.5M values per channel, is past what one workgroup per channel could sum on lavapipe
/// (each thread's loop would pass 65,535 iterations and be cut short, silently).
///
/// Against f64 sums of the same f32 inputs: the GPU adds at most m/(256·spans) values per
/// thread in order, then a 256-way tree (8 levels), then the spans in order, so each sum is
/// within γ_n·Σ|terms| with n = that path's length (+3 for the ops inside a term, +2 for the
/// division and square root after it).
#[test]
fn batchnorm_sums_over_wide_channels_are_right() {
    let Some(mut g) = gpu() else { return };
    let mut rng = fastrand::Rng::with_seed(44);
    for &(rows, c, p) in &[(64usize, 3usize, 1024usize), (130, 1, 65_536)] {
        let m = rows * p;
        let spans = steepest::gpu::batchnorm_chunks(Nchw::new(rows, c, p)) as usize;
        assert!(spans > 1, "{rows}x{p} is summed in spans");
        let n = m.div_ceil(spans).div_ceil(256) + 8 + spans + 5;
        let gam = |n: usize| n as f64 * U as f64 / (1.0 - n as f64 * U as f64);
        let len = rows * c * p;
        let x: Vec<f32> = random(&mut rng, len).iter().map(|v| v * 3.0 + 0.5).collect();
        let dy = random(&mut rng, len);
        let up = |g: &mut steepest::gpu::GpuBackend, v: &[f32]| {
            let b = g.alloc(v.len()).unwrap();
            g.write(&b, v);
            b
        };
        let (gx, gdy, gs) = (up(&mut g, &x), up(&mut g, &dy), g.alloc(2 * c).unwrap());
        let (grm, grv) = (up(&mut g, &vec![0.0; c]), up(&mut g, &vec![1.0; c]));
        let h = BatchNormHyper { eps: 1e-5, momentum: 0.1, train: true };
        let shape = Nchw::new(rows, c, p);
        g.batchnorm_stats(&gx, &gs, &grm, &grv, shape, &h);
        let (ggam, gbet) = (g.alloc(c).unwrap(), g.alloc(c).unwrap());
        g.batchnorm_backward_reduce(&gx, &gdy, &gs, &ggam, &gbet, shape);
        let saved = g.read(&gs, 2 * c).unwrap();
        let (grad_gamma, grad_beta) = (g.read(&ggam, c).unwrap(), g.read(&gbet, c).unwrap());
        let channel = |v: &[f32], ch: usize| -> Vec<f64> {
            (0..rows).flat_map(|r| v[(r * c + ch) * p..][..p].iter().map(|&u| u as f64)).collect()
        };
        for ch in 0..c {
            let (xc, dc) = (channel(&x, ch), channel(&dy, ch));
            let mean = xc.iter().sum::<f64>() / m as f64;
            let abs_mean = xc.iter().map(|v| v.abs()).sum::<f64>() / m as f64;
            let what = format!("{rows}x{c}x{p} channel {ch}");
            assert!((saved[ch] as f64 - mean).abs() <= gam(n) * abs_mean, "mean {what}");
            // Squared deviations are all positive: a relative bound, halved by the square root.
            let var = xc.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64;
            let invstd = 1.0 / (var + 1e-5).sqrt();
            let got = saved[c + ch] as f64;
            assert!((got - invstd).abs() <= gam(n) * invstd, "invstd {what}: {got} vs {invstd}");
            // The backward sums, from the statistics the GPU saved.
            let (m32, s32) = (saved[ch] as f64, saved[c + ch] as f64);
            let terms: Vec<f64> = xc.iter().zip(&dc).map(|(x, d)| d * (x - m32) * s32).collect();
            let want = terms.iter().sum::<f64>();
            let bound = gam(n) * terms.iter().map(|t| t.abs()).sum::<f64>();
            assert!((grad_gamma[ch] as f64 - want).abs() <= bound, "grad gamma {what}");
            let want = dc.iter().sum::<f64>();
            let bound = gam(n) * dc.iter().map(|d| d.abs()).sum::<f64>();
            assert!((grad_beta[ch] as f64 - want).abs() <= bound, "grad beta {what}");
        }
    }
}

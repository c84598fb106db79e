//! CPU twins of `shaders/batchnorm.wgsl`: BatchNorm2d over NCHW, PyTorch's rules. Channel sums
//! run one channel per thread; the per-value passes one run of samples per thread.

use rayon::prelude::*;

use super::parallel::for_samples;
use crate::backend::{BatchNormHyper, Nchw};

/// Sums over one channel's planes run in [`LANES`] interleaved partial sums, which the compiler
/// turns into vector adds (a single running sum would be serial) and which round less.
const LANES: usize = 8;

/// `Σ f(x, dy)` over one plane pair, for each of the `N` values `f` returns, in [`LANES`]
/// partial sums each.
fn plane_sums<const N: usize>(x: &[f32], dy: &[f32], f: impl Fn(f32, f32) -> [f32; N]) -> [f32; N] {
    let mut acc = [[0.0f32; LANES]; N];
    let (xs, dys) = (x.chunks_exact(LANES), dy.chunks_exact(LANES));
    let (x_tail, dy_tail) = (xs.remainder(), dys.remainder());
    for (a, b) in xs.zip(dys) {
        for l in 0..LANES {
            let v = f(a[l], b[l]);
            for k in 0..N {
                acc[k][l] += v[k];
            }
        }
    }
    let mut out = acc.map(|lanes| lanes.iter().sum::<f32>());
    for (&a, &b) in x_tail.iter().zip(dy_tail) {
        let v = f(a, b);
        for k in 0..N {
            out[k] += v[k];
        }
    }
    out
}

/// Per channel `c`: `Σ f(c, x, dy)` over every sample's plane of `c` (each of the `N` values `f`
/// returns), channels spread over the threads.
fn channel_sums<const N: usize>(
    x: &[f32],
    dy: &[f32],
    shape: Nchw,
    f: impl Fn(usize, f32, f32) -> [f32; N] + Sync,
) -> Vec<[f32; N]> {
    let Nchw { rows, channels, pixels } = shape;
    let sum = |c: usize| {
        let mut total = [0.0f32; N];
        for n in 0..rows {
            let at = (n * channels + c) * pixels;
            let part = plane_sums(&x[at..at + pixels], &dy[at..at + pixels], |a, b| f(c, a, b));
            for k in 0..N {
                total[k] += part[k];
            }
        }
        total
    };
    if shape.len() < 1 << 15 {
        return (0..channels).map(sum).collect();
    }
    (0..channels).into_par_iter().map(sum).collect()
}

/// `out[n, c, :] = f(c, x[n, c, :], dy[n, c, :])` value by value, samples spread over the threads.
fn map_planes(
    x: &[f32],
    dy: &[f32],
    out: &mut [f32],
    rows: usize,
    channels: usize,
    pixels: usize,
    f: impl Fn(usize, f32, f32) -> f32 + Sync,
) {
    let len = channels * pixels;
    if len == 0 {
        return;
    }
    for_samples(out, rows, len, |first, chunk| {
        let (x, dy) = (&x[first * len..], &dy[first * len..]);
        for (i, plane) in chunk.chunks_exact_mut(pixels).enumerate() {
            let c = i % channels;
            let (xp, dp) = (&x[i * pixels..][..pixels], &dy[i * pixels..][..pixels]);
            for ((o, &a), &b) in plane.iter_mut().zip(xp).zip(dp) {
                *o = f(c, a, b);
            }
        }
    });
}

pub fn batchnorm_stats(
    x: &[f32],
    saved: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    shape: Nchw,
    h: &BatchNormHyper,
) {
    let Nchw { rows, channels, pixels } = shape;
    let m = (rows * pixels) as f32;
    let (mean, var) = if h.train {
        let mean: Vec<f32> =
            channel_sums(x, x, shape, |_, v, _| [v]).into_iter().map(|[s]| s / m).collect();
        let var: Vec<f32> = channel_sums(x, x, shape, |c, v, _| [(v - mean[c]) * (v - mean[c])])
            .into_iter()
            .map(|[s]| s / m)
            .collect();
        for c in 0..channels {
            let unbiased = if m > 1.0 { var[c] * m / (m - 1.0) } else { var[c] };
            running_mean[c] = (1.0 - h.momentum) * running_mean[c] + h.momentum * mean[c];
            running_var[c] = (1.0 - h.momentum) * running_var[c] + h.momentum * unbiased;
        }
        (mean, var)
    } else {
        (running_mean[..channels].to_vec(), running_var[..channels].to_vec())
    };
    for c in 0..channels {
        saved[c] = mean[c];
        saved[channels + c] = 1.0 / (var[c] + h.eps).sqrt();
    }
}

pub fn batchnorm_forward(
    x: &[f32],
    saved: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    shape: Nchw,
) {
    let Nchw { rows, channels, pixels } = shape;
    map_planes(x, x, y, rows, channels, pixels, |c, v, _| {
        (v - saved[c]) * saved[channels + c] * gamma[c] + beta[c]
    });
}

pub fn batchnorm_backward_reduce(
    x: &[f32],
    dy: &[f32],
    saved: &[f32],
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
    shape: Nchw,
) {
    let channels = shape.channels;
    let (mean, invstd) = saved.split_at(channels);
    // Both sums in one pass over x and dy.
    let sums = channel_sums(x, dy, shape, |c, v, d| [d * (v - mean[c]) * invstd[c], d]);
    for (c, [gg, gb]) in sums.into_iter().enumerate() {
        grad_gamma[c] = gg;
        grad_beta[c] = gb;
    }
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    x: &[f32],
    dy: &[f32],
    saved: &[f32],
    gamma: &[f32],
    grad_gamma: &[f32],
    grad_beta: &[f32],
    dx: &mut [f32],
    shape: Nchw,
) {
    let Nchw { rows, channels, pixels } = shape;
    let m = (rows * pixels) as f32;
    let (mean, invstd) = saved.split_at(channels);
    map_planes(x, dy, dx, rows, channels, pixels, |c, v, d| {
        let xhat = (v - mean[c]) * invstd[c];
        gamma[c] * invstd[c] / m * (m * d - grad_beta[c] - xhat * grad_gamma[c])
    });
}

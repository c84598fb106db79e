//! CPU twins of `shaders/batchnorm.wgsl`: BatchNorm2d over NCHW, PyTorch's rules.

use crate::backend::BatchNormHyper;

/// Visits every value of channel `c` in `[rows, channels, pixels]`.
fn channel(
    x: &[f32],
    c: usize,
    rows: usize,
    channels: usize,
    pixels: usize,
) -> impl Iterator<Item = (usize, f32)> + '_ {
    (0..rows).flat_map(move |n| {
        let base = (n * channels + c) * pixels;
        (base..base + pixels).map(move |i| (i, x[i]))
    })
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_stats(
    x: &[f32],
    saved: &mut [f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    rows: usize,
    channels: usize,
    pixels: usize,
    h: &BatchNormHyper,
) {
    let m = (rows * pixels) as f32;
    for c in 0..channels {
        let (mean, var) = if h.train {
            let mean = channel(x, c, rows, channels, pixels).map(|(_, v)| v).sum::<f32>() / m;
            let var = channel(x, c, rows, channels, pixels)
                .map(|(_, v)| (v - mean) * (v - mean))
                .sum::<f32>()
                / m;
            let unbiased = if m > 1.0 { var * m / (m - 1.0) } else { var };
            running_mean[c] = (1.0 - h.momentum) * running_mean[c] + h.momentum * mean;
            running_var[c] = (1.0 - h.momentum) * running_var[c] + h.momentum * unbiased;
            (mean, var)
        } else {
            (running_mean[c], running_var[c])
        };
        saved[c] = mean;
        saved[channels + c] = 1.0 / (var + h.eps).sqrt();
    }
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward(
    x: &[f32],
    saved: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    rows: usize,
    channels: usize,
    pixels: usize,
) {
    for c in 0..channels {
        let (mean, invstd) = (saved[c], saved[channels + c]);
        for (i, v) in channel(x, c, rows, channels, pixels) {
            y[i] = (v - mean) * invstd * gamma[c] + beta[c];
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward_reduce(
    x: &[f32],
    dy: &[f32],
    saved: &[f32],
    grad_gamma: &mut [f32],
    grad_beta: &mut [f32],
    rows: usize,
    channels: usize,
    pixels: usize,
) {
    for c in 0..channels {
        let (mean, invstd) = (saved[c], saved[channels + c]);
        let (mut gg, mut gb) = (0.0f32, 0.0f32);
        for (i, v) in channel(x, c, rows, channels, pixels) {
            gg += dy[i] * (v - mean) * invstd;
            gb += dy[i];
        }
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
    rows: usize,
    channels: usize,
    pixels: usize,
) {
    let m = (rows * pixels) as f32;
    for c in 0..channels {
        let (mean, invstd) = (saved[c], saved[channels + c]);
        let scale = gamma[c] * invstd / m;
        for (i, v) in channel(x, c, rows, channels, pixels) {
            let xhat = (v - mean) * invstd;
            dx[i] = scale * (m * dy[i] - grad_beta[c] - xhat * grad_gamma[c]);
        }
    }
}

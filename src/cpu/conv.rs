//! CPU twins of `shaders/conv.wgsl`: the reshuffles that turn a convolution into the tiled
//! matmul (`im2col`, `col2im`) and move between NCHW and per-pixel rows. Same results as the
//! WGSL; `col2im` scatters instead of gathering (much faster on a CPU), so where patches overlap
//! its sums run in another order (see tests/cross_check_conv.rs for the tolerance).

use super::parallel::for_samples;
use crate::backend::Window;

/// `col[(n, oy, ox), (c, ky, kx)] = x[n, c, oy·sh + ky - ph, ox·sw + kx - pw]`, 0 off the image.
pub fn im2col(x: &[f32], col: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow, patch) = (w.out_h(), w.out_w(), w.patch_len());
    for_samples(col, rows, oh * ow * patch, |first, chunk| {
        for (s, sample) in chunk.chunks_exact_mut(oh * ow * patch).enumerate() {
            let image = &x[(first + s) * w.in_len()..][..w.in_len()];
            for (r, row) in sample.chunks_exact_mut(patch).enumerate() {
                let (oy, ox) = (r / ow, r % ow);
                for c in 0..w.channels {
                    for ky in 0..w.kernel_h {
                        let run = &mut row[(c * w.kernel_h + ky) * w.kernel_w..][..w.kernel_w];
                        match kernel_row(w, oy, ox, ky) {
                            Some((iy, kx0, kx1, ix0)) => {
                                run[..kx0].fill(0.0);
                                run[kx1..].fill(0.0);
                                let src = &image[(c * w.height + iy) * w.width..][..w.width];
                                for (k, v) in run[kx0..kx1].iter_mut().enumerate() {
                                    *v = src[ix0 + k];
                                }
                            }
                            None => run.fill(0.0),
                        }
                    }
                }
            }
        }
    });
}

/// For patch row `ky` of output pixel (oy, ox): the input row, and the kernel columns
/// `kx0..kx1` that land inside the image with the input column of `kx0`; `None` when the whole
/// row is padding.
fn kernel_row(w: &Window, oy: usize, ox: usize, ky: usize) -> Option<(usize, usize, usize, usize)> {
    let iy = (oy * w.stride_h + ky).checked_sub(w.pad_h).filter(|&iy| iy < w.height)?;
    let left = ox * w.stride_w; // input column of kx = 0, plus pad_w
    let kx0 = w.pad_w.saturating_sub(left);
    // Last kx with left + kx - pad_w < width.
    let kx1 = (w.width + w.pad_w).saturating_sub(left).min(w.kernel_w).max(kx0);
    Some((iy, kx0, kx1, left + kx0 - w.pad_w))
}

/// The adjoint of [`im2col`]: every patch entry is added back onto the input value it copied.
pub fn col2im(col: &[f32], x: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow, patch) = (w.out_h(), w.out_w(), w.patch_len());
    for_samples(x, rows, w.in_len(), |first, chunk| {
        chunk.fill(0.0);
        for (s, image) in chunk.chunks_exact_mut(w.in_len()).enumerate() {
            let sample = &col[(first + s) * oh * ow * patch..][..oh * ow * patch];
            for (r, row) in sample.chunks_exact(patch).enumerate() {
                let (oy, ox) = (r / ow, r % ow);
                for c in 0..w.channels {
                    for ky in 0..w.kernel_h {
                        if let Some((iy, kx0, kx1, ix0)) = kernel_row(w, oy, ox, ky) {
                            let run = &row[(c * w.kernel_h + ky) * w.kernel_w..][..w.kernel_w];
                            let dst = &mut image[(c * w.height + iy) * w.width..][..w.width];
                            for (k, v) in run[kx0..kx1].iter().enumerate() {
                                dst[ix0 + k] += v;
                            }
                        }
                    }
                }
            }
        }
    });
}

/// `y[n, c, p] = z[n·pixels + p, c] + bias[c]`, then ReLU when asked.
pub fn to_channels_first(
    z: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    rows: usize,
    pixels: usize,
    channels: usize,
    relu: bool,
) {
    for_samples(y, rows, channels * pixels, |first, chunk| {
        for (s, out) in chunk.chunks_exact_mut(channels * pixels).enumerate() {
            let rows_in = &z[(first + s) * pixels * channels..][..pixels * channels];
            for c in 0..channels {
                let b = bias.map_or(0.0, |b| b[c]);
                for p in 0..pixels {
                    let v = rows_in[p * channels + c] + b;
                    out[c * pixels + p] = if relu { v.max(0.0) } else { v };
                }
            }
        }
    });
}

/// `z[n·pixels + p, c] = y[n, c, p]`.
pub fn to_channels_last(y: &[f32], z: &mut [f32], rows: usize, pixels: usize, channels: usize) {
    for_samples(z, rows, pixels * channels, |first, chunk| {
        for (s, out) in chunk.chunks_exact_mut(pixels * channels).enumerate() {
            let image = &y[(first + s) * channels * pixels..][..channels * pixels];
            for p in 0..pixels {
                for c in 0..channels {
                    out[p * channels + c] = image[c * pixels + p];
                }
            }
        }
    });
}

//! CPU twins of `shaders/conv.wgsl`: the reshuffles that turn a convolution into the tiled
//! matmul (`im2col`, `col2im`) and move between NCHW and per-pixel rows. Same results as the
//! WGSL; `col2im` scatters instead of gathering (much faster on a CPU), so where patches overlap
//! its sums run in another order (see tests/cross_check_conv.rs for the tolerance).
//!
//! Training uses [`conv2d_forward`] and [`conv2d_backward`] instead, which do the GPU's steps a
//! few samples at a time on each thread, so the patch matrix stays in cache instead of streaming
//! a batch-sized one through memory. Their patch matrix is channel-major (one row per kernel tap,
//! a shifted copy of an input channel), which is copied in whole output rows and multiplies as
//! `W · col` straight into NCHW; backward redoes the cheap im2col rather than keeping it. Same
//! sums as the GPU's, in another order.

use rayon::prelude::*;

use super::matmul::matmul_serial;
use super::parallel::{for_samples, ranges};
use crate::backend::{MatmulForm, Nchw, Window};

/// `col[(n, oy, ox), (c, ky, kx)] = x[n, c, oy·sh + ky - ph, ox·sw + kx - pw]`, 0 off the image,
/// in rows of [`Window::col_width`] (zeros past the patch), the layout the GPU's matmuls load.
pub fn im2col(x: &[f32], col: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow, patch, width) = (w.out_h(), w.out_w(), w.patch_len(), w.col_width());
    if width == patch {
        return im2col_packed(x, col, rows, w);
    }
    let mut packed = vec![0.0; rows * oh * ow * patch];
    im2col_packed(x, &mut packed, rows, w);
    for (dst, src) in col.chunks_exact_mut(width).zip(packed.chunks_exact(patch)) {
        dst[..patch].copy_from_slice(src);
        dst[patch..].fill(0.0);
    }
}

/// [`im2col`] into rows of exactly the patch length.
fn im2col_packed(x: &[f32], col: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow, patch) = (w.out_h(), w.out_w(), w.patch_len());
    for_samples(col, rows, oh * ow * patch, |first, chunk| {
        im2col_serial(&x[first * w.in_len()..], chunk, w)
    });
}

/// [`im2col`] on the calling thread, for as many samples as `col` has room for.
fn im2col_serial(x: &[f32], col: &mut [f32], w: &Window) {
    // Runs of kernel width 3 or 5 (nearly every conv) copy with a fixed length, which compiles to
    // a few vector moves instead of a memcpy call per run.
    match w.kernel_w {
        3 => im2col_runs::<3>(x, col, w),
        5 => im2col_runs::<5>(x, col, w),
        _ => im2col_runs::<0>(x, col, w),
    }
}

/// For output column `ox`: the kernel columns `kx0..kx1` inside the image and the input column
/// of `kx0`.
fn column_span(w: &Window, ox: usize) -> (usize, usize, usize) {
    let left = ox * w.stride_w; // input column of kx = 0, plus pad_w
    let kx0 = w.pad_w.saturating_sub(left).min(w.kernel_w);
    // Last kx with left + kx - pad_w < width.
    let kx1 = (w.width + w.pad_w).saturating_sub(left).min(w.kernel_w).max(kx0);
    // A run wholly in the right padding (padding wider than the kernel) is empty; keep its start
    // inside the row so that slicing from it stays valid.
    (kx0, kx1, (left + kx0).saturating_sub(w.pad_w).min(w.width))
}

/// The input row under kernel row `ky` of output row `oy`, if it is not padding.
fn input_row(w: &Window, oy: usize, ky: usize) -> Option<usize> {
    (oy * w.stride_h + ky).checked_sub(w.pad_h).filter(|&iy| iy < w.height)
}

/// [`im2col_serial`] with runs of `K` values when `K > 0` and the run is whole. Each patch row is
/// written front to back (the image it reads from sits in L1), so the writes stream.
fn im2col_runs<const K: usize>(x: &[f32], col: &mut [f32], w: &Window) {
    let (oh, ow, patch, kw) = (w.out_h(), w.out_w(), w.patch_len(), w.kernel_w);
    let plane = w.height * w.width;
    for (s, sample) in col.chunks_exact_mut(oh * ow * patch).enumerate() {
        let image = &x[s * w.in_len()..][..w.in_len()];
        for (oy, rows) in sample.chunks_exact_mut(ow * patch).enumerate() {
            for (ox, row) in rows.chunks_exact_mut(patch).enumerate() {
                let (kx0, kx1, ix0) = column_span(w, ox);
                let whole = K > 0 && kx0 == 0 && kx1 == K;
                let mut runs = row.chunks_exact_mut(kw);
                for c in 0..w.channels {
                    let channel = &image[c * plane..][..plane];
                    for ky in 0..w.kernel_h {
                        let run = runs.next().expect("patch holds C·kh runs");
                        match input_row(w, oy, ky) {
                            None => run.fill(0.0),
                            Some(iy) if whole => {
                                let src = &channel[iy * w.width + ix0..][..K];
                                run[..K].copy_from_slice(src);
                            }
                            Some(iy) => {
                                let src = &channel[iy * w.width..][..w.width];
                                run[..kx0].fill(0.0);
                                run[kx1..].fill(0.0);
                                for (v, &u) in run[kx0..kx1].iter_mut().zip(&src[ix0..]) {
                                    *v = u;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: every patch entry is added back onto the input value it copied.
pub fn col2im(col: &[f32], x: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow, patch, width) = (w.out_h(), w.out_w(), w.patch_len(), w.col_width());
    if width != patch {
        let packed: Vec<f32> = col
            .chunks_exact(width)
            .take(rows * oh * ow)
            .flat_map(|row| &row[..patch])
            .copied()
            .collect();
        return col2im_packed(&packed, x, rows, w);
    }
    col2im_packed(col, x, rows, w);
}

/// [`col2im`] from rows of exactly the patch length.
fn col2im_packed(col: &[f32], x: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow, patch) = (w.out_h(), w.out_w(), w.patch_len());
    for_samples(x, rows, w.in_len(), |first, chunk| {
        col2im_serial(&col[first * oh * ow * patch..], chunk, w)
    });
}

/// [`col2im`] on the calling thread, for as many samples as `x` has room for.
fn col2im_serial(col: &[f32], x: &mut [f32], w: &Window) {
    match w.kernel_w {
        3 => col2im_runs::<3>(col, x, w),
        5 => col2im_runs::<5>(col, x, w),
        _ => col2im_runs::<0>(col, x, w),
    }
}

/// [`col2im_serial`] with runs of `K` values when `K > 0` and the run is whole. Reads each patch
/// row front to back and adds into the image (which sits in L1).
fn col2im_runs<const K: usize>(col: &[f32], x: &mut [f32], w: &Window) {
    let (oh, ow, patch, kw) = (w.out_h(), w.out_w(), w.patch_len(), w.kernel_w);
    let plane = w.height * w.width;
    x.fill(0.0);
    for (s, image) in x.chunks_exact_mut(w.in_len()).enumerate() {
        let sample = &col[s * oh * ow * patch..][..oh * ow * patch];
        for (oy, rows) in sample.chunks_exact(ow * patch).enumerate() {
            for (ox, row) in rows.chunks_exact(patch).enumerate() {
                let (kx0, kx1, ix0) = column_span(w, ox);
                let whole = K > 0 && kx0 == 0 && kx1 == K;
                let mut runs = row.chunks_exact(kw);
                for c in 0..w.channels {
                    for ky in 0..w.kernel_h {
                        let run = runs.next().expect("patch holds C·kh runs");
                        let Some(iy) = input_row(w, oy, ky) else { continue };
                        let dst = &mut image[c * plane + iy * w.width..][..w.width];
                        if whole {
                            let d: &mut [f32; K] = (&mut dst[ix0..ix0 + K]).try_into().expect("K");
                            for (d, v) in d.iter_mut().zip(&run[..K]) {
                                *d += v;
                            }
                        } else {
                            for (d, v) in dst[ix0..].iter_mut().zip(&run[kx0..kx1]) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Floats of one sample's input zero-padded on every side: the image the channel-major patch
/// rows are plain copies of, so no run needs a bounds test or a fill.
fn padded_len(w: &Window) -> usize {
    w.channels * (w.height + 2 * w.pad_h) * (w.width + 2 * w.pad_w)
}

/// `padded` = one sample's `image` with `pad_h` rows and `pad_w` columns of zeros on each side.
fn pad_image(image: &[f32], padded: &mut [f32], w: &Window) {
    let (pw, row) = (w.pad_w, w.width + 2 * w.pad_w);
    padded.fill(0.0);
    for (src, dst) in image
        .chunks_exact(w.height * w.width)
        .zip(padded.chunks_exact_mut(row * (w.height + 2 * w.pad_h)))
    {
        for (s, d) in src.chunks_exact(w.width).zip(dst[w.pad_h * row..].chunks_exact_mut(row)) {
            d[pw..pw + w.width].copy_from_slice(s);
        }
    }
}

/// `out[ox] = src[ox·stride]` for every `ox` of `out`.
fn copy_taps(out: &mut [f32], src: &[f32], stride: usize) {
    if stride == 1 {
        // Runs are one output row (8 to 32 floats): in blocks of 8, whose fixed-size copies
        // compile to vector moves, not a call into libc's memmove per run (10 % of a resnet20
        // step on the CPU went to those calls).
        let src = &src[..out.len()];
        let (mut dst, mut src8) = (out.chunks_exact_mut(8), src.chunks_exact(8));
        for (d, s) in (&mut dst).zip(&mut src8) {
            let s: &[f32; 8] = s.try_into().expect("a block of 8");
            *<&mut [f32; 8]>::try_from(d).expect("a block of 8") = *s;
        }
        for (d, s) in dst.into_remainder().iter_mut().zip(src8.remainder()) {
            *d = *s;
        }
    } else {
        for (v, &u) in out.iter_mut().zip(src.iter().step_by(stride)) {
            *v = u;
        }
    }
}

/// Calls `f(patch row, padded channel, padded row, kx, output row)` for every run of one
/// sample's channel-major patch matrix: patch row (c, ky, kx), output row `oy` copies padded
/// row `oy·sh + ky` of channel `c` from column `kx` on, every `sw`-th value. The one walk that
/// im2col and its adjoint col2im share.
fn for_each_run(w: &Window, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
    let mut row = 0;
    for c in 0..w.channels {
        for ky in 0..w.kernel_h {
            for kx in 0..w.kernel_w {
                for oy in 0..w.out_h() {
                    f(row, c, oy * w.stride_h + ky, kx, oy);
                }
                row += 1;
            }
        }
    }
}

/// The training path's patch layout, channel-major (Caffe's): per sample
/// `col[(c, ky, kx), (oy, ox)] = x[c, oy·sh + ky − ph, ox·sw + kx − pw]`, 0 off the image. Each
/// row of the patch matrix is a shifted copy of one input channel, so it is written in runs of a
/// whole output row (32 floats for CIFAR), copied from the zero-padded image in `padded` (one
/// sample's [`padded_len`]), and the matmuls read it without a transpose.
fn im2col_channel_major(x: &[f32], col: &mut [f32], padded: &mut [f32], w: &Window) {
    let (ow, pixels) = (w.out_w(), w.out_pixels());
    let (row_len, plane) = (w.width + 2 * w.pad_w, padded_len(w) / w.channels.max(1));
    for (s, sample) in col.chunks_exact_mut(w.patch_len() * pixels).enumerate() {
        pad_image(&x[s * w.in_len()..][..w.in_len()], padded, w);
        for_each_run(w, |row, c, py, kx, oy| {
            let out = &mut sample[row * pixels + oy * ow..][..ow];
            copy_taps(out, &padded[c * plane + py * row_len + kx..], w.stride_w);
        });
    }
}

/// The adjoint of [`im2col_channel_major`]: `x` is overwritten with the sum of every patch entry
/// that copied each input value (added into the padded image in `padded`, then cropped).
fn col2im_channel_major(col: &[f32], x: &mut [f32], padded: &mut [f32], w: &Window) {
    let (ow, pixels) = (w.out_w(), w.out_pixels());
    let (row_len, plane) = (w.width + 2 * w.pad_w, padded_len(w) / w.channels.max(1));
    for (s, image) in x.chunks_exact_mut(w.in_len()).enumerate() {
        let sample = &col[s * w.patch_len() * pixels..][..w.patch_len() * pixels];
        padded.fill(0.0);
        for_each_run(w, |row, c, py, kx, oy| {
            let grad = &sample[row * pixels + oy * ow..][..ow];
            let dst = &mut padded[c * plane + py * row_len + kx..];
            if w.stride_w == 1 {
                // A plain zip, so the adds vectorize (step_by(1) keeps them one at a time).
                for (d, g) in dst[..ow].iter_mut().zip(grad) {
                    *d += g;
                }
            } else {
                for (d, g) in dst.iter_mut().step_by(w.stride_w).zip(grad) {
                    *d += g;
                }
            }
        });
        for (src, dst) in padded.chunks_exact(plane).zip(image.chunks_exact_mut(w.height * w.width))
        {
            let rows = src[w.pad_h * row_len..].chunks_exact(row_len);
            for (s, d) in rows.zip(dst.chunks_exact_mut(w.width)) {
                d.copy_from_slice(&s[w.pad_w..w.pad_w + w.width]);
            }
        }
    }
}

/// `y[n, c, p] = z[n·pixels + p, c] + bias[c]`, then ReLU when asked.
pub fn to_channels_first(z: &[f32], bias: Option<&[f32]>, y: &mut [f32], shape: Nchw, relu: bool) {
    let Nchw { rows, channels, pixels } = shape;
    for_samples(y, rows, channels * pixels, |first, chunk| {
        channels_first_serial(&z[first * pixels * channels..], bias, chunk, pixels, channels, relu)
    });
}

/// [`to_channels_first`] on the calling thread, for as many samples as `y` has room for.
fn channels_first_serial(
    z: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    pixels: usize,
    channels: usize,
    relu: bool,
) {
    for (s, out) in y.chunks_exact_mut(channels * pixels).enumerate() {
        let rows_in = &z[s * pixels * channels..][..pixels * channels];
        for c in 0..channels {
            let b = bias.map_or(0.0, |b| b[c]);
            for p in 0..pixels {
                let v = rows_in[p * channels + c] + b;
                out[c * pixels + p] = if relu { v.max(0.0) } else { v };
            }
        }
    }
}

/// `z[n·pixels + p, c] = y[n, c, p]`.
pub fn to_channels_last(y: &[f32], z: &mut [f32], shape: Nchw) {
    let Nchw { rows, channels, pixels } = shape;
    for_samples(z, rows, pixels * channels, |first, chunk| {
        channels_last_serial(&y[first * channels * pixels..], chunk, pixels, channels)
    });
}

/// [`to_channels_last`] on the calling thread, for as many samples as `z` has room for.
fn channels_last_serial(y: &[f32], z: &mut [f32], pixels: usize, channels: usize) {
    for (s, out) in z.chunks_exact_mut(pixels * channels).enumerate() {
        let image = &y[s * channels * pixels..][..channels * pixels];
        for p in 0..pixels {
            for c in 0..channels {
                out[p * channels + c] = image[c * pixels + p];
            }
        }
    }
}

/// Patch-matrix floats per chunk: 128 Ki floats (512 KiB) stay in a core's L2 cache.
const CHUNK_FLOATS: usize = 1 << 17;

/// Samples per chunk for this window: as many as fit [`CHUNK_FLOATS`], at least one.
fn chunk_samples(w: &Window) -> usize {
    (CHUNK_FLOATS / (w.out_pixels() * w.patch_len()).max(1)).max(1)
}

/// Scratch floats the chunked conv needs, per thread: one chunk's patch matrix (`col`) and the
/// partial weight and bias gradients backward adds up (`partials`). Far less than the
/// batch-sized buffers of the GPU's method.
pub fn scratch_len(rows: usize, w: &Window, outputs: usize) -> (usize, usize) {
    let threads = super::parallel::threads().min(rows.max(1));
    (threads * col_len(rows, w), threads * partial_len(w, outputs))
}

/// One thread's `col` scratch: a chunk's patch matrix, then one padded sample.
fn col_len(rows: usize, w: &Window) -> usize {
    chunk_samples(w).min(rows.max(1)) * w.out_pixels() * w.patch_len() + padded_len(w)
}

/// One thread's partial gradients: `[weight (outputs·patch) | bias (outputs)]`.
fn partial_len(w: &Window, outputs: usize) -> usize {
    outputs * w.patch_len() + outputs
}

/// `buf` cut into consecutive parts of `lens[t]` floats, one per thread's job.
fn split_parts(mut buf: &mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    for len in lens {
        let (part, rest) = std::mem::take(&mut buf).split_at_mut(len);
        out.push(part);
        buf = rest;
    }
    out
}

/// Conv2d forward on the CPU: per thread, per chunk of samples, im2col, then per sample
/// `y[n] = W · col[n]` straight into NCHW (no transpose), bias and ReLU over whole channel rows.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    col: &mut [f32],
    rows: usize,
    w: &Window,
    outputs: usize,
    relu: bool,
) {
    if rows == 0 {
        return;
    }
    let (pixels, patch) = (w.out_pixels(), w.patch_len());
    let (y_len, x_len) = (outputs * pixels, w.in_len());
    assert!(y.len() >= rows * y_len && x.len() >= rows * x_len, "conv buffers");
    let parts = ranges(rows);
    let per_thread = col_len(rows, w);
    assert!(col.len() >= parts.len() * per_thread, "conv col scratch");
    // Each thread gets its samples' outputs and its own part of the scratch.
    let ys = split_parts(&mut y[..rows * y_len], parts.iter().map(|r| r.len() * y_len));
    let cols = split_parts(col, parts.iter().map(|_| per_thread));
    let jobs: Vec<_> = parts.into_iter().zip(ys).zip(cols).collect();
    jobs.into_par_iter().for_each(|((range, y), col)| {
        let first = range.start;
        for_each_chunk(x, w, range, col, |n0, g, col, _| {
            let y = &mut y[(n0 - first) * y_len..][..g * y_len];
            for (yn, cn) in y.chunks_exact_mut(y_len).zip(col.chunks_exact(pixels * patch)) {
                matmul_serial(MatmulForm::AB, weight, cn, 0.0, yn, outputs, patch, pixels);
                if bias.is_none() && !relu {
                    continue; // (a conv before batch norm: nothing to add)
                }
                for (o, row) in yn.chunks_exact_mut(pixels).enumerate() {
                    let b = bias.map_or(0.0, |b| b[o]);
                    for v in row {
                        *v = if relu { (*v + b).max(0.0) } else { *v + b };
                    }
                }
            }
        });
    });
}

/// One thread's share of a conv: its samples `range` a chunk at a time, each chunk's
/// channel-major patch matrix built in `scratch` (a [`col_len`] part: the chunk's patches, then
/// one padded sample); `f(first sample, samples, patches, padded scratch)` does the rest.
fn for_each_chunk(
    x: &[f32],
    w: &Window,
    range: std::ops::Range<usize>,
    scratch: &mut [f32],
    mut f: impl FnMut(usize, usize, &mut [f32], &mut [f32]),
) {
    let (chunk, x_len) = (chunk_samples(w), w.in_len());
    let (col, padded) = scratch.split_at_mut(scratch.len() - padded_len(w));
    let mut n0 = range.start;
    while n0 < range.end {
        let g = chunk.min(range.end - n0);
        let col = &mut col[..g * w.out_pixels() * w.patch_len()];
        im2col_channel_major(&x[n0 * x_len..][..g * x_len], col, padded, w);
        f(n0, g, col, padded);
        n0 += g;
    }
}

/// Conv2d backward on the CPU: per thread, per chunk of samples, redo im2col; per sample add
/// `dy[n] · col[n]ᵀ` and the channel sums of `dy[n]` into the thread's own partial sums, and when
/// `dx` is wanted fold `Wᵀ · dy[n]` back onto the input; then add up the threads' partials.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    x: &[f32],
    dy: &[f32],
    weight: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
    dx: Option<&mut [f32]>,
    col: &mut [f32],
    partials: &mut [f32],
    rows: usize,
    w: &Window,
    outputs: usize,
) {
    let (pixels, patch) = (w.out_pixels(), w.patch_len());
    if rows == 0 {
        // No samples: zero gradients, as the sums over an empty batch are.
        grad_weight[..outputs * patch].fill(0.0);
        if let Some(gb) = grad_bias {
            gb[..outputs].fill(0.0);
        }
        return;
    }
    let (y_len, x_len) = (outputs * pixels, w.in_len());
    let parts = ranges(rows);
    let per_thread = col_len(rows, w);
    assert!(col.len() >= parts.len() * per_thread, "conv col scratch");
    assert!(dy.len() >= rows * y_len && x.len() >= rows * x_len, "conv buffers");
    let stride = partial_len(w, outputs);
    let partials = &mut partials[..parts.len() * stride];
    partials.fill(0.0);
    // Each thread gets its scratch part, its partial sums and its samples' input gradient.
    let cols = split_parts(col, parts.iter().map(|_| per_thread));
    let sums = split_parts(&mut *partials, parts.iter().map(|_| stride));
    let (want_dx, want_bias) = (dx.is_some(), grad_bias.is_some());
    let dxs: Vec<Option<&mut [f32]>> = match dx {
        Some(d) => {
            assert!(d.len() >= rows * x_len, "conv dx");
            split_parts(&mut d[..rows * x_len], parts.iter().map(|r| r.len() * x_len))
                .into_iter()
                .map(Some)
                .collect()
        }
        None => parts.iter().map(|_| None).collect(),
    };
    let jobs: Vec<_> = parts.into_iter().zip(cols).zip(sums).zip(dxs).collect();
    jobs.into_par_iter().for_each(|(((range, col), partial), mut dx)| {
        let (gw, gb) = partial.split_at_mut(outputs * patch);
        let first = range.start;
        for_each_chunk(x, w, range, col, |n0, g, col, padded| {
            let dy = &dy[n0 * y_len..][..g * y_len];
            for (dn, cn) in dy.chunks_exact(y_len).zip(col.chunks_exact_mut(pixels * patch)) {
                if want_bias {
                    for (b, row) in gb.iter_mut().zip(dn.chunks_exact(pixels)) {
                        *b += row.iter().sum::<f32>();
                    }
                }
                matmul_serial(MatmulForm::ABt, dn, cn, 1.0, gw, outputs, pixels, patch);
                if want_dx {
                    // The patch rows are used; their gradient takes their place.
                    matmul_serial(MatmulForm::AtB, weight, dn, 0.0, cn, patch, outputs, pixels);
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                let dx = &mut dx[(n0 - first) * x_len..][..g * x_len];
                col2im_channel_major(col, dx, padded, w);
            }
        });
    });
    // The threads' partials, added in thread order (so the result does not depend on timing).
    let (grad_weight, mut grad_bias) = (&mut grad_weight[..outputs * patch], grad_bias);
    grad_weight.fill(0.0);
    if let Some(gb) = grad_bias.as_deref_mut() {
        gb[..outputs].fill(0.0);
    }
    for p in partials.chunks(stride) {
        for (g, v) in grad_weight.iter_mut().zip(&p[..outputs * patch]) {
            *g += v;
        }
        if let Some(gb) = grad_bias.as_deref_mut() {
            for (b, v) in gb.iter_mut().zip(&p[outputs * patch..]) {
                *b += v;
            }
        }
    }
}

/// The training path's own checks, without a GPU (tests/cross_check_conv.rs holds it against
/// the GPU's conv where there is one).
#[cfg(test)]
mod tests {
    use super::*;

    /// (rows, channels, height, width, kernel, stride, padding): the awkward windows (strides,
    /// padding wider than the kernel, taps that only ever see padding); tests/cross_check_conv.rs
    /// runs the whole conv over more.
    const WINDOWS: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
        (2, 3, 5, 5, 3, 1, 1),
        (3, 5, 7, 6, 3, 2, 1),
        (2, 2, 4, 7, 3, 3, 2),
        (1, 3, 5, 4, 3, 2, 4),
        (2, 3, 1, 1, 5, 1, 2),
        (1, 2, 1, 1, 1, 3, 1),
    ];

    fn random(rng: &mut fastrand::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.f32() * 2.0 - 1.0).collect()
    }

    /// The channel-major patches are the pixel-major ones (the GPU's layout, cross-checked
    /// against the WGSL) transposed, sample by sample, value for value.
    #[test]
    fn channel_major_patches_are_the_pixel_major_ones_transposed() {
        let mut rng = fastrand::Rng::with_seed(41);
        for &(rows, c, h, wd, k, s, p) in WINDOWS {
            let w = Window::square(c, h, wd, k, s, p);
            let (patch, pixels) = (w.patch_len(), w.out_pixels());
            let x = random(&mut rng, rows * w.in_len());
            let mut pixel_major = vec![f32::NAN; rows * pixels * patch];
            im2col_packed(&x, &mut pixel_major, rows, &w);
            let mut channel_major = vec![f32::NAN; rows * pixels * patch];
            let mut padded = vec![f32::NAN; padded_len(&w)];
            im2col_channel_major(&x, &mut channel_major, &mut padded, &w);
            for n in 0..rows {
                for q in 0..pixels {
                    for t in 0..patch {
                        let want = pixel_major[(n * pixels + q) * patch + t];
                        let got = channel_major[(n * patch + t) * pixels + q];
                        assert_eq!(got.to_bits(), want.to_bits(), "{w:?} n {n} pixel {q} tap {t}");
                    }
                }
            }
        }
    }

    /// col2im is im2col's adjoint: ⟨im2col(x), g⟩ = ⟨x, col2im(g)⟩, both sides in f64 from f32
    /// values (col2im's f32 sums of at most k·k terms round by a few ulp: 1e-5 relative).
    #[test]
    fn channel_major_col2im_is_the_adjoint_of_im2col() {
        let mut rng = fastrand::Rng::with_seed(42);
        for &(rows, c, h, wd, k, s, p) in WINDOWS {
            let w = Window::square(c, h, wd, k, s, p);
            let len = rows * w.patch_len() * w.out_pixels();
            let (x, g) = (random(&mut rng, rows * w.in_len()), random(&mut rng, len));
            let mut col = vec![0.0; len];
            let mut padded = vec![f32::NAN; padded_len(&w)];
            im2col_channel_major(&x, &mut col, &mut padded, &w);
            let mut back = vec![f32::NAN; x.len()];
            col2im_channel_major(&g, &mut back, &mut padded, &w);
            // Σ a·b and Σ |a·b| in f64.
            let dot = |a: &[f32], b: &[f32]| {
                let terms = a.iter().zip(b).map(|(&u, &v)| u as f64 * v as f64);
                terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()))
            };
            let ((lhs, scale), (rhs, _)) = (dot(&col, &g), dot(&x, &back));
            assert!((lhs - rhs).abs() <= 1e-5 * scale + 1e-30, "{w:?}: {lhs} vs {rhs}");
        }
    }
}

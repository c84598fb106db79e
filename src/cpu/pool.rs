//! CPU twins of `shaders/pool.wgsl`: max pooling (with padding: padded positions never win)
//! and average pooling (without).

use crate::backend::Window;

/// Max over each window; `argmax` gets the flat index (into `x`) of the first largest value
/// (a first-strictly-greater scan, as the WGSL does).
pub fn maxpool(x: &[f32], y: &mut [f32], argmax: &mut [u32], rows: usize, w: &Window) {
    let (oh, ow) = (w.out_h(), w.out_w());
    let plane = w.height * w.width;
    let pairs = w.kernel_h == 2
        && w.kernel_w == 2
        && w.stride_h == 2
        && w.stride_w == 2
        && w.pad_h == 0
        && w.pad_w == 0;
    super::parallel::for_samples_pair(y, argmax, rows * w.channels, oh * ow, |first, ys, idx| {
        for (p, (out, arg)) in
            ys.chunks_exact_mut(oh * ow).zip(idx.chunks_exact_mut(oh * ow)).enumerate()
        {
            let base = (first + p) * plane;
            if pairs {
                maxpool_2x2(&x[base..base + plane], out, arg, base, w.width, ow);
                continue;
            }
            for oy in 0..oh {
                for ox in 0..ow {
                    // Window rows and columns inside the image (padding never wins).
                    let rows_in = inside(oy * w.stride_h, w.kernel_h, w.pad_h, w.height);
                    let cols_in = inside(ox * w.stride_w, w.kernel_w, w.pad_w, w.width);
                    let mut at = base + rows_in.start * w.width + cols_in.start;
                    let mut best = x[at];
                    for iy in rows_in {
                        let row0 = base + iy * w.width;
                        for ix in cols_in.clone() {
                            let v = x[row0 + ix];
                            if v > best {
                                best = v;
                                at = row0 + ix;
                            }
                        }
                    }
                    out[oy * ow + ox] = best;
                    arg[oy * ow + ox] = at as u32;
                }
            }
        }
    });
}

/// The input coordinates a window starting at padded coordinate `start` covers along one axis:
/// `start - pad .. start - pad + kernel`, cut to the image.
fn inside(start: usize, kernel: usize, pad: usize, size: usize) -> std::ops::Range<usize> {
    start.saturating_sub(pad)..(start + kernel).saturating_sub(pad).min(size)
}

/// The common 2×2, stride 2 window over one plane, two input rows at a time; the same scan
/// order (row by row, left to right, first strictly greater wins) as the general loop.
fn maxpool_2x2(x: &[f32], out: &mut [f32], arg: &mut [u32], base: usize, width: usize, ow: usize) {
    for (oy, (o, a)) in out.chunks_exact_mut(ow).zip(arg.chunks_exact_mut(ow)).enumerate() {
        let (r0, r1) = (2 * oy * width, (2 * oy + 1) * width);
        let (top, bottom) = (&x[r0..r0 + 2 * ow], &x[r1..r1 + 2 * ow]);
        for ox in 0..ow {
            let cands = [
                (top[2 * ox], r0 + 2 * ox),
                (top[2 * ox + 1], r0 + 2 * ox + 1),
                (bottom[2 * ox], r1 + 2 * ox),
                (bottom[2 * ox + 1], r1 + 2 * ox + 1),
            ];
            let (mut best, mut at) = cands[0];
            for &(v, i) in &cands[1..] {
                if v > best {
                    best = v;
                    at = i;
                }
            }
            o[ox] = best;
            a[ox] = (base + at) as u32;
        }
    }
}

/// The windows (as output coordinates) that contain input coordinate `i` along one axis.
fn windows_over(i: usize, kernel: usize, stride: usize, out: usize) -> std::ops::Range<usize> {
    let lo = if i + 1 > kernel { (i + 1 - kernel).div_ceil(stride) } else { 0 };
    let hi = (i / stride + 1).min(out);
    lo..hi.max(lo)
}

/// `dx[i] = Σ dy[o]` over the windows `o` whose maximum was `x[i]`. A scatter on the CPU (the
/// WGSL gathers); for non-overlapping windows each input has at most one term, so both agree
/// exactly, and overlapping ones sum in window order.
pub fn maxpool_backward(dy: &[f32], argmax: &[u32], dx: &mut [f32], rows: usize, w: &Window) {
    let outputs = rows * w.channels * w.out_pixels();
    dx[..rows * w.in_len()].fill(0.0);
    for (o, &i) in argmax[..outputs].iter().enumerate() {
        dx[i as usize] += dy[o];
    }
}

/// Mean over each window.
pub fn avgpool(x: &[f32], y: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow) = (w.out_h(), w.out_w());
    let scale = 1.0 / (w.kernel_h * w.kernel_w) as f32;
    for plane in 0..rows * w.channels {
        let base = plane * w.height * w.width;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut sum = 0.0f32;
                for ky in 0..w.kernel_h {
                    for kx in 0..w.kernel_w {
                        sum += x[base + (oy * w.stride_h + ky) * w.width + ox * w.stride_w + kx];
                    }
                }
                y[(plane * oh + oy) * ow + ox] = sum * scale;
            }
        }
    }
}

/// Each input gets `dy / window size` from every window that contains it.
pub fn avgpool_backward(dy: &[f32], dx: &mut [f32], rows: usize, w: &Window) {
    let (oh, ow) = (w.out_h(), w.out_w());
    let scale = 1.0 / (w.kernel_h * w.kernel_w) as f32;
    for plane in 0..rows * w.channels {
        for iy in 0..w.height {
            for ix in 0..w.width {
                let mut sum = 0.0f32;
                for oy in windows_over(iy, w.kernel_h, w.stride_h, oh) {
                    for ox in windows_over(ix, w.kernel_w, w.stride_w, ow) {
                        sum += dy[(plane * oh + oy) * ow + ox];
                    }
                }
                dx[(plane * w.height + iy) * w.width + ix] = sum * scale;
            }
        }
    }
}

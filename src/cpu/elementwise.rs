//! CPU twins of `shaders/elementwise.wgsl`.

/// `dst = src / 255`: pixels upload as bytes and become f32 on the device.
pub fn pixels_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as f32 / 255.0;
    }
}

/// `x[r, c] += bias[c]` for every row of `x` (`bias.len()` columns).
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `x[r, c] = max(x[r, c] + bias[c], 0)`.
pub fn add_bias_relu(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, &b) in row.iter_mut().zip(bias) {
            *v = (*v + b).max(0.0);
        }
    }
}

/// ReLU backward from its output: the gradient passes where the activation was positive.
pub fn relu_backward(grad: &mut [f32], activation: &[f32]) {
    for (g, &a) in grad.iter_mut().zip(activation) {
        // A select, not a branch: the mask is random, so a branch mispredicts half the time.
        *g = if a > 0.0 { *g } else { 0.0 };
    }
}

/// `out = a + b`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// `x = x · factor` in place.
pub fn scale(x: &mut [f32], factor: f32) {
    for v in x {
        *v *= factor;
    }
}

/// `x = max(x, 0)` in place.
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// Inverted dropout in place (see `Backend::dropout`).
pub fn dropout(x: &mut [f32], seed: u32, p: f32) {
    let scale = 1.0 / (1.0 - p);
    for (i, v) in x.iter_mut().enumerate() {
        *v = if crate::backend::dropout_keep(seed, i as u32, p) { *v * scale } else { 0.0 };
    }
}

/// `x = (x - mean[c]) · inv_std[c]` over `[rows, channels, pixels]`; `stats` = means then inverse
/// standard deviations.
pub fn normalize(x: &mut [f32], stats: &[f32], channels: usize, pixels: usize) {
    for (i, v) in x.iter_mut().enumerate() {
        let c = (i / pixels) % channels;
        *v = (*v - stats[c]) * stats[channels + c];
    }
}

/// `dst[r, c] = src[r·src_width + c]` for `c < cols`, 0 for `cols <= c < dst_width`.
pub fn copy_rows(
    src: &[f32],
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    src_width: usize,
    dst_width: usize,
) {
    for (r, row) in dst.chunks_exact_mut(dst_width).take(rows).enumerate() {
        row[..cols].copy_from_slice(&src[r * src_width..][..cols]);
        row[cols..].fill(0.0);
    }
}

/// CPU twin of `shaders/gather.wgsl`: `input[r] = augment(images[batch[2r]]) / 255` and
/// `labels_out[r] = labels[batch[2r]]`, with `batch[2r + 1]` the augmentation code; `images`
/// holds the samples `held`, and rows of other samples are left as they are.
#[allow(clippy::too_many_arguments)]
pub fn gather_batch(
    images: &[u8],
    held: std::ops::Range<usize>,
    labels: &[u32],
    batch: &[u32],
    input: &mut [f32],
    labels_out: &mut [u32],
    rows: usize,
    [c, h, w]: [usize; 3],
) {
    let sample = c * h * w;
    let mut pixels = vec![0u8; sample];
    for r in 0..rows {
        let index = batch[2 * r] as usize;
        if !held.contains(&index) {
            continue;
        }
        let (dy, dx, flip) = crate::data::loader::decode_shift(batch[2 * r + 1]);
        let src = &images[(index - held.start) * sample..][..sample];
        crate::data::loader::augment_image(src, &mut pixels, c, h, w, dy, dx, flip);
        pixels_to_f32(&pixels, &mut input[r * sample..][..sample]);
        labels_out[r] = labels[index];
    }
}

//! CPU twin of `shaders/loss.wgsl`.

/// Softmax cross-entropy over `[rows, cols]` logits (rows = `labels.len()`), with PyTorch's
/// label smoothing: the target is `q = (1 − ε)·onehot + ε/cols`, so a row's loss is
/// `logsumexp(x) − (1 − ε)·x[label] − ε/cols·Σx` (ε = 0: plain cross-entropy, bit for bit, the
/// ε term left out).
///
/// Writes the gradient of the batch-mean loss, `(softmax - q) / rows`, into `grad` and
/// returns `[Σ loss, #correct, rows]`. A row is correct when the first index of its largest
/// logit equals its label (PyTorch's `argmax`).
pub fn softmax_xent(
    logits: &[f32],
    labels: &[u32],
    grad: &mut [f32],
    cols: usize,
    smoothing: f32,
) -> [f32; 3] {
    let rows = labels.len();
    let inv_rows = 1.0 / rows as f32;
    let (keep, spread) = (1.0 - smoothing, smoothing / cols as f32);
    let (mut loss_sum, mut correct) = (0.0f32, 0.0f32);
    for (r, &label) in labels.iter().enumerate() {
        let x = &logits[r * cols..(r + 1) * cols];
        let g = &mut grad[r * cols..(r + 1) * cols];
        let mut max = x[0];
        let mut argmax = 0;
        for (j, &v) in x.iter().enumerate() {
            if v > max {
                max = v;
                argmax = j;
            }
        }
        let mut sum = 0.0f32;
        for &v in x {
            sum += (v - max).exp();
        }
        let label = label as usize;
        if label < cols {
            // ε·Σx only with smoothing: Σx of a row holding -inf is -inf, and 0·inf is NaN.
            let mut smoothed = 0.0f32;
            if smoothing != 0.0 {
                let mut total = 0.0f32;
                for &v in x {
                    total += v;
                }
                smoothed = spread * total;
            }
            loss_sum += max + sum.ln() - keep * x[label] - smoothed;
        }
        correct += (argmax == label) as u32 as f32;
        for (j, (gj, &v)) in g.iter_mut().zip(x).enumerate() {
            let p = (v - max).exp() / sum;
            *gj = (p - keep * (j == label) as u32 as f32 - spread) * inv_rows;
        }
    }
    [loss_sum, correct, rows as f32]
}

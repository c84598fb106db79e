//! CPU twin of `shaders/reduce.wgsl`.

/// `out[c] = Σ_r grad[r, c]`, summed in row order.
pub fn bias_grad(grad: &[f32], out: &mut [f32], rows: usize, cols: usize) {
    out.fill(0.0);
    for row in grad.chunks_exact(cols).take(rows) {
        for (o, &g) in out.iter_mut().zip(row) {
            *o += g;
        }
    }
}

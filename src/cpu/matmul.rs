//! CPU twin of `shaders/matmul.wgsl`: `C = op(A) · op(B)` through ndarray (matrixmultiply's
//! blocked, threaded sgemm), with transposes expressed as strided views, never copies.

use ndarray::linalg::general_mat_mul;
use ndarray::ArrayView2;

use crate::backend::MatmulForm;

/// `c[..m*n] = op(a) · op(b)`; see [`MatmulForm`] for how `a` and `b` are stored.
pub fn matmul(form: MatmulForm, a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    let (a_rows, a_cols) = if form == MatmulForm::AtB { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if form == MatmulForm::ABt { (n, k) } else { (k, n) };
    let a = view(a, a_rows, a_cols);
    let b = view(b, b_rows, b_cols);
    let a = if form == MatmulForm::AtB { a.reversed_axes() } else { a };
    let b = if form == MatmulForm::ABt { b.reversed_axes() } else { b };
    let mut c = ndarray::ArrayViewMut2::from_shape((m, n), &mut c[..m * n]).expect("matmul output");
    general_mat_mul(1.0, &a, &b, 0.0, &mut c);
}

fn view(data: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    // Shapes come from the layers' own sizes, so a mismatch is a bug in steepest, not bad input.
    ArrayView2::from_shape((rows, cols), &data[..rows * cols]).expect("matmul operand shape")
}

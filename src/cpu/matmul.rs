//! CPU twin of `shaders/matmul.wgsl`: `C = op(A) · op(B)` through ndarray (matrixmultiply's
//! blocked sgemm), with transposes expressed as strided views, never copies. Large products are
//! cut into one block of rows (or columns) per thread; each block is an ordinary serial sgemm, so
//! every output element is summed in the same order whatever the thread count.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

use crate::backend::MatmulForm;

/// Below this many multiply-adds a product runs on one thread.
const SERIAL_BELOW: usize = 1 << 18;

/// `c[..m*n] = op(a) · op(b)`; see [`MatmulForm`] for how `a` and `b` are stored.
pub fn matmul(form: MatmulForm, a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    let (a, b) = operands(form, a, b, m, k, n);
    let mut c = ArrayViewMut2::from_shape((m, n), &mut c[..m * n]).expect("matmul output");
    let threads = super::parallel::threads();
    if threads == 1 || m * k * n < SERIAL_BELOW {
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        return;
    }
    // Split the longer side of C; each thread packs its own share of the other operand.
    if m >= n {
        let per = m.div_ceil(threads);
        rayon::scope(|s| {
            for (a, mut c) in
                a.axis_chunks_iter(Axis(0), per).zip(c.axis_chunks_iter_mut(Axis(0), per))
            {
                let b = &b;
                s.spawn(move |_| general_mat_mul(1.0, &a, b, 0.0, &mut c));
            }
        });
    } else {
        let per = n.div_ceil(threads);
        rayon::scope(|s| {
            for (b, mut c) in
                b.axis_chunks_iter(Axis(1), per).zip(c.axis_chunks_iter_mut(Axis(1), per))
            {
                let a = &a;
                s.spawn(move |_| general_mat_mul(1.0, a, &b, 0.0, &mut c));
            }
        });
    }
}

/// `c = op(a) · op(b) + beta · c` on the calling thread (for work already split over threads).
#[allow(clippy::too_many_arguments)]
pub fn matmul_serial(
    form: MatmulForm,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let (a, b) = operands(form, a, b, m, k, n);
    let mut c = ArrayViewMut2::from_shape((m, n), &mut c[..m * n]).expect("matmul output");
    general_mat_mul(1.0, &a, &b, beta, &mut c);
}

/// `op(a)` as an m×k view and `op(b)` as a k×n view.
fn operands<'a>(
    form: MatmulForm,
    a: &'a [f32],
    b: &'a [f32],
    m: usize,
    k: usize,
    n: usize,
) -> (ArrayView2<'a, f32>, ArrayView2<'a, f32>) {
    let (a_rows, a_cols) = if form == MatmulForm::AtB { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if form == MatmulForm::ABt { (n, k) } else { (k, n) };
    let a = view(a, a_rows, a_cols);
    let b = view(b, b_rows, b_cols);
    let a = if form == MatmulForm::AtB { a.reversed_axes() } else { a };
    let b = if form == MatmulForm::ABt { b.reversed_axes() } else { b };
    (a, b)
}

fn view(data: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    // Shapes come from the layers' own sizes, so a mismatch is a bug in steepest, not bad input.
    ArrayView2::from_shape((rows, cols), &data[..rows * cols]).expect("matmul operand shape")
}

//! `linear[:N]`: `nn.Linear`, weight `[out, in]`; a ReLU right after it is applied with the bias.

use crate::backend::{Backend, MatmulForm};
use crate::nn::Weights;

/// `y = x · Wᵀ + b` (then ReLU when fused).
pub fn forward<B: Backend>(
    b: &mut B,
    weights: &Weights<B>,
    [inputs, outputs]: [usize; 2],
    relu: bool,
    x: &B::Buf,
    y: &B::Buf,
    rows: usize,
) {
    match &weights.bias {
        Some(bias) => b.matmul_bias(
            MatmulForm::ABt,
            x,
            &weights.weight,
            y,
            [rows, inputs, outputs],
            bias,
            relu,
        ),
        None => {
            b.matmul(MatmulForm::ABt, x, &weights.weight, y, rows, inputs, outputs);
            if relu {
                b.relu(y, rows * outputs);
            }
        }
    }
}

/// `db = Σ dY`, `dW[out, in] = dYᵀ · X`, `dX[rows, in] = dY · W` (when asked for).
pub fn backward<B: Backend>(
    b: &mut B,
    weights: &Weights<B>,
    [inputs, outputs]: [usize; 2],
    x: &B::Buf,
    g: &B::Buf,
    dx: Option<&B::Buf>,
    rows: usize,
) {
    if let Some(gb) = &weights.grad_bias {
        b.bias_grad(g, gb, rows, outputs);
    }
    b.matmul(MatmulForm::AtB, g, x, &weights.grad_weight, outputs, rows, inputs);
    if let Some(dx) = dx {
        b.matmul(MatmulForm::AB, g, &weights.weight, dx, rows, outputs, inputs);
    }
}

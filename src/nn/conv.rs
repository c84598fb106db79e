//! `conv:OUT:K[:s=S][:p=P][:nobias]`: `nn.Conv2d`, weight `[out, in, k, k]`, as im2col + matmul
//! (`Backend::conv2d_forward` / `conv2d_backward`); a ReLU right after it is fused.

use crate::backend::{Backend, Window};
use crate::nn::Weights;

/// The im2col matrix and the matmul's output rows, reused for their gradients.
pub struct ConvScratch<B: Backend> {
    pub col: B::Buf,
    pub z: B::Buf,
}

impl<B: Backend> ConvScratch<B> {
    pub fn new(b: &mut B, capacity: usize, window: &Window, outputs: usize) -> crate::Result<Self> {
        let (col, z) = b.conv_scratch_len(capacity, window, outputs);
        Ok(ConvScratch { col: b.alloc(col)?, z: b.alloc(z)? })
    }
}

#[allow(clippy::too_many_arguments)]
pub fn forward<B: Backend>(
    b: &mut B,
    weights: &Weights<B>,
    window: &Window,
    outputs: usize,
    relu: bool,
    x: &B::Buf,
    y: &B::Buf,
    s: &ConvScratch<B>,
    rows: usize,
) {
    b.conv2d_forward(
        x,
        &weights.weight,
        weights.bias.as_ref(),
        y,
        &s.col,
        &s.z,
        rows,
        window,
        outputs,
        relu,
    );
}

#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    b: &mut B,
    weights: &Weights<B>,
    window: &Window,
    outputs: usize,
    x: &B::Buf,
    g: &B::Buf,
    dx: Option<&B::Buf>,
    s: &ConvScratch<B>,
    rows: usize,
) {
    b.conv2d_backward(
        x,
        g,
        &weights.weight,
        &weights.grad_weight,
        weights.grad_bias.as_ref(),
        dx,
        &s.col,
        &s.z,
        rows,
        window,
        outputs,
    );
}

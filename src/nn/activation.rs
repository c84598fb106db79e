//! `relu`: `nn.ReLU`, in place on the buffer of the layer before (fused into a Linear or Conv
//! right before it, which then applies it).

use crate::backend::Backend;

/// In place; nothing to do when fused.
pub fn relu_forward<B: Backend>(b: &mut B, fused: bool, y: &B::Buf, len: usize) {
    if !fused {
        b.relu(y, len);
    }
}

/// In place on the shared gradient buffer: it passes where the output was positive.
pub fn relu_backward<B: Backend>(b: &mut B, g: &B::Buf, y: &B::Buf, len: usize) {
    b.relu_backward(g, y, len);
}

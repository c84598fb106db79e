//! `maxpool:K[:S]`, `avgpool:K[:S]` and `gap` (global average pooling, an average pool whose
//! window is the whole image): `nn.MaxPool2d`, `nn.AvgPool2d`, `nn.AdaptiveAvgPool2d(1)`.

use crate::backend::{Backend, Window};

pub fn max_forward<B: Backend>(
    b: &mut B,
    window: &Window,
    x: &B::Buf,
    y: &B::Buf,
    argmax: &B::Indices,
    rows: usize,
) {
    b.maxpool(x, y, argmax, rows, window);
}

/// The gradient goes to where each maximum came from.
pub fn max_backward<B: Backend>(
    b: &mut B,
    window: &Window,
    g: &B::Buf,
    argmax: &B::Indices,
    dx: Option<&B::Buf>,
    rows: usize,
) {
    if let Some(dx) = dx {
        b.maxpool_backward(g, argmax, dx, rows, window);
    }
}

pub fn avg_forward<B: Backend>(b: &mut B, window: &Window, x: &B::Buf, y: &B::Buf, rows: usize) {
    b.avgpool(x, y, rows, window);
}

pub fn avg_backward<B: Backend>(
    b: &mut B,
    window: &Window,
    g: &B::Buf,
    dx: Option<&B::Buf>,
    rows: usize,
) {
    if let Some(dx) = dx {
        b.avgpool_backward(g, dx, rows, window);
    }
}

/// The window of `gap` over a `channels × height × width` input.
pub fn global_window(channels: usize, height: usize, width: usize) -> Window {
    Window {
        channels,
        height,
        width,
        kernel_h: height,
        kernel_w: width,
        stride_h: height,
        stride_w: width,
        pad_h: 0,
        pad_w: 0,
    }
}

//! CPU twins of `shaders/optim.wgsl`: the update rules of PyTorch's `torch.optim`, element by
//! element, in the same order of operations as the WGSL so both round alike.

use crate::backend::{AdamHyper, RmspropHyper, SgdHyper};

/// `torch.optim.SGD` (dampening 0): L2 decay in the gradient, then momentum, then Nesterov.
pub fn sgd_update(param: &mut [f32], grad: &[f32], velocity: &mut [f32], h: &SgdHyper) {
    for ((p, &g), buf) in param.iter_mut().zip(grad).zip(velocity.iter_mut()) {
        let mut d = g + h.weight_decay * *p;
        if h.momentum != 0.0 {
            *buf = if h.first_step { d } else { h.momentum * *buf + d };
            d = if h.nesterov { d + h.momentum * *buf } else { *buf };
        }
        *p -= h.lr * d;
    }
}

/// `torch.optim.Adam` (`decoupled == false`) or `torch.optim.AdamW` (`decoupled == true`).
pub fn adam_update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamHyper) {
    let step_size = h.lr / h.bias_correction1;
    let bc2_sqrt = h.bias_correction2.sqrt();
    for (((p, &g), m), v) in param.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
        let mut g = g;
        if h.decoupled {
            *p *= 1.0 - h.lr * h.weight_decay;
        } else {
            g += h.weight_decay * *p;
        }
        *m = h.beta1 * *m + (1.0 - h.beta1) * g;
        *v = h.beta2 * *v + (1.0 - h.beta2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + h.eps;
        *p -= step_size * (*m / denom);
    }
}

/// `torch.optim.RMSprop` (not centered), with optional momentum.
pub fn rmsprop_update(
    param: &mut [f32],
    grad: &[f32],
    square_avg: &mut [f32],
    velocity: &mut [f32],
    h: &RmspropHyper,
) {
    for (((p, &g), sq), buf) in
        param.iter_mut().zip(grad).zip(square_avg.iter_mut()).zip(velocity.iter_mut())
    {
        let g = g + h.weight_decay * *p;
        *sq = h.alpha * *sq + (1.0 - h.alpha) * g * g;
        let avg = sq.sqrt() + h.eps;
        if h.momentum > 0.0 {
            *buf = h.momentum * *buf + g / avg;
            *p -= h.lr * *buf;
        } else {
            *p -= h.lr * (g / avg);
        }
    }
}

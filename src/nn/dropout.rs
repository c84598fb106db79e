//! `dropout:P`: `nn.Dropout(P)`, inverted dropout in place; training only. The mask is a hash of
//! the model's seed, the step and the layer's id, so backward (and the other backend) draws the
//! same one.

use crate::backend::{hash_u32, Backend};
use crate::nn::Mode;

/// The mask of layer `id` at `step`: new every step, the same in backward.
pub fn seed(model_seed: u64, step: u64, id: u64) -> u32 {
    let s = model_seed
        ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03);
    hash_u32((s ^ (s >> 32)) as u32)
}

/// Forward and backward are the same call: zero the dropped values, scale the kept ones.
pub fn apply<B: Backend>(
    b: &mut B,
    p: f32,
    mode: Mode,
    model_seed: u64,
    id: u64,
    x: &B::Buf,
    len: usize,
) {
    if let Mode::Train { step } = mode {
        b.dropout(x, len, seed(model_seed, step, id), p);
    }
}

// Optimizer updates with the rules of PyTorch's torch.optim, one launch per parameter tensor;
// the state (momentum, moments) lives on the GPU. Same operation order as the CPU twins in
// src/cpu/optim.rs, so both round alike. Test: tests/cross_check_optim.rs.

@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> state1: array<f32>;
@group(0) @binding(4) var<storage, read_write> state2: array<f32>;

// torch.optim.SGD, dampening 0. state1: momentum buffer.
struct SgdParams {
    len: u32,
    nesterov: u32,
    first_step: u32,
    _pad0: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    _pad1: f32,
}
@group(0) @binding(0) var<uniform> sgd: SgdParams;

@compute @workgroup_size(256)
fn sgd_update(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
              @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= sgd.len {
        return;
    }
    var d = grad[i] + sgd.weight_decay * param[i];
    if sgd.momentum != 0.0 {
        var buf = d;
        if sgd.first_step == 0u {
            buf = sgd.momentum * state1[i] + d;
        }
        state1[i] = buf;
        if sgd.nesterov != 0u {
            d = d + sgd.momentum * buf;
        } else {
            d = buf;
        }
    }
    param[i] = param[i] - sgd.lr * d;
}

// torch.optim.Adam (L2 decay in the gradient) or AdamW (decoupled decay). state1 = m, state2 = v.
struct AdamParams {
    len: u32,
    decoupled: u32,
    _pad0: u32,
    _pad1: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    _pad2: f32,
}
@group(0) @binding(0) var<uniform> adam: AdamParams;

@compute @workgroup_size(256)
fn adam_update(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
               @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= adam.len {
        return;
    }
    var p = param[i];
    var g = grad[i];
    if adam.decoupled != 0u {
        p = p * (1.0 - adam.lr * adam.weight_decay);
    } else {
        g = g + adam.weight_decay * p;
    }
    let m = adam.beta1 * state1[i] + (1.0 - adam.beta1) * g;
    let v = adam.beta2 * state2[i] + (1.0 - adam.beta2) * g * g;
    state1[i] = m;
    state2[i] = v;
    let step_size = adam.lr / adam.bias_correction1;
    let denom = sqrt(v) / sqrt(adam.bias_correction2) + adam.eps;
    param[i] = p - step_size * (m / denom);
}

// torch.optim.RMSprop, not centered. state1 = square_avg, state2 = momentum buffer.
struct RmspropParams {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    lr: f32,
    alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    _pad3: f32,
    _pad4: f32,
    _pad5: f32,
}
@group(0) @binding(0) var<uniform> rmsprop: RmspropParams;

@compute @workgroup_size(256)
fn rmsprop_update(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                  @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= rmsprop.len {
        return;
    }
    let g = grad[i] + rmsprop.weight_decay * param[i];
    let sq = rmsprop.alpha * state1[i] + (1.0 - rmsprop.alpha) * g * g;
    state1[i] = sq;
    let avg = sqrt(sq) + rmsprop.eps;
    if rmsprop.momentum > 0.0 {
        let buf = rmsprop.momentum * state2[i] + g / avg;
        state2[i] = buf;
        param[i] = param[i] - rmsprop.lr * buf;
    } else {
        param[i] = param[i] - rmsprop.lr * (g / avg);
    }
}

// Element-wise kernels. Dispatches larger than 65535 workgroups are folded into 2D, so the flat
// index is rebuilt from both workgroup coordinates. CPU twins: src/cpu/elementwise.rs.
// Test: tests/cross_check_elementwise.rs.

struct Params {
    len: u32,    // elements to process
    cols: u32,   // row length, for the bias kernels
    factor: f32, // scale's multiplier
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;

// pixels_to_f32: bytes packed four to a u32 word (little-endian), out = byte / 255, looked up in
// a 256-entry table that the host fills with the CPU's own byte / 255: WGSL lets a driver divide
// with 2.5 ULP of error (NVIDIA's does, and was 1 ULP off the CPU for some bytes), so the
// quotient is computed once on the host, correctly rounded, and never on the device.
@group(0) @binding(1) var<storage, read> pixels: array<u32>;
@group(0) @binding(2) var<storage, read_write> pixels_out: array<f32>;
@group(0) @binding(3) var<storage, read> pixel_values: array<f32>;

@compute @workgroup_size(256)
fn pixels_to_f32(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                 @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.len {
        return;
    }
    let byte = (pixels[i / 4u] >> ((i % 4u) * 8u)) & 255u;
    pixels_out[i] = pixel_values[byte];
}

// add_bias / add_bias_relu: x[r, c] += bias[c] (then max(·, 0)), in place.
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;

@compute @workgroup_size(256)
fn add_bias(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
            @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.len {
        return;
    }
    x[i] = x[i] + bias[i % params.cols];
}

@compute @workgroup_size(256)
fn add_bias_relu(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                 @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.len {
        return;
    }
    x[i] = max(x[i] + bias[i % params.cols], 0.0);
}

// relu_backward: the gradient passes where ReLU's output was positive.
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;
@group(0) @binding(2) var<storage, read> activation: array<f32>;

@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                 @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.len {
        return;
    }
    if activation[i] <= 0.0 {
        grad[i] = 0.0;
    }
}

// add: out = a + b (a residual block's sum; its input gradient from two paths).
@group(0) @binding(1) var<storage, read> add_a: array<f32>;
@group(0) @binding(2) var<storage, read> add_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> add_out: array<f32>;

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
       @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.len {
        return;
    }
    add_out[i] = add_a[i] + add_b[i];
}

// scale: x = x · factor in place (test-time augmentation's average of logits).
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
         @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.len {
        return;
    }
    x[i] = x[i] * params.factor;
}

// relu: x = max(x, 0) in place, for a ReLU that no bias op before it could absorb.
@compute @workgroup_size(256)
fn relu(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.len {
        return;
    }
    x[i] = max(x[i], 0.0);
}

// dropout: inverted dropout in place; the same call with the same seed is its own backward.
// The mask is a hash of (seed, index), identical to `dropout_keep` in src/backend.rs.
struct DropoutParams {
    len: u32,
    seed: u32,
    threshold: u32, // drop when hash < threshold = p·2³²
    _pad: u32,
    scale: f32, // 1 / (1 - p)
    _pad1: f32,
    _pad2: f32,
    _pad3: f32,
}
@group(0) @binding(0) var<uniform> drop: DropoutParams;

fn hash_u32(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
           @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= drop.len {
        return;
    }
    if hash_u32(i ^ hash_u32(drop.seed)) >= drop.threshold {
        x[i] = x[i] * drop.scale;
    } else {
        x[i] = 0.0;
    }
}

// normalize: per-channel standardisation in place, x = (x - mean[c]) · inv_std[c], with
// stats = [mean; C] then [inv_std; C] and x laid out [rows, channels, pixels].
struct NormalizeParams {
    len: u32,
    channels: u32,
    pixels: u32,
    _pad: u32,
}
@group(0) @binding(0) var<uniform> norm: NormalizeParams;

@compute @workgroup_size(256)
fn normalize(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
             @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= norm.len {
        return;
    }
    let c = (i / norm.pixels) % norm.channels;
    x[i] = (x[i] - bias[c]) * bias[norm.channels + c];
}

// copy_rows: dst[r, c] = src[r·src_width + c] for c < cols, 0 for cols <= c < dst_width: pads
// rows to a wider stride or trims them back (a conv's weights to and from the im2col width).
struct CopyRowsParams {
    rows: u32,
    cols: u32,
    src_width: u32,
    dst_width: u32,
}
@group(0) @binding(0) var<uniform> copy: CopyRowsParams;
@group(0) @binding(1) var<storage, read> copy_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> copy_dst: array<f32>;

@compute @workgroup_size(256)
fn copy_rows(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
             @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= copy.rows * copy.dst_width {
        return;
    }
    let r = i / copy.dst_width;
    let c = i % copy.dst_width;
    var v = 0.0;
    if c < copy.cols {
        v = copy_src[r * copy.src_width + c];
    }
    copy_dst[i] = v;
}

// bias_grad: out[c] = Σ_r grad[r, c]. A 64×4 workgroup covers 64 columns; its 4 lanes sum every
// 4th row, then lane 0 adds the 4 partial sums. CPU twin: src/cpu/reduce.rs.
// Test: tests/cross_check_elementwise.rs.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(64, 4)
fn bias_grad(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    let col = group.x * 64u + local.x;
    var sum = 0.0;
    if col < params.cols {
        for (var r = local.y; r < params.rows; r += 4u) {
            sum += grad[r * params.cols + col];
        }
    }
    partial[local.y * 64u + local.x] = sum;
    workgroupBarrier();
    if local.y == 0u && col < params.cols {
        out[col] = (partial[local.x] + partial[64u + local.x]) + (partial[128u + local.x] + partial[192u + local.x]);
    }
}

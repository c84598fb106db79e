// Column sums and the second pass of split reductions. No invocation loops over a whole
// dimension: llvmpipe (lavapipe) silently ends an invocation's loops after 65,535 iterations in
// all, so long sums are cut into chunks on the host (src/gpu/mod.rs) and summed in two passes.
// CPU twins: src/cpu/reduce.rs. Tests: tests/cross_check_elementwise.rs, cross_check_matmul.rs.

struct Params {
    rows: u32,
    cols: u32,
    // bias_grad: rows per workgroup row (grid y); sum_splits: slices to add.
    chunk: u32,
    // sum_splits: add to `out` instead of overwriting it.
    accumulate: u32,
    // sum_splits as a matmul's last pass: add bias[i % bias_cols] (bit 0), then ReLU (bit 1).
    epilogue: u32,
    bias_cols: u32,
    // ... and with bit 2, stores row i / bias_cols of `pixels`-row samples as NCHW.
    pixels: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// sum_splits' epilogue bias; a placeholder buffer when there is none.
@group(0) @binding(3) var<storage, read> bias: array<f32>;

var<workgroup> partial: array<f32, 256>;

// bias_grad: out[y·cols + c] = Σ grad[r, c] over the rows of chunk y (grid y), so with one chunk
// `out` is the bias gradient itself, and with several, a second bias_grad adds the chunks. A 64×4
// workgroup covers 64 columns; its 4 lanes sum every 4th row, then lane 0 adds the 4 sums.
@compute @workgroup_size(64, 4)
fn bias_grad(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    let col = group.x * 64u + local.x;
    let start = group.y * params.chunk;
    let end = min(start + params.chunk, params.rows);
    var sum = 0.0;
    if col < params.cols {
        for (var r = start + local.y; r < end; r += 4u) {
            sum += grad[r * params.cols + col];
        }
    }
    partial[local.y * 64u + local.x] = sum;
    workgroupBarrier();
    if local.y == 0u && col < params.cols {
        out[group.y * params.cols + col] =
            (partial[local.x] + partial[64u + local.x]) + (partial[128u + local.x] + partial[192u + local.x]);
    }
}

// sum_splits: out[i] (+)= Σ_s grad[s·cols + i] for s < chunk, i < cols, in slice order: the
// second pass of a split-K matmul; as the last pass of a Linear or conv forward, with its
// epilogue (bias[i % bias_cols], then ReLU, then with bit 2 the NCHW store; bias_cols is the
// matmul's n even without a bias; see shaders/matmul_common.wgsl).
@compute @workgroup_size(256)
fn sum_splits(@builtin(workgroup_id) group: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
              @builtin(local_invocation_index) local: u32) {
    let i = flat_index(group, groups, local);
    if i >= params.cols {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < params.chunk; s++) {
        sum += grad[s * params.cols + i];
    }
    let row = i / params.bias_cols;
    let col = i % params.bias_cols;
    if params.accumulate != 0u {
        out[i] += sum;
    } else {
        if (params.epilogue & 1u) != 0u {
            sum += bias[col];
        }
        if (params.epilogue & 2u) != 0u {
            sum = max(sum, 0.0);
        }
        if (params.epilogue & 4u) != 0u {
            let p = params.pixels;
            out[(row / p) * params.bias_cols * p + col * p + row % p] = sum;
        } else {
            out[i] = sum;
        }
    }
}

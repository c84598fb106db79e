// C[m, n] = op(A) · op(B), the `tiled` variant: any shape, scalar loads. Each 16×16 workgroup
// computes a 64×64 tile of C, each thread a 4×4 block, walking its K range in steps of 16
// through workgroup memory. Tiles that hang over the edge of A, B, C or the K range load zeros
// and skip their stores. Three entry points, one per storage form (`MatmulForm` in
// src/backend.rs). The host picks the faster `matmul_register.wgsl` or `matmul_wide.wgsl`
// (src/gpu/matmul.rs); this one runs only when forced, as the plain reference.
// CPU twin: src/cpu/matmul.rs. Test: tests/cross_check_matmul.rs.

@group(0) @binding(0) var<uniform> params: MatmulParams;
// MatmulParams and the K-split helpers (`k_range`, `store_c`) are in shaders/matmul_common.wgsl.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const TM: u32 = 4u;
const TN: u32 = 4u;
const THREADS: u32 = 256u;

// K-major tiles, so the inner loop reads 4 consecutive values per thread.
var<workgroup> tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_b: array<f32, 1024>; // [BK][BN]

// A(i, p) for i < m, p < k; A is stored [m, k], or [k, m] when transposed.
fn load_a(i: u32, p: u32, k_end: u32, trans: bool) -> f32 {
    if i >= params.m || p >= k_end {
        return 0.0;
    }
    if trans {
        return a[p * params.m + i];
    }
    return a[i * params.k + p];
}

// B(p, j) for p < k, j < n; B is stored [k, n], or [n, k] when transposed.
fn load_b(p: u32, j: u32, k_end: u32, trans: bool) -> f32 {
    if p >= k_end || j >= params.n {
        return 0.0;
    }
    if trans {
        return b[j * params.k + p];
    }
    return b[p * params.n + j];
}

fn matmul_tiled(group: vec3<u32>, local: vec3<u32>, thread: u32, trans_a: bool, trans_b: bool) {
    let row0 = group.y * BM;
    let col0 = group.x * BN;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    let ks = k_range(group.z);
    for (var t = ks.x; t < ks.y; t += BK) {
        // Each thread loads 4 elements of each tile. Consecutive threads walk the operand's
        // contiguous dimension, so global reads coalesce whichever way it is stored.
        for (var r = 0u; r < 4u; r++) {
            let l = thread + r * THREADS;
            var ai: u32;
            var ap: u32;
            if trans_a {
                ai = l % BM;
                ap = l / BM;
            } else {
                ap = l % BK;
                ai = l / BK;
            }
            tile_a[ap * BM + ai] = load_a(row0 + ai, t + ap, ks.y, trans_a);
            var bp: u32;
            var bj: u32;
            if trans_b {
                bp = l % BK;
                bj = l / BK;
            } else {
                bj = l % BN;
                bp = l / BN;
            }
            tile_b[bp * BN + bj] = load_b(t + bp, col0 + bj, ks.y, trans_b);
        }
        workgroupBarrier();

        for (var p = 0u; p < BK; p++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < TM; i++) {
                av[i] = tile_a[p * BM + local.y * TM + i];
            }
            for (var j = 0u; j < TN; j++) {
                bv[j] = tile_b[p * BN + local.x * TN + j];
            }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(av[i], bv[j], acc[i * TN + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < TM; i++) {
        let row = row0 + local.y * TM + i;
        for (var j = 0u; j < TN; j++) {
            let col = col0 + local.x * TN + j;
            if row < params.m && col < params.n {
                store_c(group.z, row, col, acc[i * TN + j]);
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul_ab(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
             @builtin(local_invocation_index) thread: u32) {
    matmul_tiled(group, local, thread, false, false);
}

@compute @workgroup_size(16, 16)
fn matmul_atb(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
              @builtin(local_invocation_index) thread: u32) {
    matmul_tiled(group, local, thread, true, false);
}

@compute @workgroup_size(16, 16)
fn matmul_abt(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
              @builtin(local_invocation_index) thread: u32) {
    matmul_tiled(group, local, thread, false, true);
}

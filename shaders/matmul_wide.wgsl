// C[m, n] = op(A) · op(B), the `wide` variant for real GPUs: a 16×16 workgroup computes a
// 128×128 tile of C, each invocation an 8×8 block in registers (two 4×4 quadrants 64 apart, so
// neighbouring invocations read neighbouring workgroup memory). K is walked 8 at a time through
// two workgroup-memory buffers: while the tile in one is multiplied, the next tile's global
// loads (one vec4 of A and one of B per invocation) are already in flight, and one barrier per
// step suffices. Both tiles are kept K-major ([8][128]) so the inner loop reads vec4s.
//
// Like `register`, it needs the dimension each operand is loaded along to be a multiple of 4
// (src/gpu/matmul.rs checks); edges load zeros and skip their stores.
// CPU twin: src/cpu/matmul.rs. Test: tests/cross_check_matmul.rs.

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const WT: u32 = 128u; // tile rows and columns
const WK: u32 = 8u; // K per step

// Two buffers of [WK][WT] floats each, as vec4s along the tile's rows (A) or columns (B).
var<workgroup> tile_a: array<vec4<f32>, 512>;
var<workgroup> tile_b: array<vec4<f32>, 512>;

// The vec4 invocation t loads from A for the K step at p, and where it goes in tile_a.
// A stored [m, k]: row t/2, k quad t%2 (a column of the K-major tile: scattered on store).
// A stored [k, m]: k row t/32, m quad t%32 (a vec4 of the tile as it is).
fn load_a(t: u32, row0: u32, p: u32, k_end: u32, trans: bool) -> vec4<f32> {
    if trans {
        let kk = p + t / 32u;
        let i = row0 + (t % 32u) * 4u;
        let ok = kk < k_end && i < params.m;
        let v = a[(min(kk, params.k - 1u) * params.m + min(i, params.m - 4u)) / 4u];
        return select(vec4<f32>(0.0), v, ok);
    }
    let i = row0 + t / 2u;
    let kk = p + (t % 2u) * 4u;
    let ok = kk < k_end && i < params.m;
    let v = a[(min(i, params.m - 1u) * params.k + min(kk, params.k - 4u)) / 4u];
    return select(vec4<f32>(0.0), v, ok);
}

fn load_b(t: u32, col0: u32, p: u32, k_end: u32, trans: bool) -> vec4<f32> {
    if trans {
        let j = col0 + t / 2u;
        let kk = p + (t % 2u) * 4u;
        let ok = kk < k_end && j < params.n;
        let v = b[(min(j, params.n - 1u) * params.k + min(kk, params.k - 4u)) / 4u];
        return select(vec4<f32>(0.0), v, ok);
    }
    let kk = p + t / 32u;
    let j = col0 + (t % 32u) * 4u;
    let ok = kk < k_end && j < params.n;
    let v = b[(min(kk, params.k - 1u) * params.n + min(j, params.n - 4u)) / 4u];
    return select(vec4<f32>(0.0), v, ok);
}

// Writes invocation t's vec4 into buffer `buf` of a tile; `along_k` marks vec4s that run along
// K (rows of A stored [m, k], columns of B stored [n, k]), which are scattered to four rows.
fn store_tile_a(buf: u32, t: u32, v: vec4<f32>, along_k: bool) {
    let base = buf * 256u;
    if along_k {
        let i = t / 2u;
        let s0 = (t % 2u) * 4u;
        let q = i / 4u;
        let l = i % 4u;
        for (var s = 0u; s < 4u; s++) {
            tile_a[base + (s0 + s) * 32u + q][l] = v[s];
        }
    } else {
        tile_a[base + t] = v;
    }
}

fn store_tile_b(buf: u32, t: u32, v: vec4<f32>, along_k: bool) {
    let base = buf * 256u;
    if along_k {
        let j = t / 2u;
        let s0 = (t % 2u) * 4u;
        let q = j / 4u;
        let l = j % 4u;
        for (var s = 0u; s < 4u; s++) {
            tile_b[base + (s0 + s) * 32u + q][l] = v[s];
        }
    } else {
        tile_b[base + t] = v;
    }
}

fn matmul_wide(group: vec3<u32>, local: vec3<u32>, t: u32, trans_a: bool, trans_b: bool) {
    let row0 = group.y * WT;
    let col0 = group.x * WT;
    let ks = k_range(group.z);
    // The 8×8 block in 16 named vec4s (rows local.y·4 + r and 64 + local.y·4 + r, column halves
    // local.x·4 and 64 + local.x·4), so that no compiler has to prove an array fits registers.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0);
    var acc9 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0);
    var acc13 = vec4<f32>(0.0);
    var acc14 = vec4<f32>(0.0);
    var acc15 = vec4<f32>(0.0);

    var buf = 0u;
    store_tile_a(0u, t, load_a(t, row0, ks.x, ks.y, trans_a), !trans_a);
    store_tile_b(0u, t, load_b(t, col0, ks.x, ks.y, trans_b), trans_b);
    workgroupBarrier();
    for (var p = ks.x; p < ks.y; p += WK) {
        let next = p + WK;
        var na = vec4<f32>(0.0);
        var nb = vec4<f32>(0.0);
        if next < ks.y {
            na = load_a(t, row0, next, ks.y, trans_a);
            nb = load_b(t, col0, next, ks.y, trans_b);
        }
        let base = buf * 256u;
        for (var s = 0u; s < WK; s++) {
            let a0 = tile_a[base + s * 32u + local.y];
            let a1 = tile_a[base + s * 32u + 16u + local.y];
            let b0 = tile_b[base + s * 32u + local.x];
            let b1 = tile_b[base + s * 32u + 16u + local.x];
            acc0 = fma(vec4<f32>(a0.x), b0, acc0);
            acc1 = fma(vec4<f32>(a0.x), b1, acc1);
            acc2 = fma(vec4<f32>(a0.y), b0, acc2);
            acc3 = fma(vec4<f32>(a0.y), b1, acc3);
            acc4 = fma(vec4<f32>(a0.z), b0, acc4);
            acc5 = fma(vec4<f32>(a0.z), b1, acc5);
            acc6 = fma(vec4<f32>(a0.w), b0, acc6);
            acc7 = fma(vec4<f32>(a0.w), b1, acc7);
            acc8 = fma(vec4<f32>(a1.x), b0, acc8);
            acc9 = fma(vec4<f32>(a1.x), b1, acc9);
            acc10 = fma(vec4<f32>(a1.y), b0, acc10);
            acc11 = fma(vec4<f32>(a1.y), b1, acc11);
            acc12 = fma(vec4<f32>(a1.z), b0, acc12);
            acc13 = fma(vec4<f32>(a1.z), b1, acc13);
            acc14 = fma(vec4<f32>(a1.w), b0, acc14);
            acc15 = fma(vec4<f32>(a1.w), b1, acc15);
        }
        if next < ks.y {
            buf = 1u - buf;
            store_tile_a(buf, t, na, !trans_a);
            store_tile_b(buf, t, nb, trans_b);
        }
        workgroupBarrier();
    }

    store_vec4(group.z, row0 + 0u + local.y * 4u + 0u, col0 + local.x * 4u, acc0);
    store_vec4(group.z, row0 + 0u + local.y * 4u + 0u, col0 + 64u + local.x * 4u, acc1);
    store_vec4(group.z, row0 + 0u + local.y * 4u + 1u, col0 + local.x * 4u, acc2);
    store_vec4(group.z, row0 + 0u + local.y * 4u + 1u, col0 + 64u + local.x * 4u, acc3);
    store_vec4(group.z, row0 + 0u + local.y * 4u + 2u, col0 + local.x * 4u, acc4);
    store_vec4(group.z, row0 + 0u + local.y * 4u + 2u, col0 + 64u + local.x * 4u, acc5);
    store_vec4(group.z, row0 + 0u + local.y * 4u + 3u, col0 + local.x * 4u, acc6);
    store_vec4(group.z, row0 + 0u + local.y * 4u + 3u, col0 + 64u + local.x * 4u, acc7);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 0u, col0 + local.x * 4u, acc8);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 0u, col0 + 64u + local.x * 4u, acc9);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 1u, col0 + local.x * 4u, acc10);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 1u, col0 + 64u + local.x * 4u, acc11);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 2u, col0 + local.x * 4u, acc12);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 2u, col0 + 64u + local.x * 4u, acc13);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 3u, col0 + local.x * 4u, acc14);
    store_vec4(group.z, row0 + 64u + local.y * 4u + 3u, col0 + 64u + local.x * 4u, acc15);
}

@compute @workgroup_size(16, 16)
fn matmul_ab_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
                  @builtin(local_invocation_index) t: u32) {
    matmul_wide(group, local, t, false, false);
}

@compute @workgroup_size(16, 16)
fn matmul_atb_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
                   @builtin(local_invocation_index) t: u32) {
    matmul_wide(group, local, t, true, false);
}

@compute @workgroup_size(16, 16)
fn matmul_abt_wide(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>,
                   @builtin(local_invocation_index) t: u32) {
    matmul_wide(group, local, t, false, true);
}

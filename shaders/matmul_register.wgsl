// C[m, n] = op(A) · op(B), the `register` variant for software adapters (lavapipe, WARP,
// SwiftShader): no workgroup memory and no barriers, which are the expensive parts of a CPU
// pretending to be a GPU, and only vec4 loads (Mesa 22's lavapipe fetches each scalar load lane
// by lane). Each invocation keeps an 8×8 block of C in registers and walks its K range four at a
// time: it loads A(i0..i0+8, p..p+4) and B(p..p+4, j0..j0+8) as eight vec4s each, whatever the
// storage form, and adds their outer products. An 8×8 workgroup covers a 64×64 tile.
//
// vec4 loads need the dimension they run along to be a multiple of 4: k for A stored [m, k] and
// for B stored [n, k], m for A stored [k, m], n for B stored [k, n]. An operand for which that
// does not hold (a classifier's 10 rows) is loaded a scalar at a time instead, picked by
// `params.vec4_loads` (the same for every invocation, so the branch costs nothing); so this
// variant takes any shape. Rows and columns past the edge are read from the last valid ones
// (clamped, so no branch in the loop) and never stored; k past the end of the range reads as 0.
// CPU twin: src/cpu/matmul.rs. Test: tests/cross_check_matmul.rs.

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// One element of A or B by flat index, for the scalar paths.
fn a_at(i: u32) -> f32 {
    return a[i / 4u][i % 4u];
}

fn b_at(i: u32) -> f32 {
    return b[i / 4u][i % 4u];
}

// 1 for k = p + s inside [.., k_end), else 0, for s in 0..4.
fn k_mask(p: u32, k_end: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), vec4<f32>(1.0), vec4<u32>(p, p + 1u, p + 2u, p + 3u) < vec4<u32>(k_end));
}

// min(p + s, k - 1) for s in 0..4: in-bounds indices for the masked loads.
fn k_clamped(p: u32) -> vec4<u32> {
    return min(vec4<u32>(p, p + 1u, p + 2u, p + 3u), vec4<u32>(params.k - 1u));
}

// A(i0 + r, p..p+4) for r in 0..8, A stored [m, k], scalar loads (any k).
fn a_rows_scalar(i0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    let kk = k_clamped(p);
    let keep = k_mask(p, k_end);
    for (var r = 0u; r < 8u; r++) {
        let row = min(i0 + r, params.m - 1u) * params.k;
        out[r] = vec4<f32>(a_at(row + kk.x), a_at(row + kk.y), a_at(row + kk.z), a_at(row + kk.w)) * keep;
    }
    return out;
}

// The same, A stored [k, m], scalar loads (any m).
fn a_rows_t_scalar(i0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    let kk = k_clamped(p) * params.m;
    let keep = k_mask(p, k_end);
    for (var r = 0u; r < 8u; r++) {
        let i = min(i0 + r, params.m - 1u);
        out[r] = vec4<f32>(a_at(kk.x + i), a_at(kk.y + i), a_at(kk.z + i), a_at(kk.w + i)) * keep;
    }
    return out;
}

// B(p + s, j0 + 4h..) at index 2s + h, B stored [k, n], scalar loads (any n).
fn b_rows_scalar(j0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    let kk = k_clamped(p);
    let keep = k_mask(p, k_end);
    let j = min(vec4<u32>(j0, j0 + 1u, j0 + 2u, j0 + 3u), vec4<u32>(params.n - 1u));
    let j4 = min(vec4<u32>(j0 + 4u, j0 + 5u, j0 + 6u, j0 + 7u), vec4<u32>(params.n - 1u));
    for (var s = 0u; s < 4u; s++) {
        let row = kk[s] * params.n;
        out[2u * s] = vec4<f32>(b_at(row + j.x), b_at(row + j.y), b_at(row + j.z), b_at(row + j.w)) * keep[s];
        out[2u * s + 1u] = vec4<f32>(b_at(row + j4.x), b_at(row + j4.y), b_at(row + j4.z), b_at(row + j4.w)) * keep[s];
    }
    return out;
}

// The same, B stored [n, k], scalar loads (any k).
fn b_rows_t_scalar(j0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    var col: array<vec4<f32>, 8>;
    let kk = k_clamped(p);
    let keep = k_mask(p, k_end);
    for (var j = 0u; j < 8u; j++) {
        let base = min(j0 + j, params.n - 1u) * params.k;
        col[j] = vec4<f32>(b_at(base + kk.x), b_at(base + kk.y), b_at(base + kk.z), b_at(base + kk.w)) * keep;
    }
    var out: array<vec4<f32>, 8>;
    for (var s = 0u; s < 4u; s++) {
        out[2u * s] = vec4<f32>(col[0][s], col[1][s], col[2][s], col[3][s]);
        out[2u * s + 1u] = vec4<f32>(col[4][s], col[5][s], col[6][s], col[7][s]);
    }
    return out;
}

// A(i0 + r, p..p+4) for r in 0..8, A stored [m, k] (k % 4 == 0, p % 4 == 0).
fn a_rows(i0: u32, p: u32) -> array<vec4<f32>, 8> {
    var out: array<vec4<f32>, 8>;
    let kq = params.k / 4u;
    for (var r = 0u; r < 8u; r++) {
        out[r] = a[min(i0 + r, params.m - 1u) * kq + p / 4u];
    }
    return out;
}

// The same, A stored [k, m] (m % 4 == 0): two vec4s along m per k, transposed in registers.
fn a_rows_t(i0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    let mq = params.m / 4u;
    let q0 = min(i0 / 4u, mq - 1u);
    let q1 = min(i0 / 4u + 1u, mq - 1u);
    var lo: array<vec4<f32>, 4>;
    var hi: array<vec4<f32>, 4>;
    for (var s = 0u; s < 4u; s++) {
        let kk = min(p + s, params.k - 1u);
        let keep = select(0.0, 1.0, p + s < k_end);
        lo[s] = a[kk * mq + q0] * keep;
        hi[s] = a[kk * mq + q1] * keep;
    }
    var out: array<vec4<f32>, 8>;
    for (var r = 0u; r < 4u; r++) {
        out[r] = vec4<f32>(lo[0][r], lo[1][r], lo[2][r], lo[3][r]);
        out[r + 4u] = vec4<f32>(hi[0][r], hi[1][r], hi[2][r], hi[3][r]);
    }
    return out;
}

// B(p + s, j0 + 4h..j0 + 4h + 4) at index 2s + h, B stored [k, n] (n % 4 == 0).
fn b_rows(j0: u32, p: u32, k_end: u32) -> array<vec4<f32>, 8> {
    let nq = params.n / 4u;
    let q0 = min(j0 / 4u, nq - 1u);
    let q1 = min(j0 / 4u + 1u, nq - 1u);
    var out: array<vec4<f32>, 8>;
    for (var s = 0u; s < 4u; s++) {
        let kk = min(p + s, params.k - 1u);
        let keep = select(0.0, 1.0, p + s < k_end);
        out[2u * s] = b[kk * nq + q0] * keep;
        out[2u * s + 1u] = b[kk * nq + q1] * keep;
    }
    return out;
}

// The same, B stored [n, k] (k % 4 == 0): one vec4 along k per column, transposed in registers.
fn b_rows_t(j0: u32, p: u32) -> array<vec4<f32>, 8> {
    let kq = params.k / 4u;
    var col: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) {
        col[j] = b[min(j0 + j, params.n - 1u) * kq + p / 4u];
    }
    var out: array<vec4<f32>, 8>;
    for (var s = 0u; s < 4u; s++) {
        out[2u * s] = vec4<f32>(col[0][s], col[1][s], col[2][s], col[3][s]);
        out[2u * s + 1u] = vec4<f32>(col[4][s], col[5][s], col[6][s], col[7][s]);
    }
    return out;
}

fn matmul_register(group: vec3<u32>, local: vec3<u32>, trans_a: bool, trans_b: bool) {
    let i0 = group.y * 64u + local.y * 8u;
    let j0 = group.x * 64u + local.x * 8u;
    let ks = k_range(group.z);
    let a_vec4 = (params.vec4_loads & 1u) != 0u;
    let b_vec4 = (params.vec4_loads & 2u) != 0u;
    // acc{2r + h}: row i0 + r, columns j0 + 4h..j0 + 4h + 4; named, not an array, so that they
    // stay in registers (as an array, lavapipe kept them in memory: 2× slower).
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
    for (var p = ks.x; p < ks.y; p += 4u) {
        var ar: array<vec4<f32>, 8>;
        if !a_vec4 {
            if trans_a {
                ar = a_rows_t_scalar(i0, p, ks.y);
            } else {
                ar = a_rows_scalar(i0, p, ks.y);
            }
        } else if trans_a {
            ar = a_rows_t(i0, p, ks.y);
        } else {
            ar = a_rows(i0, p);
        }
        var bs: array<vec4<f32>, 8>;
        if !b_vec4 {
            if trans_b {
                bs = b_rows_t_scalar(j0, p, ks.y);
            } else {
                bs = b_rows_scalar(j0, p, ks.y);
            }
        } else if trans_b {
            bs = b_rows_t(j0, p);
        } else {
            bs = b_rows(j0, p, ks.y);
        }
        acc0 = fma(vec4<f32>(ar[0].x), bs[0], acc0);
        acc1 = fma(vec4<f32>(ar[0].x), bs[1], acc1);
        acc0 = fma(vec4<f32>(ar[0].y), bs[2], acc0);
        acc1 = fma(vec4<f32>(ar[0].y), bs[3], acc1);
        acc0 = fma(vec4<f32>(ar[0].z), bs[4], acc0);
        acc1 = fma(vec4<f32>(ar[0].z), bs[5], acc1);
        acc0 = fma(vec4<f32>(ar[0].w), bs[6], acc0);
        acc1 = fma(vec4<f32>(ar[0].w), bs[7], acc1);
        acc2 = fma(vec4<f32>(ar[1].x), bs[0], acc2);
        acc3 = fma(vec4<f32>(ar[1].x), bs[1], acc3);
        acc2 = fma(vec4<f32>(ar[1].y), bs[2], acc2);
        acc3 = fma(vec4<f32>(ar[1].y), bs[3], acc3);
        acc2 = fma(vec4<f32>(ar[1].z), bs[4], acc2);
        acc3 = fma(vec4<f32>(ar[1].z), bs[5], acc3);
        acc2 = fma(vec4<f32>(ar[1].w), bs[6], acc2);
        acc3 = fma(vec4<f32>(ar[1].w), bs[7], acc3);
        acc4 = fma(vec4<f32>(ar[2].x), bs[0], acc4);
        acc5 = fma(vec4<f32>(ar[2].x), bs[1], acc5);
        acc4 = fma(vec4<f32>(ar[2].y), bs[2], acc4);
        acc5 = fma(vec4<f32>(ar[2].y), bs[3], acc5);
        acc4 = fma(vec4<f32>(ar[2].z), bs[4], acc4);
        acc5 = fma(vec4<f32>(ar[2].z), bs[5], acc5);
        acc4 = fma(vec4<f32>(ar[2].w), bs[6], acc4);
        acc5 = fma(vec4<f32>(ar[2].w), bs[7], acc5);
        acc6 = fma(vec4<f32>(ar[3].x), bs[0], acc6);
        acc7 = fma(vec4<f32>(ar[3].x), bs[1], acc7);
        acc6 = fma(vec4<f32>(ar[3].y), bs[2], acc6);
        acc7 = fma(vec4<f32>(ar[3].y), bs[3], acc7);
        acc6 = fma(vec4<f32>(ar[3].z), bs[4], acc6);
        acc7 = fma(vec4<f32>(ar[3].z), bs[5], acc7);
        acc6 = fma(vec4<f32>(ar[3].w), bs[6], acc6);
        acc7 = fma(vec4<f32>(ar[3].w), bs[7], acc7);
        acc8 = fma(vec4<f32>(ar[4].x), bs[0], acc8);
        acc9 = fma(vec4<f32>(ar[4].x), bs[1], acc9);
        acc8 = fma(vec4<f32>(ar[4].y), bs[2], acc8);
        acc9 = fma(vec4<f32>(ar[4].y), bs[3], acc9);
        acc8 = fma(vec4<f32>(ar[4].z), bs[4], acc8);
        acc9 = fma(vec4<f32>(ar[4].z), bs[5], acc9);
        acc8 = fma(vec4<f32>(ar[4].w), bs[6], acc8);
        acc9 = fma(vec4<f32>(ar[4].w), bs[7], acc9);
        acc10 = fma(vec4<f32>(ar[5].x), bs[0], acc10);
        acc11 = fma(vec4<f32>(ar[5].x), bs[1], acc11);
        acc10 = fma(vec4<f32>(ar[5].y), bs[2], acc10);
        acc11 = fma(vec4<f32>(ar[5].y), bs[3], acc11);
        acc10 = fma(vec4<f32>(ar[5].z), bs[4], acc10);
        acc11 = fma(vec4<f32>(ar[5].z), bs[5], acc11);
        acc10 = fma(vec4<f32>(ar[5].w), bs[6], acc10);
        acc11 = fma(vec4<f32>(ar[5].w), bs[7], acc11);
        acc12 = fma(vec4<f32>(ar[6].x), bs[0], acc12);
        acc13 = fma(vec4<f32>(ar[6].x), bs[1], acc13);
        acc12 = fma(vec4<f32>(ar[6].y), bs[2], acc12);
        acc13 = fma(vec4<f32>(ar[6].y), bs[3], acc13);
        acc12 = fma(vec4<f32>(ar[6].z), bs[4], acc12);
        acc13 = fma(vec4<f32>(ar[6].z), bs[5], acc13);
        acc12 = fma(vec4<f32>(ar[6].w), bs[6], acc12);
        acc13 = fma(vec4<f32>(ar[6].w), bs[7], acc13);
        acc14 = fma(vec4<f32>(ar[7].x), bs[0], acc14);
        acc15 = fma(vec4<f32>(ar[7].x), bs[1], acc15);
        acc14 = fma(vec4<f32>(ar[7].y), bs[2], acc14);
        acc15 = fma(vec4<f32>(ar[7].y), bs[3], acc15);
        acc14 = fma(vec4<f32>(ar[7].z), bs[4], acc14);
        acc15 = fma(vec4<f32>(ar[7].z), bs[5], acc15);
        acc14 = fma(vec4<f32>(ar[7].w), bs[6], acc14);
        acc15 = fma(vec4<f32>(ar[7].w), bs[7], acc15);
    }
    store_vec4(group.z, i0 + 0u, j0, acc0);
    store_vec4(group.z, i0 + 0u, j0 + 4u, acc1);
    store_vec4(group.z, i0 + 1u, j0, acc2);
    store_vec4(group.z, i0 + 1u, j0 + 4u, acc3);
    store_vec4(group.z, i0 + 2u, j0, acc4);
    store_vec4(group.z, i0 + 2u, j0 + 4u, acc5);
    store_vec4(group.z, i0 + 3u, j0, acc6);
    store_vec4(group.z, i0 + 3u, j0 + 4u, acc7);
    store_vec4(group.z, i0 + 4u, j0, acc8);
    store_vec4(group.z, i0 + 4u, j0 + 4u, acc9);
    store_vec4(group.z, i0 + 5u, j0, acc10);
    store_vec4(group.z, i0 + 5u, j0 + 4u, acc11);
    store_vec4(group.z, i0 + 6u, j0, acc12);
    store_vec4(group.z, i0 + 6u, j0 + 4u, acc13);
    store_vec4(group.z, i0 + 7u, j0, acc14);
    store_vec4(group.z, i0 + 7u, j0 + 4u, acc15);
}

@compute @workgroup_size(8, 8)
fn matmul_ab_register(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_register(group, local, false, false);
}

@compute @workgroup_size(8, 8)
fn matmul_atb_register(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_register(group, local, true, false);
}

@compute @workgroup_size(8, 8)
fn matmul_abt_register(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_id) local: vec3<u32>) {
    matmul_register(group, local, false, true);
}
